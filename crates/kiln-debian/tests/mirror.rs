//! Against the real Debian mirror named by this host's apt sources (no mirror host is written
//! here). Unreachable mirror: the test fails under `CI`, and skips loudly elsewhere.
//!
//! Tampering is tested through a proxy on 127.0.0.1 that fetches from the mirror and changes
//! bytes on the way (`support/proxy.rs`).

mod support;

use support::proxy::tampering_proxy;

use std::path::{Path, PathBuf};

use kiln_debian::fetch::{self, Cache, Source};
use kiln_debian::mirror::{self, Given, Mirror};
use kiln_debian::release::Keyring;
use kiln_debian::stack::{self, Distro, Flavour, Request};
use kiln_oci::layer::{Entry, EntryKind};

/// One cache for every test of this file (and across runs): packages are downloaded once.
fn shared_cache() -> Cache {
    Cache::open(Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-debian-cache")).unwrap()
}

fn source_for(mirror: Mirror) -> Source {
    Source {
        mirror,
        keyring: Keyring::embedded().unwrap(),
        arch: fetch::host_arch()
            .expect("a Debian architecture")
            .to_owned(),
        max_index_age: fetch::DEFAULT_MAX_INDEX_AGE,
    }
}

/// The host's mirror, if it answers; `None` (after a loud SKIPPED) only outside CI.
fn host_source() -> Option<Source> {
    let mirror = mirror::find(&Given::default(), Path::new("/")).unwrap();
    let probe = format!("{}/dists/trixie/InRelease", mirror.archive);
    if let Err(e) = ureq::head(&probe).call() {
        let why = format!("the Debian mirror from the apt sources does not answer ({probe}: {e})");
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("\n*** SKIPPED: {why} ***\n");
        return None;
    }
    Some(source_for(mirror))
}

#[test]
fn trixie_and_bookworm_releases_verify_with_the_embedded_keys() {
    let Some(source) = host_source() else { return };
    let cache = shared_cache();
    for distro in Distro::ALL {
        for suite in source.suites(distro.codename()) {
            let mut notes = Vec::new();
            let release = fetch::release(&source, &cache, &suite, &mut notes).unwrap();
            assert_eq!(release.codename, suite);
            assert_eq!(release.signed_by.len(), 40, "{}", release.signed_by);
            let packages = format!("main/binary-{}/Packages.xz", source.arch);
            assert!(release.file(&packages).unwrap().size > 0, "{suite}");
            assert_eq!(release.inrelease_sha256.len(), 64);
        }
    }
}

/// `err` refuses the Release from `url` as expired an hour before.
fn assert_expired_an_hour_ago(err: &str, url: &str) {
    assert!(
        err.starts_with(&format!(
            "{url}: refused: expired: Valid-Until is 3600 seconds in the past"
        )),
        "{err}"
    );
}

#[test]
fn an_expired_release_is_refused() {
    let Some(source) = host_source() else { return };
    let Some(_) = &source.mirror.security else {
        panic!("the host's apt sources name no security archive: its Releases carry Valid-Until");
    };
    let cache = shared_cache();
    let release = fetch::release(&source, &cache, "trixie-security", &mut Vec::new()).unwrap();
    let until = release
        .valid_until_unix
        .expect("security Releases carry Valid-Until");
    let digest = kiln_oci::Digest::parse(&format!("sha256:{}", release.inrelease_sha256)).unwrap();
    let bytes = cache.store().read_verified(&digest).unwrap();
    let url = "http://mirror/dists/trixie-security/InRelease";
    kiln_debian::release::verify_inrelease(&bytes, &source.keyring, url, "trixie-security", until)
        .unwrap();
    let err = kiln_debian::release::verify_inrelease(
        &bytes,
        &source.keyring,
        url,
        "trixie-security",
        until + 3600,
    )
    .unwrap_err()
    .to_string();
    assert_expired_an_hour_ago(&err, url);
    // Asked for as another suite, the same signed bytes are refused too.
    let err = kiln_debian::release::verify_inrelease(&bytes, &source.keyring, url, "trixie", until)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not of \"trixie\""), "{err}");
}

