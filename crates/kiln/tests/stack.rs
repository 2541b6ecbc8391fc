//! Builds with no `--run-image` run on Kiln's own stack, assembled from Debian packages: what
//! the static stack puts in a Go image, extra run packages, locks, offline rebuilds, and
//! tampered or corrupted packages. (Node and Python apps on the glibc stack answer HTTP under
//! runc in `tests/runtimes.rs`.)

#[path = "../../kiln-debian/tests/support/proxy.rs"]
mod proxy;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use kiln_oci::source::{load_image, ImageSource};
use kiln_oci::store::BlobStore;
use serde_json::Value;

use support::run_image::{kiln_on_stack, require_debian_mirror};
use support::{copy_fixture, fixture, require_tools};

/// What a path is in an image's merged filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(String),
}

/// The merged filesystem of the oci-archive at `archive` (later layers over earlier ones; no
/// whiteouts are expected in these images).
fn image_files(archive: &Path) -> BTreeMap<String, Node> {
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let image = load_image(
        &ImageSource::OciArchive {
            path: archive.to_owned(),
            reference: None,
        },
        &store,
    )
    .unwrap();
    let mut files = BTreeMap::new();
    for layer in &image.layers {
        let blob = store.open_blob(&layer.descriptor.digest).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let node = match entry.header().entry_type() {
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink => Node::Link(
                    entry
                        .link_name()
                        .unwrap()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                ),
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .unwrap()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    files.get(&target).cloned().unwrap()
                }
                _ => {
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).unwrap();
                    Node::File(bytes)
                }
            };
            files.insert(path, node);
        }
    }
    files
}

