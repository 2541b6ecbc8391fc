//! Framework conventions end to end (issue 12): an app with no Procfile or start command starts
//! the way its framework expects, on `$PORT`, and answers HTTP under runc.

mod support;

use support::run_image::{build_on_stack_ok, require_debian_mirror, run_once};
use support::*;

/// Builds `name` on Kiln's stack and starts the image under runc with `PORT` set: the build
/// report, the running container and its port.
fn serve_fixture(name: &str) -> (serde_json::Value, Container, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("app.tar"));
    let report = build_on_stack_ok(&fixture(name), &cache, &out);
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.display()),
        &[("PORT", &port.to_string())],
    );
    (report, container, port)
}

/// FastAPI: uvicorn (a declared dependency) serves `main:app` on `$PORT`, bound to all
/// addresses, on Kiln's glibc stack.
#[test]
fn fastapi_app_starts_under_uvicorn_on_port() {
    if !require_tools(&["python3", "skopeo", "umoci", "runc"]) {
        return;
    }
    if !require_debian_mirror() {
        return;
    }
    let (report, container, port) = serve_fixture("python-fastapi");
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!([
            "/bin/sh",
            "-c",
            "exec python -m uvicorn main:app --host 0.0.0.0 --port ${PORT:-8080}"
        ])
    );
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, r#"{"hello":"kiln","served_by":"fastapi"}"#);
}

/// `kiln.toml` `[build] build` / `KILN_BUILD_CMD` add (or replace) the main buildpack's build
/// step, and `KILN_START_CMD` the start command, each shown with its source.
#[test]
fn user_build_and_start_commands_replace_the_planned_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("procfile-static", tmp.path());
    std::fs::write(
        src.join("kiln.toml"),
        "[build]\nbuild = \"echo from-kiln-toml > built.txt\"\n",
    )
    .unwrap();
    let out = tmp.path().join("image");
    let build = |env: &[(&str, &str)]| -> serde_json::Value {
        let output = kiln_cmd()
            .args([
                "build",
                src.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ])
            // The image is only read here, never run (its `httpd` would come from a run image).
            .args([
                "--format",
                "oci-dir",
                "--json",
                "--no-verify",
                "--cache-dir",
            ])
            .arg(tmp.path().join("cache"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let built_txt = || -> String {
        layer_contents(&out)
            .pop()
            .and_then(|app| app.get("workspace/built.txt").cloned())
            .expect("built.txt in the app layer")
    };
    let from_toml = build(&[]);
    assert!(step_outcome(&from_toml, "build").0);
    assert_eq!(built_txt(), "from-kiln-toml\n");

    let from_env = build(&[
        ("KILN_BUILD_CMD", "echo from-env > built.txt"),
        ("KILN_START_CMD", "httpd -f -p 9000"),
    ]);
    assert_eq!(built_txt(), "from-env\n");
    assert_eq!(
        from_env["processes"][0]["command"],
        serde_json::json!(["httpd", "-f", "-p", "9000"])
    );
}

/// `packageManager: pnpm@10.12.1` installs with exactly that pnpm, fetched through npx from the
/// npm registry, whatever pnpm the build host has (if any).
#[test]
fn the_pnpm_version_the_project_pins_is_the_one_that_installs() {
    if !require_tools(&["node", "npm", "npx"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("busybox.tar");
    busybox_base_image(&base);
    let out = tmp.path().join("image");
    let output = kiln_cmd()
        .args(["build", fixture("node-pnpm10").to_str().unwrap()])
        .args([
            "--output",
            out.to_str().unwrap(),
            "--format",
            "oci-dir",
            "--json",
        ])
        .args(["--run-image", &format!("oci-archive:{}", base.display())])
        // The busybox base has no glibc for Node: only node_modules is checked, nothing runs.
        .arg("--no-verify")
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .env("KILN_RUNTIME_PROVIDERS", "host")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let modules = layer_contents(&out)
        .into_iter()
        .find_map(|layer| layer.get("workspace/node_modules/.modules.yaml").cloned())
        .expect("node_modules/.modules.yaml in the image");
    assert!(
        modules.contains("packageManager: pnpm@10.12.1"),
        "{modules}"
    );
}

/// A pnpm workspace built with Kiln's defaults: the root start script (`pnpm --filter web
/// start`) names `apps/web`, installed at the root so its `workspace:*` dependency is linked,
/// and started from its own directory (it reads `banner.txt` relative to it) without pnpm in
/// the image.
#[test]
fn pnpm_workspace_app_named_by_the_root_start_script_starts_from_its_directory() {
    if !require_tools(&["node", "npm", "npx", "skopeo", "umoci", "runc"]) {
        return;
    }
    if !require_debian_mirror() {
        return;
    }
    let (report, container, port) = serve_fixture("node-pnpm-workspace");
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!([
            "/bin/sh",
            "-c",
            "cd /workspace/apps/web && exec node server.js"
        ])
    );
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(
        body,
        "hello kiln from the greeting workspace package (apps/web, 60000 ms)\n"
    );
}

/// A `#!/usr/bin/env bash` start.sh runs through bash (its `#!` line), not `/bin/sh` (dash,
/// which cannot run its syntax), with bash in the image from `[packages] run`; the script is
/// not executable, which running it through its interpreter does not need.
#[test]
fn a_bash_start_script_runs_through_its_shebang_interpreter() {
    if !require_tools(&["skopeo", "umoci", "runc"]) {
        return;
    }
    if !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("app.tar"));
    let report = build_on_stack_ok(&fixture("shell-bash"), &cache, &out);
    let argv: Vec<&str> = report["processes"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(argv, ["/usr/bin/env", "bash", "/workspace/start.sh"]);
    let printed = run_once(&format!("oci-archive:{}", out.display()), &argv, &[]);
    assert_eq!(printed, "hello from bash 5: KILN");
}
