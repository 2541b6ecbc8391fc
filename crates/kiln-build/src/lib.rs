//! `kiln-build`: the engine. It takes a source tree through detection and planning
//! (`kiln-buildpack`), runs the plan's steps in a sandbox ([`isolation`]) or on the host, in a
//! private working copy, packs the
//! resulting layers and writes the image (`kiln-oci`). Library first: the `kiln` CLI is a thin
//! shell over [`build`], [`detect`] and [`inspect::inspect`].
//!
//! Flow of [`build`]: source → [`source::copy_tree`] (working copy) → [`steps::run_step`] for
//! each planned step → [`export`] (layers, cached by content key; config; manifest; output file).

pub mod build_root;
pub mod cache;
pub mod cache_admin;
pub mod env_file;
pub mod error;
pub mod events;
mod export;
mod fsutil;
pub mod git;
pub mod ignore;
pub mod inspect;
pub mod isolation;
pub mod labels;
pub mod layer_cache;
pub mod metadata;
pub mod rebase;
pub mod registry;
pub mod registry_cache;
pub mod runtimes;
pub mod sbom;
pub mod source;
pub mod stack;
pub mod step_cache;
pub mod steps;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use kiln_buildpack::detect::Detection;
use kiln_buildpack::plan::{Plan, Process, APP_DIR};
use kiln_buildpack::project::ProjectConfig;
use kiln_buildpack::BuildpackSet;
use kiln_oci::digest::Digest;
use kiln_oci::layer::Compression;
use kiln_oci::reference::Reference;
use kiln_oci::source::ImageSource;

pub use error::{Error, Result};
pub use isolation::Isolation;

use cache::{BuildCache, CacheSlot, ProjectId};
use error::IoContext;
use events::{Events, Phase};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// An OCI layout in a tar that also carries Docker's `manifest.json`.
    OciArchive,
    /// An OCI image layout directory.
    OciDir,
}

/// Everything a build needs to know. [`BuildOptions::from_env`] gives the defaults for a
/// caller's environment, [`BuildOptions::new`] those of an empty one. Library code reads no
/// process environment: every variable it consults is in [`BuildOptions::host_env`], `env`,
/// `kiln_env` or `registry.env`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub source: PathBuf,
    /// Where to write the image; `None` when it is only published.
    pub output: Option<PathBuf>,
    pub format: OutputFormat,
    /// The names the written archive or layout gives the image (`--tag`, repeatable): each
    /// an `index.json` entry, all in `manifest.json`'s `RepoTags`.
    pub tags: Vec<Reference>,
    pub run_image: ImageSource,
    pub cache_dir: PathBuf,
    /// Names the app's own cache layers and step records in a cache directory shared with other
    /// apps (`--project`, `KILN_PROJECT`); `None`: see [`cache::ProjectId`] for the fallbacks.
    pub project: Option<String>,
    /// `None`: the built-in buildpacks.
    pub buildpacks: Option<BuildpackSet>,
    /// The environment steps start from. Nothing else of the caller's environment reaches them;
    /// see [`default_step_env`].
    pub env: BTreeMap<String, String>,
    /// Layer mtimes, and the image `created` time unless [`BuildOptions::creation_time`] says
    /// otherwise, in seconds since the epoch.
    pub source_date_epoch: u64,
    /// The image's `created` time: the config's, the history entries Kiln adds, the manifest's
    /// `created` annotation and the `org.opencontainers.image.created` label.
    pub creation_time: CreationTime,
    /// Image config labels over `kiln.toml` `[labels]` and the git-derived ones (`--label`).
    pub labels: BTreeMap<String, String>,
    pub compression: Compression,
    /// Push the image to each of these after building it (`--publish`, repeatable).
    pub publish: Vec<Reference>,
    /// Write the image's SBOMs here (`sbom.spdx.json`, `sbom.cdx.json`); the image then carries
    /// them too, under `/layers/kiln/sbom`. `None`: no SBOM.
    pub sbom_dir: Option<PathBuf>,
    /// Registry image the build cache is read from before and written to after the build.
    pub cache_image: Option<Reference>,
    /// How registries are reached (TLS exceptions, platform, concurrency, retries).
    pub registry: kiln_registry::ClientOptions,
    /// Rebuild every layer and run every step, ignoring (but refreshing) the cache.
    pub no_cache: bool,
    /// Check that the image's default process can start in the image before writing it
    /// (`kiln_verify`); `false` skips the check (`--no-verify`).
    pub verify: bool,
    /// `KILN_*` overrides of detection and planning (`KILN_BUILDPACKS`, `KILN_NODE_VERSION`, …);
    /// [`BuildOptions::from_env`] takes them from the caller's environment.
    pub kiln_env: BTreeMap<String, String>,
    /// The build machine's environment, as the caller gives it: where npm's and pip's own
    /// configuration (`npm_config_*`, `PIP_INDEX_URL`, `HOME`'s config files) and the home
    /// directory the sandbox hides are found. Steps never see it (they see `env`).
    pub host_env: BTreeMap<String, String>,
    /// Run on Kiln's own stack (assembled from Debian packages) instead of `run_image`.
    pub stack: Option<stack::StackSelection>,
    /// Where build steps run: sandboxed, on the host, or sandboxed when possible (the default).
    pub isolation: Isolation,
    /// What sandboxed steps see as `/`: a build root from Debian packages (the default) or
    /// the host's.
    pub build_root: build_root::BuildRootMode,
    /// Network of sandboxed steps (`--network none` gives them only a loopback of their own).
    pub network: kiln_sandbox::Network,
    /// The program that sets sandboxes up: by default this one, whose `main` must then call
    /// [`kiln_sandbox::run_helper_if_requested`] first (the `kiln` CLI does). A program that
    /// does not answer as a helper makes `auto` fall back to the host.
    pub sandbox_helper: kiln_sandbox::Helper,
    /// Cancelling it stops the build at its next checkpoint with [`Error::Cancelled`]
    /// ([`events::Cancel`]); keep a clone to cancel from another thread.
    pub cancel: events::Cancel,
}

