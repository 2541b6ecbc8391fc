//! Unit tests: the CycloneDX document against the official CycloneDX 1.5 JSON schema, vendored in
//! `tests/schemas/` from the `@cyclonedx/cyclonedx-library` npm package (10.3.0, Apache-2.0,
//! `res/schema/`), with the SPDX license-id and JSF schemas it references.

use crate::{cyclonedx, Component, Ecosystem, Inventory};
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

/// [`crate::sample`] with a component of each remaining ecosystem, so every purl form is checked.
fn inventory() -> Inventory {
    let sample = crate::sample();
    let mut components = sample.components.clone();
    components.extend([
        Component::new(Ecosystem::Cargo, "serde", "1.0.210"),
        Component::new(Ecosystem::Golang, "github.com/a/b", "v1.2.0"),
        Component::new(Ecosystem::Composer, "monolog/monolog", "3.8.0"),
    ]);
    Inventory::new(sample.subject, sample.created, components)
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
