//! Stacks: Kiln's run images, assembled from Debian packages.
//!
//! A stack is a distribution release (`debian-13` = trixie, the default; `debian-12` =
//! bookworm) and a flavour, as ordered layers so that apps on the same stack share them:
//! 1. `static` — base-files, netbase, tzdata, ca-certificates, plus generated users, CA bundle
//!    and merged-`/usr` links (distroless-static's and ko's role);
//! 2. `glibc` — libc6, libgcc-s1, libstdc++6, libssl3 (`libssl3t64` on trixie), zlib1g, their
//!    dependencies, dash as `/bin/sh` (start commands run through `sh -c`) and coreutils'
//!    `/usr/bin/env` alone (`#!/usr/bin/env node` scripts) (distroless-base's role);
//! 3. `packages` — the app's extra run packages with their dependencies.
//!
//! The static layer's packages are taken without their dependencies: those (`openssl`,
//! `debconf`, `awk`) serve maintainer scripts, which are not run; what the scripts would have
//! made is generated instead ([`crate::generate`]). Docs, man pages and locales are dropped,
//! except `usr/share/doc/*/copyright` (licences; scanners read them).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_oci::layer::Entry;
use sha2::{Digest as _, Sha256};

use crate::deb::{self, Alternative, DebContents, DebKind};
use crate::error::{Error, Result};
use crate::fetch::{self, Cache, DebRef, Source};
use crate::generate;
use crate::index::Package;
use crate::lock::{Lock, LockedLayer, SuiteInfo, LOCK_VERSION};
use crate::relation::parse_relations;
use crate::resolve::{resolve, Universe};
use crate::root::{resolve_target, Node, Root};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    Debian12,
    Debian13,
}

impl Distro {
    pub const DEFAULT: Distro = Distro::Debian13;
    pub const ALL: [Distro; 2] = [Distro::Debian13, Distro::Debian12];

    pub fn parse(s: &str) -> std::result::Result<Distro, String> {
        Distro::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown stack {s:?}: expected debian-13 or debian-12"))
    }

    pub fn name(self) -> &'static str {
        match self {
            Distro::Debian12 => "debian-12",
            Distro::Debian13 => "debian-13",
        }
    }

    pub fn codename(self) -> &'static str {
        match self {
            Distro::Debian12 => "bookworm",
            Distro::Debian13 => "trixie",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flavour {
    /// For self-contained binaries.
    Static,
    /// For programs linked against glibc (runtimes such as Node.js and Python).
    Glibc,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Static => "static",
            Flavour::Glibc => "glibc",
        }
    }
}

/// One package of a stack layer.
#[derive(Debug, Clone, Copy)]
pub struct StackPackage {
    /// A relation, so per-suite names are alternatives (`libssl3t64 | libssl3`).
    pub relation: &'static str,
    /// Whether its dependencies are resolved too.
    pub follow: bool,
    /// When not empty, only these paths (as shipped) are kept.
    pub only: &'static [&'static str],
}

const fn take(relation: &'static str, follow: bool) -> StackPackage {
    StackPackage {
        relation,
        follow,
        only: &[],
    }
}

pub const STATIC_PACKAGES: &[StackPackage] = &[
    take("base-files", false),
    take("netbase", false),
    take("tzdata", false),
    take("ca-certificates", false),
];

pub const GLIBC_PACKAGES: &[StackPackage] = &[
    take("libc6", true),
    take("libgcc-s1", true),
    take("libstdc++6", true),
    take("libssl3t64 | libssl3", true),
    take("zlib1g", true),
    // dash needs only libc6; its Depends (debianutils, dpkg on bookworm) serve its postinst.
    take("dash", false),
    // `env` needs only libc6; the rest of coreutils (and its libraries) is not wanted.
    StackPackage {
        relation: "coreutils",
        follow: false,
        only: &["usr/bin/env"],
    },
];

/// The name of the extra-packages layer.
pub const PACKAGES_LAYER: &str = "packages";

