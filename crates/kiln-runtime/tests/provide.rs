//! The download and host providers against a mirror served on 127.0.0.1, and the host's own
//! node and python.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_runtime::{resolve, Error, ProvidedRuntime, Provider, Runtime, VersionReq};
use support::*;

fn req(text: &str) -> VersionReq {
    VersionReq::parse(text).unwrap()
}

fn node_mirror() -> NodeMirror {
    let mut m = NodeMirror::default();
    m.release("22.1.0", None)
        .release("21.6.0", None)
        .release("20.12.0", Some("Iron"))
        .release("20.11.1", Some("Iron"))
        .release("18.19.0", Some("Hydrogen"));
    m
}

#[test]
fn download_picks_the_newest_satisfying_release() {
    let server = node_mirror().serve();
    let cache = tempfile::tempdir().unwrap();
    let download = [Provider::download(&server.base)];
    for (text, want) in [
        (">=20 <21", "20.12.0"),
        ("20.11", "20.11.1"),
        ("lts", "20.12.0"),
        ("lts/hydrogen", "18.19.0"),
        ("20 || 22", "22.1.0"),
        ("*", "22.1.0"),
        ("^18", "18.19.0"),
    ] {
        let got = resolve(Runtime::Node, &req(text), &download, cache.path()).unwrap();
        let archive = format!("v{want}/node-v{want}-{NODE_PLATFORM}.tar.gz");
        assert_downloaded(&got, text, want, &server, &archive);
        let want_root = cache
            .path()
            .join(format!("runtimes/node/{want}-{NODE_PLATFORM}"));
        assert_eq!(got.root, want_root);
        let node = std::fs::read_to_string(got.root.join(&got.bin).join("node")).unwrap();
        assert_eq!(node, format!("#!/bin/sh\necho v{want}\n"));
        // Symlinks inside the tree survive extraction.
        let npm = std::fs::read_link(got.root.join("bin/npm")).unwrap();
        assert_eq!(npm, Path::new("../lib/node_modules/npm/bin/npm-cli.js"));
        assert!(got.is_pruned(Path::new("include/node/node.h")));
        assert!(!got.is_pruned(Path::new("bin/node")));
    }
    // One index fetch serves every resolve (the cached index is fresh).
    let index_gets = server
        .requests()
        .iter()
        .filter(|p| *p == "index.json")
        .count();
    assert_eq!(index_gets, 1, "{:?}", server.requests());
}

/// `got` (resolved for `text`) is version `want` from the download provider: the archive at
/// `archive` on `server`, with that archive's sha256.
fn assert_downloaded(
    got: &ProvidedRuntime,
    text: &str,
    want: &str,
    server: &Server,
    archive: &str,
) {
    assert_eq!(got.version.to_string(), want, "{text}");
    assert_eq!(got.provider, "download");
    assert_eq!(got.source, format!("{}/{archive}", server.base));
    assert_eq!(got.sha256, Some(sha256_hex(&server_file(server, archive))));
}

/// The archive bytes the mirror serves at `path`, fetched like any client would.
fn server_file(server: &support::Server, path: &str) -> Vec<u8> {
    let url = format!("{}/{path}", server.base);
    let mut body = Vec::new();
    std::io::Read::read_to_end(
        &mut ureq::get(&url).call().unwrap().into_reader(),
        &mut body,
    )
    .unwrap();
    body
}

#[test]
fn cached_runtime_resolves_with_the_mirror_gone() {
    let mut server = node_mirror().serve();
    let cache = tempfile::tempdir().unwrap();
    let first = resolve(
        Runtime::Node,
        &req("20"),
        &[Provider::download(&server.base)],
        cache.path(),
    )
    .unwrap();
    let base = server.base.clone();
    server.stop();
    // Fresh cached index: no network at all.
    let again = resolve(
        Runtime::Node,
        &req("20"),
        &[Provider::download(&base)],
        cache.path(),
    )
    .unwrap();
    assert_eq!(again, first);
    // A stale index whose refresh fails is still used.
    let stale = Provider::Download {
        mirror: base.clone(),
        index_max_age: Duration::ZERO,
    };
    let offline = resolve(Runtime::Node, &req("20"), &[stale], cache.path()).unwrap();
    assert_eq!(offline, first);
    // With no index at all (a different mirror URL), the cached runtime still serves.
    let other = Provider::download(format!("{base}/gone"));
    let by_dir = resolve(Runtime::Node, &req("20"), &[other], cache.path()).unwrap();
    assert_eq!(by_dir.root, first.root);
}