fn text(files: &BTreeMap<String, Node>, path: &str) -> String {
    match files.get(path) {
        Some(Node::File(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("{path} is {other:?}"),
    }
}

/// `kiln build --json SRC` on the stack with the given cache dirs and extra variables.
fn build(src: &Path, cache: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = kiln_on_stack();
    cmd.args([
        "build",
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--json",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn build_ok(src: &Path, cache: &Path, out: &Path, env: &[(&str, &str)]) -> Value {
    let output = build(src, cache, out, env);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn go_http_on_the_static_stack_has_certificates_zoneinfo_dpkg_status_and_a_nonroot_user() {
    if !require_tools(&["go"]) || !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("go.tar");
    let report = build_ok(&fixture("go-http"), &tmp.path().join("cache"), &out, &[]);
    let stack = &report["stack"];
    assert_eq!(stack["distro"], "debian-13");
    assert_eq!(stack["flavour"], "static");
    assert_eq!(stack["locked"], false);
    assert_eq!(stack["suites"][0]["name"], "trixie");
    let names: Vec<&str> = stack["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["base-files", "ca-certificates", "netbase", "tzdata"]
    );

    let size = fs::metadata(&out).unwrap().len();
    assert!(size < 8_000_000, "the whole image is {size} bytes");
    let files = image_files(&out);
    let bundle = text(&files, "etc/ssl/certs/ca-certificates.crt");
    assert!(bundle.contains("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        files.get("usr/share/zoneinfo/UTC"),
        Some(&Node::Link("Etc/UTC".into()))
    );
    assert!(text(&files, "usr/share/zoneinfo/Etc/UTC").starts_with("TZif"));
    let status = text(&files, "var/lib/dpkg/status.d/ca-certificates");
    assert!(
        status.starts_with("Package: ca-certificates\nStatus: install ok installed\nVersion: "),
        "{status}"
    );
    let passwd = text(&files, "etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    assert_eq!(files.get("bin"), Some(&Node::Link("usr/bin".into())));

    // `kiln inspect` shows the stack the image runs on.
    let inspect: Value = serde_json::from_str(&support::kiln_ok(&[
        "inspect",
        "--json",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(inspect["stack"]["distro"], "debian-13");
    assert_eq!(inspect["stack"]["packages"], stack["packages"]);
    assert_eq!(inspect["base"]["name"], "kiln-stack:debian-13/static");
}

#[test]
fn run_packages_come_in_a_layer_of_their_own_and_unknown_ones_name_the_suite() {
    if !require_tools(&["go"]) || !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("go-http", tmp.path());
    fs::write(src.join("kiln.toml"), "[packages]\nrun = [\"libpq5\"]\n").unwrap();
    let out = tmp.path().join("pq.tar");
    let report = build_ok(&src, &tmp.path().join("cache"), &out, &[]);
    let packages = report["stack"]["packages"].as_array().unwrap();
    let libpq = packages
        .iter()
        .find(|p| p["name"] == "libpq5")
        .expect("libpq5 in the stack");
    assert_eq!(libpq["layer"], "packages");
    // Extra packages are shared libraries: the glibc layer comes with them.
    assert_eq!(report["stack"]["flavour"], "glibc");
    let files = image_files(&out);
    let multiarch = if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else {
        "x86_64-linux-gnu"
    };
    let lib = format!("usr/lib/{multiarch}/libpq.so.5");
    assert!(
        matches!(files.get(&lib), Some(Node::Link(_))),
        "{lib}: {:?}",
        files.get(&lib)
    );
    let Node::Link(target) = &files[&lib] else {
        unreachable!()
    };
    assert!(matches!(
        files.get(&format!("usr/lib/{multiarch}/{target}")),
        Some(Node::File(_))
    ));
    assert!(files.contains_key("var/lib/dpkg/status.d/libpq5"));

    let failed = build(
        &src,
        &tmp.path().join("cache"),
        &tmp.path().join("x.tar"),
        &[("KILN_RUN_PACKAGES", "libpq5 no-such-package-kiln")],
    );
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("package no-such-package-kiln was requested, but trixie, trixie-updates, trixie-security does not have it"),
        "{stderr}"
    );
    assert!(!tmp.path().join("x.tar").exists(), "no image is written");
}

#[test]
fn one_lock_gives_the_same_digest_from_two_fresh_caches_in_two_directories() {
    if !require_tools(&["go"]) || !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let first = copy_fixture("go-http", &tmp.path().join("one"));
    let locked = kiln_on_stack()
        .args(["lock", first.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        locked.status.success(),
        "{}",
        String::from_utf8_lossy(&locked.stderr)
    );
    let lock: Value = serde_json::from_slice(&locked.stdout).unwrap();
    assert_eq!(lock["action"], "written");
    let text = fs::read_to_string(first.join("kiln.lock")).unwrap();
    assert!(
        text.contains("[[layer.package]]\nname = \"base-files\""),
        "{text}"
    );
    assert!(text.contains("inrelease_sha256 = "), "{text}");
    let second = copy_fixture("go-http", &tmp.path().join("two"));
    fs::copy(first.join("kiln.lock"), second.join("kiln.lock")).unwrap();

    let mut digests = Vec::new();
    for (i, src) in [&first, &second].into_iter().enumerate() {
        let dir = tmp.path().join(format!("caches-{i}"));
        let debian = dir.join("debian-downloads");
        let report = build_ok(
            src,
            &dir.join("cache"),
            &dir.join("out.tar"),
            &[("KILN_DEBIAN_CACHE", debian.to_str().unwrap())],
        );
        assert_eq!(report["stack"]["locked"], true);
        digests.push(report["manifest_digest"].clone());
    }
    assert_eq!(digests[0], digests[1]);

    // An unchanged lock is kept; asking for other packages makes it stale.
    let again = kiln_on_stack()
        .args(["lock", first.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["action"], "unchanged");
    let stale = build(
        &first,
        &tmp.path().join("c3"),
        &tmp.path().join("o3.tar"),
        &[("KILN_RUN_PACKAGES", "libpq5")],
    );
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(
        stderr.contains("kiln.lock: has no glibc layer; run `kiln lock --update`"),
        "{stderr}"
    );
}

#[test]
fn a_warm_rebuild_without_network_gives_the_same_digest() {
    if !require_tools(&["go", "unshare"]) || !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("go-http", tmp.path());
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("out.tar"));
    let debian = tmp.path().join("debian-downloads");
    let env = [("KILN_DEBIAN_CACHE", debian.to_str().unwrap())];
    let warm = build_ok(&src, &cache, &out, &env);

    // The same build in a network namespace of its own (no interfaces but loopback); with an
    // index age of 0 the cached InRelease is stale, cannot be refreshed, and is used with a note.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-n",
        "--",
        env!("CARGO_BIN_EXE_kiln"),
        "build",
        src.to_str().unwrap(),
    ])
    .args([
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--json",
    ])
    .env_remove("KILN_RUN_IMAGE")
    // As the warm build (`kiln_on_stack`): steps on the host's root.
    .env("KILN_BUILD_ROOT", "host")
    .env("KILN_DEBIAN_CACHE", &debian)
    .env("KILN_DEBIAN_INDEX_MAX_AGE", "0");
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("unshare failed") {
        if std::env::var_os("CI").is_some() {
            panic!("unshare -n is needed under CI: {stderr}");
        }
        eprintln!("\n*** SKIPPED: unshare -n does not work here: {stderr} ***\n");
        return;
    }
    assert!(output.status.success(), "{stderr}");
    let offline: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(offline["manifest_digest"], warm["manifest_digest"]);
    let notes = offline["stack"]["notes"].to_string();
    assert!(notes.contains("using the cached trixie index"), "{notes}");
}

#[test]
fn a_corrupted_cached_deb_fails_the_build_naming_the_package_and_writes_no_image() {
    if !require_tools(&["go"]) || !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("go-http", tmp.path());
    let debian = tmp.path().join("debian-downloads");
    let env = [("KILN_DEBIAN_CACHE", debian.to_str().unwrap())];
    build_ok(
        &src,
        &tmp.path().join("c1"),
        &tmp.path().join("o1.tar"),
        &env,
    );
    let locked = kiln_on_stack()
        .args(["lock", src.to_str().unwrap(), "--json"])
        .env("KILN_DEBIAN_CACHE", &debian)
        .output()
        .unwrap();
    let lock: Value = serde_json::from_slice(&locked.stdout).unwrap();
    let first = &lock["lock"]["layer"][0]["package"][0];
    let blob = debian
        .join("blobs/sha256")
        .join(first["sha256"].as_str().unwrap());
    let mut bytes = fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&blob, bytes).unwrap();

    // A fresh build cache, so the stack is assembled again from the (corrupted) download cache.
    let out = tmp.path().join("o2.tar");
    let failed = build(&src, &tmp.path().join("c2"), &out, &env);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let want = format!(
        "package {}={} ({}): refused: the cached copy",
        first["name"].as_str().unwrap(),
        first["version"].as_str().unwrap(),
        first["filename"].as_str().unwrap()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(!out.exists(), "no image is written");
}

#[test]
fn a_tampered_deb_from_the_mirror_fails_the_build_naming_the_package_and_writes_no_image() {
    if !require_tools(&["go"]) || !require_debian_mirror() {
        return;
    }
    fn tamper(path: &str, body: &mut [u8]) {
        if path.ends_with(".deb") {
            let middle = body.len() / 2;
            body[middle] ^= 0xff;
        }
    }
    let real = kiln_debian::mirror::find(&Default::default(), Path::new("/")).unwrap();
    let evil = proxy::tampering_proxy(&real, tamper);
    let tmp = tempfile::tempdir().unwrap();
    let debian = tmp.path().join("debian-downloads");
    let mut env = vec![
        ("KILN_DEBIAN_CACHE", debian.to_str().unwrap()),
        ("KILN_DEBIAN_MIRROR", evil.archive.as_str()),
    ];
    if let Some(security) = &evil.security {
        env.push(("KILN_DEBIAN_SECURITY_MIRROR", security.as_str()));
    }
    let out = tmp.path().join("out.tar");
    let failed = build(&fixture("go-http"), &tmp.path().join("cache"), &out, &env);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    // The first package of the stack, in order, is the one reported.
    assert!(stderr.contains("error: package base-files="), "{stderr}");
    assert!(stderr.contains("): refused: "), "{stderr}");
    assert!(stderr.contains("but Packages lists sha256:"), "{stderr}");
    assert!(!out.exists(), "no image is written");
}

/// The config of the oci-archive at `archive`.
fn archive_config(archive: &Path) -> kiln_oci::spec::ImageConfig {
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let source = ImageSource::OciArchive {
        path: archive.to_owned(),
        reference: None,
    };
    load_image(&source, &store).unwrap().config
}

#[test]
fn a_node_app_on_the_glibc_stack_carries_its_version_and_one_creation_time_throughout() {
    if !require_tools(&["node", "npm"]) || !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let app = copy_fixture("node-hello", tmp.path());
    let build_at = |creation_time: Option<&str>| {
        let out = tmp.path().join("image.tar");
        let mut cmd = kiln_on_stack();
        cmd.args(["build", app.to_str().unwrap(), "--output"])
            .arg(&out)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--no-verify");
        if let Some(time) = creation_time {
            cmd.args(["--creation-time", time]);
        }
        let output = cmd.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        archive_config(&out)
    };
    // Every history entry — the stack's layers, made in this build, and Kiln's — carries the
    // image's `created`, whichever way it is chosen.
    let check = |config: &kiln_oci::spec::ImageConfig, created: &str| {
        assert_eq!(config.created.as_deref(), Some(created));
        let labels = &config.config.labels;
        assert_eq!(labels["org.opencontainers.image.created"], created);
        assert_eq!(labels["org.opencontainers.image.version"], "1.0.0");
        assert_eq!(
            config.history.len(),
            config.rootfs.diff_ids.len(),
            "{:?}",
            config.history
        );
        for entry in &config.history {
            assert_eq!(entry.created.as_deref(), Some(created), "{entry:?}");
        }
        let made_by: Vec<&str> = config
            .history
            .iter()
            .filter_map(|h| h.created_by.as_deref())
            .collect();
        assert!(
            made_by[0].starts_with("kiln: stack debian-13/glibc, layer "),
            "{made_by:?}"
        );
        assert_eq!(made_by.last(), Some(&"kiln: layer app"), "{made_by:?}");
    };
    let reproducible = build_at(None);
    check(&reproducible, "1980-01-01T00:00:01Z");
    let explicit = build_at(Some("1700000000"));
    check(&explicit, "2023-11-14T22:13:20Z");
    let now = build_at(Some("now"));
    let created = now.created.clone().unwrap();
    assert!(created.as_str() > "2026-01-01", "{created}");
    check(&now, &created);
    // Only the times differ: the same layers under all three.
    assert_eq!(reproducible.rootfs, now.rootfs);
}
