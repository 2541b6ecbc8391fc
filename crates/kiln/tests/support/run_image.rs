//! A minimal Debian (bookworm) glibc run image for tests, built offline from Debian packages and
//! packed with Kiln's own layer writer, cached between test runs; and running a one-shot
//! command in an image under runc.
//!
//! Node.js and Python need glibc, so images for them are tested on this base (issue #4, "Run
//! images"). Building it: `apt-get download` the packages below into a temporary directory,
//! `dpkg-deb -x` each into one root, turn `/lib`, `/lib64`, `/bin`, `/sbin` into the merged-usr
//! symlinks bookworm has, link `/bin/sh` to dash, add `/tmp`, `/etc/passwd`, `/etc/group` and
//! the CA bundle that `ca-certificates`' maintainer script would generate, drop docs, and pack
//! the root as one layer.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_oci::digest::Digest;
use kiln_oci::image::assemble;
use kiln_oci::layer::{normalize, tree_entries, write_layer, LayerOptions};
use kiln_oci::reference::Reference;
use kiln_oci::spec::ImageConfig;
use kiln_oci::store::BlobStore;

use super::{require_tools, run_ok};

/// What goes into the image. `libc-bin` brings `getconf` and `ldconfig`, which tests run;
/// `dash` is `/bin/sh`, which start commands run through (`sh -c`).
pub const DEBIAN_PACKAGES: &[&str] = &[
    "dash",
    "libc6",
    "libc-bin",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libssl3",
    "ca-certificates",
    // `/usr/bin/env`: scripts such as npm's start with `#!/usr/bin/env node`.
    "coreutils",
];

/// Bump when the way the root is made changes, so cached images are rebuilt.
const RECIPE: &str = "debian-run-image/v1";

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where built run images are kept between test runs (`target/tmp/kiln-test-cache`).
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-test-cache")
}

