//! `kiln`: the command line. A thin shell over `kiln-build`: parse arguments, call the library,
//! print human text (stderr for logs) or one JSON object (stdout, `--json`).
//!
//! Exit codes: 0 success, 1 build or I/O failure, 2 usage error, 3 nothing detected, 130
//! cancelled (Ctrl-C, SIGTERM).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use kiln_build::build_root::BuildRootMode;
use kiln_build::{BuildOptions, Error, Isolation, OutputFormat};
use kiln_buildpack::BuildpackSet;
use kiln_oci::layer::Compression;
use kiln_oci::reference::Reference;
use kiln_oci::source::ImageSource;
use kiln_oci::spec::Platform;

mod progress;

use progress::{ProgressMode, Renderer, Verbosity};

const EXIT_FAILED: u8 = 1;
const EXIT_NOTHING_DETECTED: u8 = 3;
/// A build stopped by Ctrl-C or SIGTERM, as shells report a process SIGINT ended.
const EXIT_CANCELLED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI images from source, without Docker"
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 build failed, 2 usage error, 3 nothing detected, 130 cancelled"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect, run build steps, and write an image.
    Build(Box<BuildArgs>),
    /// Show which buildpacks apply to a source tree, and why.
    Detect(DetectArgs),
    /// Show the build plan: versions with their sources, package managers, steps, layers,
    /// processes (schema: docs/plan-schema.md).
    Plan(DetectArgs),
    /// Show an image's layers (and what made each), processes, entrypoint, env and base.
    Inspect(InspectArgs),
    /// Put a Kiln-built image on a new run image, or on the newest packages of its own Kiln
    /// stack, without rebuilding (app layers kept verbatim).
    Rebase(Box<RebaseArgs>),
    /// List or prune the build cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Pin the Debian packages of the app's run image in SRC/kiln.lock.
    Lock(LockArgs),
    /// Print Kiln's version and the versions of its built-in buildpacks.
    Version(VersionArgs),
    /// Print a shell completion script (e.g. `kiln completions bash > /etc/bash_completion.d/kiln`).
    Completions(CompletionsArgs),
}

#[derive(clap::Args)]
struct VersionArgs {
    /// Print one JSON object (`kiln`, `buildpacks`) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
struct LockArgs {
    /// Source directory.
    #[arg(default_value = ".")]
    src: PathBuf,
    /// Resolve again even when kiln.lock exists and still fits.
    #[arg(long)]
    update: bool,
    #[command(flatten)]
    stack: StackArgs,
    /// Build cache. Default: $XDG_CACHE_HOME/kiln.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Use buildpacks from this directory (with order.toml) instead of the built-in ones.
    #[arg(long)]
    buildpacks: Option<PathBuf>,
    /// Print one JSON object on stdout (docs/json-output.md).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    progress: ProgressArgs,
}

/// Kiln's own run images.
#[derive(clap::Args)]
struct StackArgs {
    /// The stack Kiln assembles the run image from when no --run-image is given (default:
    /// kiln.toml [stack] distro, else debian-13).
    #[arg(long, value_name = "debian-13|debian-12", value_parser = kiln_debian::stack::Distro::parse)]
    stack: Option<kiln_debian::stack::Distro>,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List cached layers, cache layers and blobs, most recently used first.
    Ls(CacheLsArgs),
    /// Remove least recently used items: those idle longer than --older-than, then more until
    /// the cache fits in --max-size.
    Prune(CachePruneArgs),
}

#[derive(clap::Args)]
struct CacheLsArgs {
    /// Default: $XDG_CACHE_HOME/kiln.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print one JSON object on stdout (docs/json-output.md).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("limit")
        .required(true)
        .multiple(true)
        .args(["max_size", "older_than"])
))]
struct CachePruneArgs {
    /// Build cache. Default: $XDG_CACHE_HOME/kiln.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// e.g. 2G, 500M.
    #[arg(long, value_parser = kiln_build::cache_admin::parse_size)]
    max_size: Option<u64>,
    /// e.g. 7d, 12h, 30m.
    #[arg(long, value_parser = kiln_build::cache_admin::parse_duration)]
    older_than: Option<std::time::Duration>,
    /// Print one JSON object on stdout (docs/json-output.md).
    #[arg(long)]
    json: bool,
}