impl BuildOptions {
    /// The defaults of a build in an empty environment: no `KILN_*` overrides, steps on a
    /// standard `PATH`, the cache under the system's temporary directory.
    pub fn new(source: impl Into<PathBuf>, output: impl Into<PathBuf>) -> BuildOptions {
        BuildOptions::from_env(source, output, BTreeMap::new())
    }

    /// The defaults for a caller whose environment is `host_env` (the `kiln` CLI passes its
    /// own, `std::env::vars()`): its `KILN_*` overrides, its `PATH` and toolchain locators for
    /// steps ([`default_step_env`]), its cache directory ([`default_cache_dir`]) and registry
    /// credentials.
    pub fn from_env(
        source: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
        host_env: BTreeMap<String, String>,
    ) -> BuildOptions {
        BuildOptions {
            source: source.into(),
            output: Some(output.into()),
            format: OutputFormat::OciArchive,
            tags: Vec::new(),
            run_image: ImageSource::Scratch,
            cache_dir: default_cache_dir(&host_env),
            project: None,
            buildpacks: None,
            env: default_step_env(&host_env),
            source_date_epoch: kiln_oci::layer::DEFAULT_MTIME,
            creation_time: CreationTime::Reproducible,
            labels: BTreeMap::new(),
            compression: Compression::DEFAULT,
            publish: Vec::new(),
            sbom_dir: None,
            cache_image: None,
            registry: kiln_registry::ClientOptions {
                env: host_env.clone(),
                ..kiln_registry::ClientOptions::default()
            },
            no_cache: false,
            verify: true,
            kiln_env: kiln_buildpack::settings::kiln_env(&host_env),
            host_env,
            stack: None,
            isolation: Isolation::default(),
            build_root: build_root::BuildRootMode::default(),
            network: kiln_sandbox::Network::Host,
            sandbox_helper: kiln_sandbox::Helper::current_exe(),
            cancel: events::Cancel::new(),
        }
    }
}

/// When the image says it was created (`--creation-time`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CreationTime {
    /// `SOURCE_DATE_EPOCH` (the build's `source_date_epoch`): the same inputs give the same
    /// image digest.
    #[default]
    Reproducible,
    /// The moment the image is assembled: a truthful date, a new digest on every build.
    Now,
    /// These seconds since the epoch.
    At(u64),
}

impl CreationTime {
    /// `now`, `reproducible` or a number of seconds since the epoch.
    pub fn parse(s: &str) -> std::result::Result<CreationTime, String> {
        match s {
            "now" => Ok(CreationTime::Now),
            "reproducible" => Ok(CreationTime::Reproducible),
            _ => s.parse::<u64>().map(CreationTime::At).map_err(|_| {
                format!("{s:?}: expected `now`, `reproducible` or seconds since the epoch")
            }),
        }
    }

    /// The creation time in seconds since the epoch, for a build with `source_date_epoch`.
    pub fn seconds(self, source_date_epoch: u64) -> u64 {
        match self {
            CreationTime::Reproducible => source_date_epoch,
            CreationTime::At(seconds) => seconds,
            CreationTime::Now => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(source_date_epoch, |d| d.as_secs()),
        }
    }
}

