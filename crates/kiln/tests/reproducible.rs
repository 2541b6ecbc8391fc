//! Same inputs, same bytes: where a local run image lives on this machine never reaches a digest
//! (another CI runner's workspace, a relative path), for builds and for rebases.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

/// Runs `kiln ARGS --json` in `cwd`, asserting success; returns the JSON report.
fn kiln_json_in(cwd: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--json")
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The manifest annotations of the single image in the OCI archive at `archive`.
fn manifest_annotations(archive: &Path) -> Value {
    let layout = tempfile::tempdir().unwrap();
    let mut tar = tar::Archive::new(fs::File::open(archive).unwrap());
    tar.unpack(layout.path()).unwrap();
    let read = |path: &Path| -> Value { serde_json::from_slice(&fs::read(path).unwrap()).unwrap() };
    let index = read(&layout.path().join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    read(&layout.path().join("blobs/sha256").join(hex))["annotations"].clone()
}

fn assert_no_host_path(archive: &Path, root: &Path) {
    let bytes = fs::read(archive).unwrap();
    let root = root.display().to_string();
    assert!(
        !bytes.windows(root.len()).any(|w| w == root.as_bytes()),
        "{} holds the host path {root}",
        archive.display()
    );
}

#[test]
fn the_same_base_at_another_path_gives_the_same_image_and_rebase() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("runner-a")).unwrap();
    fs::create_dir_all(root.join("runner-b/elsewhere")).unwrap();
    let src = fixture("procfile-static");
    let src = src.to_str().unwrap();

    for (case, tag, name) in [
        (
            "named",
            Some("kiln-test/base:1"),
            Some("docker.io/kiln-test/base:1"),
        ),
        ("unnamed", None, None),
    ] {
        let base = root.join(format!("runner-a/{case}-base.tar"));
        tiny_base_image(&base, "1\n", tag, &host_architecture());
        let copy = format!("runner-b/elsewhere/{case}-copy.tar");
        fs::copy(&base, root.join(&copy)).unwrap();

        // One build names the base by its absolute path, the other by a relative one from another
        // directory; each has its own cache, as two runners would.
        let build = |run_image: String, out: &str, cache: &str| {
            kiln_json_in(
                root,
                &[
                    "build",
                    src,
                    "--run-image",
                    &run_image,
                    "--output",
                    out,
                    "--cache-dir",
                    cache,
                    // The tiny base has no busybox for the Procfile's httpd: never started.
                    "--no-verify",
                ],
            )
        };
        let a_out = format!("{case}-a.tar");
        let b_out = format!("{case}-b.tar");
        let a = build(format!("oci-archive:{}", base.display()), &a_out, "cache-a");
        let b = build(format!("oci-archive:{copy}"), &b_out, "cache-b");
        assert_eq!(a["manifest_digest"], b["manifest_digest"], "{case}");
        let (a_out, b_out) = (root.join(a_out), root.join(b_out));
        assert_eq!(
            fs::read(&a_out).unwrap(),
            fs::read(&b_out).unwrap(),
            "{case}"
        );
        assert_no_host_path(&a_out, root);

        let annotations = manifest_annotations(&a_out);
        assert_eq!(
            annotations["org.opencontainers.image.base.name"].as_str(),
            name,
            "{case}: {annotations}"
        );
        assert!(
            annotations["org.opencontainers.image.base.digest"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:")),
            "{case}: {annotations}"
        );
        let inspect = kiln_json_in(root, &["inspect", a_out.to_str().unwrap()]);
        assert_eq!(inspect["base"]["name"].as_str(), name, "{case}");
        assert_eq!(inspect["base"]["layer_count"], 1, "{case}");

        // Rebase onto a new base, also found at two paths: same result, app layers kept.
        let v2 = root.join(format!("runner-a/{case}-v2.tar"));
        tiny_base_image(
            &v2,
            "2\n",
            tag.map(|_| "kiln-test/base:2"),
            &host_architecture(),
        );
        let v2_copy = format!("runner-b/{case}-v2-copy.tar");
        fs::copy(&v2, root.join(&v2_copy)).unwrap();
        let rebase = |image: &Path, run_image: String, out: &str, cache: &str| {
            kiln_json_in(
                root,
                &[
                    "rebase",
                    image.to_str().unwrap(),
                    "--run-image",
                    &run_image,
                    "--output",
                    out,
                    "--cache-dir",
                    cache,
                ],
            )
        };
        let ra = rebase(
            &a_out,
            format!("oci-archive:{}", v2.display()),
            &format!("{case}-ra.tar"),
            "cache-a",
        );
        let rb = rebase(
            &b_out,
            format!("oci-archive:{v2_copy}"),
            &format!("{case}-rb.tar"),
            "cache-b",
        );
        assert_eq!(ra["manifest_digest"], rb["manifest_digest"], "{case}");
        assert_ne!(ra["manifest_digest"], a["manifest_digest"], "{case}");
        assert_eq!(
            ra["old_base_layers"],
            serde_json::json!([a["layers"][0]["diff_id"]])
        );
        let app_layer = &a["layers"].as_array().unwrap().last().unwrap()["digest"];
        assert_eq!(ra["app_layers"][0], *app_layer, "{case}");
        assert_no_host_path(&root.join(format!("{case}-ra.tar")), root);
    }
}