/// How registries are reached; shared by `build` and `rebase`.
#[derive(clap::Args)]
struct RegistryArgs {
    /// Reach this registry (HOST[:PORT]) over plain HTTP. Repeatable. localhost and 127.0.0.1
    /// always are; every other registry needs TLS.
    #[arg(long, value_name = "HOST[:PORT]")]
    insecure_registry: Vec<kiln_registry::RegistryHost>,
    /// Platform to pull from multi-platform run images (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
    platform: Option<Platform>,
}

impl RegistryArgs {
    fn options(self) -> kiln_registry::ClientOptions {
        let mut opts = kiln_registry::ClientOptions {
            insecure_registries: self.insecure_registry,
            env: host_env(),
            ..Default::default()
        };
        if let Some(platform) = self.platform {
            opts.platform = platform;
        }
        opts
    }
}

/// How a running build is shown (on standard error).
#[derive(clap::Args)]
struct ProgressArgs {
    /// Live spinners on a terminal (`tty`), prefixed lines (`plain`), or one JSON object per
    /// event (`json`); `auto`: `tty` when standard error is a terminal. `NO_COLOR` turns colour
    /// off.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Only warnings and errors; no summary table.
    #[arg(long, short, conflicts_with = "verbose")]
    quiet: bool,
    /// Every line build steps print, also on a terminal (where only each step's latest shows).
    #[arg(long, short)]
    verbose: bool,
}

