//! The npm-registry provider against a registry served on 127.0.0.1, and once against the
//! registry this machine's npm is configured with.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiln_runtime::{resolve, Error, NpmRegistry, Provider, Runtime, VersionReq};
use support::*;

fn req(text: &str) -> VersionReq {
    VersionReq::parse(text).unwrap()
}

fn registry_at(server: &Server) -> Provider {
    Provider::npm(Some(NpmRegistry::new(&server.base, "test")))
}

/// Node 24.0.0 is only a pre-release; npm 11.0.0 is the `latest` tag, 11.5.0 (newer, deprecated)
/// and 12.0.0 (newer than latest) must never be chosen.
fn registry() -> support::NpmRegistry {
    let mut r = support::NpmRegistry::default();
    r.node("20.12.0")
        .node("22.3.0")
        .node("22.10.0")
        .node("23.1.0")
        .add(
            NODE_PACKAGE,
            "24.0.0-rc.1",
            vec![1],
            "sha512-AA==",
            None,
            false,
        )
        .npm("12.0.0", ">=20")
        .deprecated_npm("11.5.0", "^20.17.0 || >=22.9.0")
        .npm("11.0.0", "^20.17.0 || >=22.9.0")
        .npm("10.9.0", "^18.17.0 || >=20.5.0")
        .npm_latest("11.0.0");
    r
}