/// One requested layer: its name, the relations it asks for, and per relation whether its
/// dependencies are resolved too.
pub struct LayerRequest {
    pub name: String,
    pub relations: Vec<String>,
    pub follow: Vec<bool>,
}

/// A root made of ordered package layers: a run stack ([`Request`]) or a build root
/// ([`crate::build_root::BuildRootRequest`]).
pub trait Layered {
    fn distro(&self) -> Distro;
    /// The layers in order, lowest first.
    fn layers(&self) -> Vec<LayerRequest>;
}

/// What a build asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub distro: Distro,
    pub flavour: Flavour,
    /// Extra run packages (`libpq5`); with any, the flavour is at least glibc (shared
    /// libraries need it).
    pub packages: Vec<String>,
}

impl Request {
    pub fn effective_flavour(&self) -> Flavour {
        if self.packages.is_empty() {
            self.flavour
        } else {
            Flavour::Glibc
        }
    }
}

impl Layered for Request {
    fn distro(&self) -> Distro {
        self.distro
    }

    fn layers(&self) -> Vec<LayerRequest> {
        let mut layers = vec![table_layer(Flavour::Static.name(), STATIC_PACKAGES)];
        if self.effective_flavour() == Flavour::Glibc {
            layers.push(table_layer(Flavour::Glibc.name(), GLIBC_PACKAGES));
        }
        if !self.packages.is_empty() {
            layers.push(followed_layer(PACKAGES_LAYER, &self.packages));
        }
        layers
    }
}

/// A layer of a stack table.
pub(crate) fn table_layer(name: &str, packages: &[StackPackage]) -> LayerRequest {
    LayerRequest {
        name: name.to_owned(),
        relations: packages.iter().map(|p| p.relation.to_owned()).collect(),
        follow: packages.iter().map(|p| p.follow).collect(),
    }
}

/// A layer of `relations` with their dependencies, sorted and deduplicated (so the request,
/// and a lock of it, do not depend on the order they were given in).
pub(crate) fn followed_layer(name: &str, relations: &[String]) -> LayerRequest {
    let mut relations = relations.to_vec();
    relations.sort();
    relations.dedup();
    LayerRequest {
        name: name.to_owned(),
        follow: vec![true; relations.len()],
        relations,
    }
}

/// Bump when resolution or [`plan`] changes what it chooses from the same indexes: resolved
/// plans cached under an older version are then not reused.
pub const RESOLVER_VERSION: u32 = 1;

/// Resolves `request` against the mirror's current indexes. The InRelease files are fetched
/// (or refreshed) and verified every time (a signature once per InRelease and keyring: see
/// [`fetch::verify_release`]); the resolution over them is cached under a key of their digests
/// and the request (`refs/plan-<key>`, touched on every use), so while no index changes a build
/// reads no `Packages` index.
pub fn resolve_fresh(
    source: &Source,
    cache: &Cache,
    request: &impl Layered,
    notes: &mut Vec<String>,
) -> Result<Lock> {
    let releases = fetch::releases(source, cache, request.distro().codename(), notes)?;
    let suites: Vec<SuiteInfo> = releases
        .iter()
        .map(|r| SuiteInfo {
            name: r.suite.clone(),
            date: r.date.clone(),
            inrelease_sha256: r.inrelease_sha256.clone(),
        })
        .collect();
    let ref_path = cache
        .root()
        .join("refs")
        .join(format!("plan-{}", plan_key(&suites, request, &source.arch)));
    if let Some(lock) = cached_plan(cache, &ref_path, &suites, request, &source.arch) {
        cache.touch_ref(&ref_path);
        return Ok(lock);
    }
    let universe = fetch::universe_of(source, cache, &releases)?;
    let mut lock = plan(&universe, request, &source.arch)?;
    lock.suite = suites;
    let digest = cache.store().put_bytes(lock.to_toml()?.as_bytes())?;
    cache.write_ref(&ref_path, &digest)?;
    Ok(lock)
}