impl ProgressArgs {
    fn renderer(&self) -> Renderer {
        let verbosity = match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        };
        Renderer::new(self.progress, verbosity)
    }
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Source directory.
    #[arg(default_value = ".")]
    src: PathBuf,
    /// Where to write the image (needed unless --publish is given).
    #[arg(short, long, required_unless_present = "publish")]
    output: Option<PathBuf>,
    /// Push the image to this registry reference and print its manifest digest. Repeatable:
    /// the same image goes to each, in order.
    #[arg(long, value_name = "REF", value_parser = parse_reference)]
    publish: Vec<Reference>,
    /// Read the build cache from, and write it back to, this registry image.
    #[arg(long, value_name = "REF", value_parser = parse_reference)]
    cache_image: Option<Reference>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Output format: an oci-archive file or an OCI layout directory.
    #[arg(long, value_enum, default_value_t = Format::OciArchive)]
    format: Format,
    /// Image name, e.g. `myapp:1.2` (recorded in the archive's annotations and RepoTags).
    /// Repeatable: one index.json entry per name, all in RepoTags.
    #[arg(short, long, value_parser = parse_reference)]
    tag: Vec<Reference>,
    /// Image config label KEY=VALUE, over kiln.toml [labels] and the ones derived from a git
    /// checkout (org.opencontainers.image.source, .revision, .created, .version). Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = kiln_build::labels::parse_label)]
    label: Vec<(String, String)>,
    /// The image's `created` time (config, Kiln's history entries, annotation and label):
    /// `reproducible` (default: SOURCE_DATE_EPOCH / --source-date-epoch, else
    /// 1980-01-01T00:00:01Z), `now`, or seconds since the epoch. Layer mtimes stay fixed.
    #[arg(long, value_name = "now|SECONDS", value_parser = kiln_build::CreationTime::parse)]
    creation_time: Option<kiln_build::CreationTime>,
    /// Base image: scratch, oci-archive:PATH[:REF], oci:DIR[:REF], docker-archive:PATH, a plain
    /// path (an existing file is an oci- or docker-archive, sniffed; a directory an OCI layout),
    /// or a registry reference (docker://REF or a bare REF such as ubuntu:24.04). Default:
    /// Kiln's stack (see --stack).
    #[arg(long, env = "KILN_RUN_IMAGE", value_parser = parse_image_source, conflicts_with = "stack")]
    run_image: Option<ImageSource>,
    #[command(flatten)]
    stack: StackArgs,
    /// Build cache (blobs, layer records, cache layers). Default: $XDG_CACHE_HOME/kiln.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Names this app's own cache layers and step records in a cache dir shared with other apps.
    /// Default: kiln.toml [project] name, else the --tag/--publish repository, else the source path.
    #[arg(long, env = "KILN_PROJECT", value_name = "NAME")]
    project: Option<String>,
    /// Use buildpacks from this directory (with order.toml) instead of the built-in ones.
    #[arg(long)]
    buildpacks: Option<PathBuf>,
    /// Pass KEY=VALUE (or KEY, taking the caller's value) to build steps. Repeatable.
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Read build-step variables from FILE: one KEY=VALUE (or KEY) a line, `#` comments, as
    /// Docker's --env-file; like --env, never in the image. Repeatable; --env wins.
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Layer compression: gzip[:LEVEL] (default gzip:4), zstd[:LEVEL] (needs Docker >= 23 /
    /// containerd >= 1.5 to pull) or none.
    #[arg(long, default_value = "gzip:4", value_parser = Compression::parse)]
    compression: Compression,
    /// Fixed timestamp for layer entries and the image's `created`.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<u64>,
    /// Rebuild every layer and run every step, ignoring (and refreshing) the cache.
    #[arg(long)]
    no_cache: bool,
    /// Skip checking that the image's default process can start in the image.
    #[arg(long)]
    no_verify: bool,
    /// Where build steps run: `sandbox` (unprivileged namespaces; fails where they are not
    /// available), `host`, or `auto`: the sandbox when possible, else the host, saying why.
    #[arg(long, value_enum, default_value_t = IsolationArg::Auto)]
    isolation: IsolationArg,
    /// What sandboxed steps see as `/`: `debian`, a build root assembled from Debian packages
    /// of the stack's distro (only its toolchains and Kiln's runtimes), or `host`, the host's
    /// own `/` read-only with users' directories hidden (host toolchains on PATH stay usable).
    #[arg(long, value_enum, env = "KILN_BUILD_ROOT", default_value_t = BuildRootArg::Debian)]
    build_root: BuildRootArg,
    /// Network of sandboxed steps: `host` (installers reach their registries) or `none`.
    #[arg(long, value_enum, default_value_t = NetworkArg::Host)]
    network: NetworkArg,
    /// Write the image's SBOMs into DIR (sbom.spdx.json: SPDX 2.3, sbom.cdx.json: CycloneDX
    /// 1.5); the image carries them too, under /layers/kiln/sbom.
    #[arg(long, value_name = "DIR")]
    sbom_dir: Option<PathBuf>,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    progress: ProgressArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum BuildRootArg {
    Debian,
    Host,
}

#[derive(Clone, Copy, ValueEnum)]
enum NetworkArg {
    Host,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum IsolationArg {
    Auto,
    Sandbox,
    Host,
}

impl From<IsolationArg> for Isolation {
    fn from(arg: IsolationArg) -> Isolation {
        match arg {
            IsolationArg::Auto => Isolation::Auto,
            IsolationArg::Sandbox => Isolation::Sandbox,
            IsolationArg::Host => Isolation::Host,
        }
    }
}

#[derive(clap::Args)]
struct DetectArgs {
    /// Source directory.
    #[arg(default_value = ".")]
    src: PathBuf,
    /// Use buildpacks from this directory (with order.toml) instead of the built-in ones.
    #[arg(long)]
    buildpacks: Option<PathBuf>,
    /// Print one JSON object on stdout (docs/json-output.md).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// An image: oci-archive:PATH[:REF], oci:DIR[:REF], docker-archive:PATH, or a plain path (a
    /// file is an oci- or docker-archive, sniffed; a directory an OCI layout), or a registry
    /// reference.
    image: String,
    /// Print one JSON object on stdout (docs/json-output.md).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RebaseArgs {
    /// The image to rebase: oci-archive:PATH, oci:DIR, a plain path, or a registry reference.
    image: String,
    /// The new base. Without it, the image goes onto a newer build of its own Kiln stack (the
    /// same distro, flavour and run packages, resolved fresh, or from --lock); an image that does
    /// not run on Kiln's stack is refused.
    #[arg(long, value_parser = parse_image_source)]
    run_image: Option<ImageSource>,
    /// Rebase onto exactly the stack packages pinned in this kiln.lock.
    #[arg(long, value_name = "PATH", conflicts_with = "run_image")]
    lock: Option<PathBuf>,
    /// Write the rebased image here.
    #[arg(short, long, required_unless_present = "publish")]
    output: Option<PathBuf>,
    /// Output format: an oci-archive file or an OCI layout directory.
    #[arg(long, value_enum, default_value_t = Format::OciArchive)]
    format: Format,
    /// Image name recorded in the written archive (annotations and RepoTags). Repeatable: one
    /// index.json entry per name, all in RepoTags.
    #[arg(short, long, value_parser = parse_reference)]
    tag: Vec<Reference>,
    /// Push the rebased image to this registry reference and print its manifest digest.
    /// Repeatable: the same image goes to each, in order.
    #[arg(long, value_name = "REF", value_parser = parse_reference)]
    publish: Vec<Reference>,
    /// Write the rebased image's SBOMs into DIR (sbom.spdx.json, sbom.cdx.json), as build
    /// --sbom-dir does. The image's own SBOM layer is refreshed on every rebase: its Debian
    /// packages become the new base's. Needs an image built with --sbom-dir.
    #[arg(long, value_name = "DIR")]
    sbom_dir: Option<PathBuf>,
    /// Build cache. Default: $XDG_CACHE_HOME/kiln.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print one JSON object on stdout (docs/json-output.md).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    progress: ProgressArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    OciArchive,
    OciDir,
}

fn main() -> ExitCode {
    // Before anything else: in its hidden supervisor mode the binary runs one build step and exits.
    kiln_build::steps::supervise_if_asked();
    // Build steps' sandboxes are set up by this binary re-executed (`kiln __sandbox-exec`).
    kiln_sandbox::run_helper_if_requested();
    let cli = Cli::parse();
    let json = cli.command.wants_json();
    let result = match cli.command {
        Command::Build(args) => build(*args),
        Command::Detect(args) => detect(args),
        Command::Plan(args) => plan(args),
        Command::Inspect(args) => inspect(args),
        Command::Rebase(args) => rebase(*args),
        Command::Cache(CacheCommand::Ls(args)) => cache_ls(args),
        Command::Cache(CacheCommand::Prune(args)) => cache_prune(args),
        Command::Lock(args) => lock(args),
        Command::Version(args) => version(args),
        Command::Completions(args) => completions(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            if json {
                print_json_error(&err);
            }
            let code = match err.downcast_ref::<Error>() {
                Some(Error::NothingDetected { .. }) => EXIT_NOTHING_DETECTED,
                Some(Error::Cancelled) => EXIT_CANCELLED,
                _ => EXIT_FAILED,
            };
            ExitCode::from(code)
        }
    }
}

/// The version of every `--json` object's shape (`docs/json-output.md`): bumped only when a
/// field is removed, renamed or changes meaning; new fields keep it.
const SCHEMA_VERSION: u32 = 1;

impl Command {
    fn wants_json(&self) -> bool {
        match self {
            Command::Build(a) => a.json,
            Command::Detect(a) | Command::Plan(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::Rebase(a) => a.json,
            Command::Cache(CacheCommand::Ls(a)) => a.json,
            Command::Cache(CacheCommand::Prune(a)) => a.json,
            Command::Lock(a) => a.json,
            Command::Version(a) => a.json,
            Command::Completions(_) => false,
        }
    }
}

/// Prints `value` as one JSON object on stdout with `schema_version` added.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(value)?;
    if let Some(object) = value.as_object_mut() {
        // A library object with its own schema_version (the plan's) keeps it.
        object
            .entry("schema_version")
            .or_insert(SCHEMA_VERSION.into());
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `{"schema_version": 1, "error": {"kind", "message", "step"?, "exit_code"?, "output_tail"?}}`
/// on stdout, so a `--json` caller always gets one object, on failure too.
fn print_json_error(err: &anyhow::Error) {
    let mut error = serde_json::Map::new();
    let kind = if let Some(err) = err.downcast_ref::<Error>() {
        if let Error::StepFailed {
            buildpack,
            step,
            exit_code,
            tail,
            ..
        } = err
        {
            error.insert("step".into(), format!("{buildpack}/{step}").into());
            if let Some(code) = exit_code {
                error.insert("exit_code".into(), (*code).into());
            }
            error.insert("output_tail".into(), tail.to_vec().into());
        }
        err.kind()
    } else if err.is::<kiln_buildpack::Error>() {
        "buildpack"
    } else if err.is::<kiln_oci::Error>() {
        "image"
    } else {
        "other"
    };
    error.insert("kind".into(), kind.into());
    error.insert("message".into(), err.to_string().into());
    let object = serde_json::json!({ "schema_version": SCHEMA_VERSION, "error": error });
    // Printing is the last thing the process does; a closed stdout has no one left to tell.
    let _ = serde_json::to_string_pretty(&object).map(|text| println!("{text}"));
}

/// This process's environment: the only place the CLI hands the library variables from.
fn host_env() -> std::collections::BTreeMap<String, String> {
    std::env::vars().collect()
}

fn load_buildpacks(dir: Option<&Path>) -> anyhow::Result<Option<BuildpackSet>> {
    Ok(dir.map(BuildpackSet::load_dir).transpose()?)
}

fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let mut opts = BuildOptions::from_env(&args.src, PathBuf::new(), host_env());
    opts.output = args.output;
    opts.publish = args.publish;
    opts.sbom_dir = args.sbom_dir;
    opts.cache_image = args.cache_image;
    opts.registry = args.registry.options();
    opts.format = args.format.into();
    opts.tags = args.tag;
    opts.labels.extend(args.label);
    if let Some(time) = args.creation_time {
        opts.creation_time = time;
    }
    // An explicit run image wins; without one the build runs on Kiln's stack.
    match args.run_image {
        Some(image) => opts.run_image = image,
        None => {
            opts.stack = Some(kiln_build::stack::StackSelection {
                distro: args.stack.stack,
            })
        }
    }
    if let Some(dir) = args.cache_dir {
        opts.cache_dir = dir;
    }
    opts.project = args.project;
    opts.buildpacks = load_buildpacks(args.buildpacks.as_deref())?;
    for file in &args.env_file {
        opts.env.extend(kiln_build::env_file::read(file, |key| {
            std::env::var(key).ok()
        })?);
    }
    opts.env.extend(args.env);
    opts.compression = args.compression;
    opts.no_cache = args.no_cache;
    opts.verify = !args.no_verify;
    opts.isolation = args.isolation.into();
    opts.build_root = match args.build_root {
        BuildRootArg::Debian => BuildRootMode::Debian,
        BuildRootArg::Host => BuildRootMode::Host,
    };
    opts.network = match args.network {
        NetworkArg::Host => kiln_sandbox::Network::Host,
        NetworkArg::None => kiln_sandbox::Network::None,
    };
    if let Some(epoch) = args.source_date_epoch {
        opts.source_date_epoch = epoch;
    }
    let renderer = args.progress.renderer();
    progress::cancel_on_signals(&opts.cancel);
    let report = kiln_build::build(&opts, &renderer);
    renderer.finish();
    let report = report?;
    if renderer.wants_summary() {
        eprint!("{}", progress::summary(&report));
    }
    if args.json {
        print_json(&report)?;
    } else {
        let reused = report.layers.iter().filter(|l| l.reused).count();
        let wrote = report
            .output
            .as_ref()
            .map_or("image".to_owned(), |o| o.display().to_string());
        println!(
            "built {wrote} ({} layers, {reused} reused) in {} ms\nmanifest {}",
            report.layers.len(),
            report.timings.total_ms,
            report.manifest_digest
        );
        print_pushes(&report.pushes);
    }
    Ok(ExitCode::SUCCESS)
}

fn lock(args: LockArgs) -> anyhow::Result<ExitCode> {
    let mut opts = BuildOptions::from_env(&args.src, PathBuf::new(), host_env());
    if let Some(dir) = args.cache_dir {
        opts.cache_dir = dir;
    }
    opts.buildpacks = load_buildpacks(args.buildpacks.as_deref())?;
    opts.stack = Some(kiln_build::stack::StackSelection {
        distro: args.stack.stack,
    });
    let renderer = args.progress.renderer();
    progress::cancel_on_signals(&opts.cancel);
    let report = kiln_build::stack::lock(&opts, args.update, &renderer);
    renderer.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "{} {} ({} packages, {})",
            report.action,
            report.path.display(),
            report.lock.packages().count(),
            report.lock.distro
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rebase(args: RebaseArgs) -> anyhow::Result<ExitCode> {
    let opts = kiln_build::rebase::RebaseOptions {
        image: image_source_or_path(&args.image)?,
        run_image: args.run_image,
        lock: args.lock,
        kiln_env: kiln_buildpack::settings::kiln_env(&host_env()),
        output: args.output,
        format: args.format.into(),
        tags: args.tag,
        publish: args.publish,
        sbom_dir: args.sbom_dir,
        cache_dir: args
            .cache_dir
            .unwrap_or_else(|| kiln_build::default_cache_dir(&host_env())),
        registry: args.registry.options(),
        cancel: kiln_build::events::Cancel::new(),
    };
    let renderer = args.progress.renderer();
    progress::cancel_on_signals(&opts.cancel);
    let report = kiln_build::rebase::rebase(&opts, &renderer);
    renderer.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &report.stack {
        Some(stack) if !stack.changed => println!(
            "unchanged: stack {}/{} is up to date ({} packages)",
            stack.stack.distro,
            stack.stack.flavour,
            stack.stack.packages.len()
        ),
        _ => println!(
            "rebased: {} base layers replaced by {}, {} app layers kept",
            report.old_base_layers.len(),
            report.new_base_layers.len(),
            report.app_layers.len(),
        ),
    }
    for change in report.stack.iter().flat_map(|s| &s.packages) {
        println!(
            "package {} {} -> {} [{}]",
            change.name,
            change.old.as_deref().unwrap_or("(new)"),
            change.new.as_deref().unwrap_or("(removed)"),
            change.layer
        );
    }
    if let Some(sbom) = report.sbom.as_ref().filter(|s| s.refreshed) {
        println!(
            "sbom refreshed: {} components, {} Debian packages",
            sbom.components, sbom.debian_packages
        );
    }
    println!("manifest {}", report.manifest_digest);
    print_pushes(&report.pushes);
    Ok(ExitCode::SUCCESS)
}

/// One `pushed REF@DIGEST` line per `--publish`, each followed by the SBOMs attached to it.
fn print_pushes(pushes: &[kiln_build::registry::Published]) {
    for published in pushes {
        let push = &published.push;
        println!("pushed {}@{}", push.reference, push.manifest_digest);
        for referrer in &published.referrers {
            println!("attached {} {}", referrer.artifact_type, referrer.reference);
        }
    }
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> OutputFormat {
        match f {
            Format::OciArchive => OutputFormat::OciArchive,
            Format::OciDir => OutputFormat::OciDir,
        }
    }
}

/// One platform, `linux/amd64` or `linux/arm64/v8`: each part lowercase letters and digits (as
/// OCI and Go name them). Kiln writes single-platform images, so a list is refused.
fn parse_platform(s: &str) -> Result<Platform, String> {
    if s.contains(',') {
        return Err("one platform only: Kiln builds an image for a single OS/ARCH".into());
    }
    let word = |w: &&str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch, variant @ ..] if variant.len() <= 1 && parts.iter().all(word) => {
            Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: variant.first().map(|v| (*v).to_owned()),
            })
        }
        _ => Err("expected OS/ARCH[/VARIANT] in lowercase letters and digits, e.g. linux/amd64 or linux/arm64/v8".into()),
    }
}

