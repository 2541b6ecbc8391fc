//! The build root sandboxed steps run in (`--build-root`): by default assembled from Debian
//! packages of the build's stack distro by `kiln-debian` — the base build packages, the
//! plan's buildpacks' `[[packages]] build`, and the project's (`KILN_BUILD_PACKAGES`, else
//! `kiln.toml` `[packages] build`) — so steps use the root's toolchains, never the host's. One
//! unpacked directory per distinct package set, under `<Debian cache>/roots/`, shared by
//! every build that asks for the same packages.
//!
//! With `SRC/kiln.lock` holding a `build` layer for exactly this package request, the root is
//! the locked packages; otherwise they are resolved fresh (and `kiln lock` records them).

use crate::events::Events;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use kiln_buildpack::plan::Plan;
use kiln_buildpack::project::ProjectConfig;
use kiln_debian::build_root::{self as droot, BuildRootRequest, BUILD_LAYER};
use kiln_debian::lock::Lock;
use kiln_debian::stack as dstack;

use crate::error::Result;
use crate::BuildOptions;

/// Where unpacked roots live, relative to the cache dir (the default Debian cache's `roots/`).
pub const ROOTS_DIR: &str = "debian/roots";

/// `--build-root`: what sandboxed steps see as `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildRootMode {
    /// A root assembled from Debian packages: only its toolchains and Kiln's runtimes.
    #[default]
    Debian,
    /// The host's own `/`, read-only, with its users' and Kiln's directories hidden (host
    /// toolchains named by the step `PATH` stay usable).
    Host,
}

/// An unpacked build root.
#[derive(Debug, Clone)]
pub struct BuildRoot {
    pub dir: PathBuf,
    pub report: BuildRootReport,
}

/// What `--json` says about the build root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildRootReport {
    pub distro: String,
    /// Content address of the exact package set (the directory's name).
    pub key: String,
    /// The packages asked for besides the base ones (buildpacks' and the project's).
    pub requested: Vec<String>,
    /// How many packages the root has in all.
    pub packages: usize,
    /// Whether the packages came from `kiln.lock`.
    pub locked: bool,
}

/// The build-root request of a build of `plan`.
pub fn request(
    opts: &BuildOptions,
    plan: &Plan,
    project: &ProjectConfig,
) -> Result<BuildRootRequest> {
    let distro = match opts.stack.as_ref().and_then(|s| s.distro) {
        Some(d) => d,
        None => crate::stack::distro(opts, project)?,
    };
    let mut packages: Vec<String> = plan
        .buildpacks
        .iter()
        .flat_map(|bp| bp.packages.build.iter().cloned())
        .collect();
    match opts.kiln_env.get("KILN_BUILD_PACKAGES") {
        Some(list) => packages.extend(crate::stack::package_list(list)),
        None => packages.extend(project.packages.build.iter().cloned()),
    }
    Ok(BuildRootRequest { distro, packages })
}

/// Finds or assembles and unpacks the build root of `request`.
pub fn prepare(
    opts: &BuildOptions,
    project: &ProjectConfig,
    request: &BuildRootRequest,
    ev: Events<'_>,
) -> Result<BuildRoot> {
    let started = Instant::now();
    let source = crate::stack::source(opts, project)?;
    let cache = crate::stack::debian_cache(opts)?;
    let mut notes = Vec::new();
    let (lock, locked) = match locked_build_layer(opts, request, &source.arch)? {
        Some(lock) => (lock, true),
        None => (
            dstack::resolve_fresh(&source, &cache, request, &mut notes)?,
            false,
        ),
    };
    for note in &notes {
        ev.note(format!("build root: note: {note}"));
    }
    let roots = cache.root().join("roots");
    let key = droot::root_key(&lock);
    let cached = roots.join(&key).is_dir();
    let dir = if cached {
        // Its mtime is its last use, for `kiln cache ls` / `prune`.
        let dir = roots.join(&key);
        if let Ok(handle) = std::fs::File::open(&dir) {
            let _ = handle.set_modified(std::time::SystemTime::now());
        }
        dir
    } else {
        let layers = dstack::assemble(&source, &cache, &lock)?;
        droot::materialize(&roots, &lock, &layers)?
    };
    let mut requested = request.packages.clone();
    requested.sort();
    requested.dedup();
    let report = BuildRootReport {
        distro: request.distro.name().to_owned(),
        key,
        requested,
        packages: lock.packages().count(),
        locked,
    };
    ev.note(format!(
        "build root {}: {} packages{}{}, {} ({:.1} s)",
        report.distro,
        report.packages,
        match report.requested.is_empty() {
            true => String::new(),
            false => format!(" (with {})", report.requested.join(", ")),
        },
        if locked {
            ", as locked in kiln.lock"
        } else {
            ""
        },
        if cached { "cached" } else { "unpacked" },
        started.elapsed().as_secs_f64()
    ));
    Ok(BuildRoot { dir, report })
}

/// The lock's `build` layer when `SRC/kiln.lock` has one for exactly this request.
fn locked_build_layer(
    opts: &BuildOptions,
    request: &BuildRootRequest,
    arch: &str,
) -> Result<Option<Lock>> {
    let path = crate::stack::lock_path(opts)?;
    let Some(lock) = Lock::read(&path)? else {
        return Ok(None);
    };
    if lock.layer(BUILD_LAYER).is_none() {
        return Ok(None);
    }
    dstack::from_lock(&lock, request, arch, &path.display().to_string())
        .map(Some)
        .map_err(Into::into)
}

/// The lock of the build root a build of `opts` would use, resolved fresh (for `kiln lock`).
pub fn resolve_for_lock(
    opts: &BuildOptions,
    plan: &Plan,
    project: &ProjectConfig,
    ev: Events<'_>,
) -> Result<Lock> {
    let request = request(opts, plan, project)?;
    let source = crate::stack::source(opts, project)?;
    let cache = crate::stack::debian_cache(opts)?;
    let mut notes = Vec::new();
    let lock = dstack::resolve_fresh(&source, &cache, &request, &mut notes)?;
    for note in &notes {
        ev.note(format!("build root: note: {note}"));
    }
    Ok(lock)
}
