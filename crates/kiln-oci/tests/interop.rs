//! Interoperability with real OCI tools: images Kiln writes must be accepted by skopeo (both the
//! `oci-archive:` and `docker-archive:` transports and `oci:` layouts) and unpack with umoci to the
//! files, modes and symlinks that went in.
//!
//! A missing tool fails the test when `CI` is set, and skips it loudly otherwise.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kiln_oci::archive::{write_oci_archive, write_oci_dir};
use kiln_oci::image::{assemble, Image};
use kiln_oci::layer::{normalize, tree_entries, write_layer, LayerOptions};
use kiln_oci::reference::Reference;
use kiln_oci::source::{load_image, ImageSource};
use kiln_oci::spec::{ImageConfig, RuntimeConfig};
use kiln_oci::store::BlobStore;

const TAG: &str = "kiln-test/interop:1";

/// Whether `tool` can run; panics when it cannot and `CI` is set.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} not found, and CI is set: interop tests must run");
        }
        // Written to the stderr handle directly: the test harness captures eprintln! of passing
        // tests, and a skip must be visible.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: {tool} not found; install it to run this interop test ***\n"
        );
    }
    found
}

/// Runs a command, failing the test with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo() -> Command {
    let mut cmd = Command::new("skopeo");
    // The machine's policy may demand signatures; these are local test images.
    cmd.arg("--insecure-policy");
    cmd
}

/// 200+ bytes with a last component over ustar's 100-byte name field: only a PAX `path` fits it.
fn long_path() -> String {
    format!(
        "{}/{}/{}.txt",
        "d".repeat(60),
        "e".repeat(30),
        "f".repeat(110)
    )
}

fn long_target() -> String {
    format!("/{}", "t".repeat(149))
}