/// What a resolution depends on: the suites' InRelease digests (which name every index by
/// sha256), the architecture, every requested layer and relation, and the resolver version.
fn plan_key(suites: &[SuiteInfo], request: &impl Layered, arch: &str) -> String {
    let mut key = Sha256::new();
    let mut field = |bytes: &[u8]| {
        // Length-prefixed, so no two different inputs hash the same bytes.
        key.update((bytes.len() as u64).to_le_bytes());
        key.update(bytes);
    };
    let count = |n: usize| (n as u64).to_le_bytes();
    field(&RESOLVER_VERSION.to_le_bytes());
    field(&LOCK_VERSION.to_le_bytes());
    field(arch.as_bytes());
    field(request.distro().name().as_bytes());
    // Counts before each list, so no field can be read as belonging to a neighbouring list.
    field(&count(suites.len()));
    for suite in suites {
        field(suite.name.as_bytes());
        field(suite.inrelease_sha256.as_bytes());
    }
    let layers = request.layers();
    field(&count(layers.len()));
    for layer in &layers {
        field(layer.name.as_bytes());
        field(&count(layer.relations.len()));
        for (relation, follow) in layer.relations.iter().zip(&layer.follow) {
            field(relation.as_bytes());
            field(&[u8::from(*follow)]);
        }
    }
    hex::encode(key.finalize())
}

/// The plan `ref_path` names, if its blob verifies, parses and was resolved from exactly
/// `suites`; anything else is ignored (and resolved again).
fn cached_plan(
    cache: &Cache,
    ref_path: &Path,
    suites: &[SuiteInfo],
    request: &impl Layered,
    arch: &str,
) -> Option<Lock> {
    let digest = cache.read_ref(ref_path)?;
    let bytes = cache.store().read_verified(&digest).ok()?;
    let lock: Lock = toml::from_str(std::str::from_utf8(&bytes).ok()?).ok()?;
    // The key already covers all of this; checking it again costs nothing and keeps a
    // mislabelled entry (a hash collision, a hand-edited ref) from being used.
    let layers = request.layers();
    let fits = lock.lock_version == LOCK_VERSION
        && lock.suite == suites
        && lock.distro == request.distro().name()
        && lock.arch == arch
        && lock.layer.len() == layers.len()
        && lock.layer.iter().zip(&layers).all(|(locked, asked)| {
            locked.name == asked.name && locked.requested == asked.relations
        });
    fits.then_some(lock)
}

/// The layers of `request` over `universe` (no suite information: see [`resolve_fresh`]).
pub fn plan(universe: &Universe, request: &impl Layered, arch: &str) -> Result<Lock> {
    let mut below: BTreeMap<String, Package> = BTreeMap::new();
    let mut layers = Vec::new();
    for LayerRequest {
        name,
        relations: requested,
        follow,
    } in request.layers()
    {
        let mut chosen: BTreeMap<String, Package> = BTreeMap::new();
        for (relation, follow) in requested.iter().zip(&follow) {
            let roots = parse_relations(relation)
                .map_err(|e| Error::Resolve(format!("{name} package {relation:?}: {e}")))?;
            let mut base = below.clone();
            base.extend(chosen.clone());
            for p in resolve(universe, &roots, &base, *follow)? {
                chosen.insert(p.name.clone(), p);
            }
        }
        // A package a stack table takes only part of (coreutils' `env`) does not satisfy a
        // later layer: asked for again, by name or as a dependency, it is placed whole there.
        below.extend(
            chosen
                .iter()
                .filter(|(package, _)| only_paths(&name, package).is_empty())
                .map(|(package, p)| (package.clone(), p.clone())),
        );
        layers.push(LockedLayer {
            name,
            requested,
            package: chosen.values().map(DebRef::from).collect(),
        });
    }
    Ok(Lock {
        lock_version: LOCK_VERSION,
        distro: request.distro().name().to_owned(),
        arch: arch.to_owned(),
        suite: Vec::new(),
        layer: layers,
    })
}

