//! End-to-end builds (build only) of one fixture per language whose toolchain is on this machine:
//! Node (npm ci + build script), Python (pip install --target), and the single-folder app root,
//! on Kiln's stack. `tests/runtimes.rs` runs such images.

mod support;

use serde_json::Value;
use support::run_image::{build_on_stack_ok, require_debian_mirror};
use support::{fixture, kiln_ok, require_tools};

/// Builds a fixture on Kiln's stack; `None` when the Debian mirror cannot be reached here.
fn build(src: &str) -> Option<(Value, tempfile::TempDir)> {
    if !require_debian_mirror() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = build_on_stack_ok(
        &fixture(src),
        &dir.path().join("cache"),
        &dir.path().join("image.tar"),
    );
    Some((report, dir))
}

fn plan(src: &str) -> Value {
    serde_json::from_str(&kiln_ok(&[
        "plan",
        "--json",
        fixture(src).to_str().unwrap(),
    ]))
    .unwrap()
}

fn layer_names(report: &Value) -> Vec<String> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn node_fixture_builds_with_npm_ci_and_its_build_script() {
    if !require_tools(&["node", "npm"]) {
        return;
    }
    let Some((report, _dir)) = build("node-hello") else {
        return;
    };
    assert_eq!(
        report["processes"][0]["command"],
        // The start script's own command, run directly: no npm needed in the image.
        serde_json::json!(["node", "server.js"])
    );
    assert!(layer_names(&report).contains(&"app".to_owned()), "{report}");
}

#[test]
fn python_fixture_builds_with_pip_target() {
    if !require_tools(&["python3"]) {
        return;
    }
    let plan = plan("python-hello");
    let step = &plan["buildpacks"][0]["steps"][0];
    assert_eq!(step["command"], "python3");
    assert_eq!(step["args"][4], "--target");
    // An empty requirements.txt installs nothing, so the (empty) deps layer is not shipped.
    let Some((report, _dir)) = build("python-hello") else {
        return;
    };
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!(["python", "main.py"])
    );
    assert!(layer_names(&report).contains(&"app".to_owned()), "{report}");
}

#[test]
fn app_in_a_single_folder_is_planned_and_built_from_that_folder() {
    let plan = plan("app-root");
    assert_eq!(plan["schema_version"], 1);
    assert_eq!(plan["app_root"], "service");
    assert_eq!(
        plan["versions"]["nodejs"]["from"],
        "package.json engines.node"
    );
    if !require_tools(&["node", "npm"]) {
        return;
    }
    let Some((report, _dir)) = build("app-root") else {
        return;
    };
    assert_eq!(
        report["processes"][0]["command"],
        // The start script's own command, run directly: no npm needed in the image.
        serde_json::json!(["node", "server.js"])
    );
}