#[test]
fn checksum_mismatch_fails_and_keeps_nothing() {
    let mut mirror = NodeMirror::default();
    let archive = tar_gz(&[Item::File(
        &format!("node-v24.0.0-{NODE_PLATFORM}/bin/node"),
        b"x",
        0o755,
    )]);
    let wrong = "ab".repeat(32);
    mirror.add_archive("24.0.0", None, archive.clone(), &wrong);
    let server = mirror.serve();
    let cache = tempfile::tempdir().unwrap();
    // A host provider after it must not be reached: a tampered download is not papered over.
    let providers = [
        Provider::download(&server.base),
        Provider::host(std::env::var_os("PATH").unwrap_or_default()),
    ];
    let err = resolve(Runtime::Node, &req("24"), &providers, cache.path()).unwrap_err();
    let Error::Checksum {
        url,
        expected,
        actual,
        ..
    } = &err
    else {
        panic!("expected a checksum error, got {err}");
    };
    assert_eq!(
        url,
        &format!(
            "{}/v24.0.0/node-v24.0.0-{NODE_PLATFORM}.tar.gz",
            server.base
        )
    );
    assert_eq!(expected, &wrong);
    assert_eq!(actual, &sha256_hex(&archive));
    let msg = err.to_string();
    assert!(
        msg.contains(url) && msg.contains(&wrong) && msg.contains(actual.as_str()),
        "{msg}"
    );
    let dir = cache.path().join("runtimes/node");
    assert!(only_indexes(&dir), "left behind: {:?}", listing(&dir));
}

#[test]
fn path_escaping_archives_are_rejected() {
    let top = format!("node-v24.0.0-{NODE_PLATFORM}");
    let (dotdot, evil, lib, lib_x) = (
        format!("{top}/../../escaped"),
        format!("{top}/bin/evil"),
        format!("{top}/lib"),
        format!("{top}/lib/x"),
    );
    let hostile: [(&str, Vec<Item>); 4] = [
        ("dotdot", vec![Item::File(&dotdot, b"x", 0o644)]),
        (
            "absolute",
            vec![Item::File("/tmp/kiln-runtime-escaped", b"x", 0o644)],
        ),
        ("symlink out", vec![Item::Symlink(&evil, "../../../etc")]),
        (
            "write through a symlink",
            vec![Item::Symlink(&lib, "bin"), Item::File(&lib_x, b"x", 0o644)],
        ),
    ];
    for (what, items) in hostile {
        let mut mirror = NodeMirror::default();
        let archive = tar_gz(&items);
        let sha = sha256_hex(&archive);
        mirror.add_archive("24.0.0", None, archive, &sha);
        let server = mirror.serve();
        let cache = tempfile::tempdir().unwrap();
        let err = resolve(
            Runtime::Node,
            &req("24"),
            &[Provider::download(&server.base)],
            cache.path(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Archive { .. }), "{what}: {err}");
        assert!(err.to_string().contains(&server.base), "{what}: {err}");
        let dir = cache.path().join("runtimes/node");
        assert!(only_indexes(&dir), "{what} left: {:?}", listing(&dir));
        assert!(!cache.path().join("runtimes/escaped").exists());
    }
    assert!(!Path::new("/tmp/kiln-runtime-escaped").exists());
}

#[test]
fn http_errors_name_the_url_and_status() {
    let mut mirror = node_mirror();
    let server = mirror.serve();
    let cache = tempfile::tempdir().unwrap();
    let missing = format!("{}/nope", server.base);
    let err = resolve(
        Runtime::Node,
        &req("20"),
        &[Provider::download(&missing)],
        cache.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("GET {missing}/index.json: HTTP 404")),
        "{msg}"
    );
    assert!(msg.contains("KILN_MIRROR_NODE"), "{msg}");
}