/// The part of `lock` that `request` needs, or an error saying why the lock does not fit.
pub fn from_lock(lock: &Lock, request: &impl Layered, arch: &str, lock_path: &str) -> Result<Lock> {
    let stale = |why: String| Error::Lock {
        path: lock_path.to_owned(),
        why: format!("{why}; run `kiln lock --update`"),
    };
    if lock.distro != request.distro().name() {
        return Err(stale(format!(
            "pins {}, but the build asks for {}",
            lock.distro,
            request.distro().name()
        )));
    }
    if lock.arch != arch {
        return Err(stale(format!(
            "pins {} packages, but this build is for {arch}",
            lock.arch
        )));
    }
    let mut layers = Vec::new();
    for LayerRequest {
        name,
        relations: requested,
        ..
    } in request.layers()
    {
        let locked = lock
            .layer(&name)
            .ok_or_else(|| stale(format!("has no {name} layer")))?;
        if locked.requested != requested {
            return Err(stale(format!(
                "pins {name} packages for [{}], but the build asks for [{}]",
                locked.requested.join(", "),
                requested.join(", ")
            )));
        }
        layers.push(locked.clone());
    }
    Ok(Lock {
        layer: layers,
        ..lock.clone()
    })
}

/// One assembled layer.
#[derive(Debug, Clone)]
pub struct StackLayer {
    pub name: String,
    /// Normalized entries, file contents in the cache's blob store.
    pub entries: Vec<Entry>,
    pub packages: Vec<DebRef>,
}

/// Downloads (or finds in the cache) and unpacks every package of `lock`, then builds the
/// root layer by layer. The same lock gives the same entries on any machine.
pub fn assemble(source: &Source, cache: &Cache, lock: &Lock) -> Result<Vec<StackLayer>> {
    let debs: Vec<&DebRef> = lock.packages().collect();
    let contents = fetch_all(source, cache, &debs)?;
    let by_name: BTreeMap<&str, &DebContents> = debs
        .iter()
        .map(|d| d.name.as_str())
        .zip(contents.iter())
        .collect();
    let mut root = Root::new();
    generate::skeleton(&mut root)?;
    let store = cache.store();
    let mut layers = Vec::new();
    for (index, layer) in lock.layer.iter().enumerate() {
        for deb in &layer.package {
            let only = only_paths(&layer.name, &deb.name);
            place_package(&mut root, &deb.name, by_name[deb.name.as_str()], only)?;
        }
        if index == 0 {
            generate::accounts(&mut root, store)?;
        }
        if layer.package.iter().any(|d| d.name == "ca-certificates") {
            generate::ca_bundle(&mut root, store)?;
        }
        generate::php_config(&mut root, store)?;
        generate::alternatives(
            &mut root,
            layer.package.iter().map(|d| d.name.as_str()),
            &lock.arch,
        )?;
        let scripted: Vec<&Alternative> = layer
            .package
            .iter()
            .filter(|d| only_paths(&layer.name, &d.name).is_empty())
            .flat_map(|d| &by_name[d.name.as_str()].alternatives)
            .collect();
        generate::postinst_alternatives(&mut root, &scripted)?;
        for deb in &layer.package {
            generate::status(
                &mut root,
                store,
                &deb.name,
                &by_name[deb.name.as_str()].control,
            )?;
        }
        layers.push(StackLayer {
            name: layer.name.clone(),
            entries: root.cut_layer(store)?,
            packages: layer.package.clone(),
        });
    }
    Ok(layers)
}

/// The `only` list of a stack table package in its layer.
fn only_paths(layer: &str, name: &str) -> &'static [&'static str] {
    let table = match layer {
        "static" => STATIC_PACKAGES,
        "glibc" => GLIBC_PACKAGES,
        _ => return &[],
    };
    table
        .iter()
        .find(|p| p.relation.split('|').any(|alt| alt.trim() == name))
        .map_or(&[], |p| p.only)
}

/// Downloads and unpacks `debs` on a few threads; results in input order. Of several failures
/// the first in input order is reported, so errors do not depend on timing.
fn fetch_all(source: &Source, cache: &Cache, debs: &[&DebRef]) -> Result<Vec<DebContents>> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<DebContents>>>> =
        debs.iter().map(|_| Mutex::new(None)).collect();
    let threads = debs.len().clamp(1, 4);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(deb) = debs.get(i) else { break };
                let result = fetch_one(source, cache, deb);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .zip(debs)
        .map(|(slot, deb)| {
            slot.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(Error::Stack(format!(
                    "package {}: the download thread failed",
                    deb.id()
                )))
            })
        })
        .collect()
}

