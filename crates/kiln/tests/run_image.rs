//! Kiln's glibc stack runs dynamically linked programs under runc: the image of an app with no
//! runtime of its own, given `libc-bin` as an extra run package (for `getconf`), on debian-13.

mod support;

use std::path::{Path, PathBuf};

use support::require_tools;
use support::run_image::{kiln_on_stack, require_debian_mirror, run_once};

/// `fixtures/procfile-static` on the glibc stack plus `libc-bin`, written to `dir/image.tar`.
/// Its default process (busybox `httpd`) is not in the stack; the tests run other programs in
/// it, so it is built with `--no-verify`.
fn glibc_image(dir: &Path) -> PathBuf {
    let out = dir.join("image.tar");
    let output = kiln_on_stack()
        .args([
            "build",
            support::fixture("procfile-static").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
            "--no-verify",
        ])
        .env("KILN_RUN_PACKAGES", "libc-bin")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Processes on Kiln's stack run as `nonroot` (uid/gid 65532, numeric in the config), who
/// owns the app directory and nothing of the system's.
#[test]
fn processes_on_the_stack_run_as_nonroot_who_owns_the_app_directory() {
    if !require_tools(&["skopeo", "umoci", "runc"]) || !require_debian_mirror() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = glibc_image(dir.path());
    let inspect: serde_json::Value = serde_json::from_str(&support::kiln_ok(&[
        "inspect",
        "--json",
        image.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(inspect["user"], "65532:65532");
    let reference = format!("oci-archive:{}", image.display());
    let script = "while read k v; do [ \"$k\" = Uid: ] && echo $v; done < /proc/self/status; \
                  echo hi > /workspace/written && echo app-dir-writable; \
                  echo x > /etc/x 2>/dev/null || echo etc-not-writable";
    let out = run_once(&reference, &["/bin/sh", "-c", script], &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "65532 65532 65532 65532",
            "app-dir-writable",
            "etc-not-writable"
        ],
        "{out}"
    );
}

#[test]
fn the_glibc_stack_runs_glibc_programs() {
    if !require_tools(&["skopeo", "umoci", "runc"]) || !require_debian_mirror() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("oci-archive:{}", glibc_image(dir.path()).display());
    // getconf is dynamically linked against the image's own glibc (trixie's).
    let glibc = run_once(&reference, &["/usr/bin/getconf", "GNU_LIBC_VERSION"], &[]);
    assert_eq!(glibc, "glibc 2.41");
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
fn host_node_runs_on_the_glibc_stack() {
    if !require_tools(&["skopeo", "umoci", "runc", "node"]) || !require_debian_mirror() {
        return;
    }
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
    let dir = tempfile::tempdir().unwrap();
    let out = run_once(
        &format!("oci-archive:{}", glibc_image(dir.path()).display()),
        &[
            "/opt/node/bin/node",
            "-e",
            "console.log(process.versions.node, require('os').userInfo().uid)",
        ],
        &[(&node, "/opt/node/bin/node")],
    );
    let host_version = support::run_ok(std::process::Command::new(&node).arg("--version"));
    // Kiln's stacks run processes as `nonroot` (65532).
    let want = format!("{} 65532", host_version.trim().trim_start_matches('v'));
    assert_eq!(out, want);
}
