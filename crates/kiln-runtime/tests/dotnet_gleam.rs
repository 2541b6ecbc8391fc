//! The .NET and Gleam download providers against mirrors served on 127.0.0.1: Microsoft's
//! release metadata layout with fake SDK tarballs (a shell-script `dotnet`), and Gleam's
//! release layout with a fake `gleam` and its `.sha256`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use kiln_runtime::{resolve, Error, Provider, Runtime, VersionReq};
use support::*;

const RID: &str = if cfg!(target_arch = "aarch64") {
    "linux-arm64"
} else {
    "linux-x64"
};

const GLEAM_TRIPLE: &str = if cfg!(target_arch = "aarch64") {
    "aarch64-unknown-linux-musl"
} else {
    "x86_64-unknown-linux-musl"
};

fn req(text: &str) -> VersionReq {
    VersionReq::parse(text).unwrap()
}

fn sha512_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha512::digest(bytes))
}

/// An SDK tarball laid out as Microsoft's (no top directory, `./` entries).
fn sdk_tarball(sdk: &str, runtime: &str) -> Vec<u8> {
    let script = format!("#!/bin/sh\necho {sdk}\n");
    tar_gz(&[
        Item::File("./dotnet", script.as_bytes(), 0o755),
        Item::File("./host/fxr/x/libhostfxr.so", b"fxr", 0o644),
        Item::File(
            &format!("./shared/Microsoft.AspNetCore.App/{runtime}/Microsoft.AspNetCore.dll"),
            b"asp",
            0o644,
        ),
        Item::File(
            &format!("./shared/Microsoft.NETCore.App/{runtime}/System.Private.CoreLib.dll"),
            b"core",
            0o644,
        ),
        Item::File(&format!("./sdk/{sdk}/dotnet.dll"), b"sdk", 0o644),
        Item::File("./packs/Microsoft.NETCore.App.Ref/x", b"ref", 0o644),
    ])
}

/// A .NET metadata mirror: channels 9.0 and 8.0, the SDKs listed with `(sdk, runtime)`, each
/// with its tarball's sha512 unless `hash_of` overrides it. File URLs point at the official
/// site, as Microsoft's do, so the provider must rebase them onto the mirror.
fn dotnet_mirror(channels: &[(&str, &[(&str, &str)])], hash_of: &BTreeMap<&str, String>) -> Server {
    let mut files = BTreeMap::new();
    let mut index = Vec::new();
    for (channel, sdks) in channels {
        index.push(serde_json::json!({
            "channel-version": channel,
            "releases.json": format!(
                "https://builds.dotnet.microsoft.com/dotnet/release-metadata/{channel}/releases.json"
            ),
        }));
        let mut releases = Vec::new();
        for (sdk, runtime) in *sdks {
            let tarball = sdk_tarball(sdk, runtime);
            let name = format!("dotnet-sdk-{sdk}-{RID}.tar.gz");
            let hash = hash_of
                .get(sdk)
                .cloned()
                .unwrap_or_else(|| sha512_hex(&tarball));
            files.insert(format!("dotnet/Sdk/{sdk}/{name}"), tarball);
            releases.push(serde_json::json!({
                "release-version": runtime,
                "sdk": {"version": sdk, "files": [
                    {"name": format!("dotnet-sdk-{sdk}-linux-musl-x64.tar.gz"), "rid": "linux-musl-x64",
                     "url": "https://builds.dotnet.microsoft.com/dotnet/Sdk/none.tar.gz", "hash": "00"},
                    {"name": name, "rid": RID,
                     "url": format!("https://builds.dotnet.microsoft.com/dotnet/Sdk/{sdk}/{name}"),
                     "hash": hash},
                ]},
            }));
        }
        files.insert(
            format!("dotnet/release-metadata/{channel}/releases.json"),
            serde_json::to_vec(&serde_json::json!({ "releases": releases })).unwrap(),
        );
    }
    files.insert(
        "dotnet/release-metadata/releases-index.json".to_owned(),
        serde_json::to_vec(&serde_json::json!({ "releases-index": index })).unwrap(),
    );
    Server::start(files)
}

