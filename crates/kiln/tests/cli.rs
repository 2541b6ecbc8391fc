//! The command line's interface contract: `--json` objects (docs/json-output.md), help text,
//! `kiln version`, shell completions. Cheap: every build here is on scratch with no runtime.

mod support;

use std::path::Path;

use support::*;

fn json_stdout(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn build_json(src: &Path, tmp: &Path, extra: &[&str]) -> std::process::Output {
    build_to(src, &tmp.join("out.tar"), &[&["--json"], extra].concat())
}

#[test]
fn json_failure_of_a_step_names_kind_step_exit_code_and_output_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let bps = buildpacks_dir(tmp.path(), "fails", FAILING_STEP_BUILDPACK);
    let out = build_json(
        &fixture("procfile-static"),
        tmp.path(),
        &["--buildpacks", bps.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let json = json_stdout(&out);
    assert_eq!(json["schema_version"], 1, "{json}");
    let error = &json["error"];
    assert_eq!(error["kind"], "step_failed", "{json}");
    assert_eq!(error["step"], "fails/explode", "{json}");
    assert_eq!(error["exit_code"], 3, "{json}");
    let tail: Vec<&str> = error["output_tail"]
        .as_array()
        .unwrap_or_else(|| panic!("output_tail is a list: {json}"))
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect();
    assert!(
        tail.iter().any(|l| l.contains("error: widget missing")),
        "{json}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{json}"
    );
}

#[test]
fn json_failure_of_a_missing_source_is_a_source_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = build_json(&tmp.path().join("does-not-exist"), tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let json = json_stdout(&out);
    assert_eq!(json["schema_version"], 1, "{json}");
    assert_eq!(json["error"]["kind"], "source", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does-not-exist"),
        "{json}"
    );
    assert!(json["error"].get("step").is_none(), "{json}");
    assert!(json["error"].get("exit_code").is_none(), "{json}");
}

#[test]
fn every_json_output_carries_schema_version() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("procfile-static");
    let src = src.to_str().unwrap();
    let cache = tmp.path().join("out.cache");
    let cache = cache.to_str().unwrap();
    let archive = tmp.path().join("out.tar");
    let out = build_json(Path::new(src), tmp.path(), &["--no-verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outputs = [
        ("build", json_stdout(&out)),
        (
            "detect",
            serde_json::from_str(&kiln_ok(&["detect", src, "--json"])).unwrap(),
        ),
        (
            "plan",
            serde_json::from_str(&kiln_ok(&["plan", src, "--json"])).unwrap(),
        ),
        (
            "inspect",
            serde_json::from_str(&kiln_ok(&["inspect", archive.to_str().unwrap(), "--json"]))
                .unwrap(),
        ),
        (
            "cache ls",
            serde_json::from_str(&kiln_ok(&["cache", "ls", "--cache-dir", cache, "--json"]))
                .unwrap(),
        ),
        (
            "cache prune",
            serde_json::from_str(&kiln_ok(&[
                "cache",
                "prune",
                "--cache-dir",
                cache,
                "--older-than",
                "7d",
                "--json",
            ]))
            .unwrap(),
        ),
    ];
    for (command, json) in outputs {
        let json: serde_json::Value = json;
        assert_eq!(json["schema_version"], 1, "kiln {command} --json: {json}");
    }
}

/// `kiln build --run-image NAME --json` run in `dir`, returning the report.
fn build_on(dir: &Path, run_image: &str) -> serde_json::Value {
    let out = kiln_cmd()
        .current_dir(dir)
        .args([
            "build",
            fixture("procfile-static").to_str().unwrap(),
            "--output",
            "app.tar",
            "--cache-dir",
            "cache",
            "--no-verify",
            "--json",
            "--run-image",
            run_image,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--run-image {run_image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_stdout(&out)
}

#[test]
fn a_run_image_without_transport_is_a_local_archive_when_the_file_exists() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_base_image(
        &tmp.path().join("base.tar"),
        "7",
        None,
        &host_architecture(),
    );
    for name in ["base.tar", "./base.tar"] {
        let report = build_on(tmp.path(), name);
        // Two layers: the base's, then the app's; a registry lookup would have failed.
        assert_eq!(report["layers"][0]["name"], "base", "{name}: {report}");
        assert!(report.get("pull").is_none(), "{name}: {report}");
    }
    let inspected = kiln_ok(&["inspect", tmp.path().join("base.tar").to_str().unwrap()]);
    assert!(inspected.contains("layers:"), "{inspected}");
}

#[test]
fn a_docker_archive_without_transport_is_sniffed() {
    if !require_tools(&["skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let oci = tmp.path().join("base-oci.tar");
    tiny_base_image(&oci, "7", None, &host_architecture());
    run_ok(std::process::Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci-archive:{}", oci.display()),
        &format!("docker-archive:{}/docker.tar", tmp.path().display()),
    ]));
    let report = build_on(tmp.path(), "./docker.tar");
    assert_eq!(report["layers"][0]["name"], "base", "{report}");
}

#[test]
fn inspect_of_a_missing_archive_says_the_file_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.tar");
    let out = kiln(&["inspect", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.tar: no such file or directory"),
        "{err}"
    );
    assert!(!err.contains("registry"), "{err}");
    let out = kiln_cmd()
        .current_dir(tmp.path())
        .args(["inspect", "base.tar"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("base.tar: no such file or directory"), "{err}");
}

/// Another tool's project file where `kiln.toml` is silent: `nixpacks.toml` `start.cmd` is the
/// image's web process (over the Procfile, as a user's start command is), named as its source;
/// a key with no Kiln equivalent is a warning in the build log, the build goes on.
#[test]
fn a_nixpacks_start_command_is_the_web_process_and_unmapped_keys_are_warned() {
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("procfile-static", tmp.path());
    std::fs::write(
        src.join("nixpacks.toml"),
        "[phases.setup]\nnixPkgs = [\"busybox\"]\n[start]\ncmd = \"httpd -f -p 9000 -h /workspace/public\"\n",
    )
    .unwrap();
    // On scratch: nothing could start, and nothing needs to here.
    let out = build_json(&src, tmp.path(), &["--no-verify"]);
    let json = json_stdout(&out);
    let web = &json["processes"][0];
    assert_eq!(
        web["command"],
        serde_json::json!(["httpd", "-f", "-p", "9000", "-h", "/workspace/public"]),
        "{json}"
    );
    assert_eq!(web["buildpack"], "nixpacks.toml", "{json}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("warning: nixpacks.toml: phases.setup.nixPkgs has no Kiln equivalent"),
        "{log}"
    );
}

/// `kiln version` names Kiln's version and each built-in buildpack's, as text or one object.
#[test]
fn version_names_kiln_and_its_buildpacks() {
    let text = kiln_ok(&["version"]);
    assert!(
        text.starts_with(&format!("kiln {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let out = kiln(&["version", "--json"]);
    assert!(out.status.success());
    let json = json_stdout(&out);
    assert_eq!(json["schema_version"], 1, "{json}");
    assert_eq!(json["kiln"], env!("CARGO_PKG_VERSION"), "{json}");
    let nodejs = json["buildpacks"]["nodejs"].as_str().unwrap_or_default();
    assert!(text.contains(&format!("nodejs     {nodejs}")), "{text}");
}

/// `kiln completions SHELL` prints a script the shell accepts, completing subcommands and flags.
#[test]
fn completions_are_a_script_the_shell_parses() {
    if !require_tools(&["bash"]) {
        return;
    }
    let script = kiln_ok(&["completions", "bash"]);
    for word in ["build", "inspect", "--run-image", "--json"] {
        assert!(script.contains(word), "{word} not completed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kiln.bash");
    std::fs::write(&path, &script).unwrap();
    // Sourcing it defines the completion function and registers it for `kiln`.
    let registered = run_ok(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(". {} && complete -p kiln", path.display())),
    );
    assert!(registered.contains("kiln"), "{registered}");
    let zsh = kiln_ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef kiln"), "{zsh}");
}