#[test]
fn python_build_standalone_layout() {
    let server = python_mirror(&[
        ("3.10.13", "20240107"),
        ("3.11.6", "20231002"),
        ("3.11.7", "20231211"),
        ("3.11.7", "20240107"),
        ("3.12.1", "20240107"),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let download = [Provider::download(&server.base)];
    for (text, want) in [
        ("3.11", "3.11.7"),
        (">=3.10,<3.13", "3.12.1"),
        ("~=3.10.0", "3.10.13"),
        ("==3.11.6", "3.11.6"),
    ] {
        let got = resolve(Runtime::Python, &req(text), &download, cache.path()).unwrap();
        assert_eq!(got.version.to_string(), want, "{text}");
        assert_eq!(
            got.root,
            cache
                .path()
                .join(format!("runtimes/python/{want}-{PYTHON_TRIPLE}"))
        );
        let out = std::process::Command::new(got.root.join("bin/python3"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("Python {want}")
        );
        assert!(got.is_pruned(Path::new("lib/python3.11/test/test_os.py")) || want != "3.11.7");
    }
    let latest_build = resolve(Runtime::Python, &req("3.11.7"), &download, cache.path()).unwrap();
    assert!(
        latest_build.source.contains("3.11.7+20240107"),
        "{}",
        latest_build.source
    );
    let err = resolve(Runtime::Python, &req(">=3.13"), &download, cache.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("newest 3.12.1, 3.11.7, 3.11.6, 3.10.13; none match >=3.13"),
        "{msg}"
    );
    assert!(msg.contains("KILN_MIRROR_PYTHON"), "{msg}");
}

/// The real host node, served as an official-layout archive, resolved, extracted and run.
#[test]
fn host_node_through_a_local_mirror() {
    if !require_tool("node") {
        return;
    }
    let host = resolve(
        Runtime::Node,
        &req("*"),
        &[Provider::host(std::env::var_os("PATH").unwrap_or_default())],
        Path::new("/nonexistent"),
    )
    .unwrap();
    let node = std::fs::read(host.root.join("bin/node")).unwrap();
    let version = host.version.to_string();
    let mut mirror = node_mirror();
    mirror.release_with(&version, None, &node);
    let mut server = mirror.serve();
    let cache = tempfile::tempdir().unwrap();
    let exact = req(&format!("={version}"));
    let started = Instant::now();
    let got = resolve(
        Runtime::Node,
        &exact,
        &[Provider::download(&server.base)],
        cache.path(),
    )
    .unwrap();
    let cold = started.elapsed();
    let out = std::process::Command::new(got.root.join("bin/node"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("v{version}")
    );
    server.stop();
    let started = Instant::now();
    let cached = resolve(
        Runtime::Node,
        &exact,
        &[Provider::download(&server.base)],
        cache.path(),
    )
    .unwrap();
    let warm = started.elapsed();
    assert_eq!(cached, got);
    eprintln!(
        "node {version} ({} MB): download+verify+extract {cold:?}, cached resolve {warm:?}",
        node.len() >> 20
    );
}

#[test]
fn host_provider_reports_versions() {
    for (runtime, tool) in [(Runtime::Node, "node"), (Runtime::Python, "python3")] {
        if !require_tool(tool) {
            continue;
        }
        let got = resolve(
            runtime,
            &req("*"),
            &[Provider::host(std::env::var_os("PATH").unwrap_or_default())],
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(got.provider, "host");
        assert!(got.root.join(&got.bin).is_dir(), "{got:?}");
        assert!(!got.include.is_empty(), "{got:?}");
        for p in &got.include {
            assert!(
                got.root.join(p).symlink_metadata().is_ok(),
                "{p:?} of {got:?}"
            );
        }
        let ask = std::process::Command::new(&got.source)
            .arg("--version")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&ask.stdout),
            String::from_utf8_lossy(&ask.stderr)
        );
        assert!(said.contains(&got.version.to_string()), "{said} vs {got:?}");
        if runtime == Runtime::Python {
            let minor = format!("lib/python{}.{}/test", got.version.major, got.version.minor);
            assert!(got.is_pruned(&Path::new(&minor).join("test_os.py")));
            assert!(got.is_pruned(Path::new("lib/python3.11/json/__pycache__/x.pyc")));
        }
    }
}

#[test]
fn unsatisfiable_requirement_lists_what_each_provider_found() {
    let server = node_mirror().serve();
    let cache = tempfile::tempdir().unwrap();
    let no_node_path = Provider::Host {
        path: cache.path().as_os_str().to_owned(),
    };
    let mut providers = vec![Provider::download(&server.base), no_node_path];
    if require_tool("node") {
        providers.push(Provider::host(std::env::var_os("PATH").unwrap_or_default()));
    }
    let err = resolve(Runtime::Node, &req(">=99"), &providers, cache.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("no node runtime satisfies \">=99\""),
        "{msg}"
    );
    let listing = format!(
        "download {}: newest 22.1.0, 21.6.0, 20.12.0, 20.11.1, 18.19.0; none match >=99",
        server.base
    );
    assert!(msg.contains(&listing), "{msg}");
    assert!(msg.contains("host: no node on PATH"), "{msg}");
    if providers.len() == 3 {
        let re = msg
            .lines()
            .any(|l| l.contains("host /") && l.contains("does not match >=99"));
        assert!(re, "{msg}");
    }
    assert!(
        msg.contains("KILN_MIRROR_NODE") && msg.contains("[mirrors] node"),
        "{msg}"
    );
    assert!(msg.contains("--run-image"), "{msg}");
    // Nothing was downloaded for a requirement nothing satisfies.
    assert!(only_indexes(&cache.path().join("runtimes/node")));
}

/// Layer entries of a runtime: its files under the image directory, pruned.
#[test]
fn layer_entries_place_and_prune() {
    use kiln_oci::layer::EntryKind;
    let server = node_mirror().serve();
    let cache = tempfile::tempdir().unwrap();
    let got = resolve(
        Runtime::Node,
        &req("22"),
        &[Provider::download(&server.base)],
        cache.path(),
    )
    .unwrap();
    let entries = got.layer_entries("/layers/node/runtime").unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "layers",
        "layers/node",
        "layers/node/runtime",
        "layers/node/runtime/bin/node",
        "layers/node/runtime/LICENSE",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.contains("include")), "{paths:?}");
    let npm = entries
        .iter()
        .find(|e| e.path == "layers/node/runtime/bin/npm")
        .unwrap();
    assert!(
        matches!(&npm.kind, EntryKind::Symlink { target } if target == "../lib/node_modules/npm/bin/npm-cli.js")
    );

    for (runtime, tool) in [(Runtime::Node, "node"), (Runtime::Python, "python3")] {
        if !require_tool(tool) {
            continue;
        }
        let host = resolve(
            runtime,
            &req("*"),
            &[Provider::host(std::env::var_os("PATH").unwrap_or_default())],
            cache.path(),
        )
        .unwrap();
        let started = Instant::now();
        let entries = host
            .layer_entries(&format!("layers/{runtime}/runtime"))
            .unwrap();
        let bytes: u64 = entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            })
            .sum();
        eprintln!(
            "host {runtime} {} at {}: {} entries, {} MB after pruning ({:?})",
            host.version,
            host.root.display(),
            entries.len(),
            bytes >> 20,
            started.elapsed()
        );
        let bin = format!("layers/{runtime}/runtime/bin/{tool}");
        assert!(entries.iter().any(|e| e.path == bin), "{bin} missing");
        assert!(!entries.iter().any(|e| e.path.contains("/__pycache__")));
        let tests = format!("/python{}.{}/test/", host.version.major, host.version.minor);
        assert!(!entries.iter().any(|e| e.path.contains(&tests)));
    }
}

