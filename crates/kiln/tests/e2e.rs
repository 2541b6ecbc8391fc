//! End to end: the `kiln` binary builds fixtures into images that skopeo accepts and runc runs.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

fn build_json(args: &[&str]) -> Value {
    let stdout = kiln_ok(&[&["build", "--json"], args].concat());
    serde_json::from_str(&stdout).expect("--json prints one JSON object")
}

#[test]
fn go_http_image_is_accepted_by_skopeo_and_answers_http_under_runc() {
    if !require_tools(&["go", "skopeo", "umoci", "runc"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("go-http.tar");
    let cache = tmp.path().join("cache");
    let src = fixture("go-http");
    let report = build_json(&[
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "kiln-test/go-http:1",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    let manifest_digest = report["manifest_digest"].as_str().unwrap();
    let names: Vec<&str> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["go/bin", "app"]);
    assert_eq!(report["processes"][0]["type"], "web");
    assert_eq!(report["processes"][0]["command"][0], "/layers/go/bin/app");

    let archive = format!("oci-archive:{}", out.display());
    let inspected: Value =
        serde_json::from_str(&run_ok(Command::new("skopeo").args(["inspect", &archive]))).unwrap();
    assert_eq!(inspected["Digest"], manifest_digest);
    assert!(inspected["Labels"]["dev.kiln.metadata"].is_string());

    let port = free_port();
    let container = Container::start(&archive, &[("PORT", &port.to_string())]);
    let (status, body) = container.http_get(port, "/ping");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "hello from kiln go-http at /ping\n");
    let rootfs = container.rootfs();
    assert!(rootfs.join("workspace/main.go").is_file());
    assert!(
        !rootfs.join("workspace/NOTES.md").exists(),
        ".dockerignore'd file shipped"
    );
    drop(container);

    // The same file read through Docker's manifest.json (docker-archive transport).
    let port = free_port();
    let docker = format!("docker-archive:{}", out.display());
    let container = Container::start(&docker, &[("PORT", &port.to_string())]);
    assert_eq!(
        container.http_get(port, "/").1,
        "hello from kiln go-http at /\n"
    );

    // A rebuild with nothing changed reuses every layer and gives the same digest.
    let again = build_json(&[
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "kiln-test/go-http:1",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(again["manifest_digest"], manifest_digest);
    assert_eq!(again["steps"][0]["name"], "compile");
    assert_eq!(
        again["steps"][0]["ran"], false,
        "unchanged sources skip go build"
    );
    assert!(again["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["reused"] == true));
}

#[test]
fn procfile_app_runs_its_web_process_on_a_base_read_from_an_oci_archive() {
    if !require_tools(&["skopeo", "umoci", "runc", "busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("busybox.tar");
    busybox_base_image(&base);
    let out = tmp.path().join("site.tar");
    let run_image = format!("oci-archive:{}", base.display());
    let report = build_json(&[
        fixture("procfile-static").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--run-image",
        &run_image,
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers[0]["name"], "base");
    assert_eq!(layers[0]["reused"], true);
    assert_eq!(layers.last().unwrap()["name"], "app");
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!([
            "/bin/sh",
            "-c",
            "httpd -f -v -p \"${PORT:-8080}\" -h /workspace/public"
        ])
    );

    let inspect: Value =
        serde_json::from_str(&kiln_ok(&["inspect", out.to_str().unwrap(), "--json"])).unwrap();
    // The base's own name from its index, never its path on this machine.
    assert_eq!(inspect["base"]["name"], "docker.io/kiln-test/busybox:1");
    assert_eq!(inspect["base"]["layer_count"], 1);
    assert_eq!(inspect["layers"][0]["made_by"], "base");
    assert_eq!(inspect["layers"][1]["made_by"], "app");
    assert!(inspect["env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("PATH=/bin")));

    serve_procfile_static(&out);
}

/// Copies a fixture to a fresh directory, giving every file the mtime `stamp` (`touch -d`).
fn copy_with_mtime(name: &str, dest: &Path, stamp: &str) {
    run_ok(Command::new("cp").args([
        "-r",
        fixture(name).to_str().unwrap(),
        dest.to_str().unwrap(),
    ]));
    run_ok(Command::new("find").args([
        dest.to_str().unwrap(),
        "-exec",
        "touch",
        "-h",
        "-d",
        stamp,
        "{}",
        "+",
    ]));
}

fn manifest_digest_of(src: &Path, cache: &Path, out: &Path) -> String {
    build_json(&[
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--tag",
        "repro:1",
        // procfile-static's httpd is not on scratch: only the bytes are compared here.
        "--no-verify",
    ])["manifest_digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn assert_reproducible(fixture_name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    copy_with_mtime(fixture_name, &a, "2001-02-03 04:05:06");
    copy_with_mtime(fixture_name, &b, "2022-12-31 23:59:59");
    let out_a = tmp.path().join("a.tar");
    let out_b = tmp.path().join("b.tar");
    let digest_a = manifest_digest_of(&a, &tmp.path().join("cache-a"), &out_a);
    let digest_b = manifest_digest_of(&b, &tmp.path().join("cache-b"), &out_b);
    assert_eq!(digest_a, digest_b);
    assert_eq!(
        std::fs::read(&out_a).unwrap(),
        std::fs::read(&out_b).unwrap(),
        "archives differ byte-wise"
    );
}

#[test]
fn same_procfile_app_from_two_directories_with_different_mtimes_gives_the_same_digest() {
    assert_reproducible("procfile-static");
}

#[test]
fn same_go_app_from_two_directories_with_different_mtimes_gives_the_same_digest() {
    if !require_tools(&["go"]) {
        return;
    }
    assert_reproducible("go-http");
}

#[test]
fn oci_dir_output_is_an_oci_layout_skopeo_reads() {
    if !require_tools(&["skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("layout");
    let report = build_json(&[
        fixture("procfile-static").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--format",
        "oci-dir",
        "--tag",
        "site:2",
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
        // procfile-static's httpd is not on scratch: only the layout is checked here.
        "--no-verify",
    ]);
    assert_eq!(report["format"], "oci-dir");
    assert_eq!(
        std::fs::read_to_string(out.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let inspected: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo").args(["inspect", &format!("oci:{}:2", out.display())]),
    ))
    .unwrap();
    assert_eq!(inspected["Digest"], report["manifest_digest"]);
}

/// The README's example: a static Rust binary on scratch, built with only the Rust toolchain.
#[test]
fn readme_example_rust_hello_runs_on_scratch() {
    rust_app_runs_on_scratch(
        "rust-hello",
        "rust-hello",
        "/readme",
        "hello from kiln rust-hello at /readme\n",
    );
}

/// A virtual workspace: the only member with a binary is built, and its proc-macro dependency
/// builds for the host although the binary is linked statically (`--target`).
#[test]
fn rust_workspace_with_a_proc_macro_builds_its_binary_member() {
    rust_app_runs_on_scratch(
        "rust-workspace-macro",
        "server",
        "/ws",
        "hello from the kiln workspace at /ws\n",
    );
}

/// Builds a Rust fixture on scratch and checks what ships (only `bin/<bin>`) and what it answers.
fn rust_app_runs_on_scratch(fixture_name: &str, bin: &str, path: &str, expected: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("app.tar");
    let report = build_json(&[
        fixture(fixture_name).to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--tag",
        &format!("{fixture_name}:latest"),
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!([format!("/layers/rust/bin/bin/{bin}")])
    );
    let names: Vec<&str> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rust/bin", "app"]);
    if !require_tools(&["skopeo", "umoci", "runc"]) {
        return;
    }
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.display()),
        &[("PORT", &port.to_string())],
    );
    let (status, body) = container.http_get(port, path);
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, expected);
    // Only the binary ships from the build: no .crates.toml bookkeeping, no target dir.
    let layer = container.rootfs().join("layers/rust/bin");
    let mut shipped: Vec<String> = walk(&layer);
    shipped.sort();
    assert_eq!(shipped, ["bin".to_owned(), format!("bin/{bin}")]);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            out.extend(
                walk(&entry.path())
                    .into_iter()
                    .map(|p| format!("{name}/{p}")),
            );
        }
        out.push(name);
    }
    out
}
