//! Bad input gets a clear error, a documented exit code, and leaves no output behind.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;

use support::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn broken_buildpack_toml_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bps = buildpacks_dir(
        tmp.path(),
        "broken",
        "[buildpack]\nid = \"broken\"\nversion = \"1\"\n\n[detect]\nany = [\"x\"\n",
    );
    let out = kiln(&[
        "detect",
        fixture("go-http").to_str().unwrap(),
        "--buildpacks",
        bps.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("broken/buildpack.toml:6"), "{err}");
}

#[test]
fn missing_source_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("does-not-exist");
    let out_path = tmp.path().join("out.tar");
    let out = build_to(&missing, &out_path, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("does-not-exist"), "{err}");
    assert!(err.contains("cannot open it"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn symlink_out_of_the_source_tree_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("Procfile"), "web: cat /workspace/secret\n").unwrap();
    symlink("/etc/shadow", src.join("secret")).unwrap();
    let out_path = tmp.path().join("out.tar");
    let out = build_to(&src, &out_path, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("secret"), "{err}");
    assert!(err.contains("outside the source tree"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn base_archive_with_a_parent_dir_entry_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = tmp.path().join("evil.tar");
    let mut builder = tar::Builder::new(fs::File::create(&evil).unwrap());
    let mut header = tar::Header::new_ustar();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    // set_path refuses `..`; write the raw name the way a hostile archive would.
    header.as_ustar_mut().unwrap().name[..12].copy_from_slice(b"../escape.sh");
    header.set_cksum();
    builder.append(&header, &b"boom"[..]).unwrap();
    builder.finish().unwrap();
    drop(builder);

    let out_path = tmp.path().join("out.tar");
    let run_image = format!("oci-archive:{}", evil.display());
    let out = build_to(
        &fixture("procfile-static"),
        &out_path,
        &["--run-image", &run_image],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("../escape.sh"), "{err}");
    assert!(err.contains("evil.tar"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn failing_step_names_step_command_exit_code_and_output_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let bps = buildpacks_dir(tmp.path(), "fails", FAILING_STEP_BUILDPACK);
    let out_path = tmp.path().join("out.tar");
    let out = build_to(
        &fixture("procfile-static"),
        &out_path,
        &["--buildpacks", bps.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("step fails/explode failed"), "{err}");
    assert!(err.contains("`sh -c 'echo compiling;"), "{err}");
    assert!(err.contains("exited with code 3"), "{err}");
    assert!(err.contains("error: widget missing"), "{err}");
    assert!(!out_path.exists(), "a failed build must not leave an image");
}

#[test]
fn nothing_detected_exits_3_and_lists_what_was_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("README"), "nothing to build").unwrap();
    let out_path = tmp.path().join("out.tar");
    let out = build_to(tmp.path(), &out_path, &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("no buildpack detected"), "{err}");
    assert!(
        err.contains("go: none of go.mod, go.work, main.go found"),
        "{err}"
    );
    assert!(err.contains("procfile:"), "{err}");

    let detect = kiln(&["detect", tmp.path().to_str().unwrap(), "--json"]);
    assert_eq!(detect.status.code(), Some(3));
    let json: serde_json::Value = serde_json::from_slice(&detect.stdout).unwrap();
    assert_eq!(json["detected"], false);
    assert!(stderr(&detect).contains("nodejs: none of package.json, package.json5 found"));

    let plan = kiln(&["plan", tmp.path().to_str().unwrap(), "--json"]);
    assert_eq!(plan.status.code(), Some(3));
    assert!(stderr(&plan).contains("python: none of requirements.txt"));
}

#[test]
fn malformed_manifests_fail_detect_and_plan_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("package.json"),
        "{\n  \"name\": \"a\",\n}\n",
    )
    .unwrap();
    for command in ["detect", "plan"] {
        let out = kiln(&[command, tmp.path().to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let err = stderr(&out);
        assert!(
            err.contains("package.json:3:1: invalid JSON: trailing comma"),
            "{command}: {err}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = kiln(&["build", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = kiln(&[
        "build",
        ".",
        "--output",
        "x.tar",
        "--compression",
        "gzip:42",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("gzip level must be 0-9"));
    let out = kiln(&["build", ".", "--output", "x.tar", "--run-image", "ftp://x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ftp://x"), "{}", stderr(&out));
}

/// A source tree under `root/name` holding `files` (`path`, contents).
fn app(root: &Path, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = root.join(name);
    for (path, contents) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
    dir
}

#[test]
fn nothing_runnable_fails_naming_what_was_looked_for_and_how_to_set_a_start_command() {
    let tmp = tempfile::tempdir().unwrap();
    // (case, files, what the error says was looked for)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "empty-procfile",
            &[("Procfile", "")],
            "procfile: Procfile declares no process",
        ),
        (
            "cargo-virtual-workspace",
            &[("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\n")],
            "rust: a `web` process (needs fact `bin`); virtual workspace",
        ),
        (
            "go-work-nothing-to-build",
            &[
                ("go.work", "go 1.22\n\nuse ./lib\n"),
                ("lib/go.mod", "module example.com/lib\n\ngo 1.22\n"),
                ("lib/lib.go", "package lib\n"),
            ],
            "go: a `web` process (needs fact `package`); no main package",
        ),
        (
            "bun-no-start",
            &[
                ("package.json", "{\"name\": \"b\", \"dependencies\": {}}\n"),
                ("bun.lock", "{\"lockfileVersion\": 1}\n"),
            ],
            "nodejs: a `web` process (needs fact `start`, or fact `static_output`); no start \
             command: package.json has no scripts.start or main",
        ),
    ];
    for (name, files, looked_for) in cases {
        let src = app(tmp.path(), name, files);
        let out_path = tmp.path().join(format!("{name}.tar"));
        let out = build_to(&src, &out_path, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains("error: no default process: nothing says what the image runs"),
            "{name}: {err}"
        );
        assert!(err.contains(looked_for), "{name}: {err}");
        assert!(
            err.contains(
                "set a start command: `web = \"COMMAND\"` under [processes] in kiln.toml, a \
                 `web: COMMAND` line in a Procfile, or KILN_START_COMMAND=COMMAND"
            ),
            "{name}: {err}"
        );
        assert!(!out_path.exists(), "{name}: an image was written");

        // `kiln plan` still shows the plan, and says the same.
        let plan = kiln(&["plan", src.to_str().unwrap()]);
        assert_eq!(plan.status.code(), Some(0), "{name}: {}", stderr(&plan));
        let text = String::from_utf8_lossy(&plan.stdout);
        assert!(text.contains("no default process"), "{name}: {text}");
        assert!(text.contains(looked_for), "{name}: {text}");
    }

    // The start command the message suggests is the real mechanism: with it the same tree builds.
    let src = app(
        tmp.path(),
        "with-kiln-toml",
        &[
            ("Procfile", ""),
            ("kiln.toml", "[processes]\nweb = \"httpd\"\n"),
        ],
    );
    let out_path = tmp.path().join("with-kiln-toml.tar");
    // Scratch has no httpd: the image could not start (not what this test is about).
    let out = build_to(&src, &out_path, &["--no-verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out_path.exists());
}

#[test]
fn a_plan_without_a_process_is_refused_before_any_step_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("step-ran");
    let bps = buildpacks_dir(
        tmp.path(),
        "silent",
        &format!(
            "[buildpack]\nid = \"silent\"\nversion = \"1\"\n[detect]\nall = [\"Procfile\"]\n\
             [[build.steps]]\nname = \"touch\"\ncommand = \"touch\"\nargs = [\"{}\"]\n",
            marker.display()
        ),
    );
    let out_path = tmp.path().join("out.tar");
    let out = build_to(
        &fixture("procfile-static"),
        &out_path,
        &["--buildpacks", bps.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("silent: declares no process"), "{err}");
    assert!(
        err.contains("under [processes] in kiln.toml or KILN_START_COMMAND=COMMAND"),
        "a set without a Procfile buildpack must not suggest one: {err}"
    );
    assert!(!marker.exists(), "a step ran");
    assert!(!out_path.exists());
}

#[test]
fn malformed_cargo_toml_and_go_mod_are_errors_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "empty-cargo",
            "Cargo.toml",
            "",
            "Cargo.toml: empty: cargo needs [package] (a crate) or [workspace]",
        ),
        (
            "cargo-no-name",
            "Cargo.toml",
            "# a crate\n[package]\nversion = \"1.0.0\"\n",
            "Cargo.toml:2:1: [package] has no name",
        ),
        (
            "cargo-invalid",
            "Cargo.toml",
            "[package\nname = \"x\"\n",
            "Cargo.toml:1:",
        ),
        (
            "garbage-go-mod",
            "go.mod",
            "module example.com/x\n\n{{{ garbage\n",
            "go.mod:3:1: unknown directive \"{{{\"",
        ),
        (
            "go-mod-without-module",
            "go.mod",
            "go 1.22\n",
            "go.mod: no module path",
        ),
    ];
    for (name, file, contents, expected) in cases {
        let src = app(tmp.path(), name, &[(file, contents)]);
        let out_path = tmp.path().join(format!("{name}.tar"));
        let out = build_to(&src, &out_path, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!out_path.exists(), "{name}");
        let plan = kiln(&["plan", src.to_str().unwrap()]);
        assert_eq!(plan.status.code(), Some(1), "{name}");
        assert!(
            stderr(&plan).contains(expected),
            "{name}: {}",
            stderr(&plan)
        );
    }
}

#[test]
fn malformed_env_and_platform_and_prune_without_a_limit_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    let build = ["build", ".", "--output", "x.tar", "--cache-dir", cache];
    let cases: &[(&[&str], &str)] = &[
        (
            &["--env", "=x"],
            "--env \"=x\": variable name \"\" is empty",
        ),
        (
            &["--env", "A B=1"],
            "--env \"A B=1\": variable name \"A B\" must be letters, digits and `_`",
        ),
        (
            &["--platform", "linux/arm64,linux/amd64"],
            "one platform only",
        ),
        (&["--platform", "linux"], "expected OS/ARCH[/VARIANT]"),
        (
            &["--platform", "linux/arm 64"],
            "expected OS/ARCH[/VARIANT]",
        ),
        (
            &["--platform", "linux/arm64/v8/x"],
            "expected OS/ARCH[/VARIANT]",
        ),
    ];
    for (extra, expected) in cases {
        let out = kiln(&[&build[..], extra].concat());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
    let out = kiln(&["cache", "prune", "--cache-dir", cache]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-size"), "{}", stderr(&out));
    assert!(
        !Path::new(cache).exists(),
        "a usage error touched the cache"
    );
}

#[test]
fn cache_ls_of_a_missing_directory_is_empty_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no/such/cache");
    let out = kiln(&[
        "cache",
        "ls",
        "--cache-dir",
        missing.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["total_bytes"], 0);
    assert_eq!(listing["items"], serde_json::json!([]));
    assert!(
        !tmp.path().join("no").exists(),
        "cache ls created the directory"
    );
}

/// A platform no test machine is: builds for it can only be honest without host-made layers.
const FOREIGN: &str = "linux/s390x";

#[test]
fn a_build_is_for_the_host_platform_unless_it_runs_no_step_and_ships_no_runtime() {
    assert_ne!(host_architecture(), "s390x");
    let tmp = tempfile::tempdir().unwrap();
    let host = format!("linux/{}", host_architecture());

    // Steps run on this host: their output cannot be another platform's.
    let bps = buildpacks_dir(
        tmp.path(),
        "compiles",
        "[buildpack]\nid = \"compiles\"\nversion = \"1\"\n[detect]\nall = [\"Procfile\"]\n\
         [[build.steps]]\nname = \"cc\"\ncommand = \"true\"\n\
         [[processes]]\ntype = \"web\"\ncommand = \"app\"\n",
    );
    let out_path = tmp.path().join("steps.tar");
    let out = build_to(
        &fixture("procfile-static"),
        &out_path,
        &["--buildpacks", bps.to_str().unwrap(), "--platform", FOREIGN],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "--platform {FOREIGN}: this build runs step compiles/cc on this {host} host"
        )),
        "{err}"
    );
    assert!(!out_path.exists());

    // Plain files on scratch: the image is the requested platform's, not silently the host's.
    // (Neither scratch nor the tiny base below has procfile-static's httpd: --no-verify.)
    let out_path = tmp.path().join("scratch.tar");
    let out = build_to(
        &fixture("procfile-static"),
        &out_path,
        &["--platform", FOREIGN, "--no-verify"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let inspect = kiln_ok(&["inspect", out_path.to_str().unwrap(), "--json"]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        (inspect["os"].as_str(), inspect["architecture"].as_str()),
        (Some("linux"), Some("s390x"))
    );

    // A local run image of another platform than the one built for is refused, either way.
    let base = tmp.path().join("s390x-base.tar");
    tiny_base_image(&base, "1\n", None, "s390x");
    let run_image = format!("oci-archive:{}", base.display());
    let out = build_to(
        &fixture("procfile-static"),
        &tmp.path().join("mismatch.tar"),
        &["--run-image", &run_image],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("run image {run_image} is linux/s390x, not {host}")),
        "{err}"
    );
    let out = build_to(
        &fixture("procfile-static"),
        &tmp.path().join("match.tar"),
        &[
            "--run-image",
            &run_image,
            "--platform",
            FOREIGN,
            "--no-verify",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Rebase keeps the image's layers: a base of another platform is refused.
    let host_image = tmp.path().join("host.tar");
    let out = build_to(&fixture("procfile-static"), &host_image, &["--no-verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rebased = tmp.path().join("rebased.tar");
    let out = kiln(&[
        "rebase",
        host_image.to_str().unwrap(),
        "--run-image",
        &run_image,
        "--output",
        rebased.to_str().unwrap(),
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is linux/s390x but"), "{err}");
    assert!(err.contains(&format!("is {host}: a rebase keeps")), "{err}");
    assert!(!rebased.exists());
}
