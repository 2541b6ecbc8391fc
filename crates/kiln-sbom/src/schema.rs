//! Checking a CycloneDX document against the official CycloneDX 1.5 JSON schema, vendored in
//! `tests/schemas/` from the `@cyclonedx/cyclonedx-library` npm package (10.3.0, Apache-2.0,
//! `res/schema/`), with the SPDX license-id and JSF schemas it references. For tests (this
//! crate's and end-to-end ones, through the `schema` feature): it reads the schemas from this
//! crate's source directory.

use serde_json::Value;

fn schema(name: &str) -> Value {
    let path = format!("{}/tests/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The CycloneDX 1.5 validator, formats checked.
pub fn cyclonedx_validator() -> jsonschema::Validator {
    let mut options = jsonschema::options().should_validate_formats(true);
    for referenced in ["spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"] {
        let resource = jsonschema::Resource::from_contents(schema(referenced))
            .unwrap_or_else(|e| panic!("{referenced}: {e}"));
        options = options.with_resource(
            format!("http://cyclonedx.org/schema/{referenced}"),
            resource,
        );
    }
    options
        .build(&schema("bom-1.5.SNAPSHOT.schema.json"))
        .unwrap_or_else(|e| panic!("the CycloneDX 1.5 schema: {e}"))
}

/// Every way `document` breaks the CycloneDX 1.5 schema (`MESSAGE at /json/pointer`).
pub fn cyclonedx_errors(document: &Value) -> Vec<String> {
    cyclonedx_validator()
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}
