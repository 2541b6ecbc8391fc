//! `kiln rebase IMAGE` with no `--run-image`: the image goes onto a newer build of its own
//! stack (re-resolved against the host's Debian mirror, or from `--lock`), app layers kept byte
//! for byte; an up-to-date image is left as it is; an image not on Kiln's stack is refused.
//!
//! "Older" stacks are real: a lock whose one package is pinned to a lower version that one of
//! the suites' signed indexes still lists (a security suite keeps its older builds), so the old
//! image is built from verified packages exactly as a user's month-old lock would be.
//!
//! The image carries an SBOM (`--sbom-dir`): a rebase makes its `kiln/sbom` layer again with the
//! new stack's packages, so the result is still digest for digest what a build would make.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_debian::fetch::{self, Cache, DebRef, Source};
use kiln_debian::lock::Lock;
use serde_json::Value;

use support::run_image::{kiln_on_stack, require_debian_mirror, stack_cache};
use support::{fixture, free_port, require_tools, run_ok, tiny_base_image, Container};

/// A Go module the copy's `go.sum` pins (the app imports nothing, so `go build` never fetches
/// it): the SBOM's one application dependency.
const GO_DEPENDENCY: (&str, &str) = ("github.com/google/uuid", "v1.6.0");

/// A private copy of `fixtures/go-http` with `libpq5` as a run package (so the stack has a
/// glibc layer and a packages layer, and the label records a run package) and a `go.sum` (so
/// its SBOM lists an application dependency). Its `kiln.lock` is kept out of the app layer, so
/// builds with and without one have the same app layers.
fn go_http_with_libpq(dir: &Path) -> PathBuf {
    let src = dir.join("go-http");
    run_ok(Command::new("cp").args([
        "-r",
        fixture("go-http").to_str().unwrap(),
        src.to_str().unwrap(),
    ]));
    fs::write(src.join("kiln.toml"), "[packages]\nrun = [\"libpq5\"]\n").unwrap();
    let (module, version) = GO_DEPENDENCY;
    fs::write(
        src.join("go.sum"),
        format!(
            "{module} {version} h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=\n\
             {module} {version}/go.mod h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=\n"
        ),
    )
    .unwrap();
    let ignore = src.join(".dockerignore");
    let mut rules = fs::read_to_string(&ignore).unwrap_or_default();
    rules.push_str("kiln.lock\n");
    fs::write(&ignore, rules).unwrap();
    src
}

/// `kiln ARGS --json` (on the stack's settings), asserting success.
fn kiln_json(args: &[&str]) -> Value {
    let output = kiln_on_stack().args(args).arg("--json").output().unwrap();
    assert!(
        output.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn rebase(image: &Path, out: &Path, cache: &Path, extra: &[&str]) -> Value {
    let args = [
        &[
            "rebase",
            image.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        extra,
    ]
    .concat();
    kiln_json(&args)
}

/// `lock` with one package replaced by a lower version still listed by one of its suites'
/// verified indexes; returns it and (package, old version, new version).
fn older_lock(lock: &Lock) -> (Lock, (String, String, String)) {
    let source = Source {
        mirror: kiln_debian::mirror::find(&Default::default(), Path::new("/")).unwrap(),
        keyring: kiln_debian::release::Keyring::embedded().unwrap(),
        arch: lock.arch.clone(),
        max_index_age: fetch::DEFAULT_MAX_INDEX_AGE,
    };
    let cache = Cache::open(stack_cache()).unwrap();
    let mut listed = Vec::new();
    for suite in &lock.suite {
        let release = fetch::release(&source, &cache, &suite.name, &mut Vec::new()).unwrap();
        listed.extend(fetch::packages(&source, &cache, &release).unwrap());
    }
    let mut old = lock.clone();
    for layer in &mut old.layer {
        for deb in &mut layer.package {
            let current = kiln_debian::version::Version::parse(&deb.version).unwrap();
            let older = listed
                .iter()
                .filter(|p| p.name == deb.name && p.architecture == deb.architecture)
                .filter(|p| p.version < current)
                .max_by(|a, b| a.version.cmp(&b.version));
            if let Some(older) = older {
                let change = (
                    deb.name.clone(),
                    older.version.to_string(),
                    deb.version.clone(),
                );
                *deb = DebRef::from(older);
                return (old, change);
            }
        }
    }
    let suites: Vec<&str> = lock.suite.iter().map(|s| s.name.as_str()).collect();
    panic!(
        "no package of the stack has an older version in {} today: nothing to rebase from",
        suites.join(", ")
    );
}

/// The digests of the app's layers a build report lists (its stack layers are `base`).
fn app_layer_digests(report: &Value) -> Vec<Value> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"] != "base")
        .map(|l| l["digest"].clone())
        .collect()
}

/// `kiln build` on the stack (as `build_on_stack_ok`) with `--sbom-dir SBOM`.
fn build_with_sbom(src: &Path, cache: &Path, out: &Path, sbom: &Path) -> Value {
    kiln_json(&[
        "build",
        src.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--sbom-dir",
        sbom.to_str().unwrap(),
    ])
}

/// Every file of an oci-archive, by path.
fn archive_files(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut tar = tar::Archive::new(fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(path, bytes);
        }
    }
    files
}

fn json_file(files: &BTreeMap<String, Vec<u8>>, path: &str) -> Value {
    serde_json::from_slice(&files[path]).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The CycloneDX document the image in `archive` carries (found by path in its layers, which
/// must hold exactly one) and the digest of the layer holding it.
fn image_cyclonedx(archive: &Path) -> (Vec<u8>, String) {
    let mut found = image_cyclonedx_all(archive);
    assert_eq!(found.len(), 1, "one SBOM layer in {}", archive.display());
    found.pop().unwrap()
}

/// Every CycloneDX document in the layers of the image in `archive`, bottom to top, with the
/// digest of its layer.
fn image_cyclonedx_all(archive: &Path) -> Vec<(Vec<u8>, String)> {
    let files = archive_files(archive);
    let blob = |digest: &Value| {
        let digest = digest.as_str().unwrap();
        &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))]
    };
    let index = json_file(&files, "index.json");
    let manifest: Value = serde_json::from_slice(blob(&index["manifests"][0]["digest"])).unwrap();
    let mut found = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let gz = flate2::read::GzDecoder::new(blob(&layer["digest"]).as_slice());
        for entry in tar::Archive::new(gz).entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap() == Path::new("layers/kiln/sbom/sbom.cdx.json") {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                found.push((bytes, layer["digest"].as_str().unwrap().to_owned()));
            }
        }
    }
    found
}

