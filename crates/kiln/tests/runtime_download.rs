//! The download provider through the whole engine: a Node "release" served by a mirror on
//! 127.0.0.1 (laid out like nodejs.org/dist) is chosen for the requirement, verified, cached,
//! put on the build steps' PATH and into the image, and reused offline on the next build.

mod support;

// The same mirror the `kiln-runtime` tests use, so both exercise one layout.
#[path = "../../kiln-runtime/tests/support/mod.rs"]
mod mirror;

use std::fs;

use serde_json::Value;
use support::*;

const BUILDPACK: &str = r#"
[buildpack]
id = "node-app"
version = "1.0.0"

[detect]
all = ["package.json"]

[[build.steps]]
name = "probe"
command = "sh"
# The provided runtime's bin leads PATH: `node` here is the downloaded one, and node-gyp is
# pointed at its headers. Sandboxed, both are seen at the runtime's image path.
args = ["-c", "node > node-version.txt; command -v node > node-path.txt; echo \"$npm_package_config_node_gyp_nodedir\" > nodedir.txt"]

[[processes]]
type = "web"
command = ["node", "server.js"]

[runtime]
name = "node"
default = "lts"
"#;

#[test]
fn a_runtime_downloaded_from_a_mirror_is_verified_used_by_steps_shipped_and_reused_offline() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let mut mirror = mirror::NodeMirror::default();
    mirror
        .release("20.11.1", Some("Iron"))
        .release("22.3.0", Some("Jod"))
        .release("23.1.0", None);
    let mut server = mirror.serve();
    let mirror_base = server.base.clone();
    let tmp = tempfile::tempdir().unwrap();
    let bps = buildpacks_dir(tmp.path(), "node-app", BUILDPACK);
    let src = tmp.path().join("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("package.json"), "{\"name\": \"app\"}\n").unwrap();
    let base = tmp.path().join("busybox.tar");
    busybox_base_image(&base);
    let build = || -> Value {
        let out = support::kiln_cmd()
            .args([
                "build",
                src.to_str().unwrap(),
                "--output",
                tmp.path().join("image").to_str().unwrap(),
                "--format",
                "oci-dir",
                "--run-image",
                &format!("oci-archive:{}", base.display()),
                "--buildpacks",
                bps.to_str().unwrap(),
                "--cache-dir",
                tmp.path().join("cache").to_str().unwrap(),
                "--json",
            ])
            .env("KILN_MIRROR_NODE", &mirror_base)
            .env("KILN_RUNTIME_PROVIDERS", "download")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let first = build();
    let runtime = &first["runtimes"][0];
    assert_eq!(runtime["provider"], "download");
    assert_eq!(runtime["version"], "22.3.0", "newest LTS: {runtime}");
    assert_eq!(runtime["requirement"], "lts");
    let archive_url = runtime["source"].as_str().unwrap();
    assert!(archive_url.starts_with(&mirror_base), "{archive_url}");
    let served = &mirror.files[archive_url.trim_start_matches(&format!("{mirror_base}/"))];
    assert_eq!(runtime["sha256"], mirror::sha256_hex(served));

    // The step ran the downloaded node; the image carries it and puts it first on PATH.
    let layout = tmp.path().join("image");
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let config: Value = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let path = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.as_str().unwrap().strip_prefix("PATH="))
        .unwrap()
        .to_owned();
    assert!(path.starts_with("/layers/node-app/runtime/bin:"), "{path}");
    let names: Vec<&str> = first["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "node-app/runtime", "app"]);
    let app_layer =
        fs::File::open(blob(manifest["layers"][2]["digest"].as_str().unwrap())).unwrap();
    let mut app = tar::Archive::new(flate2::read::GzDecoder::new(app_layer));
    let files: std::collections::BTreeMap<String, String> = app
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type().is_file())
        .map(|mut e| {
            let path = e.path().unwrap().display().to_string();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            (path, s)
        })
        .collect();
    let file = |name: &str| {
        files
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, s)| s.as_str())
    };
    assert_eq!(file("node-version.txt"), Some("v22.3.0\n"));
    // The download was unpacked into the cache; the sandboxed step saw it at its image path
    // (the runtime layer's), never at the host's cache path.
    let runtime_dir = tmp.path().join(format!(
        "cache/runtimes/node/22.3.0-{}",
        mirror::NODE_PLATFORM
    ));
    assert!(runtime_dir.join("bin/node").is_file(), "{runtime_dir:?}");
    assert_eq!(
        file("node-path.txt"),
        Some("/layers/node-app/runtime/bin/node\n")
    );
    assert_eq!(file("nodedir.txt"), Some("/layers/node-app/runtime\n"));
    let host = tmp.path().display().to_string();
    for (path, body) in &files {
        assert!(
            !body.contains(&host),
            "{path} names the host path {host}: {body}"
        );
    }

    // The mirror goes away: the next build uses the cached, verified runtime, same image.
    server.stop();
    let second = build();
    assert_eq!(second["runtimes"][0]["version"], "22.3.0");
    assert_eq!(second["manifest_digest"], first["manifest_digest"]);
    assert_eq!(second["layers"][1]["reused"], true);
}
