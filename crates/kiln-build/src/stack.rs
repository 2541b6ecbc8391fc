//! Kiln's own run images: a build with no `--run-image` runs on a stack assembled from Debian
//! packages by `kiln-debian` — the static flavour for self-contained binaries, glibc when a
//! provided runtime needs it (the same rule that refuses `scratch` for such runtimes), plus the
//! app's extra run packages. An explicit run image always wins.
//!
//! Settings, first wins: `--stack` / `KILN_STACK`, then `kiln.toml` `[stack] distro`, then
//! `debian-13`; mirror `KILN_DEBIAN_MIRROR` (`KILN_DEBIAN_SECURITY_MIRROR`), then `[stack]
//! mirror` (`security_mirror`), then the host's apt sources; run packages `KILN_RUN_PACKAGES`
//! (space- or comma-separated), then `[packages] run`. Downloads are cached in
//! `KILN_DEBIAN_CACHE`, default `<cache dir>/debian`. `KILN_DEBIAN_KEYRING` names a keyring file
//! to use instead of the embedded Debian keys; `KILN_DEBIAN_INDEX_MAX_AGE` (seconds) how old a
//! cached InRelease may be before it is refreshed.
//!
//! With `SRC/kiln.lock` the packages are exactly the locked ones; without, they are resolved
//! fresh and reported (`--json` `stack`). Stack layers are written with fixed options (gzip,
//! Kiln's default mtime), never the build's, so every app on a stack shares their digests.

use std::collections::BTreeMap;
use std::io::Write;

use crate::events::{Events, Observer, Phase};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use kiln_buildpack::plan::Plan;
use kiln_buildpack::project::ProjectConfig;
use kiln_debian::fetch::{self, Cache, Source};
use kiln_debian::lock::{Lock, SuiteInfo};
use kiln_debian::mirror::{self, Given};
use kiln_debian::release::Keyring;
use kiln_debian::stack::{self as dstack, Distro, Flavour, Request};
use kiln_oci::layer::{write_layer, LayerOptions};
use kiln_oci::source::{ImageSource, LoadedImage};
use kiln_oci::spec::{History, ImageConfig, LayerRecord};
use kiln_oci::store::BlobStore;

use crate::error::{Error, IoContext, Result};
use crate::BuildOptions;

/// The config label recording a stack image's distro, flavour, suites and packages.
pub const LABEL: &str = "dev.kiln.stack";
/// The lock file's name, beside `kiln.toml`.
pub const LOCK_FILE: &str = "kiln.lock";
/// Bump when the way stack layers are made changes, so recorded layers are not reused.
const RECIPE: &str = "kiln-stack-layer/v3";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Use Kiln's stack as the run image; `distro` from `--stack` (else `kiln.toml`, else the
/// default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackSelection {
    pub distro: Option<Distro>,
}

/// What `--json` (and the image's [`LABEL`]) says about the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackReport {
    /// `debian-13`.
    pub distro: String,
    /// `static` or `glibc`.
    pub flavour: String,
    pub suites: Vec<SuiteInfo>,
    /// Whether the packages came from `kiln.lock`.
    pub locked: bool,
    /// The extra run packages asked for (`[packages] run`), so a rebase can ask again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_packages: Vec<String>,
    pub packages: Vec<PackageReport>,
    /// Things worth knowing (an index used from the cache because the mirror did not answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageReport {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The stack layer it is in (`static`, `glibc`, `packages`).
    pub layer: String,
}

/// The base name runtimes check (`scratch` is refused for glibc runtimes; a stack is not).
pub fn base_label(opts: &BuildOptions) -> String {
    match &opts.stack {
        Some(_) => "kiln-stack".to_owned(),
        None => opts.run_image.to_string(),
    }
}

/// The run image of this build: Kiln's stack when selected, else `opts.run_image`.
pub fn load_base(
    opts: &BuildOptions,
    plan: &Plan,
    project: &ProjectConfig,
    store: &BlobStore,
    client: &kiln_registry::Client,
    ev: Events<'_>,
) -> Result<(
    LoadedImage,
    Option<crate::registry::PullReport>,
    Option<StackReport>,
)> {
    let Some(selection) = &opts.stack else {
        let (base, pull) = crate::registry::load_any(&opts.run_image, store, client, ev)?;
        return Ok((base, pull, None));
    };
    let request = request(opts, selection, plan, project)?;
    let (base, report) = assemble(opts, project, &request, store, ev)?;
    Ok((base, None, Some(report)))
}