/// Two builds fetching the same runtime at once both get it; one extraction wins the rename.
#[test]
fn concurrent_resolves_share_one_runtime() {
    let server = node_mirror().serve();
    let cache = tempfile::tempdir().unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    resolve(
                        Runtime::Node,
                        &req("21"),
                        &[Provider::download(&server.base)],
                        cache.path(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(results.windows(2).all(|w| w[0].root == w[1].root));
    let dir = cache.path().join("runtimes/node");
    let left: Vec<String> = listing(&dir)
        .into_iter()
        .filter(|p| !p.starts_with("index-"))
        .collect();
    let name = format!("21.6.0-{NODE_PLATFORM}");
    assert!(left.iter().all(|p| p.starts_with(&name)), "{left:?}");
}

#[test]
fn dotnet_sdk_from_release_metadata() {
    // 7.0 is listed but not served: a requirement the 9.0 or 8.0 channel satisfies never
    // reads it.
    let server = dotnet_mirror(
        &[
            ("7.0", &[]),
            ("8.0", &["8.0.404", "8.0.307"]),
            ("9.0", &["9.0.100"]),
        ],
        &[],
    );
    let cache = tempfile::tempdir().unwrap();
    let download = [Provider::download(&server.base)];
    for (text, want) in [
        ("8.0", "8.0.404"),
        (">=8.0.300 <8.0.400", "8.0.307"),
        ("*", "9.0.100"),
    ] {
        let got = resolve(Runtime::Dotnet, &req(text), &download, cache.path()).unwrap();
        let archive = format!("Sdk/{want}/dotnet-sdk-{want}-{DOTNET_RID}.tar.gz");
        assert_downloaded(&got, text, want, &server, &archive);
        assert_eq!(
            got.root,
            cache
                .path()
                .join(format!("runtimes/dotnet/{want}-{DOTNET_RID}"))
        );
        // `dotnet` sits at the root, which goes on PATH; DOTNET_ROOT names it for the steps.
        let dotnet = got.root.join(&got.bin).join("dotnet");
        assert_eq!(
            std::fs::read_to_string(dotnet).unwrap(),
            format!("#!/bin/sh\necho {want}\n")
        );
        assert_eq!(
            got.build_env(),
            [("DOTNET_ROOT".to_owned(), got.root.display().to_string())]
        );
    }
    assert!(
        !server.requests().iter().any(|p| p.contains("7.0")),
        "{:?}",
        server.requests()
    );
    // The launch layer: the runtimes, not the SDK.
    let sdk = resolve(Runtime::Dotnet, &req("8.0"), &download, cache.path()).unwrap();
    let paths: Vec<String> = sdk
        .layer_entries("/layers/dotnet/runtime")
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .filter(|p| p.matches('/').count() <= 4)
        .collect();
    assert_eq!(
        paths,
        [
            "layers",
            "layers/dotnet",
            "layers/dotnet/runtime",
            "layers/dotnet/runtime/LICENSE.txt",
            "layers/dotnet/runtime/dotnet",
            "layers/dotnet/runtime/host",
            "layers/dotnet/runtime/host/fxr",
            "layers/dotnet/runtime/shared",
            "layers/dotnet/runtime/shared/Microsoft.AspNetCore.App",
            "layers/dotnet/runtime/shared/Microsoft.NETCore.App",
        ]
    );
}

#[test]
fn dotnet_sha512_mismatch_fails_and_keeps_nothing() {
    let server = dotnet_mirror(&[("8.0", &["8.0.404"])], &["8.0.404"]);
    let cache = tempfile::tempdir().unwrap();
    let providers = [
        Provider::download(&server.base),
        Provider::host(std::env::var_os("PATH").unwrap_or_default()),
    ];
    let err = resolve(Runtime::Dotnet, &req("8.0"), &providers, cache.path()).unwrap_err();
    let Error::Checksum {
        url,
        algorithm,
        expected,
        actual,
    } = &err
    else {
        panic!("expected a checksum error, got {err}");
    };
    let archive = format!("Sdk/8.0.404/dotnet-sdk-8.0.404-{DOTNET_RID}.tar.gz");
    assert_eq!(url, &format!("{}/{archive}", server.base));
    assert_eq!(*algorithm, "sha512");
    assert_eq!(expected, &"0".repeat(128));
    let body = server_file(&server, &archive);
    assert_eq!(
        actual,
        &hex::encode(<sha2::Sha512 as sha2::Digest>::digest(&body))
    );
    let msg = err.to_string();
    assert!(
        msg.contains(url) && msg.contains("expected sha512") && msg.contains(actual.as_str()),
        "{msg}"
    );
    let dir = cache.path().join("runtimes/dotnet");
    assert!(only_indexes(&dir), "left behind: {:?}", listing(&dir));
}

#[test]
fn gleam_binary_verified_by_its_sha256_file() {
    let server = gleam_mirror(&["1.11.1", "1.9.1"], &[]);
    let cache = tempfile::tempdir().unwrap();
    let download = [Provider::download(&server.base)];
    for (text, want) in [(">= 1.4.0", "1.11.1"), ("~1.9", "1.9.1")] {
        let got = resolve(Runtime::Gleam, &req(text), &download, cache.path()).unwrap();
        let archive = format!("v{want}/gleam-v{want}-{GLEAM_TRIPLE}.tar.gz");
        assert_downloaded(&got, text, want, &server, &archive);
        let gleam = std::fs::read_to_string(got.root.join(&got.bin).join("gleam")).unwrap();
        assert_eq!(gleam, format!("#!/bin/sh\necho gleam {want}\n"));
        // A build tool only: the launch layer is the empty runtime directory.
        let paths: Vec<String> = got
            .layer_entries("/layers/gleam/runtime")
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["layers", "layers/gleam", "layers/gleam/runtime"]);
    }
}

#[test]
fn gleam_sha256_mismatch_fails_and_keeps_nothing() {
    let server = gleam_mirror(&["1.11.1"], &["1.11.1"]);
    let cache = tempfile::tempdir().unwrap();
    let download = [Provider::download(&server.base)];
    let err = resolve(Runtime::Gleam, &req("1"), &download, cache.path()).unwrap_err();
    let url = format!(
        "{}/v1.11.1/gleam-v1.11.1-{GLEAM_TRIPLE}.tar.gz",
        server.base
    );
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::Checksum { url: u, algorithm: "sha256", .. } if *u == url),
        "{msg}"
    );
    assert!(
        msg.contains(&url) && msg.contains(&"ab".repeat(32)),
        "{msg}"
    );
    let dir = cache.path().join("runtimes/gleam");
    assert!(only_indexes(&dir), "left behind: {:?}", listing(&dir));
}

