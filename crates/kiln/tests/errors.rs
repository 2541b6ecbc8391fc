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

fn build(src: &Path, out: &Path, extra: &[&str]) -> Output {
    let cache = out.with_extension("cache");
    kiln(
        &[
            &[
                "build",
                src.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            extra,
        ]
        .concat(),
    )
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
    let out = build(&missing, &out_path, &[]);
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
    let out = build(&src, &out_path, &[]);
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
    let out = build(
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
    let bps = buildpacks_dir(
        tmp.path(),
        "fails",
        r#"
[buildpack]
id = "fails"
version = "1.0.0"

[detect]
any = ["Procfile"]

[[build.steps]]
name = "explode"
command = "sh"
args = ["-c", "echo compiling; echo 'error: widget missing' >&2; exit 3"]
"#,
    );
    let out_path = tmp.path().join("out.tar");
    let out = build(
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
    let out = build(tmp.path(), &out_path, &[]);
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
    assert!(stderr(&detect).contains("nodejs: missing package.json"));

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