/// The stack a build of `plan` asks for.
pub fn request(
    opts: &BuildOptions,
    selection: &StackSelection,
    plan: &Plan,
    project: &ProjectConfig,
) -> Result<Request> {
    let distro = match selection.distro {
        Some(d) => d,
        None => distro(opts, project)?,
    };
    let needs_glibc = plan.buildpacks.iter().any(|bp| {
        bp.runtime
            .as_ref()
            .and_then(|r| kiln_runtime::Runtime::parse(&r.name))
            .is_some_and(|r| r.needs_glibc())
    });
    // The buildpacks' run packages (a runtime from the distro), then the app's.
    let mut packages: Vec<String> = plan
        .buildpacks
        .iter()
        .flat_map(|bp| bp.packages.run.iter().cloned())
        .collect();
    match opts.kiln_env.get("KILN_RUN_PACKAGES") {
        Some(list) => packages.extend(package_list(list)),
        None => packages.extend(project.packages.run.iter().cloned()),
    }
    Ok(Request {
        distro,
        flavour: if needs_glibc {
            Flavour::Glibc
        } else {
            Flavour::Static
        },
        packages,
    })
}

/// The stack distro when `--stack` names none: `KILN_STACK`, then `kiln.toml` `[stack]
/// distro`, then the default.
pub fn distro(opts: &BuildOptions, project: &ProjectConfig) -> Result<Distro> {
    let kiln_toml = || opts.source.join(kiln_buildpack::project::FILE_NAME);
    match (opts.kiln_env.get("KILN_STACK"), &project.stack.distro) {
        (Some(s), _) => Distro::parse(s).map_err(|why| Error::Source {
            path: opts.source.clone(),
            why: format!("KILN_STACK: {why}"),
        }),
        (None, Some(s)) => Distro::parse(s).map_err(|why| Error::Source {
            path: kiln_toml(),
            why: format!("[stack] distro: {why}"),
        }),
        (None, None) => Ok(Distro::DEFAULT),
    }
}

