//! Layer semantics of the buildpack format, checked in the written image: `capture` moves app
//! paths into their own layer, `cache` layers persist between builds but never ship, and each
//! layer's tar holds exactly what it should.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;
use support::*;

const BUILDPACK: &str = r#"
[buildpack]
id = "layered"
version = "1.0.0"

[detect]
all = ["Procfile"]

[[build.steps]]
name = "vendor"
command = "sh"
args = ["-c", """
mkdir -p vendor && echo dependency > vendor/lib.txt
n=$(cat ${layer:counter}/n 2>/dev/null || echo 0)
echo $((n + 1)) > ${layer:counter}/n
cp ${layer:counter}/n ${layer:out}/builds
"""]

[[layers]]
name = "deps"
launch = true
capture = ["vendor"]

[[layers]]
name = "out"
launch = true

[[layers]]
name = "counter"
cache = true

[[processes]]
type = "web"
command = "true"
"#;

fn build(src: &Path, bps: &Path, cache: &Path, out: &Path) -> Value {
    let stdout = kiln_ok(&[
        "build",
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--format",
        "oci-dir",
        "--buildpacks",
        bps.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--json",
        // `./run` is a placeholder: these images are never started.
        "--no-verify",
    ]);
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn capture_moves_paths_out_of_the_app_layer_and_cache_layers_persist_without_shipping() {
    let tmp = tempfile::tempdir().unwrap();
    let bps = buildpacks_dir(tmp.path(), "layered", BUILDPACK);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("Procfile"), "web: ./run\n").unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("image");

    let first = build(&src, &bps, &cache, &out);
    let names: Vec<&str> = first["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["layered/deps", "layered/out", "app"]);
    let layers = layer_contents(&out);
    assert_eq!(
        layers[0],
        BTreeMap::from([
            ("workspace/".into(), "<dir>".into()),
            ("workspace/vendor/".into(), "<dir>".into()),
            ("workspace/vendor/lib.txt".into(), "dependency\n".into()),
        ])
    );
    assert_eq!(layers[1]["layers/layered/out/builds"], "1\n");
    assert!(
        layers[1].contains_key("layers/"),
        "explicit parent directories"
    );
    assert!(
        !layers[2].keys().any(|p| p.contains("vendor")),
        "captured path left in app layer"
    );
    assert_eq!(layers[2]["workspace/Procfile"], "web: ./run\n");
    assert!(!layers
        .iter()
        .flat_map(|l| l.keys())
        .any(|p| p.contains("counter")));

    // The cache layer survived: the step saw its previous count. Only `out` changed.
    let second = build(&src, &bps, &cache, &out);
    assert_eq!(layer_contents(&out)[1]["layers/layered/out/builds"], "2\n");
    let reused: Vec<bool> = second["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reused"].as_bool().unwrap())
        .collect();
    assert_eq!(reused, [true, false, true]);
}