#[test]
fn a_verified_signature_is_recorded_per_inrelease_and_keyring_and_valid_until_still_checked() {
    let Some(source) = host_source() else { return };
    let release =
        fetch::release(&source, &shared_cache(), "trixie-security", &mut Vec::new()).unwrap();
    let until = release
        .valid_until_unix
        .expect("security Releases carry Valid-Until");
    let digest = kiln_oci::Digest::parse(&format!("sha256:{}", release.inrelease_sha256)).unwrap();
    let bytes = shared_cache().store().read_verified(&digest).unwrap();
    let url = "http://mirror/dists/trixie-security/InRelease";
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let verify = |source: &Source, bytes: &[u8], now: i64| {
        fetch::verify_release(source, &cache, bytes, url, "trixie-security", now)
    };
    let first = verify(&source, &bytes, until).unwrap();
    assert_eq!(first.signed_by, release.signed_by);
    let records: Vec<PathBuf> = std::fs::read_dir(dir.path().join("refs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let [record] = &records[..] else {
        panic!("expected one record: {records:?}")
    };
    let name = record.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("verified-"), "{name}");

    // The record is what a second use reads: one naming another key is believed...
    let recorded = std::fs::read_to_string(record).unwrap();
    let blob = kiln_oci::Digest::parse(recorded.trim()).unwrap();
    let text = String::from_utf8(cache.store().read_verified(&blob).unwrap()).unwrap();
    let forged = text.replacen(&release.signed_by, "recorded-key", 1);
    let forged = cache.store().put_bytes(forged.as_bytes()).unwrap();
    std::fs::write(record, forged.as_str()).unwrap();
    assert_eq!(
        verify(&source, &bytes, until).unwrap().signed_by,
        "recorded-key"
    );
    // ...but Valid-Until is checked on every use, recorded or not.
    let err = verify(&source, &bytes, until + 3600)
        .unwrap_err()
        .to_string();
    assert_expired_an_hour_ago(&err, url);

    // Other bytes (a changed signed text) have no record and fail the signature check.
    let text = std::str::from_utf8(&bytes).unwrap();
    let changed = text.replacen("Suite: ", "Suite:  ", 1);
    assert_ne!(changed, text);
    let err = verify(&source, changed.as_bytes(), until)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no signature verifies"), "{err}");
    // Another keyring is another key: the record for the embedded keys does not count for it.
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys");
    let mut other = source.clone();
    other.keyring = Keyring::from_file(&keys.join("debian-archive-trixie-stable.gpg")).unwrap();
    let err = verify(&other, &bytes, until).unwrap_err().to_string();
    assert!(err.contains("no signature verifies"), "{err}");
}

#[test]
fn an_old_cached_index_is_refreshed_when_the_mirror_answers() {
    let Some(mut source) = host_source() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    fetch::release(&source, &cache, "trixie", &mut Vec::new()).unwrap();
    let refs: Vec<PathBuf> = std::fs::read_dir(dir.path().join("refs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("inrelease-")
        })
        .collect();
    assert_eq!(refs.len(), 1);
    // Pretend it was fetched two days ago.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&refs[0])
        .unwrap()
        .set_modified(old)
        .unwrap();
    source.max_index_age = std::time::Duration::from_secs(24 * 3600);
    let mut notes = Vec::new();
    fetch::release(&source, &cache, "trixie", &mut notes).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let fetched = std::fs::metadata(&refs[0]).unwrap().modified().unwrap();
    assert!(
        fetched > old + std::time::Duration::from_secs(24 * 3600),
        "the ref was refreshed"
    );
}

/// One changed byte in an InRelease's signed text: `Date: Sat, 21 …` → a different digit.
fn change_the_date(inrelease: &mut [u8]) {
    let at = inrelease.windows(6).position(|w| w == b"Date: ").unwrap() + 12;
    inrelease[at] = if inrelease[at] == b'1' { b'2' } else { b'1' };
}

#[test]
fn a_tampered_inrelease_is_refused_and_not_cached() {
    let Some(source) = host_source() else { return };
    fn tamper(path: &str, body: &mut [u8]) {
        if path.ends_with("/InRelease") {
            change_the_date(body);
        }
    }
    let evil = source_for(tampering_proxy(&source.mirror, tamper));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let err = fetch::release(&evil, &cache, "trixie", &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dists/trixie/InRelease: refused: no signature verifies with Kiln's embedded Debian archive keys"),
        "{err}"
    );
    assert!(!dir.path().join("refs").exists(), "nothing may be recorded");
    // The same bytes untampered verify: the refusal is the tampering's doing.
    fetch::release(&source, &cache, "trixie", &mut Vec::new()).unwrap();
}