/// What a user sees when the sources cannot be reached (this machine's case for Microsoft's
/// and GitHub's download sites): the provider, the URL and the variable naming a mirror.
#[test]
fn unreachable_dotnet_and_gleam_sources_name_url_provider_and_mirror_variable() {
    // Nothing listens on port 1.
    let closed = "http://127.0.0.1:1";
    let cache = tempfile::tempdir().unwrap();
    for (runtime, url) in [
        (
            Runtime::Dotnet,
            format!("{closed}/release-metadata/releases-index.json"),
        ),
        (
            Runtime::Gleam,
            format!("{closed}/v1.11.1/gleam-v1.11.1-{GLEAM_TRIPLE}.tar.gz.sha256"),
        ),
    ] {
        let providers = [
            Provider::download(closed),
            Provider::host(std::env::var_os("PATH").unwrap_or_default()),
        ];
        let err = resolve(runtime, &req("*"), &providers, cache.path()).unwrap_err();
        assert!(matches!(err, Error::Unsatisfied { .. }), "{err}");
        let msg = err.to_string();
        let var = format!("KILN_MIRROR_{}", runtime.id().to_ascii_uppercase());
        let mirrors = format!("[mirrors] {}", runtime.id());
        for want in ["download".to_owned(), format!("GET {url}"), var, mirrors] {
            assert!(msg.contains(&want), "{want:?} missing from:\n{msg}");
        }
        assert!(!msg.contains("npm"), "{msg}");
    }
}

