//! `kiln-build`: the engine. It takes a source tree through detection and planning
//! (`kiln-buildpack`), runs the plan's steps on the host in a private working copy, packs the
//! resulting layers and writes the image (`kiln-oci`). Library first: the `kiln` CLI is a thin
//! shell over [`build`], [`detect`] and [`inspect::inspect`].
//!
//! Flow of [`build`]: source → [`source::copy_tree`] (working copy) → [`steps::run_step`] for
//! each planned step → [`export`] (layers, cached by content key; config; manifest; output file).

pub mod cache;
pub mod cache_admin;
pub mod error;
mod export;
mod fsutil;
pub mod ignore;
pub mod inspect;
pub mod layer_cache;
pub mod metadata;
pub mod rebase;
pub mod registry;
pub mod registry_cache;
pub mod runtimes;
pub mod source;
pub mod stack;
pub mod step_cache;
pub mod steps;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
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

use cache::BuildCache;
use error::IoContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// An OCI layout in a tar that also carries Docker's `manifest.json`.
    OciArchive,
    /// An OCI image layout directory.
    OciDir,
}

/// Everything a build needs to know. [`BuildOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub source: PathBuf,
    /// Where to write the image; `None` when it is only published.
    pub output: Option<PathBuf>,
    pub format: OutputFormat,
    pub tag: Option<Reference>,
    pub run_image: ImageSource,
    pub cache_dir: PathBuf,
    /// `None`: the built-in buildpacks.
    pub buildpacks: Option<BuildpackSet>,
    /// The environment steps start from. Nothing else of the caller's environment reaches them;
    /// see [`default_step_env`].
    pub env: BTreeMap<String, String>,
    /// Layer mtimes and the image `created` time, in seconds since the epoch.
    pub source_date_epoch: u64,
    pub compression: Compression,
    /// Push the image here after building it.
    pub publish: Option<Reference>,
    /// Registry image the build cache is read from before and written to after the build.
    pub cache_image: Option<Reference>,
    /// How registries are reached (TLS exceptions, platform, concurrency, retries).
    pub registry: kiln_registry::ClientOptions,
    /// Rebuild every layer and run every step, ignoring (but refreshing) the cache.
    pub no_cache: bool,
    /// `KILN_*` overrides of detection and planning (`KILN_BUILDPACKS`, `KILN_NODE_VERSION`, …);
    /// [`BuildOptions::new`] takes them from the process environment.
    pub kiln_env: BTreeMap<String, String>,
    /// Run on Kiln's own stack (assembled from Debian packages) instead of `run_image`.
    pub stack: Option<stack::StackSelection>,
}

impl BuildOptions {
    pub fn new(source: impl Into<PathBuf>, output: impl Into<PathBuf>) -> BuildOptions {
        BuildOptions {
            source: source.into(),
            output: Some(output.into()),
            format: OutputFormat::OciArchive,
            tag: None,
            run_image: ImageSource::Scratch,
            cache_dir: default_cache_dir(),
            buildpacks: None,
            env: default_step_env(),
            source_date_epoch: kiln_oci::layer::DEFAULT_MTIME,
            compression: Compression::DEFAULT,
            publish: None,
            cache_image: None,
            registry: kiln_registry::ClientOptions::default(),
            no_cache: false,
            kiln_env: kiln_buildpack::settings::kiln_env(),
            stack: None,
        }
    }
}