/// The oci-archive of the Debian run image, built on first use and reused afterwards. `None`
/// when it cannot be built here (apt-get/dpkg-deb missing or the download failed): under `CI`
/// that panics instead, elsewhere it prints a loud SKIPPED line.
pub fn debian_run_image() -> Option<PathBuf> {
    let key = Digest::of(
        format!(
            "{RECIPE}\n{}\n{}",
            std::env::consts::ARCH,
            DEBIAN_PACKAGES.join("\n")
        )
        .as_bytes(),
    );
    let out = cache_dir().join(format!("debian-run-image-{}.tar", &key.hex()[..16]));
    if out.is_file() {
        return Some(out);
    }
    if !require_tools(&["apt-get", "dpkg-deb"]) {
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let debs = work.path().join("debs");
    fs::create_dir(&debs).unwrap();
    let download = Command::new("apt-get")
        .arg("download")
        .args(DEBIAN_PACKAGES)
        .current_dir(&debs)
        .output()
        .expect("apt-get runs");
    if !download.status.success() {
        let why = format!(
            "`apt-get download {}` failed ({}): {}\nIf the package lists are stale or missing, run `apt-get update` (as root) first.",
            DEBIAN_PACKAGES.join(" "),
            download.status,
            String::from_utf8_lossy(&download.stderr).trim()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("\n*** SKIPPED: cannot build the Debian run image: {why} ***\n");
        return None;
    }
    let root = work.path().join("root");
    let mut debs: Vec<PathBuf> = fs::read_dir(&debs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    debs.sort();
    for deb in &debs {
        run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    }
    finish_root(&root);
    fs::create_dir_all(cache_dir()).unwrap();
    pack(&root, &out);
    Some(out)
}

/// Makes the extracted packages look like an installed bookworm system.
fn finish_root(root: &Path) {
    for dir in ["bin", "sbin", "lib", "lib64"] {
        merge_into_usr(root, dir);
    }
    for dir in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/lintian",
    ] {
        let _ = fs::remove_dir_all(root.join(dir));
    }
    let tmp = root.join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    for home in ["root", "home/kiln"] {
        fs::create_dir_all(root.join(home)).unwrap();
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nkiln:x:1000:1000:kiln:/home/kiln:/bin/sh\n",
    )
    .unwrap();
    fs::write(etc.join("group"), "root:x:0:\nkiln:x:1000:\n").unwrap();
    // What `update-ca-certificates` (ca-certificates' postinst) would write.
    let mozilla = root.join("usr/share/ca-certificates/mozilla");
    if let Ok(read) = fs::read_dir(&mozilla) {
        let mut certs: Vec<PathBuf> = read.map(|e| e.unwrap().path()).collect();
        certs.sort();
        let bundle: Vec<u8> = certs.iter().flat_map(|c| fs::read(c).unwrap()).collect();
        let ssl_certs = etc.join("ssl/certs");
        fs::create_dir_all(&ssl_certs).unwrap();
        fs::write(ssl_certs.join("ca-certificates.crt"), bundle).unwrap();
    }
}

/// Moves `root/<dir>`'s contents under `root/usr/<dir>` and makes `<dir>` a symlink to it, as
/// merged-usr Debian has it (packages still ship files under `/lib`, `/bin`).
fn merge_into_usr(root: &Path, dir: &str) {
    let top = root.join(dir);
    let usr = root.join("usr").join(dir);
    fs::create_dir_all(&usr).unwrap();
    if top.is_dir() && !top.is_symlink() {
        move_contents(&top, &usr);
        fs::remove_dir(&top).unwrap();
    }
    if !top.is_symlink() {
        std::os::unix::fs::symlink(format!("usr/{dir}"), &top).unwrap();
    }
}

fn move_contents(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        let is_dir = entry.file_type().unwrap().is_dir();
        if is_dir && dest.is_dir() {
            move_contents(&entry.path(), &dest);
            fs::remove_dir(entry.path()).unwrap();
        } else {
            assert!(
                dest.symlink_metadata().is_err(),
                "{} is shipped both under / and /usr",
                dest.display()
            );
            fs::rename(entry.path(), &dest).unwrap();
        }
    }
}

fn pack(root: &Path, out: &Path) {
    let blobs = tempfile::tempdir().unwrap();
    let store = BlobStore::open(blobs.path()).unwrap();
    let entries = normalize(tree_entries(root, "/").unwrap()).unwrap();
    let layer = write_layer(&store, &entries, &LayerOptions::default()).unwrap();
    let mut config = ImageConfig::for_host();
    config.config.set_env_var("PATH", PATH);
    let image = assemble(&store, config, &[layer], BTreeMap::new()).unwrap();
    let tag = Reference::parse("kiln-test/debian-run:bookworm").unwrap();
    // Written to a temporary name and renamed: a concurrent or interrupted build never leaves
    // a half-written image at `out`.
    kiln_oci::archive::write_oci_archive(&store, &image, Some(&tag), out).unwrap();
}

/// Runs `args` once in `image` (`oci-archive:PATH`, …) under runc in the foreground, asserts
/// it succeeded and returns its trimmed stdout. `add` copies host files into the unpacked root first (`(host path, image path)`),
/// e.g. a binary to prove the image can run it.
pub fn run_once(image: &str, args: &[&str], add: &[(&Path, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet", image])
            .arg(format!("oci:{}:run", layout.display())),
    );
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:run", layout.display()))
            .arg(&bundle),
    );
    for (host, in_image) in add {
        let dest = bundle.join("rootfs").join(in_image.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(host, &dest)
            .unwrap_or_else(|e| panic!("copying {} into the image: {e}", host.display()));
    }
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    sandbox_config(&mut config);
    config["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let id = format!(
        "kiln-once-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    );
    // A foreground `runc run` removes the container when its process exits.
    run_ok(
        Command::new("runc")
            .args(["run", &id])
            .current_dir(&bundle)
            .stdin(Stdio::null()),
    )
    .trim()
    .to_owned()
}

/// What this machine's sandbox cannot give a container (GUIDE.md §5): no rlimits, resources or
/// cgroup path, no terminal, the host's network namespace.
pub fn sandbox_config(config: &mut serde_json::Value) {
    if let Some(process) = config["process"].as_object_mut() {
        process.remove("rlimits");
        process.insert("terminal".into(), false.into());
    }
    if let Some(linux) = config["linux"].as_object_mut() {
        linux.remove("resources");
        linux.remove("cgroupsPath");
        if let Some(namespaces) = linux.get_mut("namespaces").and_then(|n| n.as_array_mut()) {
            namespaces.retain(|ns| ns["type"] != "network");
        }
    }
}

/// Runs `kiln build --json` on `src` over `run_image` with the host's runtimes only (this
/// machine reaches no runtime mirror), returning the process output.
pub fn build_on_run_image(src: &Path, run_image: &Path, cache: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "build",
            src.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--run-image",
            &format!("oci-archive:{}", run_image.display()),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--json",
        ])
        .env("KILN_RUNTIME_PROVIDERS", "host")
        .output()
        .unwrap()
}

/// [`build_on_run_image`], asserting success and parsing the report.
pub fn build_on_run_image_ok(src: &Path, run_image: &Path, cache: &Path, out: &Path) -> Value {
    let output = build_on_run_image(src, run_image, cache, out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
