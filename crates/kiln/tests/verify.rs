//! Verification before writing: an image whose default process cannot start in its own
//! filesystem is a build error (exit 1) naming what is missing, and no output is written;
//! `--no-verify` skips the check. A valid image (a static Rust binary on scratch) passes.

mod support;

use std::fs;
use std::path::Path;
use std::process::Output;

use support::*;

fn build(src: &Path, out: &Path, cache: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    kiln(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the build failed with exit 1 because the image cannot start, naming each of `parts`,
/// and left no output (nor a temporary of it) behind.
fn assert_refused(result: &Output, out: &Path, parts: &[&str]) {
    let err = stderr(result);
    assert_eq!(result.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start in the image"), "{err}");
    for part in parts {
        assert!(err.contains(part), "stderr lacks {part:?}:\n{err}");
    }
    assert!(!out.exists(), "{} was written", out.display());
    let leftovers: Vec<_> = fs::read_dir(out.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("image.tar"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_static_rust_binary_on_scratch_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("image.tar");
    let result = build(&fixture("rust-hello"), &out, &tmp.path().join("cache"), &[]);
    let err = stderr(&result);
    assert!(result.status.success(), "{err}");
    assert!(
        err.contains("verified: the default process can start in the image"),
        "{err}"
    );
    assert!(out.is_file());
}

/// A Procfile app on a busybox base whose `web` line runs a program no layer has.
fn missing_program_app(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = root.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("Procfile"), "web: missing-program --port $PORT\n").unwrap();
    let base = root.join("busybox.tar");
    busybox_base_image(&base);
    (src, base)
}

#[test]
fn a_start_command_running_a_missing_program_is_refused_and_nothing_is_written() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, base) = missing_program_app(tmp.path());
    let out = tmp.path().join("image.tar");
    let run_image = format!("oci-archive:{}", base.display());
    let result = build(
        &src,
        &out,
        &tmp.path().join("cache"),
        &["--run-image", &run_image],
    );
    assert_refused(
        &result,
        &out,
        &[
            "`missing-program`, the first program of the start command's shell line, is not on \
             the image's PATH (/bin)",
            "--no-verify",
        ],
    );
}

#[test]
fn no_verify_builds_the_image_anyway() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, base) = missing_program_app(tmp.path());
    let out = tmp.path().join("image.tar");
    let run_image = format!("oci-archive:{}", base.display());
    let result = build(
        &src,
        &out,
        &tmp.path().join("cache"),
        &["--run-image", &run_image, "--no-verify"],
    );
    let err = stderr(&result);
    assert!(result.status.success(), "{err}");
    assert!(!err.contains("verified:"), "{err}");
    assert!(out.is_file());
}

#[test]
fn a_dynamically_linked_program_on_scratch_is_refused_naming_its_loader_and_libc() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // The host's /bin/true: dynamically linked against glibc, which scratch does not have.
    fs::copy("/bin/true", src.join("true")).unwrap();
    fs::write(src.join("Procfile"), "web: ./true\n").unwrap();
    let out = tmp.path().join("image.tar");
    let result = build(&src, &out, &tmp.path().join("cache"), &[]);
    assert_refused(
        &result,
        &out,
        &[
            "the ELF interpreter (dynamic loader) of /workspace/true",
            "does not exist in the image",
            "libc.so.6 needed by /workspace/true: not found in the image's library paths",
        ],
    );
}
