//! `kiln rebase IMAGE` with no `--run-image`: the image goes onto a newer build of its own
//! stack (re-resolved against the host's Debian mirror, or from `--lock`), app layers kept byte
//! for byte; an up-to-date image is left as it is; an image not on Kiln's stack is refused.
//!
//! "Older" stacks are real: a lock whose one package is pinned to a lower version that one of
//! the suites' signed indexes still lists (a security suite keeps its older builds), so the old
//! image is built from verified packages exactly as a user's month-old lock would be.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_debian::fetch::{self, Cache, DebRef, Source};
use kiln_debian::lock::Lock;
use serde_json::Value;

use support::run_image::{build_on_stack_ok, kiln_on_stack, require_debian_mirror, stack_cache};
use support::{fixture, free_port, require_tools, run_ok, Container};

/// A private copy of `fixtures/go-http` with `libpq5` as a run package (so the stack has a
/// glibc layer and a packages layer, and the label records a run package). Its `kiln.lock` is
/// kept out of the app layer, so builds with and without one have the same app layers.
fn go_http_with_libpq(dir: &Path) -> PathBuf {
    let src = dir.join("go-http");
    run_ok(Command::new("cp").args([
        "-r",
        fixture("go-http").to_str().unwrap(),
        src.to_str().unwrap(),
    ]));
    fs::write(src.join("kiln.toml"), "[packages]\nrun = [\"libpq5\"]\n").unwrap();
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

    // The app, built on the old stack.
    let a_tar = tmp.path().join("a.tar");
    let a = build_on_stack_ok(&src, &cache, &a_tar);
    assert_eq!(a["stack"]["locked"], true);
    assert_eq!(package_version(&a["stack"], &name), old_version.as_str());
    fs::remove_file(src.join("kiln.lock")).unwrap();

    // Rebased onto the stack resolved fresh.
    let b_tar = tmp.path().join("b.tar");
    let b = rebase(&a_tar, &b_tar, &cache, &[]);
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
    // App layers byte for byte; the stack layers holding the package replaced.
    let a_layers = app_layer_digests(&a);
    assert_eq!(a_layers.len(), 2, "go/bin and app");
    assert_eq!(b["app_layers"].as_array().unwrap(), &a_layers);
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
    assert_eq!(b_all[bases..], a_all[bases..], "app layers kept");
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

    // Exactly what a build on today's stack makes.
    let c = build_on_stack_ok(&src, &cache, &tmp.path().join("c.tar"));
    assert_eq!(c["stack"]["locked"], false);
    assert_eq!(b["manifest_digest"], c["manifest_digest"]);

    // Up to date: nothing changes, the same digest, the same bytes.
    let d_tar = tmp.path().join("d.tar");
    let d = rebase(&b_tar, &d_tar, &cache, &[]);
    assert_eq!(d["stack"]["changed"], false, "{d}");
    assert_eq!(d["stack"]["packages"], serde_json::json!([]));
    assert_eq!(d["manifest_digest"], b["manifest_digest"]);
    assert_eq!(fs::read(&d_tar).unwrap(), fs::read(&b_tar).unwrap());

    // Back onto the old lock: the old image, digest for digest.
    let e = rebase(
        &b_tar,
        &tmp.path().join("e.tar"),
        &cache,
        &["--lock", old_lock.to_str().unwrap()],
    );
    assert_eq!(e["stack"]["changed"], true);
    assert_eq!(e["manifest_digest"], a["manifest_digest"]);

    // The rebased image answers HTTP under runc.
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", b_tar.display()),
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
