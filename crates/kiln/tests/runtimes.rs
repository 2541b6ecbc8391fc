//! Real builds with provided runtimes: Node.js and Python apps built on Kiln's glibc stack,
//! run under runc and asked over HTTP; rebuilds reuse what did not change and say why.

mod support;

use std::fs;

use serde_json::Value;
use support::run_image::{
    build_on_stack as build, build_on_stack_ok as build_ok, require_debian_mirror,
};
use support::*;

fn layer<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name} in {report}"))
}

#[test]
fn node_express_runs_on_the_glibc_stack_and_rebuilds_only_what_changed() {
    if !require_tools(&["node", "npm", "skopeo", "umoci", "runc"]) {
        return;
    }
    if !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("node-express", tmp.path());
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("app.tar"));

    let cold = build_ok(&src, &cache, &out);
    let names: Vec<&str> = cold["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    // Three stack layers (static, glibc: chosen because Node needs glibc, and the packages
    // the nodejs buildpack asks for: libatomic1) under the app's.
    assert_eq!(
        names,
        [
            "base",
            "base",
            "base",
            "nodejs/runtime",
            "nodejs/modules",
            "app"
        ]
    );
    assert_eq!(cold["stack"]["flavour"], "glibc");
    let packages = cold["stack"]["packages"].as_array().unwrap();
    assert!(
        packages
            .iter()
            .any(|p| p["name"] == "libatomic1" && p["layer"] == "packages"),
        "{packages:?}"
    );
    assert_eq!(cold["runtimes"][0]["provider"], "host");
    assert_eq!(cold["runtimes"][0]["from"], "package.json engines.node");

    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.display()),
        &[("PORT", &port.to_string())],
    );
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "hello from kiln node-express at /kiln\n");
    // Production dependencies only: the devDependency left-pad stays out of the image.
    let modules = container.rootfs().join("workspace/node_modules");
    assert!(modules.join("express/package.json").is_file());
    assert!(
        !modules.join("left-pad").exists(),
        "devDependencies shipped"
    );
    drop(container);

    // Nothing changed: npm ci is skipped, every layer reused, same digest.
    let noop = build_ok(&src, &cache, &out);
    assert_eq!(noop["manifest_digest"], cold["manifest_digest"]);
    assert_eq!(
        step_outcome(&noop, "install"),
        (
            false,
            "inputs unchanged (npm-shrinkwrap.json, package-lock.json, package.json)".into()
        )
    );
    assert!(noop["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["reused"] == true));

    // App code changed: only the app layer moves.
    let server = src.join("server.js");
    let code = fs::read_to_string(&server).unwrap();
    fs::write(&server, code.replace("hello from kiln", "hi from kiln")).unwrap();
    let edited = build_ok(&src, &cache, &out);
    for name in ["base", "nodejs/runtime", "nodejs/modules"] {
        assert_eq!(
            layer(&edited, name)["digest"],
            layer(&cold, name)["digest"],
            "{name}"
        );
        assert_eq!(layer(&edited, name)["reused"], true, "{name}");
    }
    assert_ne!(
        layer(&edited, "app")["digest"],
        layer(&cold, "app")["digest"]
    );
    assert_eq!(
        layer(&edited, "app")["reason"],
        "1 file changed under workspace/"
    );
    assert!(!step_outcome(&edited, "install").0);

    // A broken lockfile: npm's own error is shown, the build fails, and the cache survives.
    let lock = src.join("package-lock.json");
    let good_lock = fs::read_to_string(&lock).unwrap();
    let broken = good_lock.replacen(
        "\"integrity\": \"sha512-",
        "\"integrity\": \"sha512-AAAA",
        1,
    );
    assert_ne!(broken, good_lock);
    fs::write(&lock, broken).unwrap();
    let failed = build(&src, &cache, &out);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("step nodejs/install failed"), "{stderr}");
    assert!(
        stderr.contains("npm error"),
        "npm's own error must be shown: {stderr}"
    );
    fs::write(&lock, good_lock).unwrap();
    let back = build_ok(&src, &cache, &out);
    assert!(
        !step_outcome(&back, "install").0,
        "the previous cache survived the failure"
    );
    assert_eq!(back["manifest_digest"], edited["manifest_digest"]);
}

#[test]
fn python_flask_runs_under_gunicorn_on_the_glibc_stack() {
    if !require_tools(&["python3", "skopeo", "umoci", "runc"]) {
        return;
    }
    if !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("python-flask", tmp.path());
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("app.tar"));
    let cold = build_ok(&src, &cache, &out);
    assert_eq!(cold["runtimes"][0]["from"], ".python-version");
    assert_eq!(
        cold["processes"][0]["command"],
        serde_json::json!(["python", "-m", "gunicorn", "app:app"])
    );
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.display()),
        &[("PORT", &port.to_string())],
    );
    let (status, body) = container.http_get(port, "/py");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from kiln python-flask at /py\n");
    drop(container);

    let noop = build_ok(&src, &cache, &out);
    assert_eq!(noop["manifest_digest"], cold["manifest_digest"]);
    assert!(!step_outcome(&noop, "install").0);
}

