//! What a built image's config tells a runtime, read back from the written archive: the `PORT`
//! it listens on and exposes, and the project's runtime `[env]`. Cheap: the procfile-static
//! fixture on a busybox base, no step, no verify run.

mod support;

use std::path::Path;
use std::process::Command;

use kiln_oci::source::{load_image, ImageSource};
use kiln_oci::spec::RuntimeConfig;
use kiln_oci::store::BlobStore;
use support::*;

/// Builds the procfile-static fixture (copied to `tmp/app`, with `kiln_toml` as its `kiln.toml`
/// when given) on a busybox base with `extra` arguments and returns the image's runtime config.
fn build_config(tmp: &Path, kiln_toml: Option<&str>, extra: &[&str]) -> RuntimeConfig {
    let app = tmp.join("app");
    run_ok(Command::new("cp").args([
        "-r",
        fixture("procfile-static").to_str().unwrap(),
        app.to_str().unwrap(),
    ]));
    if let Some(text) = kiln_toml {
        std::fs::write(app.join("kiln.toml"), text).unwrap();
    }
    let base = tmp.join("busybox.tar");
    busybox_base_image(&base);
    let out = tmp.join("out.tar");
    let run_image = format!("oci-archive:{}", base.display());
    let args = [
        "build",
        app.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--run-image",
        &run_image,
        "--cache-dir",
        tmp.join("cache").to_str().unwrap(),
        "--no-verify",
    ];
    kiln_ok(&[&args[..], extra].concat());
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let image = load_image(
        &ImageSource::OciArchive {
            path: out,
            reference: None,
        },
        &store,
    )
    .unwrap();
    image.config.config
}

fn exposed(config: &RuntimeConfig) -> Vec<&str> {
    config.exposed_ports.keys().map(String::as_str).collect()
}

#[test]
fn image_listens_on_port_8080_by_default_and_exposes_it() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = build_config(tmp.path(), None, &[]);
    assert_eq!(config.env_var("PORT"), Some("8080"));
    assert_eq!(exposed(&config), ["8080/tcp"]);
}

#[test]
fn kiln_toml_port_and_env_reach_the_image_config_but_build_env_does_not() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let kiln_toml = "[image]\nport = 3000\n\n[env]\nGREETING = \"hello\"\n";
    let config = build_config(tmp.path(), Some(kiln_toml), &["--env", "BUILD_ONLY=secret"]);
    assert_eq!(config.env_var("PORT"), Some("3000"));
    assert_eq!(exposed(&config), ["3000/tcp"]);
    assert_eq!(config.env_var("GREETING"), Some("hello"));
    assert_eq!(config.env_var("BUILD_ONLY"), None);
    // The base's own env is kept under the project's.
    assert_eq!(config.env_var("PATH"), Some("/bin"));
}