/// A `KILN_*_PACKAGES` value: names separated by spaces or commas.
pub fn package_list(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split([',', ' ', '\t', '\n'])
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

/// Where packages come from, as configured for `opts`' project.
pub fn source(opts: &BuildOptions, project: &ProjectConfig) -> Result<Source> {
    let from_toml = Given {
        archive: project.stack.mirror.clone(),
        security: project.stack.security_mirror.clone(),
        updates: true,
        origin: format!("{} [stack] mirror", opts.source.join("kiln.toml").display()),
    };
    source_from(&opts.kiln_env, from_toml)
}

/// Where packages come from: `KILN_DEBIAN_MIRROR` (`KILN_DEBIAN_SECURITY_MIRROR`), else
/// `fallback` (a project's `[stack] mirror`; with no archive, the host's apt sources). A given
/// mirror's `SUITE-updates` is read unless `KILN_DEBIAN_UPDATES` is `no`; the host's sources say
/// themselves whether they read it (and `KILN_DEBIAN_UPDATES=no` turns it off there too).
pub(crate) fn source_from(env: &BTreeMap<String, String>, fallback: Given) -> Result<Source> {
    let env = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let setting = |why: String| Error::Debian(kiln_debian::Error::Stack(why));
    let updates = match env("KILN_DEBIAN_UPDATES").as_deref() {
        None | Some("yes" | "1" | "true") => true,
        Some("no" | "0" | "false") => false,
        Some(other) => {
            return Err(setting(format!(
                "KILN_DEBIAN_UPDATES {other:?}: expected yes or no"
            )))
        }
    };
    let given = match env("KILN_DEBIAN_MIRROR") {
        Some(archive) => Given {
            archive: Some(archive),
            security: env("KILN_DEBIAN_SECURITY_MIRROR"),
            updates,
            origin: "KILN_DEBIAN_MIRROR".to_owned(),
        },
        None => Given {
            updates: fallback.updates && updates,
            ..fallback
        },
    };
    let mut mirror = mirror::find(&given, Path::new("/"))?;
    mirror.updates &= updates;
    let keyring = match env("KILN_DEBIAN_KEYRING") {
        Some(path) => Keyring::from_file(Path::new(&path))?,
        None => Keyring::embedded()?,
    };
    let max_index_age = match env("KILN_DEBIAN_INDEX_MAX_AGE") {
        Some(secs) => Duration::from_secs(secs.parse().map_err(|_| {
            setting(format!(
                "KILN_DEBIAN_INDEX_MAX_AGE {secs:?} is not a number of seconds"
            ))
        })?),
        None => fetch::DEFAULT_MAX_INDEX_AGE,
    };
    let arch = fetch::host_arch().ok_or_else(|| {
        setting(format!(
            "Kiln's stacks are not available for {}; pass --run-image",
            std::env::consts::ARCH
        ))
    })?;
    Ok(Source {
        mirror,
        keyring,
        arch: arch.to_owned(),
        max_index_age,
    })
}

/// The download cache: `KILN_DEBIAN_CACHE`, else `<cache dir>/debian`.
pub fn debian_cache(opts: &BuildOptions) -> Result<Cache> {
    debian_cache_in(&opts.kiln_env, &opts.cache_dir)
}

pub(crate) fn debian_cache_in(env: &BTreeMap<String, String>, cache_dir: &Path) -> Result<Cache> {
    let dir = env
        .get("KILN_DEBIAN_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| cache_dir.join("debian"), PathBuf::from);
    Ok(Cache::open(dir)?)
}

/// `SRC/kiln.lock`.
pub fn lock_path(opts: &BuildOptions) -> Result<PathBuf> {
    Ok(crate::source::resolve_source(&opts.source)?.join(LOCK_FILE))
}

/// The packages of `request`: the lock's when there is one, else freshly resolved.
fn resolve(
    opts: &BuildOptions,
    source: &Source,
    cache: &Cache,
    request: &Request,
    notes: &mut Vec<String>,
) -> Result<(Lock, bool)> {
    let path = lock_path(opts)?;
    match Lock::read(&path)? {
        Some(lock) => Ok((
            dstack::from_lock(&lock, request, &source.arch, &path.display().to_string())?,
            true,
        )),
        None => Ok((dstack::resolve_fresh(source, cache, request, notes)?, false)),
    }
}

/// Builds (or finds recorded) the stack layers of `request` in `store` and returns the stack
/// as a base image.
fn assemble(
    opts: &BuildOptions,
    project: &ProjectConfig,
    request: &Request,
    store: &BlobStore,
    ev: Events<'_>,
) -> Result<(LoadedImage, StackReport)> {
    let source = source(opts, project)?;
    let cache = debian_cache(opts)?;
    let mut notes = Vec::new();
    let (lock, locked) = resolve(opts, &source, &cache, request, &mut notes)?;
    let resolved = Resolved {
        lock,
        locked,
        notes,
    };
    stack_image(
        &source,
        &cache,
        &opts.cache_dir,
        request,
        resolved,
        store,
        ev,
    )
}

/// The packages of a stack, with where they came from.
pub(crate) struct Resolved {
    pub lock: Lock,
    /// Whether they came from a `kiln.lock`.
    pub locked: bool,
    pub notes: Vec<String>,
}

/// The stack image of `resolved`: its layers found recorded under `cache_dir` (by package set)
/// or assembled and written into `store`, a config with `PATH` and the [`LABEL`].
pub(crate) fn stack_image(
    source: &Source,
    cache: &Cache,
    cache_dir: &Path,
    request: &Request,
    resolved: Resolved,
    store: &BlobStore,
    ev: Events<'_>,
) -> Result<(LoadedImage, StackReport)> {
    let Resolved {
        lock,
        locked,
        notes,
    } = resolved;
    for note in &notes {
        ev.note(format!("stack: note: {note}"));
    }
    let records_dir = cache_dir.join("stack-layers");
    let keys = layer_keys(&lock);
    let recorded: Option<Vec<LayerRecord>> = keys
        .iter()
        .map(|key| read_record(&records_dir, key, store))
        .collect();
    let layers = match recorded {
        Some(records) => records,
        None => {
            let assembled = dstack::assemble(source, cache, &lock)?;
            let options = LayerOptions::default();
            let mut records = Vec::new();
            for (layer, key) in assembled.iter().zip(&keys) {
                let record = write_layer(store, &layer.entries, &options)?;
                write_record(&records_dir, key, &record)?;
                records.push(record);
            }
            records
        }
    };
    let flavour = request.effective_flavour();
    let name = format!("{}/{}", request.distro.name(), flavour.name());
    let report = StackReport {
        distro: request.distro.name().to_owned(),
        flavour: flavour.name().to_owned(),
        suites: lock.suite.clone(),
        locked,
        run_packages: request.packages.clone(),
        packages: lock
            .layer
            .iter()
            .flat_map(|l| {
                l.package.iter().map(|p| PackageReport {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    architecture: p.architecture.clone(),
                    layer: l.name.clone(),
                })
            })
            .collect(),
        notes,
    };
    ev.note(format!(
        "stack {name}: {} packages from {}{}",
        report.packages.len(),
        lock.suite
            .iter()
            .map(|s| format!("{} ({})", s.name, s.date))
            .collect::<Vec<_>>()
            .join(", "),
        if locked {
            ", as locked in kiln.lock"
        } else {
            ""
        }
    ));
    let mut config = ImageConfig::for_host();
    config.config.set_env_var("PATH", PATH);
    let mut labelled = report.clone();
    labelled.notes.clear();
    config.config.labels.insert(
        LABEL.to_owned(),
        String::from_utf8(kiln_oci::json::to_canonical_vec(&labelled)).expect("JSON is UTF-8"),
    );
    config.created = Some(kiln_oci::spec::rfc3339(kiln_oci::layer::DEFAULT_MTIME));
    // One entry per layer, so `docker history` names them; an image built on the stack gives
    // them its own `created` (`export::app_config`).
    config.history = lock
        .layer
        .iter()
        .map(|layer| History {
            created: config.created.clone(),
            created_by: Some(format!("kiln: stack {name}, layer {}", layer.name)),
            comment: None,
            empty_layer: false,
        })
        .collect();
    let image = kiln_oci::image::assemble(store, config.clone(), &layers, BTreeMap::new())?;
    let base = LoadedImage {
        source: ImageSource::Stack(name),
        manifest_digest: Some(image.manifest_digest),
        config: image.config,
        layers,
        annotations: BTreeMap::new(),
        ref_name: None,
    };
    Ok((base, report))
}

/// A key per layer: the recipe, the architecture and every locked layer up to this one (a
/// layer's content depends on the layers below it: merged directories, generated files).
fn layer_keys(lock: &Lock) -> Vec<String> {
    let mut hasher = Sha256::new();
    hasher.update(format!("{RECIPE}\n{}\n{}\n", lock.distro, lock.arch));
    lock.layer
        .iter()
        .map(|layer| {
            hasher.update(format!("layer {}\n", layer.name));
            for p in &layer.package {
                hasher.update(format!("{} {} {}\n", p.name, p.version, p.sha256));
            }
            hex::encode(hasher.clone().finalize())
        })
        .collect()
}

fn read_record(dir: &Path, key: &str, store: &BlobStore) -> Option<LayerRecord> {
    let bytes = std::fs::read(dir.join(format!("{key}.json"))).ok()?;
    let record: LayerRecord = serde_json::from_slice(&bytes).ok()?;
    store.contains(&record.descriptor.digest).then_some(record)
}

fn write_record(dir: &Path, key: &str, record: &LayerRecord) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(&kiln_oci::json::to_canonical_vec(record))
        .ctx(|| format!("writing {}", tmp.path().display()))?;
    let path = dir.join(format!("{key}.json"));
    tmp.persist(&path)
        .map_err(|e| e.error)
        .ctx(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// What `kiln lock` did.
#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    pub path: PathBuf,
    /// `written`, `updated` or `unchanged`.
    pub action: String,
    pub lock: Lock,
}

/// `kiln lock`: writes `SRC/kiln.lock` for the stack a build of `opts` would use (an existing
/// lock that still fits is kept unless `update`).
pub fn lock(opts: &BuildOptions, update: bool, observer: &dyn Observer) -> Result<LockReport> {
    let ev = Events::new(observer, &opts.cancel);
    ev.phase(Phase::Lock, || lock_with(opts, update, ev))
}

fn lock_with(opts: &BuildOptions, update: bool, ev: Events<'_>) -> Result<LockReport> {
    let plan = crate::plan(&opts.source, opts.buildpacks.as_ref(), &opts.kiln_env)?;
    let src = crate::source::resolve_source(&opts.source)?;
    let project = ProjectConfig::load(&src)?;
    let selection = opts.stack.clone().unwrap_or_default();
    let request = request(opts, &selection, &plan, &project)?;
    let source = source(opts, &project)?;
    let path = src.join(LOCK_FILE);
    let existing = Lock::read(&path)?;
    if let (Some(lock), false) = (&existing, update) {
        let shown = path.display().to_string();
        dstack::from_lock(lock, &request, &source.arch, &shown)?;
        let build = crate::build_root::request(opts, &plan, &project)?;
        dstack::from_lock(lock, &build, &source.arch, &shown)?;
        return Ok(LockReport {
            path,
            action: "unchanged".to_owned(),
            lock: lock.clone(),
        });
    }
    let cache = debian_cache(opts)?;
    let mut notes = Vec::new();
    let mut lock = dstack::resolve_fresh(&source, &cache, &request, &mut notes)?;
    for note in &notes {
        ev.note(format!("stack: note: {note}"));
    }
    // The build root's packages too: sandboxed steps then run on exactly these.
    let build = crate::build_root::resolve_for_lock(opts, &plan, &project, ev)?;
    lock.layer.extend(build.layer);
    lock.write(&path)?;
    ev.note(format!(
        "wrote {} ({} packages)",
        path.display(),
        lock.packages().count()
    ));
    Ok(LockReport {
        path,
        action: if existing.is_some() {
            "updated"
        } else {
            "written"
        }
        .to_owned(),
        lock,
    })
}

/// A package that differs between an image's stack and the stack it is rebased onto.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    pub name: String,
    /// Its stack layer (in the new stack; in the old one for a package no longer there).
    pub layer: String,
    /// The version in the image's stack; `None` for a package new in the stack.
    pub old: Option<String>,
    /// The version in the new stack; `None` for a package no longer in it.
    pub new: Option<String>,
}

/// What rebasing an image onto a newer build of its own stack found.
#[derive(Debug, Clone, Serialize)]
pub struct RestackReport {
    /// Whether any package changed. When none did, the image is kept as it is (same digest).
    pub changed: bool,
    /// Sorted by name.
    pub packages: Vec<PackageChange>,
    /// The stack the result runs on (the image's own when nothing changed).
    pub stack: StackReport,
}

/// The new stack for an image built on `old` (its [`LABEL`]): the same distro, flavour and run
/// packages, resolved fresh against the mirror, or taken from the `kiln.lock` at `lock_path`.
/// `None` as the image when no package changed (nothing is assembled then).
pub(crate) fn restack(
    old: &StackReport,
    lock_path: Option<&Path>,
    env: &BTreeMap<String, String>,
    cache_dir: &Path,
    store: &BlobStore,
    ev: Events<'_>,
) -> Result<(Option<LoadedImage>, RestackReport)> {
    let request = label_request(old)?;
    let source = source_from(env, Given::default())?;
    let cache = debian_cache_in(env, cache_dir)?;
    let mut notes = Vec::new();
    let (lock, locked) = match lock_path {
        Some(path) => {
            let shown = path.display().to_string();
            let lock = Lock::read(path)?.ok_or_else(|| {
                Error::Debian(kiln_debian::Error::Lock {
                    path: shown.clone(),
                    why: "no such file".to_owned(),
                })
            })?;
            (
                dstack::from_lock(&lock, &request, &source.arch, &shown)?,
                true,
            )
        }
        None => (
            dstack::resolve_fresh(&source, &cache, &request, &mut notes)?,
            false,
        ),
    };
    let changes = package_changes(old, &lock);
    let name = format!("{}/{}", old.distro, old.flavour);
    if changes.is_empty() {
        for note in &notes {
            ev.note(format!("stack: note: {note}"));
        }
        ev.note(format!(
            "stack {name}: all {} packages are up to date; the image is unchanged",
            old.packages.len()
        ));
        let report = RestackReport {
            changed: false,
            packages: changes,
            stack: StackReport {
                notes,
                ..old.clone()
            },
        };
        return Ok((None, report));
    }
    for c in &changes {
        ev.note(format!(
            "stack {name}: {} {} -> {}",
            c.name,
            c.old.as_deref().unwrap_or("(new)"),
            c.new.as_deref().unwrap_or("(removed)")
        ));
    }
    let resolved = Resolved {
        lock,
        locked,
        notes,
    };
    let (image, stack) = stack_image(&source, &cache, cache_dir, &request, resolved, store, ev)?;
    let report = RestackReport {
        changed: true,
        packages: changes,
        stack,
    };
    Ok((Some(image), report))
}

/// The request an image's stack label records.
fn label_request(label: &StackReport) -> Result<Request> {
    let bad = |why: String| {
        Error::Debian(kiln_debian::Error::Stack(format!(
            "the image's {LABEL} label {why}"
        )))
    };
    let distro = Distro::parse(&label.distro).map_err(bad)?;
    let flavour = match label.flavour.as_str() {
        "static" => Flavour::Static,
        "glibc" => Flavour::Glibc,
        other => return Err(bad(format!("names an unknown flavour {other:?}"))),
    };
    if label.run_packages.is_empty()
        && label
            .packages
            .iter()
            .any(|p| p.layer == dstack::PACKAGES_LAYER)
    {
        return Err(bad(
            "has run packages but does not record which were asked for (an image built by an \
             older Kiln): rebuild it, or rebase it with --run-image"
                .to_owned(),
        ));
    }
    Ok(Request {
        distro,
        flavour,
        packages: label.run_packages.clone(),
    })
}

/// What differs between the packages an image's label lists and `lock`'s.
fn package_changes(old: &StackReport, lock: &Lock) -> Vec<PackageChange> {
    let before: BTreeMap<&str, (&str, &str, &str)> = old
        .packages
        .iter()
        .map(|p| {
            let key = (
                p.version.as_str(),
                p.architecture.as_str(),
                p.layer.as_str(),
            );
            (p.name.as_str(), key)
        })
        .collect();
    let after: BTreeMap<&str, (&str, &str, &str)> = lock
        .layer
        .iter()
        .flat_map(|l| {
            l.package.iter().map(|p| {
                let key = (p.version.as_str(), p.architecture.as_str(), l.name.as_str());
                (p.name.as_str(), key)
            })
        })
        .collect();
    let names: std::collections::BTreeSet<&str> =
        before.keys().chain(after.keys()).copied().collect();
    names
        .into_iter()
        .filter(|name| before.get(name) != after.get(name))
        .map(|name| {
            let (old, new) = (before.get(name), after.get(name));
            PackageChange {
                name: name.to_owned(),
                layer: new.or(old).map_or("", |p| p.2).to_owned(),
                old: old.map(|p| p.0.to_owned()),
                new: new.map(|p| p.0.to_owned()),
            }
        })
        .collect()
}

/// The stack an image was built on, from its config label.
pub fn from_config(config: &ImageConfig) -> Option<StackReport> {
    config
        .config
        .labels
        .get(LABEL)
        .and_then(|json| serde_json::from_str(json).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(name)
    }

    fn request_for(name: &str, env: &[(&str, &str)], project: &ProjectConfig) -> Result<Request> {
        let mut opts = BuildOptions::new(fixture(name), "out.tar");
        opts.kiln_env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let plan = crate::plan(&opts.source, None, &opts.kiln_env)?;
        request(&opts, &StackSelection::default(), &plan, project)
    }

    #[test]
    fn the_flavour_follows_the_runtimes_and_settings_follow_their_order() {
        let none = ProjectConfig::default();
        let go = request_for("go-http", &[], &none).unwrap();
        assert_eq!(
            (go.distro, go.flavour, go.packages.len()),
            (Distro::Debian13, Flavour::Static, 0)
        );
        let node = request_for("node-express", &[], &none).unwrap();
        assert_eq!(node.flavour, Flavour::Glibc);

        let mut project = ProjectConfig::default();
        project.stack.distro = Some("debian-12".into());
        project.packages.run = vec!["libpq5".into()];
        let from_toml = request_for("go-http", &[], &project).unwrap();
        assert_eq!(from_toml.distro, Distro::Debian12);
        assert_eq!(from_toml.packages, ["libpq5"]);
        assert_eq!(from_toml.effective_flavour(), Flavour::Glibc);
        let from_env = request_for(
            "go-http",
            &[
                ("KILN_STACK", "debian-13"),
                ("KILN_RUN_PACKAGES", "libpq5, libxml2  zlib1g"),
            ],
            &project,
        )
        .unwrap();
        assert_eq!(from_env.distro, Distro::Debian13);
        assert_eq!(from_env.packages, ["libpq5", "libxml2", "zlib1g"]);

        project.stack.distro = Some("debian-11".into());
        let err = request_for("go-http", &[], &project)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kiln.toml: [stack] distro: unknown stack \"debian-11\""),
            "{err}"
        );
    }

    fn deb(name: &str, version: &str) -> kiln_debian::fetch::DebRef {
        kiln_debian::fetch::DebRef {
            name: name.into(),
            version: version.into(),
            architecture: "all".into(),
            suite: "trixie".into(),
            filename: format!("pool/{name}.deb"),
            size: 1,
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn layer_keys_change_with_any_package_below() {
        let layer = |name: &str, packages| kiln_debian::lock::LockedLayer {
            name: name.into(),
            requested: Vec::new(),
            package: packages,
        };
        let lock = |v: &str| Lock {
            lock_version: kiln_debian::lock::LOCK_VERSION,
            distro: "debian-13".into(),
            arch: "amd64".into(),
            suite: Vec::new(),
            layer: vec![
                layer("static", vec![deb("base-files", v)]),
                layer("glibc", vec![deb("libc6", "2.41")]),
            ],
        };
        let (a, b) = (layer_keys(&lock("13.8")), layer_keys(&lock("13.9")));
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], b[0]);
        // The glibc layer sits on a different static layer: its key changes too.
        assert_ne!(a[1], b[1]);
        assert_eq!(a, layer_keys(&lock("13.8")));
    }

    fn label(packages: &[(&str, &str, &str)], run: &[&str]) -> StackReport {
        StackReport {
            distro: "debian-13".into(),
            flavour: if run.is_empty() { "static" } else { "glibc" }.into(),
            suites: Vec::new(),
            locked: false,
            run_packages: run.iter().map(|p| (*p).to_owned()).collect(),
            packages: packages
                .iter()
                .map(|(name, version, layer)| PackageReport {
                    name: (*name).into(),
                    version: (*version).into(),
                    architecture: "all".into(),
                    layer: (*layer).into(),
                })
                .collect(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn package_changes_list_updated_added_and_removed_packages() {
        let old = label(
            &[
                ("base-files", "13.8", "static"),
                ("tzdata", "2025b-4", "static"),
                ("netbase", "6.5", "static"),
            ],
            &[],
        );
        let lock = Lock {
            lock_version: kiln_debian::lock::LOCK_VERSION,
            distro: "debian-13".into(),
            arch: "amd64".into(),
            suite: Vec::new(),
            layer: vec![kiln_debian::lock::LockedLayer {
                name: "static".into(),
                requested: Vec::new(),
                package: vec![
                    deb("base-files", "13.8"),
                    deb("ca-certificates", "20250419"),
                    deb("tzdata", "2026f-0+deb13u1"),
                ],
            }],
        };
        let change = |name: &str, old: Option<&str>, new: Option<&str>| PackageChange {
            name: name.into(),
            layer: "static".into(),
            old: old.map(str::to_owned),
            new: new.map(str::to_owned),
        };
        assert_eq!(
            package_changes(&old, &lock),
            [
                change("ca-certificates", None, Some("20250419")),
                change("netbase", Some("6.5"), None),
                change("tzdata", Some("2025b-4"), Some("2026f-0+deb13u1")),
            ]
        );
        lock_matches_label(&lock);
    }

    /// A lock compared with the label a build from it writes: no change.
    fn lock_matches_label(lock: &Lock) {
        let packages: Vec<(&str, &str, &str)> = lock
            .layer
            .iter()
            .flat_map(|l| {
                l.package
                    .iter()
                    .map(|p| (p.name.as_str(), p.version.as_str(), l.name.as_str()))
            })
            .collect();
        assert_eq!(package_changes(&label(&packages, &[]), lock), []);
    }

    #[test]
    fn the_label_gives_the_request_again() {
        let with_run = label(
            &[("libc6", "2.41", "glibc"), ("libpq5", "17", "packages")],
            &["libpq5"],
        );
        let request = label_request(&with_run).unwrap();
        assert_eq!(
            (request.distro, request.flavour, request.packages),
            (Distro::Debian13, Flavour::Glibc, vec!["libpq5".to_owned()])
        );
        let older = label(&[("libpq5", "17", "packages")], &[]);
        let err = label_request(&older).unwrap_err().to_string();
        assert!(
            err.contains("does not record which were asked for"),
            "{err}"
        );
        let mut odd = label(&[], &[]);
        odd.flavour = "musl".into();
        let err = label_request(&odd).unwrap_err().to_string();
        assert!(
            err.contains("dev.kiln.stack label names an unknown flavour \"musl\""),
            "{err}"
        );
    }
}