fn fetch_one(source: &Source, cache: &Cache, deb: &DebRef) -> Result<DebContents> {
    let path = fetch::deb(source, cache, deb).map_err(|f| {
        if f.gone {
            Error::Stack(format!(
                "package {} ({}) is gone from the mirror {}: {}. A lock pins exact versions; point KILN_DEBIAN_MIRROR at a snapshot mirror that still has it, or run `kiln lock --update`",
                deb.id(),
                deb.filename,
                source.uri_for(&deb.suite).unwrap_or("?"),
                f.error
            ))
        } else {
            f.error
        }
    })?;
    deb::contents(cache, &path, &deb.sha256, &deb.id())
}

/// A relative symlink shipped at `shipped` that landed at `placed` (through `bin → usr/bin`)
/// must keep meaning what it did: relative when what it meant is beside it (`sh → dash`),
/// else the absolute path it meant.
fn moved_link_target(root: &Root, shipped: &str, placed: &str, target: &str) -> String {
    let meant = root.redirect(&resolve_target(shipped, target));
    let parent = |p: &str| p.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
    match meant.rsplit_once('/') {
        Some((dir, name)) if dir == parent(placed) => name.to_owned(),
        _ => format!("/{meant}"),
    }
}

/// Whether a shipped path is kept in a runtime image.
fn keep(path: &str, only: &[&str]) -> bool {
    if !only.is_empty() {
        return only.contains(&path);
    }
    const DROPPED: [&str; 5] = [
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "usr/share/doc-base",
    ];
    if DROPPED
        .iter()
        .any(|d| path == *d || path.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
    {
        return false;
    }
    match path.strip_prefix("usr/share/doc/") {
        // `usr/share/doc/PKG` itself, and `usr/share/doc/PKG/copyright`.
        Some(rest) => {
            let parts: Vec<&str> = rest.split('/').collect();
            parts.len() == 1 || (parts.len() == 2 && parts[1] == "copyright")
        }
        None => true,
    }
}

fn place_package(root: &mut Root, name: &str, contents: &DebContents, only: &[&str]) -> Result<()> {
    let files: BTreeMap<&str, (&str, u64)> = contents
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            DebKind::File { sha256, size } => Some((e.path.as_str(), (sha256.as_str(), *size))),
            _ => None,
        })
        .collect();
    for entry in &contents.entries {
        if !keep(&entry.path, only) {
            continue;
        }
        let path = root.redirect(&entry.path);
        match &entry.kind {
            DebKind::Dir => root.place(&path, Node::Dir, entry.mode, name)?,
            DebKind::File { sha256, size } => root.place(
                &path,
                Node::File {
                    sha256: sha256.clone(),
                    size: *size,
                    group: None,
                },
                entry.mode,
                name,
            )?,
            DebKind::Symlink { target } => {
                let target = if path != entry.path && !target.starts_with('/') {
                    moved_link_target(root, &entry.path, &path, target)
                } else {
                    target.clone()
                };
                root.place(&path, Node::Symlink(target), 0o777, name)?
            }
            DebKind::Hardlink { target } => {
                let (sha256, size) = files.get(target.as_str()).ok_or_else(|| Error::Deb {
                    deb: name.to_owned(),
                    why: format!(
                        "{}: hardlink to {target}, which is not a file of the package",
                        entry.path
                    ),
                })?;
                root.place(
                    &path,
                    Node::File {
                        sha256: (*sha256).to_owned(),
                        size: *size,
                        group: None,
                    },
                    entry.mode,
                    name,
                )?;
                let target = root.redirect(target);
                root.link(&path, &target);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites(inrelease: &str) -> Vec<SuiteInfo> {
        vec![SuiteInfo {
            name: "trixie".into(),
            date: "Sat, 15 Nov 2025 08:00:00 UTC".into(),
            inrelease_sha256: inrelease.into(),
        }]
    }

    fn glibc_with(packages: &[&str]) -> Request {
        Request {
            distro: Distro::DEFAULT,
            flavour: Flavour::Glibc,
            packages: packages.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn the_plan_key_changes_with_any_index_the_request_or_the_arch() {
        let key = plan_key(&suites("aa"), &glibc_with(&["libpq5"]), "amd64");
        assert_eq!(
            key,
            plan_key(&suites("aa"), &glibc_with(&["libpq5"]), "amd64")
        );
        for other in [
            plan_key(&suites("ab"), &glibc_with(&["libpq5"]), "amd64"),
            plan_key(&suites("aa"), &glibc_with(&["libpq5", "curl"]), "amd64"),
            plan_key(&suites("aa"), &glibc_with(&[]), "amd64"),
            plan_key(&suites("aa"), &glibc_with(&["libpq5"]), "arm64"),
        ] {
            assert_ne!(key, other);
        }
    }

    /// Layers given as (name, relations), every relation followed.
    struct Layers(Vec<(&'static str, Vec<&'static str>)>);

    impl Layered for Layers {
        fn distro(&self) -> Distro {
            Distro::DEFAULT
        }

        fn layers(&self) -> Vec<LayerRequest> {
            self.0
                .iter()
                .map(|(name, relations)| LayerRequest {
                    name: name.to_string(),
                    relations: relations.iter().map(|r| r.to_string()).collect(),
                    follow: vec![true; relations.len()],
                })
                .collect()
        }
    }

    #[test]
    fn the_plan_key_tells_layer_boundaries_apart() {
        let key = |layers| plan_key(&suites("aa"), &Layers(layers), "amd64");
        // The same strings in the same order, cut into layers differently.
        assert_ne!(
            key(vec![("a", vec!["b"]), ("c", vec![])]),
            key(vec![("a", vec![]), ("b", vec!["c"])])
        );
        assert_ne!(
            key(vec![("a", vec!["b", "c"])]),
            key(vec![("a", vec!["bc"])])
        );
    }

    #[test]
    fn a_cached_plan_is_used_only_when_it_verifies_parses_and_names_the_same_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let request = Request {
            distro: Distro::DEFAULT,
            flavour: Flavour::Static,
            packages: Vec::new(),
        };
        let lock = Lock {
            lock_version: LOCK_VERSION,
            distro: "debian-13".into(),
            arch: "amd64".into(),
            suite: suites("aa"),
            layer: request
                .layers()
                .into_iter()
                .map(|layer| LockedLayer {
                    name: layer.name,
                    requested: layer.relations,
                    package: Vec::new(),
                })
                .collect(),
        };
        let ref_path = dir.path().join("refs/plan-k");
        let cached = |suites: &[SuiteInfo], request: &Request, arch: &str| {
            cached_plan(&cache, &ref_path, suites, request, arch)
        };
        let store = |bytes: &[u8]| {
            let digest = cache.store().put_bytes(bytes).unwrap();
            cache.write_ref(&ref_path, &digest).unwrap();
            digest
        };
        assert_eq!(cached(&suites("aa"), &request, "amd64"), None);
        let digest = store(lock.to_toml().unwrap().as_bytes());
        assert_eq!(cached(&suites("aa"), &request, "amd64"), Some(lock.clone()));
        // Resolved from another index: not this build's plan.
        assert_eq!(cached(&suites("ab"), &request, "amd64"), None);
        // Another request or architecture under the same ref: not this build's plan either.
        assert_eq!(cached(&suites("aa"), &glibc_with(&[]), "amd64"), None);
        assert_eq!(cached(&suites("aa"), &request, "arm64"), None);
        // A blob whose bytes no longer match its digest is not trusted.
        let blob = cache.store().path(&digest);
        let mut perms = std::fs::metadata(&blob).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&blob, perms).unwrap();
        std::fs::write(&blob, lock.to_toml().unwrap().replace("tzdata", "tzdatb")).unwrap();
        assert_eq!(cached(&suites("aa"), &request, "amd64"), None);
        store(b"not = [a lock");
        assert_eq!(cached(&suites("aa"), &request, "amd64"), None);
        std::fs::write(&ref_path, "sha256:nonsense").unwrap();
        assert_eq!(cached(&suites("aa"), &request, "amd64"), None);
    }

    #[test]
    fn moved_relative_links_keep_their_meaning() {
        let mut root = Root::new();
        generate::skeleton(&mut root).unwrap();
        assert_eq!(
            moved_link_target(&root, "bin/sh", "usr/bin/sh", "dash"),
            "dash"
        );
        assert_eq!(
            moved_link_target(&root, "lib64/ld.so", "usr/lib64/ld.so", "../lib/x/ld.so"),
            "/usr/lib/x/ld.so"
        );
    }

    #[test]
    fn docs_are_dropped_but_copyright_stays() {
        assert!(keep("usr/share/doc/dash/copyright", &[]));
        assert!(keep("usr/share/doc/dash", &[]));
        assert!(!keep("usr/share/doc/dash/changelog.Debian.gz", &[]));
        assert!(!keep("usr/share/man/man1/dash.1.gz", &[]));
        assert!(!keep("usr/share/locale", &[]));
        assert!(keep("usr/share/localed", &[]));
        assert!(keep("usr/bin/dash", &[]));
        assert!(keep("usr/bin/env", &["usr/bin/env"]));
        assert!(!keep("usr/bin/ls", &["usr/bin/env"]));
    }

    #[test]
    fn a_package_taken_in_part_is_placed_whole_when_a_later_layer_asks_for_it() {
        let stanza = |name: &str, depends: &str| {
            format!(
                "Package: {name}\nVersion: 1.0\nArchitecture: amd64\n{depends}\
                 Filename: pool/main/{name}_1.0_amd64.deb\nSize: 1\nSHA256: {}\n\n",
                "a".repeat(64)
            )
        };
        let names = [
            "base-files",
            "netbase",
            "tzdata",
            "ca-certificates",
            "libc6",
            "libgcc-s1",
        ];
        let mut index: String = names.iter().map(|n| stanza(n, "")).collect();
        for name in ["libstdc++6", "libssl3t64", "zlib1g", "dash", "coreutils"] {
            index.push_str(&stanza(name, ""));
        }
        index.push_str(&stanza("sed", "Depends: coreutils\n"));
        let packages = crate::index::parse_packages(&index, "trixie", "Packages").unwrap();
        let universe = Universe::new(&["trixie"], vec![packages]);
        let request = Request {
            distro: Distro::DEFAULT,
            flavour: Flavour::Glibc,
            packages: vec!["sed".into()],
        };
        let lock = plan(&universe, &request, "amd64").unwrap();
        let in_layer = |layer: &str| -> Vec<String> {
            let layer = lock.layer(layer).unwrap();
            layer.package.iter().map(|d| d.name.clone()).collect()
        };
        assert!(in_layer("glibc").contains(&"coreutils".to_owned()));
        assert_eq!(in_layer("packages"), ["coreutils", "sed"]);
    }

    #[test]
    fn layers_follow_the_request() {
        let mut request = Request {
            distro: Distro::DEFAULT,
            flavour: Flavour::Static,
            packages: Vec::new(),
        };
        let names = |r: &Request| r.layers().into_iter().map(|l| l.name).collect::<Vec<_>>();
        assert_eq!(names(&request), ["static"]);
        request.packages = vec!["libpq5".into(), "libpq5".into()];
        assert_eq!(names(&request), ["static", "glibc", "packages"]);
        assert_eq!(request.layers()[2].relations, ["libpq5"]);
        assert_eq!(only_paths("glibc", "coreutils"), ["usr/bin/env"]);
        assert!(only_paths("glibc", "libssl3").is_empty());
        assert_eq!(Distro::parse("debian-12").unwrap().codename(), "bookworm");
        assert!(Distro::parse("ubuntu-24.04").is_err());
    }
}