fn run(exe: &Path, arg: &str) -> String {
    let out = Command::new(exe)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    assert!(out.status.success(), "{}: {out:?}", exe.display());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn newest_matching_node_with_the_newest_npm_that_supports_it() {
    let fake = registry();
    let server = fake.serve();
    let cache = tempfile::tempdir().unwrap();
    let providers = [registry_at(&server)];
    for (text, node, npm) in [
        ("22", "22.10.0", "11.0.0"),
        // 22.3 is below npm 11's `>=22.9.0`.
        ("<22.10", "22.3.0", "10.9.0"),
        // No LTS marks in the registry: the newest even major.
        ("lts", "22.10.0", "11.0.0"),
        ("lts/iron", "20.12.0", "10.9.0"),
        ("*", "23.1.0", "11.0.0"),
    ] {
        let got = resolve(Runtime::Node, &req(text), &providers, cache.path()).unwrap();
        assert_eq!(got.version.to_string(), node, "{text}");
        assert_eq!(got.provider, "npm-registry");
        let name = format!("{node}-{NODE_PLATFORM}-npm{npm}");
        assert_eq!(
            got.root,
            cache.path().join("runtimes/node/npm-registry").join(&name)
        );
        let tarball = format!("{NODE_PACKAGE}/-/{NODE_PACKAGE}-{node}.tgz");
        assert_eq!(got.source, format!("{}/{tarball}", server.base));
        assert_eq!(got.sha256, Some(sha256_hex(&fake.tarballs[&tarball])));
        assert_eq!(got.integrity, Some(sri_sha512(&fake.tarballs[&tarball])));
        let [bundled] = &got.bundled[..] else {
            panic!("one bundled npm expected: {got:?}");
        };
        let npm_tarball = format!("npm/-/npm-{npm}.tgz");
        assert_eq!(
            (bundled.name.as_str(), bundled.version.to_string()),
            ("npm", npm.to_owned())
        );
        assert_eq!(bundled.source, format!("{}/{npm_tarball}", server.base));
        assert_eq!(bundled.integrity, sri_sha512(&fake.tarballs[&npm_tarball]));

        let bin = got.root.join(&got.bin);
        assert_eq!(run(&bin.join("node"), "--version"), format!("v{node}"));
        // Laid out as the official tarball: relative links into lib/node_modules/npm, which
        // resolve and run (the 0644-packed scripts were made executable).
        for (link, script, says) in [
            ("npm", "npm-cli.js", npm.to_owned()),
            ("npx", "npx-cli.js", format!("npx {npm}")),
        ] {
            let target = std::fs::read_link(bin.join(link)).unwrap();
            assert_eq!(
                target,
                Path::new("../lib/node_modules/npm/bin").join(script),
                "{link}"
            );
            assert_eq!(run(&bin.join(link), "--version"), says);
        }
        assert!(got
            .root
            .join("lib/node_modules/npm/node_modules/abbrev/index.js")
            .is_file());
        // Headers stay for build steps, and node-gyp is pointed at them (npm 10's node-gyp by
        // `npm_config_nodedir`, which npm 11+ warns about); the launch layer leaves them out.
        assert!(got.root.join("include/node/node.h").is_file());
        let root = got.root.display().to_string();
        let mut env = vec![(
            "npm_package_config_node_gyp_nodedir".to_owned(),
            root.clone(),
        )];
        if npm.starts_with("10.") {
            env.push(("npm_config_nodedir".to_owned(), root));
        }
        assert_eq!(got.build_env(), env, "{text}");
        for pruned in [
            "include/node/node.h",
            "share/man/man1/node.1",
            "package.json",
            "lib/node_modules/npm/docs/content/index.md",
        ] {
            assert!(got.is_pruned(Path::new(pruned)), "{pruned}");
        }
        assert!(!got.is_pruned(Path::new("lib/node_modules/npm/bin/npm-cli.js")));
    }
    // The documents were asked for in their abbreviated form, once each (then cached).
    let requests = server.full_requests();
    for doc in [NODE_PACKAGE, "npm"] {
        let asks: Vec<_> = requests.iter().filter(|r| r.path == doc).collect();
        assert_eq!(asks.len(), 1, "{doc}: {requests:?}");
        let accept = asks[0].header("accept").unwrap_or_default();
        assert!(
            accept.starts_with("application/vnd.npm.install-v1+json"),
            "{accept}"
        );
    }
}

#[test]
fn the_launch_layer_has_npm_links_and_no_headers() {
    use kiln_oci::layer::EntryKind;
    let server = registry().serve();
    let cache = tempfile::tempdir().unwrap();
    let got = resolve(
        Runtime::Node,
        &req("22"),
        &[registry_at(&server)],
        cache.path(),
    )
    .unwrap();
    let entries = got.layer_entries("/layers/node/runtime").unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "layers/node/runtime/bin/node",
        "layers/node/runtime/lib/node_modules/npm/bin/npm-cli.js",
        "layers/node/runtime/LICENSE",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    for gone in ["/include", "/share", "runtime/package.json", "npm/docs"] {
        assert!(!paths.iter().any(|p| p.contains(gone)), "{gone}: {paths:?}");
    }
    let npx = entries
        .iter()
        .find(|e| e.path == "layers/node/runtime/bin/npx")
        .unwrap();
    assert!(
        matches!(&npx.kind, EntryKind::Symlink { target } if target == "../lib/node_modules/npm/bin/npx-cli.js"),
        "{npx:?}"
    );
}

#[test]
fn a_wrong_integrity_is_refused_and_keeps_nothing() {
    let node = tar_gz(&[Item::File("package/bin/node", b"#!/bin/sh\n", 0o755)]);
    let other = sri_sha512(b"something else");
    for tampered in [NODE_PACKAGE, "npm"] {
        let mut fake = support::NpmRegistry::default();
        let node_sri = if tampered == NODE_PACKAGE {
            other.clone()
        } else {
            sri_sha512(&node)
        };
        fake.add(NODE_PACKAGE, "22.1.0", node.clone(), &node_sri, None, false);
        let npm = tar_gz(&[Item::File("package/package.json", b"{}", 0o644)]);
        let npm_sri = if tampered == "npm" {
            other.clone()
        } else {
            sri_sha512(&npm)
        };
        fake.add("npm", "10.0.0", npm.clone(), &npm_sri, Some(">=18"), false);
        let server = fake.serve();
        let cache = tempfile::tempdir().unwrap();
        // A host provider after it must not be reached: a tampered download is not papered over.
        let providers = [
            registry_at(&server),
            Provider::host(std::env::var_os("PATH").unwrap_or_default()),
        ];
        let err = resolve(Runtime::Node, &req("22"), &providers, cache.path()).unwrap_err();
        let Error::Integrity {
            url,
            expected,
            actual,
        } = &err
        else {
            panic!("{tampered}: expected an integrity error, got {err}");
        };
        let (path, bytes) = if tampered == "npm" {
            ("npm/-/npm-10.0.0.tgz", &npm)
        } else {
            (
                &*format!("{NODE_PACKAGE}/-/{NODE_PACKAGE}-22.1.0.tgz"),
                &node,
            )
        };
        assert_eq!(url, &format!("{}/{path}", server.base), "{tampered}");
        assert_eq!(expected, &other);
        assert_eq!(actual, &sri_sha512(bytes));
        let msg = err.to_string();
        assert!(msg.contains(url.as_str()) && msg.contains(&other), "{msg}");
        let dir = cache.path().join("runtimes/node/npm-registry");
        assert!(only_indexes(&dir), "{tampered} left: {:?}", listing(&dir));
    }
}

#[test]
fn a_sha1_only_document_is_not_trusted() {
    let mut fake = registry();
    fake.add(NODE_PACKAGE, "26.0.0", vec![0], "sha1-AAAA", None, false);
    let server = fake.serve();
    let cache = tempfile::tempdir().unwrap();
    let err = resolve(
        Runtime::Node,
        &req("26"),
        &[registry_at(&server)],
        cache.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{NODE_PACKAGE}@26.0.0 has no sha512 integrity")),
        "{msg}"
    );
    assert!(!server.requests().iter().any(|p| p.ends_with("-26.0.0.tgz")));
}

#[test]
fn a_cached_runtime_resolves_with_the_registry_gone() {
    let mut server = registry().serve();
    let cache = tempfile::tempdir().unwrap();
    let first = resolve(
        Runtime::Node,
        &req("22"),
        &[registry_at(&server)],
        cache.path(),
    )
    .unwrap();
    let base = server.base.clone();
    server.stop();
    let at = |url: &str, max_age| Provider::Npm {
        registry: Some(NpmRegistry::new(url, "test")),
        index_max_age: max_age,
    };
    // Fresh cached documents: no network at all.
    let again = resolve(
        Runtime::Node,
        &req("22"),
        &[at(&base, Duration::from_secs(3600))],
        cache.path(),
    )
    .unwrap();
    assert_eq!(again, first);
    // Stale documents whose refresh fails are still used.
    let stale = resolve(
        Runtime::Node,
        &req("22"),
        &[at(&base, Duration::ZERO)],
        cache.path(),
    )
    .unwrap();
    assert_eq!(stale, first);
    // No documents at all (another registry URL): the cached runtime still serves, receipt and all.
    let by_dir = resolve(
        Runtime::Node,
        &req("22"),
        &[at(&format!("{base}/gone"), Duration::ZERO)],
        cache.path(),
    )
    .unwrap();
    assert_eq!(by_dir, first);
    // And what is not cached is reported with the registry's failure.
    let err = resolve(
        Runtime::Node,
        &req("20"),
        &[at(&format!("{base}/gone"), Duration::ZERO)],
        cache.path(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("npm-registry (from test): GET {base}/gone/")),
        "{err}"
    );
}

/// The registry and its token come from an `.npmrc` found through the environment, the way
/// npm finds it: `NPM_CONFIG_USERCONFIG`, else `$HOME/.npmrc`.
#[test]
fn the_registry_comes_from_npmrc_through_the_environment() {
    let server = registry().serve();
    let authority = server.base.trim_start_matches("http://");
    for how in ["HOME", "NPM_CONFIG_USERCONFIG"] {
        let home = tempfile::tempdir().unwrap();
        let rc = if how == "HOME" {
            home.path().join(".npmrc")
        } else {
            home.path().join("ci-npmrc")
        };
        std::fs::write(
            &rc,
            format!(
                "fund=false\nregistry={}/\n//{authority}/:_authToken=${{CI_TOKEN}}\n",
                server.base
            ),
        )
        .unwrap();
        let points_at = if how == "HOME" {
            home.path().display().to_string()
        } else {
            rc.display().to_string()
        };
        let env: BTreeMap<String, String> = [
            (how.to_owned(), points_at),
            ("CI_TOKEN".to_owned(), "t0ken".to_owned()),
            // No global npmrc: the machine's own must not leak in.
            (
                "npm_config_globalconfig".to_owned(),
                home.path().join("none").display().to_string(),
            ),
        ]
        .into();
        let registry = NpmRegistry::discover(&BTreeMap::new(), &env).expect(how);
        assert_eq!(registry.url, server.base, "{how}");
        assert_eq!(registry.from, format!("{}:2", rc.display()), "{how}");
        let cache = tempfile::tempdir().unwrap();
        let got = resolve(
            Runtime::Node,
            &req("20"),
            &[Provider::npm(Some(registry))],
            cache.path(),
        )
        .unwrap();
        assert_eq!(got.version.to_string(), "20.12.0");
        let tarball = format!("{NODE_PACKAGE}/-/{NODE_PACKAGE}-20.12.0.tgz");
        let asked: Vec<_> = server
            .full_requests()
            .into_iter()
            .filter(|r| r.path == tarball)
            .collect();
        assert!(!asked.is_empty());
        for r in asked {
            assert_eq!(r.header("authorization"), Some("Bearer t0ken"), "{how}");
        }
    }
}

#[test]
fn no_configured_registry_says_how_to_name_one() {
    let cache = tempfile::tempdir().unwrap();
    let err = resolve(
        Runtime::Node,
        &req("22"),
        &[Provider::npm(None)],
        cache.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    for want in [
        "npm-registry: no npm registry is configured",
        "KILN_NPM_REGISTRY",
        "[mirrors] npm",
        "npm config get registry",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    let err = resolve(
        Runtime::Python,
        &req("3"),
        &[Provider::npm(None)],
        cache.path(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("npm-registry: carries Node.js, Bun and Deno, not python"),
        "{err}"
    );
}

/// The registry the machine's npm is configured with, or `None` (a loud skip; a failure under
/// CI) when there is no npm.
fn host_npm_registry() -> Option<String> {
    if !require_tool("npm") {
        return None;
    }
    let out = Command::new("npm")
        .args(["config", "get", "registry"])
        .output()
        .unwrap();
    assert!(out.status.success(), "npm config get registry: {out:?}");
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The real thing: Node 22 and its npm from the registry this machine's npm uses (its CA bundle
/// from the machine's npm configuration), run. Unreachable fails the test.
#[test]
fn node_22_from_the_real_registry_runs() {
    let Some(url) = host_npm_registry() else {
        return;
    };
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    env.insert("KILN_NPM_REGISTRY".into(), url.clone());
    let registry = NpmRegistry::discover(&BTreeMap::new(), &env).unwrap();
    eprintln!("registry {registry:?}");
    let cache = tempfile::tempdir().unwrap();
    let got = resolve(
        Runtime::Node,
        &req("22"),
        &[Provider::npm(Some(registry))],
        cache.path(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.version.major, 22);
    assert!(
        got.source.ends_with(&format!("-{}.tgz", got.version)),
        "{got:?}"
    );
    let bin = got.root.join(&got.bin);
    assert_eq!(
        run(&bin.join("node"), "--version"),
        format!("v{}", got.version)
    );
    let npm = &got.bundled[0];
    assert_eq!(run(&bin.join("npm"), "--version"), npm.version.to_string());
    assert_eq!(run(&bin.join("npx"), "--version"), npm.version.to_string());
    assert!(got.root.join("include/node/node_version.h").is_file());
    eprintln!(
        "node {} ({}) with npm {} ({})",
        got.version, got.source, npm.version, npm.source
    );
}