#[test]
fn a_cached_index_that_no_longer_verifies_is_fetched_again() {
    let Some(source) = host_source() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let refs = dir.path().join("refs");
    let fetch_ref = |suite: &str| {
        let before: Vec<PathBuf> = list(&refs);
        fetch::release(&source, &cache, suite, &mut Vec::new()).unwrap();
        list(&refs)
            .into_iter()
            .find(|p| !before.contains(p))
            .unwrap()
    };
    let trixie = fetch_ref("trixie");
    let bookworm = fetch_ref("bookworm");
    // The young trixie ref now names bookworm's (validly signed) InRelease.
    std::fs::copy(&bookworm, &trixie).unwrap();
    let release = fetch::release(&source, &cache, "trixie", &mut Vec::new()).unwrap();
    assert_eq!(release.codename, "trixie");
}

fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

fn static_request() -> Request {
    Request {
        distro: Distro::Debian13,
        flavour: Flavour::Static,
        packages: Vec::new(),
    }
}

#[test]
fn a_tampered_deb_is_refused_naming_the_package() {
    let Some(source) = host_source() else { return };
    fn tamper(path: &str, body: &mut [u8]) {
        if path.ends_with(".deb") {
            let middle = body.len() / 2;
            body[middle] ^= 0xff;
        }
    }
    let lock =
        stack::resolve_fresh(&source, &shared_cache(), &static_request(), &mut Vec::new()).unwrap();
    let evil = source_for(tampering_proxy(&source.mirror, tamper));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let err = stack::assemble(&evil, &cache, &lock)
        .unwrap_err()
        .to_string();
    let first = &lock.layer[0].package[0];
    assert!(
        err.starts_with(&format!(
            "package {} ({}): refused: ",
            first.id(),
            first.filename
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("but Packages lists sha256:{}", first.sha256)),
        "{err}"
    );
    let stored: Vec<PathBuf> = std::fs::read_dir(dir.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(
        !stored.iter().any(|p| p.ends_with(&first.sha256)),
        "the tampered .deb must not be stored under its listed digest"
    );
}

fn file_text(entries: &[Entry], path: &str) -> String {
    let entry = entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} is not in the layer"));
    match &entry.kind {
        EntryKind::File { source, .. } => std::fs::read_to_string(source).unwrap(),
        other => panic!("{path} is {other:?}"),
    }
}

#[test]
fn the_static_stack_has_certificates_zoneinfo_users_and_dpkg_status() {
    let Some(source) = host_source() else { return };
    let cache = shared_cache();
    let lock = stack::resolve_fresh(&source, &cache, &static_request(), &mut Vec::new()).unwrap();
    let names: Vec<&str> = lock.packages().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["base-files", "ca-certificates", "netbase", "tzdata"]
    );
    let layers = stack::assemble(&source, &cache, &lock).unwrap();
    assert_eq!(layers.len(), 1);
    let entries = &layers[0].entries;
    let bundle = file_text(entries, "etc/ssl/certs/ca-certificates.crt");
    assert!(
        bundle.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        &bundle[..40]
    );
    assert!(bundle.matches("BEGIN CERTIFICATE").count() > 100);
    let utc = entries
        .iter()
        .find(|e| e.path == "usr/share/zoneinfo/UTC")
        .expect("zoneinfo/UTC");
    assert!(matches!(
        utc.kind,
        EntryKind::Symlink { .. } | EntryKind::File { .. }
    ));
    assert!(file_text(entries, "usr/share/zoneinfo/Etc/UTC").starts_with("TZif"));
    let passwd = file_text(entries, "etc/passwd");
    assert!(passwd.contains("\nnonroot:x:65532:65532:"), "{passwd}");
    let status = file_text(entries, "var/lib/dpkg/status.d/tzdata");
    assert!(
        status.starts_with("Package: tzdata\nStatus: install ok installed\n"),
        "{status}"
    );
    assert!(status.contains(&format!(
        "\nVersion: {}\n",
        lock.layer[0].package[3].version
    )));
    for name in names {
        assert!(entries
            .iter()
            .any(|e| e.path == format!("var/lib/dpkg/status.d/{name}")));
        assert!(
            entries
                .iter()
                .any(|e| e.path == format!("usr/share/doc/{name}/copyright")),
            "{name}"
        );
    }
    // Merged /usr: links, never directories, and docs/man pages gone.
    for link in ["bin", "lib", "lib64", "sbin"] {
        let entry = entries.iter().find(|e| e.path == link).unwrap();
        assert_eq!(
            entry.kind,
            EntryKind::Symlink {
                target: format!("usr/{link}")
            }
        );
    }
    assert!(!entries.iter().any(|e| e.path.starts_with("usr/share/man/")));
    let tmp = entries.iter().find(|e| e.path == "tmp").unwrap();
    assert_eq!(tmp.mode, 0o1777);
    // The same lock assembled again gives the same entries (content, not host paths).
    let again = stack::assemble(&source, &cache, &lock).unwrap();
    assert_eq!(again[0].entries, layers[0].entries);
}