/// A one-layer image under `/app`: an executable, a plain file, a relative symlink, a file at a
/// 200+ byte path and a symlink with a 150-byte target (both need PAX headers).
fn build_image(root: &Path, store: &BlobStore) -> Image {
    let host = root.join("src");
    fs::create_dir_all(host.join("bin")).unwrap();
    fs::write(host.join("bin/hello"), b"#!/bin/sh\necho hello from kiln\n").unwrap();
    fs::set_permissions(host.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(host.join("greeting.txt"), b"hi\n").unwrap();
    fs::set_permissions(host.join("greeting.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("bin/hello", host.join("hello")).unwrap();
    let long = host.join(long_path());
    fs::create_dir_all(long.parent().unwrap()).unwrap();
    fs::write(&long, b"deep\n").unwrap();
    std::os::unix::fs::symlink(long_target(), host.join("longlink")).unwrap();

    let entries = normalize(tree_entries(&host, "/app").unwrap()).unwrap();
    let layer = write_layer(store, &entries, &LayerOptions::default()).unwrap();
    let config = ImageConfig {
        config: RuntimeConfig {
            entrypoint: Some(vec!["/app/hello".to_owned()]),
            ..Default::default()
        },
        ..ImageConfig::for_host()
    };
    assemble(store, config, &[layer], BTreeMap::new()).unwrap()
}

fn inspect_digest(transport_ref: &str) -> String {
    let out = run(skopeo().args(["inspect", transport_ref]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["Digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no Digest in skopeo inspect output: {out}"))
        .to_owned()
}

#[test]
fn skopeo_reads_our_archive_and_layout() {
    if !have("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let image = build_image(dir.path(), &store);
    let tag = Reference::parse(TAG).unwrap();

    let archive = dir.path().join("image.tar");
    write_oci_archive(&store, &image, Some(&tag), &archive).unwrap();
    let archive_ref = format!("oci-archive:{}", archive.display());
    assert_eq!(inspect_digest(&archive_ref), image.manifest_digest.as_str());

    let layout = dir.path().join("layout");
    write_oci_dir(&store, &image, Some(&tag), &layout).unwrap();
    let layout_ref = format!("oci:{}", layout.display());
    assert_eq!(inspect_digest(&layout_ref), image.manifest_digest.as_str());
    // The layout is also found by the tag we wrote into org.opencontainers.image.ref.name.
    assert_eq!(
        inspect_digest(&format!("{layout_ref}:1")),
        image.manifest_digest.as_str()
    );
}

#[test]
fn skopeo_copies_both_transports_and_umoci_unpacks() {
    if !have("skopeo") || !have("umoci") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let image = build_image(dir.path(), &store);
    let archive = dir.path().join("image.tar");
    write_oci_archive(
        &store,
        &image,
        Some(&Reference::parse(TAG).unwrap()),
        &archive,
    )
    .unwrap();

    let via_oci = dir.path().join("via-oci");
    run(skopeo().args([
        "copy",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:t", via_oci.display()),
    ]));
    // The same file read as a Docker archive (our manifest.json) must also be accepted.
    let via_docker = dir.path().join("via-docker");
    run(skopeo().args([
        "copy",
        &format!("docker-archive:{}", archive.display()),
        &format!("oci:{}:t", via_docker.display()),
    ]));

    for layout in [&via_oci, &via_docker] {
        let bundle = dir.path().join(format!(
            "bundle-{}",
            layout.file_name().unwrap().to_str().unwrap()
        ));
        let mut unpack = Command::new("umoci");
        unpack.arg("unpack");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            unpack.arg("--rootless");
        }
        unpack.args(["--image", &format!("{}:t", layout.display())]);
        run(unpack.arg(&bundle));

        let rootfs = bundle.join("rootfs/app");
        let mode = |p: &str| {
            fs::symlink_metadata(rootfs.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(
            fs::read(rootfs.join("bin/hello")).unwrap(),
            b"#!/bin/sh\necho hello from kiln\n"
        );
        assert_eq!(mode("bin/hello"), 0o755);
        assert_eq!(fs::read(rootfs.join("greeting.txt")).unwrap(), b"hi\n");
        assert_eq!(mode("greeting.txt"), 0o640);
        assert_eq!(
            fs::read_link(rootfs.join("hello")).unwrap(),
            Path::new("bin/hello")
        );
        assert_eq!(fs::read(rootfs.join(long_path())).unwrap(), b"deep\n");
        assert_eq!(
            fs::read_link(rootfs.join("longlink")).unwrap(),
            Path::new(&long_target())
        );
        // umoci's generated runtime config carries our entrypoint.
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["process"]["args"][0], "/app/hello");

        // Our reader accepts what skopeo wrote, and finds the same image content.
        let reread = BlobStore::open(dir.path().join("reread")).unwrap();
        let source = ImageSource::OciDir {
            path: layout.to_path_buf(),
            reference: Some("t".to_owned()),
        };
        let loaded = load_image(&source, &reread).unwrap();
        assert_eq!(loaded.config.rootfs.diff_ids, image.config.rootfs.diff_ids);
        assert_eq!(loaded.config.config, image.config.config);
    }
}

#[test]
fn we_read_docker_archives_written_by_skopeo() {
    if !have("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let image = build_image(dir.path(), &store);
    let layout = dir.path().join("layout");
    write_oci_dir(&store, &image, None, &layout).unwrap();
    let docker = dir.path().join("docker.tar");
    run(skopeo().args([
        "copy",
        &format!("oci:{}", layout.display()),
        &format!("docker-archive:{}:{TAG}", docker.display()),
    ]));
    let fresh = BlobStore::open(dir.path().join("fresh")).unwrap();
    let loaded = load_image(&ImageSource::DockerArchive { path: docker }, &fresh).unwrap();
    assert_eq!(loaded.config.rootfs.diff_ids, image.config.rootfs.diff_ids);
    assert_eq!(loaded.layers.len(), 1);
    let layer = &loaded.layers[0];
    assert!(fresh.contains(&layer.descriptor.digest));
    // skopeo's docker-archive destination stores layers uncompressed: the blob is the diff.
    assert_eq!(
        layer.descriptor.media_type,
        kiln_oci::spec::MEDIA_TYPE_LAYER_TAR
    );
    assert_eq!(layer.descriptor.digest, layer.diff_id);
}