/// `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`, else a directory under the system temp dir.
pub fn default_cache_dir() -> PathBuf {
    let from_env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
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

/// The default step environment: the caller's `PATH` (so host toolchains are found), the
/// toolchain-locating [`TOOLCHAIN_VARS`], and `LANG=C.UTF-8`. Steps get a private `HOME`, so a
/// rustup install's default `RUSTUP_HOME` (`~/.rustup`) is made explicit here.
pub fn default_step_env() -> BTreeMap<String, String> {
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut env = BTreeMap::from([
        ("PATH".to_owned(), path),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ]);
    for key in TOOLCHAIN_VARS {
        if let Ok(value) = std::env::var(key) {
            env.insert((*key).to_owned(), value);
        }
    }
    if !env.contains_key("RUSTUP_HOME") {
        let rustup = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".rustup"));
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
    /// The stack the image runs on, when Kiln assembled the run image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<stack::StackReport>,
    /// The push of `--publish`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<kiln_registry::PushReport>,
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

/// Detects which buildpacks apply to `source`, with the caller's `KILN_*` overrides.
pub fn detect(source: &Path, buildpacks: Option<&BuildpackSet>) -> Result<Detection> {
    let src = source::resolve_source(source)?;
    let set = buildpack_set(buildpacks)?;
    let env = kiln_buildpack::settings::kiln_env();
    Ok(kiln_buildpack::detect::detect_with(&set, &src, &env)?)
}

/// Detects and plans `source` (what `kiln plan` prints), with the caller's `KILN_*` overrides.
/// Nothing detected is [`Error::NothingDetected`].
pub fn plan(source: &Path, buildpacks: Option<&BuildpackSet>) -> Result<Plan> {
    let src = source::resolve_source(source)?;
    let set = buildpack_set(buildpacks)?;
    let env = kiln_buildpack::settings::kiln_env();
    let detection = kiln_buildpack::detect::detect_with(&set, &src, &env)?;
    if !detection.detected {
        return Err(nothing_detected(source, &detection));
    }
    let project = ProjectConfig::load(&src)?;
    Ok(kiln_buildpack::plan::plan_with(
        &set, &detection, &project, &src, &env,
    )?)
}

/// The given buildpacks, or the built-in ones.
fn buildpack_set(buildpacks: Option<&BuildpackSet>) -> Result<Cow<'_, BuildpackSet>> {
    Ok(match buildpacks {
        Some(set) => Cow::Borrowed(set),
        None => Cow::Owned(BuildpackSet::builtin()?),
    })
}

/// Runs a whole build, logging progress to `log`.
pub fn build(opts: &BuildOptions, log: &mut dyn Write) -> Result<BuildReport> {
    let started = Instant::now();
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
    let detection = kiln_buildpack::detect::detect_with(set, &src, &opts.kiln_env)?;
    if !detection.detected {
        return Err(nothing_detected(&opts.source, &detection));
    }
    for verdict in &detection.buildpacks {
        let _ = writeln!(log, "detected {}: {}", verdict.id, verdict.reason);
    }
    let plan = kiln_buildpack::plan::plan_with(set, &detection, &project, &src, &opts.kiln_env)?;
    // The app found in a single top-level folder is the source of the build.
    let src = match &plan.app_root {
        Some(dir) => {
            let _ = writeln!(log, "app root: {dir}/");
            src.join(dir)
        }
        None => src,
    };
    let detect_ms = elapsed_ms(started);

    let cache = BuildCache::open(&opts.cache_dir, log)?;
    let client = kiln_registry::Client::new(opts.registry.clone());
    // The base first: a missing or unreachable run image fails before any step runs.
    let (base, pull, stack) = stack::load_base(opts, &plan, &project, &cache.store, &client, log)?;
    let cache_import = match &opts.cache_image {
        Some(reference) => Some(registry_cache::import(&client, &cache, reference, log)?),
        None => None,
    };
    let (runtimes, runtime_reports) = runtimes::provide(opts, &plan, &project.mirrors, log)?;
    // Steps' cache keys include the runtimes: a new Node must re-run `npm ci`.
    let key_env = step_key_env(opts, &runtimes);
    let scratch = cache.scratch_dir()?;
    let rules = source::exclude_rules(&src, &project.build.exclude_patterns())?;
    let source_entries = source::source_entries(&src, &rules, APP_DIR)?;

    let steps_started = Instant::now();
    let layers = prepare_layer_dirs(&cache, &plan, scratch.path(), log)?;
    let layer_dirs = &layers.dirs;
    // Copying the source is the main cost of a warm rebuild: when no step will run, nothing can
    // change the app, so its layer is made straight from the source tree.
    let precheck = decide_steps(opts, &key_env, &plan, &src, &rules, &layers, &cache)?;
    let (app, ran) = if precheck.iter().all(|(_, _, d)| d.skipped()) {
        if !precheck.is_empty() {
            let _ = writeln!(
                log,
                "no build step needs to run: the app layer comes straight from the source"
            );
        }
        let reports = precheck
            .into_iter()
            .map(|(buildpack, name, decision)| {
                let _ = writeln!(log, "[{buildpack}/{name}] skipped: {decision}");
                StepReport {
                    buildpack,
                    name,
                    ran: false,
                    reason: decision.to_string(),
                    duration_ms: 0,
                }
            })
            .collect();
        let ran = StepsRun {
            reports,
            records: Vec::new(),
        };
        (source_entries, ran)
    } else {
        let app_dir = make_dir(&scratch.path().join("app"))?;
        let copied = source::materialize(&source_entries, APP_DIR, &app_dir)?;
        let _ = writeln!(log, "copied {copied} source entries into the working copy");
        move_captured(&plan, layer_dirs, &app_dir, Direction::IntoApp)?;
        let ran = run_steps(
            opts,
            &key_env,
            &runtimes,
            &plan,
            &app_dir,
            &layers,
            &cache,
            scratch.path(),
            log,
        )?;
        move_captured(&plan, layer_dirs, &app_dir, Direction::IntoLayers)?;
        (kiln_oci::layer::tree_entries(&app_dir, APP_DIR)?, ran)
    };
    let steps_ms = elapsed_ms(steps_started);

    let export_started = Instant::now();
    let exported = export::export(
        &export::ExportInput {
            opts,
            base: &base,
            cache: &cache,
            plan: &plan,
            app,
            layer_dirs,
            runtimes: &runtimes,
        },
        log,
    )?;
    // Only a build that succeeded may update what later builds trust.
    save_cache_layers(&cache, &plan, layer_dirs)?;
    for (buildpack, step, record) in &ran.records {
        step_cache::save(cache.root(), buildpack, step, record)?;
    }
    let export_ms = elapsed_ms(export_started);
    let push = match &opts.publish {
        Some(target) => Some(registry::publish(
            &client,
            &cache.store,
            &exported.image,
            target,
            Some(&opts.run_image),
            log,
        )?),
        None => None,
    };
    let cache_image = match (&opts.cache_image, cache_import) {
        (Some(reference), Some(imported)) => Some(registry_cache::export(
            &client,
            &cache,
            reference,
            &exported.image.manifest.layers,
            imported,
            log,
        )?),
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
        stack,
        push,
        cache_image,
        timings: Timings {
            detect_ms,
            steps_ms,
            export_ms,
            total_ms: elapsed_ms(started),
        },
    })
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
}

