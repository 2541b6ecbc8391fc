//! End-to-end builds (build only) of one fixture per language whose toolchain is on this machine:
//! Node (npm ci + build script), Python (pip install --target), and the single-folder app root.
//! Running these images needs a run image with the runtime, which is a later issue.

mod support;

use serde_json::Value;
use support::{fixture, kiln_ok, require_tools};

fn build(src: &str) -> (Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image.tar");
    let cache = dir.path().join("cache");
    let report = kiln_ok(&[
        "build",
        "--json",
        fixture(src).to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    (serde_json::from_str(&report).unwrap(), dir)
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
    let (report, _dir) = build("node-hello");
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!(["npm", "start"])
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
    let (report, _dir) = build("python-hello");
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
    let (report, _dir) = build("app-root");
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!(["npm", "start"])
    );
}
