//! The npm-registry provider through the whole engine, against the registry this machine's npm
//! is configured with: `fixtures/node-express` is built with Node and npm from the registry's
//! packages only (`KILN_RUNTIME_PROVIDERS=npm-registry`), `npm ci` runs with them, and the
//! report and the runtime layer say what was used. Unreachable fails the test.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

/// The paths in the layer called `name` of a `--format oci-dir` build.
fn layer_paths(layout: &Path, report: &Value, name: &str) -> Vec<String> {
    let digest = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name} in {report}"))["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let file = fs::File::open(layout.join("blobs/sha256").join(digest)).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[test]
fn node_express_builds_with_node_and_npm_from_the_npm_registry() {
    if !require_tools(&["npm", "busybox"]) {
        return;
    }
    let registry = npm_config("registry").expect("the machine's npm names a registry");
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("busybox.tar");
    busybox_base_image(&base);
    let layout = tmp.path().join("image");
    let mut kiln = Command::new(env!("CARGO_BIN_EXE_kiln"));
    kiln.args([
        "build",
        fixture("node-express").to_str().unwrap(),
        "--output",
        layout.to_str().unwrap(),
        "--format",
        "oci-dir",
        "--run-image",
        &format!("oci-archive:{}", base.display()),
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
        "--json",
        // The busybox base has no glibc (nor the libatomic, libstdc++ … Node links), so Node
        // cannot start there: the image is inspected, not run (build_root.rs runs a Node from
        // the npm registry on Kiln's stack).
        "--no-verify",
    ])
    .env("KILN_RUNTIME_PROVIDERS", "npm-registry")
    .env("KILN_NPM_REGISTRY", &registry);
    // Behind a TLS-inspecting proxy, the provided npm (whose global npmrc is not the machine's)
    // trusts the same CA bundle as the machine's npm.
    if let Some(cafile) = npm_config("cafile") {
        kiln.args(["--env", &format!("NODE_EXTRA_CA_CERTS={cafile}")]);
    }
    let out = kiln.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let runtime = &report["runtimes"][0];
    assert_eq!(runtime["provider"], "npm-registry", "{runtime}");
    assert_eq!(runtime["from"], "package.json engines.node");
    let version = runtime["version"].as_str().unwrap();
    let source = runtime["source"].as_str().unwrap();
    let registry_base = registry.trim_end_matches('/');
    assert!(
        source.starts_with(registry_base) && source.ends_with(&format!("-{version}.tgz")),
        "{source}"
    );
    assert!(
        runtime["integrity"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha512-")),
        "{runtime}"
    );
    assert_eq!(runtime["sha256"].as_str().map(str::len), Some(64));
    let npm = &runtime["bundled"][0];
    assert_eq!(npm["name"], "npm", "{runtime}");
    assert!(
        npm["source"]
            .as_str()
            .is_some_and(|s| s.starts_with(registry_base)),
        "{npm}"
    );
    assert!(version.split('.').next().unwrap().parse::<u64>().unwrap() >= 20);
    let said = format!(
        "npm-registry {source} + npm {}",
        npm["version"].as_str().unwrap()
    );
    assert!(log.contains(&said), "{said} not in:\n{log}");

    // The launch layer has node and the npm links, not the headers the build kept.
    let runtime_layer = layer_paths(&layout, &report, "nodejs/runtime");
    let under = |p: &str| format!("layers/nodejs/runtime/{p}");
    for want in [
        "bin/node",
        "bin/npm",
        "bin/npx",
        "lib/node_modules/npm/package.json",
    ] {
        assert!(
            runtime_layer
                .iter()
                .any(|p| p.trim_start_matches('/') == under(want)),
            "{want} missing"
        );
    }
    assert!(
        !runtime_layer
            .iter()
            .any(|p| p.contains("/include/") || p.contains("/share/")),
        "headers or share/ shipped"
    );
    // npm ci ran with the provided npm: the production dependencies are in the image.
    let modules = layer_paths(&layout, &report, "nodejs/modules");
    assert!(
        modules
            .iter()
            .any(|p| p.ends_with("node_modules/express/package.json")),
        "express missing from {} module entries",
        modules.len()
    );
}
