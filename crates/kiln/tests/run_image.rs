//! The Debian glibc run image that Node.js and Python images are tested on: built offline from
//! Debian packages with Kiln's own writer, it runs dynamically linked programs under runc.

mod support;

use std::path::Path;
use std::time::Instant;

use support::require_tools;
use support::run_image::{debian_run_image, run_once};

#[test]
fn debian_run_image_runs_glibc_programs() {
    if !require_tools(&["skopeo", "umoci", "runc"]) {
        return;
    }
    let started = Instant::now();
    let Some(image) = debian_run_image() else {
        return;
    };
    let size = std::fs::metadata(&image).unwrap().len();
    eprintln!(
        "debian run image {}: {:.1} MB, ready in {:?}",
        image.display(),
        size as f64 / 1e6,
        started.elapsed()
    );
    let started = Instant::now();
    assert_eq!(debian_run_image().as_deref(), Some(image.as_path()));
    assert!(
        started.elapsed().as_secs() < 1,
        "the second call reuses the cached image"
    );

    let reference = format!("oci-archive:{}", image.display());
    // getconf is dynamically linked against the image's own glibc.
    let glibc = run_once(&reference, &["/usr/bin/getconf", "GNU_LIBC_VERSION"], &[]);
    assert_eq!(glibc, "glibc 2.36");
    let shell = run_once(&reference, &["/bin/sh", "-c", "echo $((6 * 7)) $PATH"], &[]);
    assert_eq!(
        shell,
        "42 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    // The loader finds every library a runtime needs through the merged-usr paths.
    let (multiarch, loader) = if cfg!(target_arch = "aarch64") {
        ("aarch64-linux-gnu", "/lib/ld-linux-aarch64.so.1")
    } else {
        ("x86_64-linux-gnu", "/lib64/ld-linux-x86-64.so.2")
    };
    for lib in ["libstdc++.so.6", "libssl.so.3", "libz.so.1"] {
        let path = format!("/lib/{multiarch}/{lib}");
        let listed = run_once(&reference, &[loader, "--list", &path], &[]);
        assert!(!listed.contains("not found"), "{lib}:\n{listed}");
    }
}

/// The host's Node.js binary (glibc, libstdc++) runs on the image: what Node apps will need.
#[test]
fn host_node_runs_on_the_debian_run_image() {
    if !require_tools(&["skopeo", "umoci", "runc", "node"]) {
        return;
    }
    let Some(image) = debian_run_image() else {
        return;
    };
    let node = support::run_ok(std::process::Command::new("sh").args(["-c", "command -v node"]));
    let node = Path::new(node.trim()).canonicalize().unwrap();
    // Debian's own nodejs package links a shared libnode (and libuv, c-ares, …) that this image
    // does not ship; the official and NodeSource builds are self-contained apart from glibc and
    // libstdc++, which is what this proves.
    let ldd = support::run_ok(std::process::Command::new("ldd").arg(&node));
    if ldd.contains("libnode") {
        eprintln!(
            "\n*** SKIPPED: {} links a shared libnode (Debian's build) ***\n",
            node.display()
        );
        return;
    }
    let out = run_once(
        &format!("oci-archive:{}", image.display()),
        &[
            "/opt/node/bin/node",
            "-e",
            "console.log(process.versions.node, require('os').userInfo().uid)",
        ],
        &[(&node, "/opt/node/bin/node")],
    );
    let host_version = support::run_ok(std::process::Command::new(&node).arg("--version"));
    let want = format!("{} 0", host_version.trim().trim_start_matches('v'));
    assert_eq!(out, want);
}
