//! Hermetic builds: with nothing of the host's toolchains in reach (an empty `PATH`), each
//! language builds in a Debian build root inside the sandbox and its image answers HTTP under
//! runc. Needs the Debian mirror, the npm registry (Node), skopeo, umoci and runc.

mod support;

use std::path::Path;

use support::run_image::{kiln_hermetic, require_debian_mirror};
use support::{fixture, free_port, require_tools, Container};

/// Builds `fixture` hermetically (`--isolation sandbox --build-root debian`, no `--run-image`),
/// starts it with `PORT` set and returns the report, the container and the port.
fn serve_hermetic(name: &str, dir: &Path) -> (serde_json::Value, Container, u16) {
    let out = dir.join("app.tar");
    let output = kiln_hermetic(&dir.join("home"))
        .args(["build", fixture(name).to_str().unwrap(), "--output"])
        .arg(&out)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["--isolation", "sandbox", "--build-root", "debian", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.display()),
        &[("PORT", &port.to_string())],
    );
    (report, container, port)
}

fn ready() -> bool {
    require_tools(&["skopeo", "umoci", "runc"]) && require_debian_mirror()
}

/// The build root named in the report holds what was asked for; no host path of the cache or
/// working copy is in any file of the image.
fn assert_hermetic(report: &serde_json::Value, requested: &[&str], dir: &Path, rootfs: &Path) {
    let root = &report["build_root"];
    assert_eq!(root["distro"], "debian-13", "{report:#}");
    for package in requested {
        assert!(
            root["requested"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == package),
            "{package} not in {root}"
        );
    }
    let fixtures = fixture("");
    let needles = [dir.to_str().unwrap(), fixtures.to_str().unwrap()];
    for entry in walkdir::WalkDir::new(rootfs).into_iter().flatten() {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            for needle in needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} holds the host path {needle}",
                    entry.path().display(),
                );
            }
        }
    }
}

#[test]
fn ruby_app_builds_with_bundler_from_the_build_root_and_runs_on_ruby_from_the_stack() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("ruby-plain", dir.path());
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert!(body.starts_with("hello from ruby 3."), "{body}");
    assert!(body.ends_with(": /kiln\n"), "{body}");
    assert_hermetic(
        &report,
        &["ruby", "ruby-bundler", "ruby-dev"],
        dir.path(),
        &container.rootfs(),
    );
}

#[test]
fn php_app_is_served_by_php_from_the_stack() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("php-hello", dir.path());
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert!(body.starts_with("hello from php 8."), "{body}");
    assert_hermetic(&report, &["php-cli"], dir.path(), &container.rootfs());
}

#[test]
fn go_app_builds_with_go_from_the_build_root() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("go-http", dir.path());
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from kiln go-http at /\n");
    assert_hermetic(&report, &["golang-go"], dir.path(), &container.rootfs());
}

#[test]
fn node_app_installs_with_npm_from_the_registry_inside_the_build_root() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("node-express", dir.path());
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from kiln node-express at /\n");
    assert_hermetic(&report, &[], dir.path(), &container.rootfs());
}