/// `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln` (of `env`), else a directory under the
/// system temp dir.
pub fn default_cache_dir(env: &BTreeMap<String, String>) -> PathBuf {
    let from_env = |key: &str| env.get(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    from_env("XDG_CACHE_HOME")
        .or_else(|| from_env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("kiln")
}

/// Caller variables that only locate host toolchains, passed through when set. Nothing else of the
/// caller's environment reaches steps unless asked for with `--env` (credentials stay out).
const TOOLCHAIN_VARS: &[&str] = &[
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOROOT",
    "JAVA_HOME",
    // Trust stores: machines behind a TLS-inspecting proxy need them for any download.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
];

/// The default step environment: the caller's (`host_env`'s) `PATH` (so host toolchains are
/// found), the toolchain-locating [`TOOLCHAIN_VARS`], and `LANG=C.UTF-8`. Steps get a private
/// `HOME`, so a rustup install's default `RUSTUP_HOME` (`~/.rustup`) is made explicit here.
pub fn default_step_env(host_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let path = host_env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut env = BTreeMap::from([
        ("PATH".to_owned(), path),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ]);
    for key in TOOLCHAIN_VARS {
        if let Some(value) = host_env.get(*key) {
            env.insert((*key).to_owned(), value.clone());
        }
    }
    if !env.contains_key("RUSTUP_HOME") {
        let rustup = host_env
            .get("HOME")
            .map(|home| PathBuf::from(home).join(".rustup"));
        if let Some(rustup) = rustup.filter(|p| p.is_dir()) {
            env.insert("RUSTUP_HOME".into(), rustup.display().to_string());
        }
    }
    env
}

/// What a build produced, as printed by `kiln build --json`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub output: Option<PathBuf>,
    pub format: OutputFormat,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layers: Vec<LayerReport>,
    pub steps: Vec<StepReport>,
    /// The language runtimes provided for buildpacks, with where each came from.
    pub runtimes: Vec<runtimes::RuntimeReport>,
    pub processes: Vec<Process>,
    /// The run image's pull, when it came from a registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<registry::PullReport>,
    /// The root sandboxed steps ran in, when Kiln assembled one from packages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_root: Option<build_root::BuildRootReport>,
    /// The stack the image runs on, when Kiln assembled the run image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<stack::StackReport>,
    /// The push of the first `--publish`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<registry::Published>,
    /// Every `--publish` push, in the order given (the first is also `push`), with the SBOMs
    /// attached to each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<registry::Published>,
    /// What `--cache-image` brought in and sent out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_image: Option<registry_cache::CacheImageReport>,
    pub timings: Timings,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub buildpack: String,
    pub name: String,
    /// False when skipped because its inputs were unchanged.
    pub ran: bool,
    /// Why it ran or was skipped.
    pub reason: String,
    pub duration_ms: u64,
}

impl StepReport {
    fn finished(&self) -> events::BuildEvent {
        events::BuildEvent::StepFinished {
            buildpack: self.buildpack.clone(),
            step: self.name.clone(),
            ran: self.ran,
            reason: self.reason.clone(),
            duration_ms: self.duration_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// `base`, `go/bin`, `app`, …
    pub name: String,
    pub digest: Digest,
    pub diff_id: Digest,
    /// Compressed bytes.
    pub size: u64,
    /// Taken as is (base layers, cache hits): not re-tarred or recompressed.
    pub reused: bool,
    /// Why it was reused or rebuilt.
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub detect_ms: u64,
    pub steps_ms: u64,
    pub export_ms: u64,
    pub total_ms: u64,
}

/// Detects which buildpacks apply to `source`, with the caller's `KILN_*` overrides
/// (`kiln_env`).
pub fn detect(
    source: &Path,
    buildpacks: Option<&BuildpackSet>,
    kiln_env: &BTreeMap<String, String>,
) -> Result<Detection> {
    let src = source::resolve_source(source)?;
    let set = buildpack_set(buildpacks)?;
    Ok(kiln_buildpack::detect::detect_with(&set, &src, kiln_env)?)
}

/// Detects and plans `source` (what `kiln plan` prints), with the caller's `KILN_*` overrides
/// (`kiln_env`). Nothing detected is [`Error::NothingDetected`].
pub fn plan(
    source: &Path,
    buildpacks: Option<&BuildpackSet>,
    env: &BTreeMap<String, String>,
) -> Result<Plan> {
    let src = source::resolve_source(source)?;
    let set = buildpack_set(buildpacks)?;
    let detection = kiln_buildpack::detect::detect_with(&set, &src, env)?;
    if !detection.detected {
        return Err(nothing_detected(source, &detection));
    }
    let project = ProjectConfig::load(&src)?;
    Ok(kiln_buildpack::plan::plan_with(
        &set, &detection, &project, &src, env,
    )?)
}

/// The given buildpacks, or the built-in ones.
fn buildpack_set(buildpacks: Option<&BuildpackSet>) -> Result<Cow<'_, BuildpackSet>> {
    Ok(match buildpacks {
        Some(set) => Cow::Borrowed(set),
        None => Cow::Owned(BuildpackSet::builtin()?),
    })
}

/// Runs a whole build, telling `observer` what happens as it does (see [`events`]); the build
/// stops with [`Error::Cancelled`] once [`BuildOptions::cancel`] is cancelled.
pub fn build(opts: &BuildOptions, observer: &dyn events::Observer) -> Result<BuildReport> {
    let started = Instant::now();
    let ev = Events::new(observer, &opts.cancel);
    ev.emit(events::BuildEvent::PhaseStarted {
        phase: Phase::Detect,
    });
    let detected = detect_phase(opts, ev);
    ev.emit(events::BuildEvent::PhaseFinished {
        phase: Phase::Detect,
        duration_ms: elapsed_ms(started),
        ok: detected.is_ok(),
    });
    let Detected {
        src,
        checkout,
        project,
        mut plan,
    } = detected?;
    let created = kiln_oci::spec::rfc3339(opts.creation_time.seconds(opts.source_date_epoch));
    let labels = labels::image_labels(&checkout, &src, &plan, &project, &opts.labels, &created)?;
    let detect_ms = elapsed_ms(started);

    let cache = BuildCache::open(&opts.cache_dir, ev)?;
    let project_id = project_id(opts, &project, &src);
    cache.register_project(&project_id)?;
    let client = kiln_registry::Client::new(opts.registry.clone());
    // Whether steps can be sandboxed decides whether the stack's distro may provide runtimes
    // (they must then be in the build root and the run image).
    let sandbox = isolation::probe(opts, &plan, ev)?;
    let distro = build_root::request(opts, &plan, &project)?.distro;
    let distro_runtimes = runtimes::from_distro(opts, &mut plan, distro, sandbox.is_some(), ev)?;
    // The base first: a missing or unreachable run image fails before any step runs.
    let (base, pull, stack) = ev.phase(Phase::Stack, || {
        stack::load_base(opts, &plan, &project, &cache.store, &client, ev)
    })?;
    export::check_platform(opts, &plan, &base)?;
    let cache_import = match &opts.cache_image {
        Some(reference) => Some(ev.phase(Phase::CacheImport, || {
            registry_cache::import(&client, &cache, &project_id, reference, ev)
        })?),
        None => None,
    };
    let (runtimes, mut runtime_reports) = ev.phase(Phase::Runtimes, || {
        runtimes::provide(opts, &plan, &project.mirrors, ev)
    })?;
    runtime_reports.splice(0..0, distro_runtimes);
    let sbom = match &opts.sbom_dir {
        Some(_) => Some(sbom::inventory(
            &image_subject(opts, &src),
            &created,
            &plan,
            stack.as_ref(),
            &runtime_reports,
            &src,
        )?),
        None => None,
    };
    let sandbox = ev.phase(Phase::BuildRoot, || {
        isolation::isolate(opts, &plan, &project, sandbox, ev)
    })?;
    // Steps' cache keys include the runtimes (a new Node must re-run `npm ci`) and the sandbox
    // (outputs made on the host carry host paths).
    let key_env = step_key_env(opts, &runtimes, sandbox.as_ref());
    let registry_env = runtimes::registry_env(opts, &project.mirrors);
    let scratch = cache.scratch_dir()?;
    let mut rules = source::exclude_rules(&src, &project.build.exclude_patterns())?;
    exclude_own_paths(&mut rules, &src, cache.root(), opts.output.as_deref())?;
    let source_entries = source::source_entries(&src, &rules, APP_DIR)?;

    let layers = prepare_layer_dirs(&cache, &project_id, &plan, scratch.path(), ev)?;
    write_planned_files(&plan, &layers)?;
    let app_dir = scratch.path().join("app");
    let built = build_layers(
        opts,
        BuildContext {
            plan: &plan,
            src: &src,
            rules: &rules,
            cache: &cache,
            project: &project_id,
            layers: &layers,
            key_env: &key_env,
            registry_env: &registry_env,
            runtimes: &runtimes,
            base: &base,
            scratch: scratch.path(),
            app_dir: &app_dir,
            sandbox: sandbox.as_ref(),
            sbom: sbom.as_ref(),
            created: &created,
            labels: &labels,
            user: project.image.user.as_deref(),
        },
        source_entries,
        ev,
    );
    // Cache layers go back whatever happened; only a build that succeeded may update what
    // later builds trust (step records, layers a step rewrote).
    let returned = return_cache_layers(&cache, &plan, &layers, &app_dir, built.is_ok());
    let (exported, ran, steps_ms, export_started) = built?;
    returned?;
    for (buildpack, step, record) in &ran.records {
        step_cache::save(&cache.steps_dir(&project_id), buildpack, step, record)?;
    }
    if let (Some(dir), Some(sbom)) = (&opts.sbom_dir, &sbom) {
        kiln_sbom::write_dir(dir, sbom)
            .ctx(|| format!("writing the SBOMs into {}", dir.display()))?;
        ev.note(format!(
            "sbom: {} components in {}",
            sbom.components().len(),
            dir.display()
        ));
    }
    let export_ms = elapsed_ms(export_started);
    let artifacts = match (&sbom, opts.publish.is_empty()) {
        (Some(sbom), false) => registry::sbom_artifacts(
            &cache.store,
            &exported.image,
            &kiln_sbom::documents(sbom),
            &sbom.created,
        )?,
        _ => Vec::new(),
    };
    let mut pushes = Vec::with_capacity(opts.publish.len());
    for target in &opts.publish {
        pushes.push(ev.phase(Phase::Push, || {
            registry::publish_with(
                &client,
                &cache.store,
                &exported.image,
                target,
                Some(&opts.run_image),
                &artifacts,
                ev,
            )
        })?);
    }
    let cache_image = match (&opts.cache_image, cache_import) {
        (Some(reference), Some(imported)) => Some(ev.phase(Phase::CacheExport, || {
            registry_cache::export(
                &client,
                &cache,
                &project_id,
                reference,
                &exported.image.manifest.layers,
                imported,
                ev,
            )
        })?),
        _ => None,
    };

    Ok(BuildReport {
        output: opts.output.clone(),
        format: opts.format,
        manifest_digest: exported.image.manifest_digest,
        config_digest: exported.image.config_digest,
        layers: exported.layers,
        steps: ran.reports,
        runtimes: runtime_reports,
        processes: plan.processes.clone(),
        pull,
        build_root: sandbox
            .as_ref()
            .and_then(|s| s.root.as_ref())
            .map(|r| r.report.clone()),
        stack,
        push: pushes.first().cloned(),
        pushes,
        cache_image,
        timings: Timings {
            detect_ms,
            steps_ms,
            export_ms,
            total_ms: elapsed_ms(started),
        },
    })
}

/// What detection and planning settle, for the rest of the build.
struct Detected {
    /// The app's source: the checkout, or the single top-level folder the app was found in.
    src: PathBuf,
    checkout: PathBuf,
    project: ProjectConfig,
    plan: Plan,
}

/// Detects and plans the build, noting each verdict and the plan's warnings.
fn detect_phase(opts: &BuildOptions, ev: Events<'_>) -> Result<Detected> {
    let src = source::resolve_source(&opts.source)?;
    let builtin;
    let set = match &opts.buildpacks {
        Some(set) => set,
        None => {
            builtin = BuildpackSet::builtin()?;
            &builtin
        }
    };
    let project = ProjectConfig::load(&src)?;
    let checkout = src.clone();
    let detection = kiln_buildpack::detect::detect_with(set, &src, &opts.kiln_env)?;
    if !detection.detected {
        return Err(nothing_detected(&opts.source, &detection));
    }
    for verdict in &detection.buildpacks {
        ev.note(format!("detected {}: {}", verdict.id, verdict.reason));
    }
    let plan = kiln_buildpack::plan::plan_with(set, &detection, &project, &src, &opts.kiln_env)?;
    for warning in &plan.warnings {
        ev.warn(warning.to_string());
    }
    // An image with no entrypoint is no build: refuse before anything is pulled or run.
    plan.default_process()?;
    // The app found in a single top-level folder is the source of the build.
    let src = match &plan.app_root {
        Some(dir) => {
            ev.note(format!("app root: {dir}/"));
            src.join(dir)
        }
        None => src,
    };
    Ok(Detected {
        src,
        checkout,
        project,
        plan,
    })
}

/// What [`build_layers`] works with, fixed for the whole build.
struct BuildContext<'a> {
    plan: &'a Plan,
    src: &'a Path,
    rules: &'a ignore::ExcludeRules,
    cache: &'a BuildCache,
    project: &'a ProjectId,
    layers: &'a PreparedLayers,
    key_env: &'a BTreeMap<String, String>,
    /// The configured package registries for steps ([`runtimes::registry_env`]); not in
    /// `key_env`: a mirror serves the bytes lockfiles pin.
    registry_env: &'a BTreeMap<String, String>,
    runtimes: &'a [runtimes::Provided],
    base: &'a kiln_oci::source::LoadedImage,
    scratch: &'a Path,
    /// Where the working copy goes when a step runs.
    app_dir: &'a Path,
    /// `None`: steps run on the host.
    sandbox: Option<&'a isolation::Isolated>,
    /// The image's SBOM, when it carries one.
    sbom: Option<&'a kiln_sbom::Inventory>,
    /// The image's creation time, RFC 3339.
    created: &'a str,
    labels: &'a BTreeMap<String, String>,
    /// `kiln.toml` `[image] user`.
    user: Option<&'a str>,
}

/// Runs the steps (or sees that none has to) and exports the image: everything between taking
/// the cache layers out and putting them back.
fn build_layers(
    opts: &BuildOptions,
    cx: BuildContext<'_>,
    source_entries: Vec<kiln_oci::layer::Entry>,
    ev: Events<'_>,
) -> Result<(export::Exported, StepsRun, u64, Instant)> {
    let steps_started = Instant::now();
    let BuildContext {
        plan,
        src,
        rules,
        cache,
        project,
        layers,
        ..
    } = cx;
    let layer_dirs = &layers.dirs;
    // Copying the source is the main cost of a warm rebuild: when no step will run, nothing can
    // change the app, so its layer is made straight from the source tree.
    let steps_dir = cache.steps_dir(project);
    let precheck = decide_steps(opts, cx.key_env, plan, src, rules, layers, &steps_dir)?;
    let (app, ran) = ev.phase(Phase::Steps, || {
        Ok(if precheck.iter().all(|(_, _, d)| d.skipped()) {
            if !precheck.is_empty() {
                ev.note("no build step needs to run: the app layer comes straight from the source");
            }
            let reports = precheck
                .into_iter()
                .map(|(buildpack, name, decision)| {
                    let report = StepReport {
                        buildpack,
                        name,
                        ran: false,
                        reason: decision.to_string(),
                        duration_ms: 0,
                    };
                    ev.emit(report.finished());
                    report
                })
                .collect();
            let ran = StepsRun {
                reports,
                records: Vec::new(),
            };
            (source_entries, ran)
        } else {
            let app_dir = make_dir(cx.app_dir)?;
            let copied = source::materialize(&source_entries, APP_DIR, &app_dir)?;
            ev.note(format!(
                "copied {copied} source entries into the working copy"
            ));
            move_captured(plan, layer_dirs, &app_dir, Direction::IntoApp)?;
            let ran = run_steps(
                opts,
                cx.key_env,
                cx.registry_env,
                cx.runtimes,
                plan,
                &app_dir,
                layers,
                cache,
                &steps_dir,
                cx.scratch,
                cx.sandbox.map(|sandbox| (sandbox, src)),
                ev,
            )?;
            move_captured(plan, layer_dirs, &app_dir, Direction::IntoLayers)?;
            (kiln_oci::layer::tree_entries(&app_dir, APP_DIR)?, ran)
        })
    })?;
    let steps_ms = elapsed_ms(steps_started);

    let export_started = Instant::now();
    let exported = ev.phase(Phase::Export, || {
        let sbom_dir = match cx.sbom {
            Some(sbom) => {
                let dir = cx.scratch.join("sbom");
                kiln_sbom::write_dir(&dir, sbom).ctx(|| format!("writing {}", dir.display()))?;
                Some(dir)
            }
            None => None,
        };
        export::export(
            &export::ExportInput {
                opts,
                base: cx.base,
                cache,
                plan,
                app: std::sync::Mutex::new(app),
                layer_dirs,
                runtimes: cx.runtimes,
                sbom_dir: sbom_dir.as_deref(),
                created: cx.created,
                labels: cx.labels,
                user: cx.user,
            },
            ev,
        )
    })?;
    Ok((exported, ran, steps_ms, export_started))
}

/// What the image's SBOM describes: its first name, else the app directory's name.
fn image_subject(opts: &BuildOptions, app_src: &Path) -> String {
    match opts.tags.first().or(opts.publish.first()) {
        Some(image) => image.to_string(),
        None => app_src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".to_owned()),
    }
}

/// Whose cache this build uses: see [`ProjectId`] for the order.
fn project_id(opts: &BuildOptions, project: &ProjectConfig, app_src: &Path) -> ProjectId {
    let named = opts
        .project
        .as_deref()
        .or(project.project.name.as_deref())
        .filter(|name| !name.trim().is_empty());
    if let Some(name) = named {
        return ProjectId::new(format!("name:{name}"));
    }
    match opts.tags.first().or(opts.publish.first()) {
        Some(image) => ProjectId::new(format!("image:{}/{}", image.registry, image.repository)),
        None => ProjectId::new(format!("path:{}", app_src.display())),
    }
}

/// Keeps Kiln's own cache directory and output (with its temporaries) out of the app when they
/// lie inside the source tree: packing them would grow the image on every build.
fn exclude_own_paths(
    rules: &mut ignore::ExcludeRules,
    src: &Path,
    cache_root: &Path,
    output: Option<&Path>,
) -> Result<()> {
    let inside = |path: &Path| -> Option<String> {
        let path = std::path::absolute(path).ok()?;
        // Compare canonical forms: `src` is canonical, and either path may go through a link.
        let canonical = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => fs::canonicalize(parent).ok()?.join(name),
            _ => path,
        };
        let rel = canonical.strip_prefix(src).ok()?;
        rel.to_str().filter(|r| !r.is_empty()).map(str::to_owned)
    };
    if let Some(rel) = inside(cache_root) {
        rules.exclude_literal(&rel, "", Path::new("<the cache directory>"))?;
    }
    if let Some(rel) = output.and_then(inside) {
        rules.exclude_literal(&rel, "", Path::new("<the output>"))?;
        // Temporaries beside it: `.NAME.*.tmp` (being written), `.NAME.*.old` (being replaced).
        let (dir, name) = match rel.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), rel.as_str()),
        };
        rules.exclude_literal(&format!("{dir}.{name}."), "*", Path::new("<the output>"))?;
    }
    Ok(())
}