const CHANNELS: &[(&str, &[(&str, &str)])] = &[
    ("9.0", &[("9.0.100", "9.0.0")]),
    (
        "8.0",
        &[
            ("8.0.404", "8.0.11"),
            ("8.0.303", "8.0.7"),
            ("8.0.100", "8.0.0"),
        ],
    ),
];

#[test]
fn dotnet_sdk_is_chosen_verified_and_split_for_launch() {
    let server = dotnet_mirror(CHANNELS, &BTreeMap::new());
    let mirror = format!("{}/dotnet/release-metadata", server.base);
    let cache = tempfile::tempdir().unwrap();
    let providers = [Provider::download(&mirror)];
    for (text, want) in [
        ("8.0", "8.0.404"),
        (">=8.0.303 <8.0.400", "8.0.303"),
        ("*", "9.0.100"),
    ] {
        let got = resolve(Runtime::Dotnet, &req(text), &providers, cache.path()).unwrap();
        assert_eq!(got.version.to_string(), want, "{text}");
        assert_eq!(got.provider, "download");
        let url = format!(
            "{}/dotnet/Sdk/{want}/dotnet-sdk-{want}-{RID}.tar.gz",
            server.base
        );
        assert_eq!(got.source, url);
        assert!(got
            .integrity
            .as_deref()
            .is_some_and(|i| i.starts_with("sha512-")));
        let dotnet = std::fs::read_to_string(got.root.join(&got.bin).join("dotnet")).unwrap();
        assert_eq!(dotnet, format!("#!/bin/sh\necho {want}\n"));
        // Build steps get the whole SDK; the launch layer only the runtime parts.
        assert!(got.root.join(format!("sdk/{want}/dotnet.dll")).is_file());
        let entries = got.layer_entries("/layers/dotnet/runtime").unwrap();
        let paths: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
        assert!(
            paths.iter().any(|p| p == "layers/dotnet/runtime/dotnet"),
            "{paths:?}"
        );
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with("layers/dotnet/runtime/shared/Microsoft.AspNetCore.App/")),
            "{paths:?}"
        );
        assert!(
            !paths
                .iter()
                .any(|p| p.contains("/runtime/sdk") || p.contains("/runtime/packs")),
            "{paths:?}"
        );
    }
    let sdk = resolve(Runtime::Dotnet, &req("8.0"), &providers, cache.path()).unwrap();
    let root = sdk.root.display().to_string();
    assert_eq!(
        sdk.build_env(),
        [
            ("DOTNET_CLI_TELEMETRY_OPTOUT", "1"),
            ("DOTNET_NOLOGO", "1"),
            ("DOTNET_ROOT", root.as_str()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
}

#[test]
fn dotnet_corrupted_sdk_is_rejected_naming_url_and_hashes() {
    let wrong = "ab".repeat(64);
    let server = dotnet_mirror(CHANNELS, &[("8.0.404", wrong.clone())].into());
    let mirror = format!("{}/dotnet/release-metadata", server.base);
    let cache = tempfile::tempdir().unwrap();
    let err = resolve(
        Runtime::Dotnet,
        &req("8.0"),
        &[Provider::download(&mirror)],
        cache.path(),
    )
    .unwrap_err();
    let Error::Checksum {
        url,
        algorithm,
        expected,
        actual,
    } = &err
    else {
        panic!("expected a checksum error, got {err}");
    };
    assert_eq!(
        url,
        &format!(
            "{}/dotnet/Sdk/8.0.404/dotnet-sdk-8.0.404-{RID}.tar.gz",
            server.base
        )
    );
    assert_eq!(*algorithm, "sha512");
    assert_eq!(expected, &wrong);
    assert_eq!(actual, &sha512_hex(&sdk_tarball("8.0.404", "8.0.11")));
    let msg = err.to_string();
    assert!(
        msg.contains(url) && msg.contains(&wrong) && msg.contains(actual.as_str()),
        "{msg}"
    );
    assert!(!cache
        .path()
        .join(format!("runtimes/dotnet/8.0.404-{RID}"))
        .exists());
}

/// A Gleam release mirror: `v<version>/gleam-v<version>-<triple>.tar.gz` (a bare `gleam`
/// script) and its `.sha256`, `<hex>  <name>` as GitHub's assets are.
fn gleam_mirror(version: &str, sha256: Option<&str>) -> (Server, Vec<u8>) {
    let name = format!("gleam-v{version}-{GLEAM_TRIPLE}.tar.gz");
    let script = format!("#!/bin/sh\necho gleam {version}\n");
    let tarball = tar_gz(&[Item::File("gleam", script.as_bytes(), 0o755)]);
    let sum = sha256.map_or_else(|| sha256_hex(&tarball), str::to_owned);
    let files = BTreeMap::from([
        (format!("v{version}/{name}"), tarball.clone()),
        (
            format!("v{version}/{name}.sha256"),
            format!("{sum}  {name}\n").into_bytes(),
        ),
    ]);
    (Server::start(files), tarball)
}

#[test]
fn gleam_is_chosen_from_the_pin_and_verified() {
    let newest = kiln_runtime::GLEAM_RELEASES[0];
    let (server, tarball) = gleam_mirror(newest, None);
    let cache = tempfile::tempdir().unwrap();
    let providers = [Provider::download(&server.base)];
    let got = resolve(Runtime::Gleam, &req(">= 1.4.0"), &providers, cache.path()).unwrap();
    assert_eq!(got.version.to_string(), newest);
    assert_eq!(
        got.source,
        format!(
            "{}/v{newest}/gleam-v{newest}-{GLEAM_TRIPLE}.tar.gz",
            server.base
        )
    );
    assert_eq!(got.sha256, Some(sha256_hex(&tarball)));
    let gleam = std::fs::read_to_string(got.root.join("bin/gleam")).unwrap();
    assert_eq!(gleam, format!("#!/bin/sh\necho gleam {newest}\n"));
    // The compiler is a build tool: nothing of it is launched.
    assert!(got.is_pruned(Path::new("bin/gleam")));
    // A requirement no pinned release meets says what is pinned.
    let err = resolve(Runtime::Gleam, &req("0.30"), &providers, cache.path()).unwrap_err();
    assert!(err.to_string().contains(newest), "{err}");
}

#[test]
fn gleam_corrupted_tarball_is_rejected() {
    let newest = kiln_runtime::GLEAM_RELEASES[0];
    let wrong = "cd".repeat(32);
    let (server, tarball) = gleam_mirror(newest, Some(&wrong));
    let cache = tempfile::tempdir().unwrap();
    let err = resolve(
        Runtime::Gleam,
        &req("1"),
        &[Provider::download(&server.base)],
        cache.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    let url = format!(
        "{}/v{newest}/gleam-v{newest}-{GLEAM_TRIPLE}.tar.gz",
        server.base
    );
    assert!(
        matches!(
            err,
            Error::Checksum {
                algorithm: "sha256",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&url) && msg.contains(&wrong) && msg.contains(&sha256_hex(&tarball)),
        "{msg}"
    );
}

#[test]
fn unreachable_mirrors_name_url_provider_and_variable() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror = format!("http://127.0.0.1:{port}");
    let cache = tempfile::tempdir().unwrap();
    for (runtime, var, url) in [
        (
            Runtime::Dotnet,
            "KILN_MIRROR_DOTNET",
            format!("{mirror}/releases-index.json"),
        ),
        (Runtime::Gleam, "KILN_MIRROR_GLEAM", format!("{mirror}/v")),
    ] {
        let err = resolve(
            runtime,
            &req("*"),
            &[Provider::download(&mirror)],
            cache.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Unsatisfied { .. }), "{msg}");
        assert!(msg.contains("download") && msg.contains(&url), "{msg}");
        assert!(
            msg.contains(var) && msg.contains(&format!("[mirrors] {runtime}")),
            "{msg}"
        );
    }
}