/// `KEY=VALUE` as given; a bare `KEY` takes the caller's value (and is an error if unset, so a
/// missing secret fails loudly instead of building without it). Names follow the same rule as
/// `kiln.toml`'s.
fn parse_env(pair: &str) -> Result<(String, String), String> {
    let (key, value) = match pair.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (pair, None),
    };
    kiln_buildpack::check_env_name(key)
        .map_err(|why| format!("--env {pair:?}: variable name {key:?} {why}"))?;
    let value = match value {
        Some(value) => value.to_owned(),
        None => {
            std::env::var(key).map_err(|_| format!("--env {key}: not set in the environment"))?
        }
    };
    Ok((key.to_owned(), value))
}

fn parse_reference(s: &str) -> Result<Reference, String> {
    Reference::parse(s).map_err(|e| e.to_string())
}

fn parse_image_source(s: &str) -> Result<ImageSource, String> {
    image_source_or_path(s).map_err(|e| e.to_string())
}

fn version(args: VersionArgs) -> anyhow::Result<ExitCode> {
    let kiln = env!("CARGO_PKG_VERSION");
    let set = BuildpackSet::builtin()?;
    let buildpacks: std::collections::BTreeMap<&str, &str> = set
        .buildpacks
        .iter()
        .map(|b| {
            (
                b.spec.buildpack.id.as_str(),
                b.spec.buildpack.version.as_str(),
            )
        })
        .collect();
    if args.json {
        print_json(&serde_json::json!({ "kiln": kiln, "buildpacks": buildpacks }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "kiln {kiln}")?;
        for (id, version) in buildpacks {
            writeln!(out, "  {id:<10} {version}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "kiln",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

fn detect(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let set = load_buildpacks(args.buildpacks.as_deref())?;
    let detection = kiln_build::detect(
        &args.src,
        set.as_ref(),
        &kiln_buildpack::settings::kiln_env(&host_env()),
    )?;
    if args.json {
        print_json(&detection)?;
    } else {
        let mut out = std::io::stdout().lock();
        if let Some(dir) = &detection.app_root {
            writeln!(out, "app root: {dir}/")?;
        }
        for v in &detection.buildpacks {
            writeln!(out, "pass  {:<10} {}", v.id, v.reason)?;
        }
        for v in &detection.rejected {
            writeln!(out, "skip  {:<10} {}", v.id, v.reason)?;
        }
    }
    if detection.detected {
        Ok(ExitCode::SUCCESS)
    } else {
        // The list of what was looked for goes to stderr, so `--json` stdout stays one object.
        eprintln!(
            "error: no buildpack detected for {}; looked for:",
            args.src.display()
        );
        for v in &detection.rejected {
            eprintln!("  {}: {}", v.id, v.reason);
        }
        Ok(ExitCode::from(EXIT_NOTHING_DETECTED))
    }
}

fn plan(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let set = load_buildpacks(args.buildpacks.as_deref())?;
    let plan = kiln_build::plan(
        &args.src,
        set.as_ref(),
        &kiln_buildpack::settings::kiln_env(&host_env()),
    )?;
    if args.json {
        print_json(&plan)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if let Some(dir) = &plan.app_root {
        writeln!(out, "app root   {dir}/")?;
    }
    for bp in &plan.buildpacks {
        writeln!(out, "{}  ({})", bp.id, bp.reason)?;
        if let Some(v) = &bp.facts.version {
            writeln!(out, "  version          {} (from {})", v.version, v.from)?;
        }
        if let Some(pm) = &bp.facts.package_manager {
            let version = pm.version.as_deref().unwrap_or("any");
            writeln!(
                out,
                "  package manager  {} {version} (from {})",
                pm.name, pm.from
            )?;
        }
        if let Some(f) = &bp.facts.framework {
            writeln!(out, "  framework        {f}")?;
        }
        // A monorepo's app: the workspace member built and started, and why it was chosen.
        if let Some(dir) = bp.facts.get("app_dir") {
            let from = bp.facts.get("app_from").unwrap_or_default();
            writeln!(out, "  app              {dir} (from {from})")?;
        }
        for step in &bp.steps {
            let from = step
                .from
                .as_ref()
                .map(|f| format!("  (from {f})"))
                .unwrap_or_default();
            writeln!(
                out,
                "  step {:<11} {} {}{from}",
                step.name,
                step.command,
                step.args.join(" ")
            )?;
        }
        for note in &bp.facts.notes {
            writeln!(out, "  note: {note}")?;
        }
    }
    for p in &plan.processes {
        let default = if p.default { " (default)" } else { "" };
        writeln!(
            out,
            "process {}{default}: {:?}  [{}]",
            p.kind, p.command, p.buildpack
        )?;
    }
    // Shown, not failed: the plan is still worth reading; `kiln build` refuses it.
    if let Some(none) = &plan.no_default_process {
        writeln!(out, "{none}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let source = image_source_or_path(&args.image)?;
    let registry = kiln_registry::ClientOptions {
        env: host_env(),
        ..Default::default()
    };
    let report = kiln_build::inspect::inspect(&source, registry)?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "image      {}", report.image)?;
    if let Some(d) = &report.manifest_digest {
        writeln!(out, "manifest   {d}")?;
    }
    writeln!(out, "platform   {}/{}", report.os, report.architecture)?;
    if let Some(base) = &report.base {
        let digest = base.digest.as_ref().map(|d| d.to_string());
        let name = base.name.as_ref().or(digest.as_ref());
        writeln!(
            out,
            "base       {} ({} layers)",
            name.map_or("(unnamed)", |n| n.as_str()),
            base.layer_count
        )?;
    }
    if let Some(stack) = &report.stack {
        let suites: Vec<String> = stack
            .suites
            .iter()
            .map(|s| format!("{} ({})", s.name, s.date))
            .collect();
        writeln!(
            out,
            "stack      {}/{} from {}",
            stack.distro,
            stack.flavour,
            suites.join(", ")
        )?;
        for p in &stack.packages {
            writeln!(
                out,
                "package    {} {} {} [{}]",
                p.name, p.version, p.architecture, p.layer
            )?;
        }
    }
    writeln!(
        out,
        "entrypoint {:?}",
        report.entrypoint.unwrap_or_default()
    )?;
    if let Some(cmd) = &report.cmd {
        writeln!(out, "cmd        {cmd:?}")?;
    }
    writeln!(out, "workdir    {}", report.working_dir.unwrap_or_default())?;
    for env in &report.env {
        writeln!(out, "env        {env}")?;
    }
    writeln!(out, "layers:")?;
    for l in &report.layers {
        writeln!(out, "  {:>12} bytes  {}  {}", l.size, l.digest, l.made_by)?;
    }
    if !report.processes.is_empty() {
        writeln!(out, "processes:")?;
        for p in &report.processes {
            let default = if p.default { " (default)" } else { "" };
            writeln!(
                out,
                "  {}{default}: {:?}  [{}]",
                p.kind, p.command, p.buildpack
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An image named on the command line. Without a transport prefix, an existing file is a local
/// archive (oci-archive or docker-archive, sniffed) and a directory an OCI layout, so
/// `./base.tar` is never mistaken for a Docker Hub image; a name that can only be a path
/// (`/…`, `./…`, `../…`, `*.tar`) and does not exist is reported missing, not looked up.
fn image_source_or_path(s: &str) -> anyhow::Result<ImageSource> {
    let transport = s.split_once(':').map(|(t, _)| t);
    if s == "scratch"
        || s.starts_with("docker://")
        || matches!(transport, Some("oci-archive" | "oci" | "docker-archive"))
    {
        return Ok(s.parse()?);
    }
    let path = Path::new(s);
    if path.is_file() {
        return Ok(ImageSource::sniff_archive(path)?);
    }
    if path.is_dir() {
        return Ok(ImageSource::OciDir {
            path: path.to_path_buf(),
            reference: None,
        });
    }
    let only_a_path =
        s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s.ends_with(".tar");
    if only_a_path {
        anyhow::bail!("image {s}: no such file or directory");
    }
    Ok(s.parse()?)
}

fn cache_ls(args: CacheLsArgs) -> anyhow::Result<ExitCode> {
    use kiln_build::cache_admin::{human_size, totals_by_kind};
    let dir = args
        .cache_dir
        .unwrap_or_else(|| kiln_build::default_cache_dir(&host_env()));
    let listing = kiln_build::cache_admin::list(&dir)?;
    if args.json {
        print_json(&listing)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {}",
        listing.cache_dir.display(),
        human_size(listing.total_bytes)
    )?;
    for (kind, (count, bytes)) in totals_by_kind(&listing.items) {
        writeln!(out, "  {count:>5} {kind:<12} {:>10}", human_size(bytes))?;
    }
    for item in &listing.items {
        writeln!(
            out,
            "{:<12} {:>10}  idle {:>8}  {}",
            item.kind,
            human_size(item.bytes),
            format!("{}s", item.idle_seconds),
            item.name
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cache_prune(args: CachePruneArgs) -> anyhow::Result<ExitCode> {
    use kiln_build::cache_admin::{human_size, prune, PrunePolicy};
    let dir = args
        .cache_dir
        .unwrap_or_else(|| kiln_build::default_cache_dir(&host_env()));
    let policy = PrunePolicy {
        max_size: args.max_size,
        older_than: args.older_than,
    };
    let report = prune(&dir, &policy)?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "removed {} items, freed {}, {} left",
            report.removed.len(),
            human_size(report.freed_bytes),
            human_size(report.remaining_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every flag and argument of every subcommand says what it is for in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    out.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    out.push(format!("{path} {} (no about)", sub.get_name()));
                }
                undocumented(sub, &path, out);
            }
        }
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        Cli::command().debug_assert();
    }
}