#[test]
fn the_glibc_stack_of_bookworm_has_dash_as_sh_and_env() {
    let Some(source) = host_source() else { return };
    let cache = shared_cache();
    let request = Request {
        distro: Distro::Debian12,
        flavour: Flavour::Glibc,
        packages: Vec::new(),
    };
    let lock = stack::resolve_fresh(&source, &cache, &request, &mut Vec::new()).unwrap();
    let glibc: Vec<&str> = lock.layer[1]
        .package
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    for name in [
        "libc6",
        "libgcc-s1",
        "libstdc++6",
        "libssl3",
        "zlib1g",
        "dash",
        "coreutils",
    ] {
        assert!(glibc.contains(&name), "{name} not in {glibc:?}");
    }
    assert!(
        !glibc.contains(&"dpkg"),
        "dash's dependencies are not followed"
    );
    let layers = stack::assemble(&source, &cache, &lock).unwrap();
    let entries = &layers[1].entries;
    let find = |p: &str| entries.iter().find(|e| e.path == p).map(|e| e.kind.clone());
    assert_eq!(
        find("usr/bin/sh"),
        Some(EntryKind::Symlink {
            target: "dash".into()
        })
    );
    assert!(matches!(find("usr/bin/dash"), Some(EntryKind::File { .. })));
    assert!(matches!(find("usr/bin/env"), Some(EntryKind::File { .. })));
    assert_eq!(find("usr/bin/ls"), None);
    // bookworm ships libc in /lib: it lands under /usr, and no layer has a `lib` directory.
    assert!(find("usr/lib/x86_64-linux-gnu/libc.so.6").is_some() || source.arch != "amd64");
    assert!(layers.iter().all(|l| l
        .entries
        .iter()
        .all(|e| e.path != "lib" || matches!(e.kind, EntryKind::Symlink { .. }))));
    assert!(!entries.iter().any(|e| e.path.starts_with("lib/")));
}

#[test]
fn a_locked_package_gone_from_the_mirror_is_named_with_a_way_out() {
    let Some(source) = host_source() else { return };
    let mut lock =
        stack::resolve_fresh(&source, &shared_cache(), &static_request(), &mut Vec::new()).unwrap();
    // A version the pool no longer has (as happens once a point release replaces it).
    let pinned = &mut lock.layer[0].package[2];
    pinned.version = "0.0-kiln-test".into();
    pinned.filename = pinned.filename.replace(".deb", "-kiln-test.deb");
    pinned.sha256 = "0".repeat(64);
    let id = pinned.id();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let err = stack::assemble(&source, &cache, &lock)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("package {id} (")), "{err}");
    assert!(err.contains("is gone from the mirror"), "{err}");
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(
        err.contains("snapshot mirror") && err.contains("kiln lock --update"),
        "{err}"
    );
}