fn nothing_detected(path: &Path, detection: &Detection) -> Error {
    let looked_for = detection
        .rejected
        .iter()
        .map(|v| format!("  {}: {}", v.id, v.reason))
        .collect::<Vec<_>>()
        .join("\n");
    Error::NothingDetected {
        path: path.to_path_buf(),
        looked_for: format!("looked for:\n{looked_for}"),
    }
}

/// Host directories of every declared layer, keyed by buildpack id then layer name.
type LayerDirs = BTreeMap<String, BTreeMap<String, PathBuf>>;

struct PreparedLayers {
    dirs: LayerDirs,
    /// `(buildpack, layer)` of cache layers restored from an earlier build.
    restored: BTreeSet<(String, String)>,
    /// The cache slot of every `cache = true` layer, by `(buildpack, layer)`.
    slots: BTreeMap<(String, String), CacheSlot>,
    /// Cache layers whose restored copy went back to the cache before a step rewrote them
    /// ([`BuildCache::set_aside`]): their working directory holds only this build's output.
    set_aside: std::cell::RefCell<BTreeSet<(String, String)>>,
}

impl PreparedLayers {
    fn restored(&self, buildpack: &str, layer: &str) -> bool {
        self.restored
            .contains(&(buildpack.to_owned(), layer.to_owned()))
    }