fn prepare_layer_dirs(
    cache: &BuildCache,
    plan: &Plan,
    scratch: &Path,
    log: &mut dyn Write,
) -> Result<PreparedLayers> {
    let mut prepared = PreparedLayers {
        dirs: LayerDirs::new(),
        restored: BTreeSet::new(),
    };
    for bp in &plan.buildpacks {
        let mut layers = BTreeMap::new();
        for layer in &bp.layers {
            let dir = if layer.cache {
                let (dir, restored) = cache.checkout_layer_dir(&bp.id, &layer.name)?;
                let state = if restored {
                    prepared
                        .restored
                        .insert((bp.id.clone(), layer.name.clone()));
                    "restored"
                } else {
                    "empty: no cache yet"
                };
                let _ = writeln!(log, "cache layer {}/{}: {state}", bp.id, layer.name);
                dir
            } else {
                scratch.join("layers").join(&bp.id).join(&layer.name)
            };
            layers.insert(layer.name.clone(), make_dir(&dir)?);
        }
        prepared.dirs.insert(bp.id.clone(), layers);
    }
    Ok(prepared)
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
    cache: &BuildCache,
) -> Result<Vec<(String, String, step_cache::StepDecision)>> {
    let mut out = Vec::new();
    for bp in &plan.buildpacks {
        let restored = |layer: &str| layers.restored.contains(&(bp.id.clone(), layer.to_owned()));
        for step in &bp.steps {
            let record = step_cache::current(bp, step, key_env, src, Some(rules))?;
            let decision =
                step_cache::decide(cache.root(), bp, step, &record, &restored, opts.no_cache);
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

/// What keys steps besides their own definition: the caller's step environment and the
/// provided runtimes' versions.
fn step_key_env(opts: &BuildOptions, runtimes: &[runtimes::Provided]) -> BTreeMap<String, String> {
    let mut env = opts.env.clone();
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
    runtimes: &[runtimes::Provided],
    plan: &Plan,
    app_dir: &Path,
    layers: &PreparedLayers,
    cache: &BuildCache,
    scratch: &Path,
    log: &mut dyn Write,
) -> Result<StepsRun> {
    let mut env = opts.env.clone();
    env.insert(
        "HOME".into(),
        make_dir(&scratch.join("home"))?.display().to_string(),
    );
    env.insert(
        "TMPDIR".into(),
        make_dir(&scratch.join("tmp"))?.display().to_string(),
    );
    env.insert(
        "SOURCE_DATE_EPOCH".into(),
        opts.source_date_epoch.to_string(),
    );
    env.insert("KILN_APP_DIR".into(), app_dir.display().to_string());
    let mut run = StepsRun {
        reports: Vec::new(),
        records: Vec::new(),
    };
    let empty = BTreeMap::new();
    for bp in &plan.buildpacks {
        // A buildpack's runtime serves its own steps and every later buildpack's.
        for provided in runtimes.iter().filter(|p| p.buildpack == bp.id) {
            let bin = provided.runtime.root.join(&provided.runtime.bin);
            let path = env.get("PATH").cloned().unwrap_or_default();
            env.insert("PATH".into(), format!("{}:{path}", bin.display()));
        }
        let dirs = layers.dirs.get(&bp.id).unwrap_or(&empty);
        let ctx = steps::StepContext {
            buildpack: &bp.id,
            app_dir,
            layer_dirs: dirs,
            base_env: &env,
        };
        let restored = |layer: &str| layers.restored.contains(&(bp.id.clone(), layer.to_owned()));
        for step in &bp.steps {
            let started = Instant::now();
            let record = step_cache::current(bp, step, key_env, app_dir, None)?;
            let decision =
                step_cache::decide(cache.root(), bp, step, &record, &restored, opts.no_cache);
            if decision.skipped() {
                let _ = writeln!(log, "[{}/{}] skipped: {decision}", bp.id, step.name);
            } else {
                if !step.inputs.is_empty() {
                    let _ = writeln!(log, "[{}/{}] running: {decision}", bp.id, step.name);
                }
                // If this step fails, the cache it writes must stay as the last good build left
                // it: keep a copy of each restored output until the build succeeds.
                for layer in step.outputs.iter().filter(|l| restored(l)) {
                    let Some(dir) = dirs.get(layer) else { continue };
                    let captured: Vec<(&str, PathBuf)> = bp
                        .layers
                        .iter()
                        .filter(|l| &l.name == layer)
                        .flat_map(|l| &l.capture)
                        .map(|p| (p.as_str(), app_dir.join(p)))
                        .collect();
                    cache.keep_copy_of_layer_dir(&bp.id, layer, dir, &captured)?;
                }
                steps::run_step(step, &ctx, log)?;
                if !step.inputs.is_empty() {
                    run.records.push((bp.id.clone(), step.name.clone(), record));
                }
            }
            run.reports.push(StepReport {
                buildpack: bp.id.clone(),
                name: step.name.clone(),
                ran: !decision.skipped(),
                reason: decision.to_string(),
                duration_ms: elapsed_ms(started),
            });
        }
        // `build = true` layers are visible to later buildpacks: their bin/ joins PATH.
        for layer in bp.layers.iter().filter(|l| l.build) {
            let bin = dirs.get(&layer.name).map(|d| d.join("bin"));
            if let Some(bin) = bin.filter(|b| b.is_dir()) {
                let path = env.get("PATH").cloned().unwrap_or_default();
                env.insert("PATH".into(), format!("{}:{path}", bin.display()));
            }
        }
    }
    Ok(run)
}

fn save_cache_layers(cache: &BuildCache, plan: &Plan, layer_dirs: &LayerDirs) -> Result<()> {
    for bp in &plan.buildpacks {
        for layer in bp.layers.iter().filter(|l| l.cache) {
            if let Some(dir) = layer_dirs.get(&bp.id).and_then(|d| d.get(&layer.name)) {
                cache.checkin_layer_dir(&bp.id, &layer.name, dir)?;
            }
        }
    }
    Ok(())
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