/// The versions of `name` an SBOM lists, and whether it lists [`GO_DEPENDENCY`].
fn sbom_lists(cyclonedx: &[u8], name: &str) -> (Vec<String>, bool) {
    let inventory = kiln_sbom::cyclonedx::read(cyclonedx).unwrap();
    let versions = inventory
        .components()
        .iter()
        .filter(|c| c.ecosystem == kiln_sbom::Ecosystem::Debian && c.name == name)
        .map(|c| c.version.clone())
        .collect();
    let (module, version) = GO_DEPENDENCY;
    let go = inventory.components().iter().any(|c| {
        c.ecosystem == kiln_sbom::Ecosystem::Golang && c.name == module && c.version == version
    });
    (versions, go)
}

fn package_version(stack: &Value, name: &str) -> Value {
    stack["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {stack}"))["version"]
        .clone()
}

#[test]
fn rebase_onto_a_newer_stack_keeps_app_layers_and_gives_what_a_fresh_build_gives() {
    if !require_tools(&["go", "skopeo", "umoci", "runc"]) || !require_debian_mirror() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = go_http_with_libpq(tmp.path());
    let cache = tmp.path().join("cache");
    kiln_json(&["lock", src.to_str().unwrap()]);
    let fresh = Lock::read(&src.join("kiln.lock")).unwrap().unwrap();
    let (old, (name, old_version, new_version)) = older_lock(&fresh);
    let old_lock = tmp.path().join("old.lock");
    old.write(&old_lock).unwrap();
    old.write(&src.join("kiln.lock")).unwrap();

    // The app, built on the old stack, with its SBOM.
    let a_tar = tmp.path().join("a.tar");
    let a_sbom = tmp.path().join("a-sbom");
    let a = build_with_sbom(&src, &cache, &a_tar, &a_sbom);
    assert_eq!(a["stack"]["locked"], true);
    assert_eq!(package_version(&a["stack"], &name), old_version.as_str());
    let (a_cdx, a_sbom_layer) = image_cyclonedx(&a_tar);
    assert_eq!(a_cdx, fs::read(a_sbom.join("sbom.cdx.json")).unwrap());
    assert_eq!(sbom_lists(&a_cdx, &name), (vec![old_version.clone()], true));
    fs::remove_file(src.join("kiln.lock")).unwrap();

    // Rebased onto the stack resolved fresh, under two names, writing the refreshed SBOM.
    let b_tar = tmp.path().join("b.tar");
    let b_sbom = tmp.path().join("b-sbom");
    let tags = ["localhost:5000/kiln/app:one", "localhost:5000/kiln/app:two"];
    let b = rebase(
        &a_tar,
        &b_tar,
        &cache,
        &[
            "--tag",
            tags[0],
            "--tag",
            tags[1],
            "--sbom-dir",
            b_sbom.to_str().unwrap(),
        ],
    );
    let stack = &b["stack"];
    assert_eq!(stack["changed"], true, "{b}");
    let changes = stack["packages"].as_array().unwrap();
    assert!(
        changes.iter().any(|c| c["name"] == name.as_str()
            && c["old"] == old_version.as_str()
            && c["new"] == new_version.as_str()),
        "{changes:?}"
    );
    assert_eq!(stack["stack"]["locked"], false);
    // App layers byte for byte but the SBOM's; the stack layers holding the package replaced.
    let a_layers = app_layer_digests(&a);
    assert_eq!(a_layers.len(), 3, "go/bin, kiln/sbom and app");
    assert_eq!(a_layers[1], a_sbom_layer.as_str());
    let b_layers = b["app_layers"].as_array().unwrap();
    assert_eq!(b_layers.len(), 3);
    assert_eq!((&b_layers[0], &b_layers[2]), (&a_layers[0], &a_layers[2]));
    assert_ne!(b_layers[1], a_layers[1], "the SBOM layer is made again");

    // The SBOM in the image and in --sbom-dir: the new version of the package, not the old, and
    // the app's dependency still.
    let (b_cdx, b_sbom_layer) = image_cyclonedx(&b_tar);
    assert_eq!(b_layers[1], b_sbom_layer.as_str());
    assert_eq!(b_cdx, fs::read(b_sbom.join("sbom.cdx.json")).unwrap());
    assert_eq!(sbom_lists(&b_cdx, &name), (vec![new_version.clone()], true));
    assert_eq!(b["sbom"]["refreshed"], true, "{b}");
    assert_eq!(b["sbom"]["base_packages_known"], true);
    assert_eq!(b["sbom"]["layer"], b_sbom_layer.as_str());
    assert_eq!(
        b["sbom"]["debian_packages"],
        stack["stack"]["packages"].as_array().unwrap().len()
    );
    assert_eq!(
        b["sbom"]["components"],
        kiln_sbom::cyclonedx::read(&b_cdx)
            .unwrap()
            .components()
            .len()
    );

    // Both names in the archive: an index.json entry each, both in manifest.json's RepoTags.
    let b_files = archive_files(&b_tar);
    let index = json_file(&b_files, "index.json");
    let names: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["annotations"]["io.containerd.image.name"])
        .collect();
    assert_eq!(names, tags);
    assert_eq!(
        json_file(&b_files, "manifest.json")[0]["RepoTags"],
        serde_json::json!(tags)
    );
    let a_inspect = kiln_json(&["inspect", a_tar.to_str().unwrap()]);
    let b_inspect = kiln_json(&["inspect", b_tar.to_str().unwrap()]);
    let all = |inspect: &Value| -> Vec<Value> {
        inspect["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect()
    };
    let (a_all, b_all) = (all(&a_inspect), all(&b_inspect));
    let bases = a_all.len() - a_layers.len();
    assert_eq!(b_all.len(), a_all.len());
    assert_eq!(b_all[bases..], b_layers[..], "app layers as reported");
    assert_ne!(b_all[..bases], a_all[..bases], "stack layers replaced");
    assert_ne!(b["old_base_layers"], b["new_base_layers"]);
    // The label lists the new versions.
    assert_eq!(
        package_version(&b_inspect["stack"], &name),
        new_version.as_str()
    );
    assert_eq!(
        b_inspect["stack"]["run_packages"],
        serde_json::json!(["libpq5"])
    );
    assert_eq!(b_inspect["processes"], a_inspect["processes"]);

    // Exactly what a build on today's stack makes, SBOM included.
    let c_tar = tmp.path().join("c.tar");
    let c_sbom = tmp.path().join("c-sbom");
    let c = build_with_sbom(&src, &cache, &c_tar, &c_sbom);
    assert_eq!(c["stack"]["locked"], false);
    assert_eq!(b["manifest_digest"], c["manifest_digest"]);
    for file in ["sbom.cdx.json", "sbom.spdx.json"] {
        assert_eq!(
            fs::read(b_sbom.join(file)).unwrap(),
            fs::read(c_sbom.join(file)).unwrap(),
            "{file}"
        );
    }

    // Up to date: nothing changes, the same digest, the same bytes (the refreshed label is
    // consistent with the refreshed layer, or this rebase would refuse the image); --sbom-dir
    // gives the image's own documents.
    let d_tar = tmp.path().join("d.tar");
    let d_sbom = tmp.path().join("d-sbom");
    let d = rebase(
        &b_tar,
        &d_tar,
        &cache,
        &[
            "--tag",
            tags[0],
            "--tag",
            tags[1],
            "--sbom-dir",
            d_sbom.to_str().unwrap(),
        ],
    );
    assert_eq!(d["stack"]["changed"], false, "{d}");
    assert_eq!(d["stack"]["packages"], serde_json::json!([]));
    assert_eq!(d["manifest_digest"], b["manifest_digest"]);
    assert_eq!(fs::read(&d_tar).unwrap(), fs::read(&b_tar).unwrap());
    assert_eq!(d["sbom"]["refreshed"], false, "{d}");
    for file in ["sbom.cdx.json", "sbom.spdx.json"] {
        assert_eq!(
            fs::read(d_sbom.join(file)).unwrap(),
            fs::read(b_sbom.join(file)).unwrap(),
            "{file}"
        );
    }

    // Back onto the old lock: the old image, digest for digest.
    let e = rebase(
        &b_tar,
        &tmp.path().join("e.tar"),
        &cache,
        &["--lock", old_lock.to_str().unwrap()],
    );
    assert_eq!(e["stack"]["changed"], true);
    assert_eq!(e["manifest_digest"], a["manifest_digest"]);

    // Onto a run image that carries the stack label (here today's build, as an image built on
    // a Kiln-built image would be): the label's packages.
    let g_tar = tmp.path().join("g.tar");
    let g = rebase(
        &a_tar,
        &g_tar,
        &cache,
        &["--run-image", &format!("oci-archive:{}", c_tar.display())],
    );
    assert_eq!(g["sbom"]["base_packages_known"], true, "{g}");
    // The base's own SBOM layer is under the image's: the top one is the image's.
    let mut g_sboms = image_cyclonedx_all(&g_tar);
    assert_eq!(g_sboms.len(), 2);
    let (g_cdx, g_layer) = g_sboms.pop().unwrap();
    assert_eq!(g["sbom"]["layer"], g_layer.as_str());
    assert_eq!(sbom_lists(&g_cdx, &name), (vec![new_version.clone()], true));

    // Onto a run image Kiln did not assemble: its packages are unknown, so the SBOM lists no
    // Debian package (and says so), the app's dependency still.
    let tiny = tmp.path().join("tiny.tar");
    tiny_base_image(&tiny, "1", None, &support::host_architecture());
    let f_tar = tmp.path().join("f.tar");
    let f = kiln_on_stack()
        .args(["rebase", b_tar.to_str().unwrap(), "--output"])
        .arg(&f_tar)
        .args(["--cache-dir", cache.to_str().unwrap(), "--json"])
        .arg("--run-image")
        .arg(format!("oci-archive:{}", tiny.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&f.stderr);
    assert!(f.status.success(), "{stderr}");
    assert!(
        stderr.contains("the new base's packages are unknown"),
        "{stderr}"
    );
    let f: Value = serde_json::from_slice(&f.stdout).unwrap();
    assert_eq!(f["sbom"]["base_packages_known"], false, "{f}");
    assert_eq!(f["sbom"]["debian_packages"], 0);
    let (f_cdx, _) = image_cyclonedx(&f_tar);
    assert_eq!(sbom_lists(&f_cdx, &name), (vec![], true));
    let f_inventory = kiln_sbom::cyclonedx::read(&f_cdx).unwrap();
    assert!(f_inventory
        .components()
        .iter()
        .all(|c| c.ecosystem != kiln_sbom::Ecosystem::Debian));
    assert_eq!(f["sbom"]["components"], f_inventory.components().len());

    // The rebased image answers HTTP under runc (taken from the archive by its second name).
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}:two", b_tar.display()),
        &[("PORT", &port.to_string())],
    );
    let (status, body) = container.http_get(port, "/ping");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "hello from kiln go-http at /ping\n");
}

#[test]
fn rebase_without_a_run_image_refuses_an_image_not_on_kiln_stack() {
    if !require_tools(&["go"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let image = tmp.path().join("scratch.tar");
    let built = kiln_on_stack()
        .args(["build", fixture("go-http").to_str().unwrap()])
        .args([
            "--run-image",
            "scratch",
            "--output",
            image.to_str().unwrap(),
        ])
        .args(["--cache-dir", cache.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = tmp.path().join("rebased.tar");
    let failed = kiln_on_stack()
        .args(["rebase", image.to_str().unwrap(), "--output"])
        .arg(&out)
        .args(["--cache-dir", cache.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: cannot rebase onto a newer stack: no dev.kiln.stack label: it does not run on Kiln's stack; pass --run-image NEW",
            image.display()
        )),
        "{stderr}"
    );
    assert!(!out.exists(), "no image is written");
}