    /// Gives the step about to rewrite `layer` an empty directory (see [`BuildCache::set_aside`]).
    fn set_aside(
        &self,
        cache: &BuildCache,
        buildpack: &str,
        layer: &str,
        captured: &[(&str, PathBuf)],
    ) -> Result<()> {
        let key = (buildpack.to_owned(), layer.to_owned());
        if !self.restored.contains(&key) || self.set_aside.borrow().contains(&key) {
            // Nothing of an earlier build is in it.
            return Ok(());
        }
        if let Some(slot) = self.slots.get(&key) {
            cache.set_aside(slot, captured)?;
            self.set_aside.borrow_mut().insert(key);
        }
        Ok(())
    }
}

/// The buildpacks' `[[files]]`, into their (fresh, non-cache) layer directories.
fn write_planned_files(plan: &Plan, layers: &PreparedLayers) -> Result<()> {
    for bp in &plan.buildpacks {
        for file in &bp.files {
            let Some(dir) = layers.dirs.get(&bp.id).and_then(|l| l.get(&file.layer)) else {
                continue;
            };
            let path = dir.join(&file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, &file.content).ctx(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

fn prepare_layer_dirs(
    cache: &BuildCache,
    project: &ProjectId,
    plan: &Plan,
    scratch: &Path,
    ev: Events<'_>,
) -> Result<PreparedLayers> {
    let mut prepared = PreparedLayers {
        dirs: LayerDirs::new(),
        restored: BTreeSet::new(),
        slots: BTreeMap::new(),
        set_aside: Default::default(),
    };
    for bp in &plan.buildpacks {
        let mut layers = BTreeMap::new();
        for layer in &bp.layers {
            let dir = if layer.cache {
                let slot = cache.slot(project, &bp.id, &layer.name, layer.shared);
                let restored = cache.checkout(&slot)?;
                let key = (bp.id.clone(), layer.name.clone());
                let state = if restored {
                    prepared.restored.insert(key.clone());
                    if layer.shared {
                        "restored (shared)"
                    } else {
                        "restored"
                    }
                } else {
                    "empty: no cache yet"
                };
                ev.note(format!("cache layer {}: {state}", slot.name));
                let dir = slot.work.clone();
                prepared.slots.insert(key, slot);
                dir
            } else {
                scratch.join("layers").join(&bp.id).join(&layer.name)
            };
            layers.insert(layer.name.clone(), make_dir(&dir)?);
        }
        prepared.dirs.insert(bp.id.clone(), layers);
        // A launch layer's cached copy is only there to let the step that makes it be skipped.
        // When no planned step declares it as an output, whatever step writes it starts empty.
        for layer in bp.layers.iter().filter(|l| l.launch && l.cache) {
            let made_by_a_skippable_step = bp.steps.iter().any(|s| s.outputs.contains(&layer.name));
            if !made_by_a_skippable_step {
                prepared.set_aside(cache, &bp.id, &layer.name, &[])?;
            }
        }
    }
    Ok(prepared)
}

/// Puts every checked-out cache layer back. After a success, each working directory becomes
/// the kept copy. After a failure, layers a step had started rewriting are dropped (their kept
/// copy is still the last good one) and every other layer goes back as it is: the failed step
/// did not own it, and tool caches (cargo's target dir, npm's cache) stay valid after a failed
/// run of their tool.
fn return_cache_layers(
    cache: &BuildCache,
    plan: &Plan,
    layers: &PreparedLayers,
    app_dir: &Path,
    succeeded: bool,
) -> Result<()> {
    if !succeeded && app_dir.is_dir() {
        // Captured paths (node_modules) are still in the working copy.
        move_captured(plan, &layers.dirs, app_dir, Direction::IntoLayers)?;
    }
    let set_aside = layers.set_aside.borrow();
    let mut first_error = None;
    for (key, slot) in &layers.slots {
        let returned = if !succeeded && set_aside.contains(key) {
            cache.discard(slot)
        } else {
            cache.checkin(slot)
        };
        if let Err(e) = returned {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Where a layer keeps the app paths it captures (`capture = ["node_modules"]`), inside its
/// host directory: so a `cache = true` layer keeps them between builds like any other content.
pub(crate) const CAPTURED_DIR: &str = ".kiln-captured";

enum Direction {
    /// Before the steps: captured paths kept from an earlier build go back into the app, where
    /// tools expect them (`npm run build` needs `node_modules`).
    IntoApp,
    /// After the steps: captured paths leave the app for their layer.
    IntoLayers,
}

fn move_captured(
    plan: &Plan,
    layer_dirs: &LayerDirs,
    app_dir: &Path,
    direction: Direction,
) -> Result<()> {
    for bp in &plan.buildpacks {
        for layer in &bp.layers {
            let Some(dir) = layer_dirs.get(&bp.id).and_then(|d| d.get(&layer.name)) else {
                continue;
            };
            for path in &layer.capture {
                let in_layer = dir.join(CAPTURED_DIR).join(path);
                let in_app = app_dir.join(path);
                let (from, to) = match direction {
                    Direction::IntoApp => (in_layer, in_app),
                    Direction::IntoLayers => (in_app, in_layer),
                };
                if fs::symlink_metadata(&from).is_err() {
                    continue;
                }
                if fs::symlink_metadata(&to).is_ok() {
                    let removed = if to.is_dir() {
                        fs::remove_dir_all(&to)
                    } else {
                        fs::remove_file(&to)
                    };
                    removed.ctx(|| format!("replacing {}", to.display()))?;
                }
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
                }
                fs::rename(&from, &to)
                    .ctx(|| format!("moving {} to {}", from.display(), to.display()))?;
            }
        }
    }
    Ok(())
}

/// Every step's decision as things stand in the source tree, before any copy.
fn decide_steps(
    opts: &BuildOptions,
    key_env: &BTreeMap<String, String>,
    plan: &Plan,
    src: &Path,
    rules: &ignore::ExcludeRules,
    layers: &PreparedLayers,
    steps_dir: &Path,
) -> Result<Vec<(String, String, step_cache::StepDecision)>> {
    let mut out = Vec::new();
    for bp in &plan.buildpacks {
        let restored = |layer: &str| layers.restored(&bp.id, layer);
        for step in &bp.steps {
            let record = step_cache::current(bp, step, key_env, src, Some(rules))?;
            let decision =
                step_cache::decide(steps_dir, bp, step, &record, &restored, opts.no_cache);
            out.push((bp.id.clone(), step.name.clone(), decision));
        }
    }
    Ok(out)
}

struct StepsRun {
    reports: Vec<StepReport>,
    /// Records of skippable steps that ran, saved once the build succeeds.
    records: Vec<(String, String, step_cache::StepRecord)>,
}

/// What keys steps besides their own definition: the caller's step environment, the provided
/// runtimes' versions, and whether steps run sandboxed (host-mode keys are as before sandboxes).
fn step_key_env(
    opts: &BuildOptions,
    runtimes: &[runtimes::Provided],
    sandboxed: Option<&isolation::Isolated>,
) -> BTreeMap<String, String> {
    let mut env = opts.env.clone();
    if let Some(isolated) = sandboxed {
        env.insert("KILN_ISOLATION".into(), isolated.key());
    }
    for provided in runtimes {
        env.insert(
            format!("KILN_RUNTIME_{}", provided.buildpack),
            format!(
                "{} {}",
                provided.runtime.runtime.id(),
                provided.runtime.version
            ),
        );
    }
    env
}

#[allow(clippy::too_many_arguments)]
fn run_steps(
    opts: &BuildOptions,
    key_env: &BTreeMap<String, String>,
    registry_env: &BTreeMap<String, String>,
    runtimes: &[runtimes::Provided],
    plan: &Plan,
    app_dir: &Path,
    layers: &PreparedLayers,
    cache: &BuildCache,
    steps_dir: &Path,
    scratch: &Path,
    // The build's sandbox and the source tree it hides; `None`: steps run on the host.
    sandbox: Option<(&isolation::Isolated, &Path)>,
    ev: Events<'_>,
) -> Result<StepsRun> {
    let home = make_dir(&scratch.join("home"))?;
    let tmp = make_dir(&scratch.join("tmp"))?;
    let step_sandbox = match sandbox {
        Some((sandbox, src)) => Some(isolation::StepSandbox::new(
            sandbox,
            &isolation::BuildDirs {
                app: app_dir,
                home: &home,
                tmp: &tmp,
                layers: &layers.dirs,
                runtimes,
                private: &[src, cache.root()]
                    .into_iter()
                    .chain(opts.host_env.get("HOME").map(Path::new))
                    .collect::<Vec<_>>(),
                env: &opts.env,
            },
        )?),
        None => None,
    };
    let paths = isolation::StepPaths::of(step_sandbox.as_ref());
    let mut env = opts.env.clone();
    if let Some(step_sandbox) = &step_sandbox {
        step_sandbox.step_env(&mut env);
    }
    for (key, value) in registry_env {
        env.entry(key.clone()).or_insert_with(|| value.clone()); // the caller's `--env` wins
    }
    env.insert("HOME".into(), paths.home(&home).display().to_string());
    env.insert("TMPDIR".into(), paths.tmp(&tmp).display().to_string());
    env.insert(
        "SOURCE_DATE_EPOCH".into(),
        opts.source_date_epoch.to_string(),
    );
    env.insert(
        "KILN_APP_DIR".into(),
        paths.app(app_dir).display().to_string(),
    );
    let mut run = StepsRun {
        reports: Vec::new(),
        records: Vec::new(),
    };
    let empty = BTreeMap::new();
    for bp in &plan.buildpacks {
        // A buildpack's runtime serves its own steps and every later buildpack's.
        for provided in runtimes.iter().filter(|p| p.buildpack == bp.id) {
            let bin = paths.runtime_bin(provided);
            let path = env.get("PATH").cloned().unwrap_or_default();
            env.insert("PATH".into(), format!("{}:{path}", bin.display()));
            let host_root = provided.runtime.root.display().to_string();
            for (key, value) in provided.runtime.build_env() {
                // Paths into the runtime are its image path inside the sandbox.
                let value = match &step_sandbox {
                    Some(_) => value.replace(&host_root, &provided.image_dir),
                    None => value,
                };
                env.entry(key).or_insert(value); // the caller's `--env` wins
            }
            // In the sandbox the runtime is at its image path: its absolute RPATH (a host
            // CPython's libpython) is not, so it needs what the image gives it.
            if let Some(lib) = provided.image_lib().filter(|_| step_sandbox.is_some()) {
                let libs = env.get("LD_LIBRARY_PATH").map(|l| format!("{lib}:{l}"));
                env.insert("LD_LIBRARY_PATH".into(), libs.unwrap_or(lib));
            }
        }
        let dirs = layers.dirs.get(&bp.id).unwrap_or(&empty);
        let ctx = steps::StepContext {
            buildpack: &bp.id,
            app_dir,
            layer_dirs: dirs,
            base_env: &env,
            sandbox: step_sandbox.as_ref(),
        };
        let restored = |layer: &str| layers.restored(&bp.id, layer);
        for step in &bp.steps {
            let started = Instant::now();
            let record = step_cache::current(bp, step, key_env, app_dir, None)?;
            let decision =
                step_cache::decide(steps_dir, bp, step, &record, &restored, opts.no_cache);
            ev.check()?;
            if !decision.skipped() {
                if !step.inputs.is_empty() {
                    ev.note(format!("[{}/{}] running: {decision}", bp.id, step.name));
                }
                // The step rebuilds its outputs from empty directories (nothing of an earlier
                // build may ship), and if it fails they stay as the last good build left them.
                for layer in &step.outputs {
                    let captured: Vec<(&str, PathBuf)> = bp
                        .layers
                        .iter()
                        .filter(|l| &l.name == layer)
                        .flat_map(|l| &l.capture)
                        .map(|p| (p.as_str(), app_dir.join(p)))
                        .collect();
                    layers.set_aside(cache, &bp.id, layer, &captured)?;
                }
                steps::run_step(step, &ctx, ev)?;
                if !step.inputs.is_empty() {
                    run.records.push((bp.id.clone(), step.name.clone(), record));
                }
            }
            let report = StepReport {
                buildpack: bp.id.clone(),
                name: step.name.clone(),
                ran: !decision.skipped(),
                reason: decision.to_string(),
                duration_ms: elapsed_ms(started),
            };
            ev.emit(report.finished());
            run.reports.push(report);
        }
        // `build = true` layers are visible to later buildpacks: their bin/ joins PATH.
        for layer in bp.layers.iter().filter(|l| l.build) {
            let dir = dirs.get(&layer.name).filter(|d| d.join("bin").is_dir());
            if let Some(dir) = dir {
                let bin = paths.layer(&bp.id, &layer.name, dir).join("bin");
                let path = env.get("PATH").cloned().unwrap_or_default();
                env.insert("PATH".into(), format!("{}:{path}", bin.display()));
            }
        }
    }
    Ok(run)
}

/// Creates `dir` with mode 0755 (temp dirs default to 0700, which would end up in the image).
fn make_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .ctx(|| format!("setting permissions of {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_take_the_environment_they_are_given_and_nothing_else() {
        std::env::set_var("KILN_NODE_VERSION", "from-the-process");
        let host = BTreeMap::from([
            ("PATH".to_owned(), "/given/bin".to_owned()),
            ("HOME".to_owned(), "/given/home".to_owned()),
            ("KILN_PYTHON_VERSION".to_owned(), "3.12".to_owned()),
            ("KILN_REGISTRY_USER".to_owned(), "ci".to_owned()),
            ("JAVA_HOME".to_owned(), "/given/jdk".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "secret".to_owned()),
        ]);
        let opts = BuildOptions::from_env("src", "out.tar", host.clone());
        assert_eq!(
            opts.kiln_env,
            BTreeMap::from([
                ("KILN_PYTHON_VERSION".to_owned(), "3.12".to_owned()),
                ("KILN_REGISTRY_USER".to_owned(), "ci".to_owned()),
            ])
        );
        assert_eq!(opts.env["PATH"], "/given/bin");
        assert_eq!(opts.env["JAVA_HOME"], "/given/jdk");
        assert!(!opts.env.contains_key("AWS_SECRET_ACCESS_KEY"));
        assert_eq!(opts.cache_dir, Path::new("/given/home/.cache/kiln"));
        assert_eq!(opts.registry.env, host);
        assert_eq!(opts.host_env, host);

        let empty = BuildOptions::new("src", "out.tar");
        assert!(empty.kiln_env.is_empty(), "{:?}", empty.kiln_env);
        assert!(empty.host_env.is_empty());
        assert_eq!(
            empty.env["PATH"],
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        );
        std::env::remove_var("KILN_NODE_VERSION");
    }
}
