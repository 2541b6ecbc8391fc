//! Unit tests: the CycloneDX document against the official CycloneDX 1.5 JSON schema
//! ([`crate::schema`]).

use crate::schema::{cyclonedx_errors, cyclonedx_validator};
use crate::{cyclonedx, Component, Ecosystem, Inventory};
use serde_json::Value;

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
    let document: Value = serde_json::from_slice(&cyclonedx::to_bytes(&inventory())).unwrap();
    let errors = cyclonedx_errors(&document);
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