/// A provider that fails before a later one supplies the runtime is named in the log with its
/// failure and the provider that served instead.
#[test]
fn a_fallback_to_the_next_provider_is_logged_with_the_failure() {
    // A port nothing listens on: the first mirror's connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = node_mirror().serve();
    let cache = tempfile::tempdir().unwrap();
    let providers = [Provider::download(&dead), Provider::download(&server.base)];
    let mut lines = Vec::new();
    let got = kiln_runtime::resolve_logged(
        Runtime::Node,
        &req("20"),
        &providers,
        cache.path(),
        &mut |line| lines.push(line),
    )
    .unwrap();
    assert_eq!(got.version.to_string(), "20.12.0");
    let log = lines.join("\n");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].starts_with("node: download "), "{log}");
    assert!(lines[0].contains(&dead), "{log}");
    assert!(lines[0].ends_with("; using download node 20.12.0"), "{log}");

    // Served from the cache now; nothing failed, nothing is logged.
    let mut quiet = Vec::new();
    let providers = [Provider::download(&server.base)];
    kiln_runtime::resolve_logged(
        Runtime::Node,
        &req("20"),
        &providers,
        cache.path(),
        &mut |line| quiet.push(line),
    )
    .unwrap();
    assert!(quiet.is_empty(), "{quiet:?}");
}