#[test]
fn a_glibc_runtime_on_scratch_is_refused_before_any_step_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln(&[
        "build",
        fixture("node-express").to_str().unwrap(),
        "--output",
        tmp.path().join("x.tar").to_str().unwrap(),
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node apps need a glibc run image"),
        "{stderr}"
    );
    assert!(!stderr.contains("[nodejs/install]"), "{stderr}");
}

#[test]
fn rust_hello_runs_on_the_static_stack_and_skips_cargo_when_unchanged() {
    if !require_tools(&["skopeo", "umoci", "runc"]) {
        return;
    }
    if !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("rust-hello", tmp.path());
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("app.tar"));
    let cold = build_ok(&src, &cache, &out);
    // A static binary needs no glibc from the base.
    assert_eq!(cold["stack"]["flavour"], "static");
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.display()),
        &[("PORT", &port.to_string())],
    );
    assert_eq!(
        container.http_get(port, "/deb").1,
        "hello from kiln rust-hello at /deb\n"
    );
    drop(container);
    let noop = build_ok(&src, &cache, &out);
    assert_eq!(noop["manifest_digest"], cold["manifest_digest"]);
    assert!(
        !step_outcome(&noop, "install").0,
        "unchanged sources skip cargo"
    );
}

/// Builds a fixture as an oci-dir on a busybox base with the host's runtimes (a glibc runtime
/// only needs a non-scratch base to build; nothing runs it here) and returns the report and the
/// entry paths of its layer `layer`.
fn build_and_list_layer(fixture_name: &str, layer: &str) -> (serde_json::Value, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("busybox.tar");
    busybox_base_image(&base);
    let layout = tmp.path().join("image");
    let out = kiln_cmd()
        .args([
            "build",
            fixture(fixture_name).to_str().unwrap(),
            "--output",
            layout.to_str().unwrap(),
            "--format",
            "oci-dir",
            "--run-image",
            &format!("oci-archive:{}", base.display()),
            "--cache-dir",
            tmp.path().join("cache").to_str().unwrap(),
            // Yarn 4 through corepack, from the machine's npm registry (repo.yarnpkg.com is
            // unreachable).
            "--env",
            &format!(
                "COREPACK_NPM_REGISTRY={}",
                // corepack appends `/@yarnpkg/…` itself: no trailing slash.
                npm_config("registry")
                    .expect("npm names a registry")
                    .trim_end_matches('/')
            ),
            "--json",
            // The busybox base has no glibc, so the runtime cannot start there: not run here.
            "--no-verify",
        ])
        .env("KILN_RUNTIME_PROVIDERS", "host")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{fixture_name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == layer)
        .unwrap_or_else(|| panic!("no layer {layer} in {report}"))["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let file = fs::File::open(layout.join("blobs/sha256").join(digest)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let paths = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    (report, paths)
}

#[test]
fn pnpm_yarn_and_bun_apps_ship_production_dependencies_only() {
    for (fixture_name, tool) in [
        ("node-pnpm", "pnpm"),
        ("node-yarn", "yarn"),
        ("node-yarn-berry", "npm"),
        ("node-bun", "bun"),
    ] {
        if !require_tools(&["node", tool]) {
            continue;
        }
        let (_, paths) = build_and_list_layer(fixture_name, "nodejs/modules");
        assert!(
            paths
                .iter()
                .any(|p| p.ends_with("node_modules/ms") || p.contains("node_modules/ms/")),
            "{fixture_name}: production dependency missing: {paths:?}"
        );
        assert!(
            !paths.iter().any(|p| p.contains("left-pad")),
            "{fixture_name}: devDependency shipped: {paths:?}"
        );
    }
}

#[test]
fn uv_and_poetry_projects_install_the_versions_their_lockfiles_pin() {
    // Both pyproject.toml files allow six 1.17; both lockfiles pin 1.16.0, and that is what ships.
    for (fixture_name, tool) in [("python-uv", "python3"), ("python-poetry", "python3")] {
        if !require_tools(&["python3", tool]) {
            continue;
        }
        let (report, paths) = build_and_list_layer(fixture_name, "python/deps");
        assert!(step_outcome(&report, "export").0, "{fixture_name}");
        assert!(
            paths.iter().any(|p| p.contains("six-1.16.0.dist-info")),
            "{fixture_name}: {paths:?}"
        );
        assert!(
            !paths.iter().any(|p| p.contains("six-1.17")),
            "{fixture_name}: {paths:?}"
        );
    }
}