#[test]
fn updates_suites_are_verified_and_locks_take_the_highest_version_of_all_suites() {
    let Some(mut source) = host_source() else {
        return;
    };
    if source.mirror.security.is_none() {
        panic!("the host's apt sources name no security archive");
    }
    // What Kiln does by default with a mirror it is given (the host's sources here list
    // `-updates` too).
    source.mirror.updates = true;
    let cache = shared_cache();
    let mut notes = Vec::new();
    let (releases, universe) = fetch::universe(&source, &cache, "trixie", &mut notes).unwrap();
    assert_eq!(universe.suites, "trixie, trixie-updates, trixie-security");
    // The -updates InRelease verified like the others, and its packages are its own.
    assert_eq!(releases[1].codename, "trixie-updates");
    assert_eq!(releases[1].signed_by.len(), 40);
    let mut by_name: std::collections::BTreeMap<String, Vec<kiln_debian::index::Package>> =
        Default::default();
    for release in &releases {
        for p in fetch::packages(&source, &cache, release).unwrap() {
            assert_eq!(p.suite, release.suite);
            by_name.entry(p.name.clone()).or_default().push(p);
        }
    }
    let glibc = Request {
        flavour: Flavour::Glibc,
        ..static_request()
    };
    let lock = stack::resolve_fresh(&source, &cache, &glibc, &mut notes).unwrap();
    let suites: Vec<&str> = lock.suite.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(suites, ["trixie", "trixie-updates", "trixie-security"]);
    for deb in lock.packages() {
        let listed = &by_name[&deb.name];
        let highest = listed.iter().map(|p| &p.version).max().unwrap();
        assert_eq!(deb.version, highest.to_string(), "{}", deb.name);
        assert!(
            listed.iter().any(|p| p.suite == deb.suite
                && p.version.to_string() == deb.version
                && p.sha256 == deb.sha256),
            "{} is recorded as from {}, which does not list it",
            deb.id(),
            deb.suite
        );
    }

    // A tampered -updates InRelease is refused like the release's own.
    fn tamper(path: &str, body: &mut [u8]) {
        if path.ends_with("/trixie-updates/InRelease") {
            change_the_date(body);
        }
    }
    let evil = source_for(tampering_proxy(&source.mirror, tamper));
    let dir = tempfile::tempdir().unwrap();
    let fresh = Cache::open(dir.path()).unwrap();
    let err = fetch::universe(&evil, &fresh, "trixie", &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dists/trixie-updates/InRelease: refused: no signature verifies"),
        "{err}"
    );
}

#[test]
fn a_cached_plan_needs_no_packages_index_and_a_damaged_one_is_not_used() {
    let Some(source) = host_source() else { return };
    let shared = shared_cache();
    let lock = stack::resolve_fresh(&source, &shared, &static_request(), &mut Vec::new()).unwrap();
    // The plan entry that resolution left in the shared cache.
    let text = lock.to_toml().unwrap();
    let plan = std::fs::read_dir(shared.root().join("refs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("plan-")
        })
        .find(|p| {
            let digest = std::fs::read_to_string(p).unwrap();
            kiln_oci::Digest::parse(digest.trim())
                .ok()
                .and_then(|d| shared.store().read_verified(&d).ok())
                .is_some_and(|bytes| bytes == text.as_bytes())
        })
        .expect("resolve_fresh stores its plan under refs/plan-*");

    // A cache holding that plan entry and nothing else, behind a mirror whose Packages indexes
    // are all damaged: the plan is reused without reading any index.
    fn break_indexes(path: &str, body: &mut [u8]) {
        if path.contains("/Packages") && !body.is_empty() {
            let middle = body.len() / 2;
            body[middle] ^= 0xff;
        }
    }
    let evil = source_for(tampering_proxy(&source.mirror, break_indexes));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let digest = cache.store().put_bytes(text.as_bytes()).unwrap();
    let ref_path = dir.path().join("refs").join(plan.file_name().unwrap());
    std::fs::create_dir_all(ref_path.parent().unwrap()).unwrap();
    std::fs::write(&ref_path, digest.as_str()).unwrap();
    let reused = stack::resolve_fresh(&evil, &cache, &static_request(), &mut Vec::new()).unwrap();
    assert_eq!(reused, lock);

    // The entry's blob damaged: it is not trusted, so resolution reads the (damaged) index.
    let blob = cache.store().path(&digest);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, text.replace("tzdata", "tzdatb")).unwrap();
    let err = stack::resolve_fresh(&evil, &cache, &static_request(), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("Packages"), "{err}");
}
