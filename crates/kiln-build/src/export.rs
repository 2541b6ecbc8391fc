//! Export: turning the build's directories into layers and the layers into the output image.
//!
//! Layer order is least to most often changed: base layers, then each buildpack's launch layers in
//! plan order, then the app layer. A layer whose content key is in the cache is reused without
//! re-tarring or recompressing (ko's "lazy layer").

use crate::events::{BuildEvent, Events};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use kiln_buildpack::plan::{Plan, APP_DIR, LAYERS_DIR};
use kiln_oci::image::{self, Image};
use kiln_oci::layer::{self, Entry, LayerOptions};
use kiln_oci::reference::Reference;
use kiln_oci::source::{ImageSource, LoadedImage};
use kiln_oci::spec::{self, History, ImageConfig, LayerRecord, Platform};
use kiln_oci::store::BlobStore;

use crate::cache::BuildCache;
use crate::error::{Error, IoContext, Result};
use crate::layer_cache;
use crate::metadata::{
    BaseMetadata, BuildpackRef, ImageMetadata, LayerMetadata, ProcessMetadata, LABEL,
    METADATA_VERSION,
};
use crate::runtimes::Provided;
use crate::{BuildOptions, LayerDirs, LayerReport, OutputFormat, CAPTURED_DIR};

/// Where, in the cache, what verification needs of each base layer is kept.
const VERIFY_DIR: &str = "verify";

/// `PATH` for images whose base sets none (scratch): Docker's default.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct ExportInput<'a> {
    pub opts: &'a BuildOptions,
    /// The run image, already loaded into the cache's store.
    pub base: &'a LoadedImage,
    pub cache: &'a BuildCache,
    pub plan: &'a Plan,
    /// The app's entries under `/workspace`: from the working copy after the steps, or straight
    /// from the source when no step ran. [`export`] takes them (leaving it empty) for the app
    /// layer, so a listing of 200k entries is never held twice.
    pub app: Mutex<Vec<Entry>>,
    pub layer_dirs: &'a LayerDirs,
    /// Runtimes provided for buildpacks: each becomes the first launch layer of its buildpack.
    pub runtimes: &'a [Provided],
    /// A directory holding the image's SBOM documents: the `kiln/sbom` layer, before the app's.
    pub sbom_dir: Option<&'a Path>,
    /// The image's creation time (RFC 3339): config, Kiln's history entries, annotation.
    pub created: &'a str,
    /// Config labels ([`crate::labels::image_labels`]).
    pub labels: &'a BTreeMap<String, String>,
    /// `kiln.toml` `[image] user` (see [`run_as`]).
    pub user: Option<&'a str>,
}

impl ExportInput<'_> {
    /// The runtimes the image holds: not those only the steps use (`[[build_only]] runtime`).
    fn shipped_runtimes(&self) -> impl Iterator<Item = &Provided> {
        self.runtimes
            .iter()
            .filter(|p| self.plan.ships_runtime(&p.buildpack))
    }
}

/// The non-root user's uid and gid: the `nonroot` user every Kiln stack has (distroless's).
pub const NONROOT_UID: u32 = kiln_debian::generate::NONROOT_UID;

/// Who the image runs as: `(config User to set, whether the app directory is the non-root
/// user's)`. On Kiln's stack the default is non-root (`65532:65532`, numeric so that
/// Kubernetes' `runAsNonRoot` can check it) and `/workspace` is owned by it. On a run image
/// the user supplied, Kiln cannot know which users it has or what its processes expect, so its
/// own `User` is kept unless `[image] user` says `nonroot` or `root`.
pub(crate) fn run_as(setting: Option<&str>, base: &LoadedImage) -> (Option<String>, bool) {
    let nonroot = format!("{NONROOT_UID}:{NONROOT_UID}");
    match setting {
        Some("root") => (Some("0:0".to_owned()), false),
        Some(_) => (Some(nonroot), true),
        None if matches!(base.source, ImageSource::Stack(_)) => (Some(nonroot), true),
        None => (None, false),
    }
}

/// Where every planned process has a launcher: `/layers/kiln/processes/<type>`.
pub const PROCESSES_DIR: &str = "/layers/kiln/processes";
/// `#!/bin/sh` scripts that `exec` each process's argv (arguments given to the launcher are
/// appended), so any process can be started by path:
/// `docker run --entrypoint /layers/kiln/processes/worker IMAGE`. They go into the app layer;
/// their bytes are kept in the cache's blob store (content-addressed, never rewritten), so the
/// app layer's stat key stays the same from one build to the next.
fn process_launchers(plan: &Plan, store: &BlobStore) -> Result<Vec<Entry>> {
    let prefix = PROCESSES_DIR.trim_start_matches('/');
    let mut entries = Vec::new();
    for process in &plan.processes {
        let kind = &process.kind;
        // Types are `[A-Za-z0-9_-]+` (checked when buildpacks and kiln.toml are read): a file
        // name. Refuse anything else rather than write outside the directory.
        if kind.is_empty()
            || !kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::Options(format!(
                "process type {kind:?} cannot name a launcher file"
            )));
        }
        let script = launcher_script(process);
        let digest = store.put_bytes(script.as_bytes())?;
        entries.push(Entry {
            path: format!("{prefix}/{kind}"),
            kind: layer::EntryKind::file(store.path(&digest), script.len() as u64),
            mode: 0o755,
        });
    }
    Ok(entries)
}

fn launcher_script(process: &kiln_buildpack::plan::Process) -> String {
    let argv: Vec<String> = process.command.iter().map(|a| sh_quote(a)).collect();
    format!(
        "#!/bin/sh\n# Kiln launcher: process {} (from {})\nexec {} \"$@\"\n",
        process.kind,
        process.buildpack,
        argv.join(" ")
    )
}

/// `s` as one single-quoted `sh` word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub struct Exported {
    pub image: Image,
    pub layers: Vec<LayerReport>,
}

/// A layer Kiln builds: its name and what goes in it.
struct PlannedLayer {
    name: String,
    entries: Vec<Entry>,
}

pub fn export(input: &ExportInput<'_>, ev: Events<'_>) -> Result<Exported> {
    let opts = input.opts;
    let base = input.base;
    let (user, app_owned) = run_as(input.user, base);
    let layer_opts = LayerOptions {
        mtime: opts.source_date_epoch,
        compression: opts.compression,
        // Everything Kiln puts under the app directory (the app layer, captured paths in
        // buildpack layers) belongs to the user the processes run as, so they can write there.
        owned: app_owned.then(|| layer::Owned {
            prefix: APP_DIR.trim_start_matches('/').to_owned(),
            uid: u64::from(NONROOT_UID),
            gid: u64::from(NONROOT_UID),
        }),
        ..LayerOptions::default()
    };

    let mut reports: Vec<LayerReport> = base
        .layers
        .iter()
        .map(|l| LayerReport {
            name: "base".into(),
            digest: l.descriptor.digest.clone(),
            diff_id: l.diff_id.clone(),
            size: l.descriptor.size,
            reused: true,
            reason: "base image layer, copied verbatim".into(),
        })
        .collect();
    for base_layer in &reports {
        ev.emit(BuildEvent::LayerDecided {
            name: base_layer.name.clone(),
            reused: true,
            reason: base_layer.reason.clone(),
            size: base_layer.size,
            digest: base_layer.digest.clone(),
        });
    }
    let mut records: Vec<LayerRecord> = base.layers.clone();
    let mut built: Vec<LayerMetadata> = Vec::new();
    // Layers are independent: look up or build them concurrently (each large one also
    // compresses on the shared gzip pool), then assemble in plan order.
    let planned = planned_layers(input)?;
    let results: Vec<Result<_>> = std::thread::scope(|scope| {
        let handles: Vec<_> = planned
            .iter()
            .map(|p| {
                scope.spawn(|| {
                    ev.check()?;
                    layer_cache::layer(
                        input.cache,
                        &p.name,
                        &p.entries,
                        &layer_opts,
                        opts.no_cache,
                        ev,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    // The built layers' entries, kept (not copied) for verification.
    let mut verify_layers: Vec<(String, Vec<Entry>)> = Vec::new();
    for (planned, result) in planned.into_iter().zip(results) {
        let (record, decision) = result?;
        let reused = decision.reused();
        ev.emit(BuildEvent::LayerDecided {
            name: planned.name.clone(),
            reused,
            reason: decision.to_string(),
            size: record.descriptor.size,
            digest: record.descriptor.digest.clone(),
        });
        reports.push(LayerReport {
            name: planned.name.clone(),
            digest: record.descriptor.digest.clone(),
            diff_id: record.diff_id.clone(),
            size: record.descriptor.size,
            reused,
            reason: decision.to_string(),
        });
        built.push(LayerMetadata {
            name: planned.name.clone(),
            diff_id: record.diff_id.clone(),
        });
        records.push(record);
        if opts.verify {
            verify_layers.push((planned.name, planned.entries));
        }
    }

    let config = image_config(input, base, &built, user);
    if opts.verify {
        verify(input, &config, verify_layers, ev)?;
    }
    let annotations = image_annotations(input.created.to_owned(), base);
    let image = image::assemble(&input.cache.store, config, &records, annotations)?;
    if let Some(output) = &opts.output {
        write_output(
            &input.cache.store,
            &image,
            opts.format,
            &opts.tags,
            output,
            ev,
        )?;
    }
    Ok(Exported {
        image,
        layers: reports,
    })
}

/// Refuses an image whose default process cannot start in its own filesystem (see
/// [`kiln_verify`]): checked before anything is written or pushed. A base layer's blob is read
/// once, what the check needs of it kept in `verify/<digest>.json` of the cache; the built
/// layers are read from their entries' host files.
fn verify(
    input: &ExportInput<'_>,
    config: &ImageConfig,
    layers: Vec<(String, Vec<Entry>)>,
    ev: Events<'_>,
) -> Result<()> {
    let base = input.base.layers.iter().map(|l| ("the run image", l));
    verify_image(input.cache, base, layers, config, ev)
}

/// [`verify`] for any image: `blobs` (what each is, for messages) are layers in the cache's
/// store, read as blobs; `built` follow them, read from their entries.
pub(crate) fn verify_image<'a>(
    cache: &BuildCache,
    blobs: impl IntoIterator<Item = (&'a str, &'a LayerRecord)>,
    built: Vec<(String, Vec<Entry>)>,
    config: &ImageConfig,
    ev: Events<'_>,
) -> Result<()> {
    let spool = cache.scratch_dir()?;
    let mut fs = kiln_verify::ImageFs::new(spool.path());
    for (what, layer) in blobs {
        let digest = &layer.descriptor.digest;
        let index = cache
            .root()
            .join(VERIFY_DIR)
            .join(format!("{}.json", digest.hex()));
        let blob = cache.store.path(digest);
        fs.add_blob_layer(what, &blob, &layer.descriptor.media_type, Some(&index))?;
    }
    for (name, entries) in built {
        fs.add_entries(&format!("layer {name}"), entries);
    }
    kiln_verify::verify(&mut fs, config)?;
    ev.note("verified: the default process can start in the image");
    Ok(())
}

/// The image is for `--platform` (default: the host's). Steps run on this host and runtimes are
/// provided for it, so a build with either can only make the host's platform; one that runs no
/// step and ships no runtime (plain files) may make another. The run image must be of the
/// platform built for (scratch takes it).
pub(crate) fn check_platform(opts: &BuildOptions, plan: &Plan, base: &LoadedImage) -> Result<()> {
    let target = &opts.registry.platform;
    let host = Platform::host();
    let fail = |why: String| Error::Platform {
        requested: platform_name(target),
        why,
    };
    if !same_platform(target, &host) {
        let host_made: Vec<String> = plan
            .buildpacks
            .iter()
            .flat_map(|bp| {
                let steps = bp
                    .steps
                    .iter()
                    .map(|s| format!("step {}/{}", bp.id, s.name));
                let runtime = bp.runtime.iter().map(|r| format!("the {} runtime", r.name));
                steps.chain(runtime)
            })
            .collect();
        if !host_made.is_empty() {
            let host = platform_name(&host);
            return Err(fail(format!(
                "this build runs {} on this {host} host, so it can only make a {host} image \
                 (only a build with no step and no runtime can target another platform)",
                host_made.join(", ")
            )));
        }
    }
    let have = config_platform(&base.config);
    if !matches!(base.source, ImageSource::Scratch) && !same_platform(&have, target) {
        return Err(fail(format!(
            "run image {} is {}, not {}: use a run image for {1}",
            base.source,
            platform_name(&have),
            platform_name(target)
        )));
    }
    Ok(())
}

/// The same os and architecture, and the same variant when both name one (`linux/arm64` is
/// `linux/arm64/v8`).
pub(crate) fn same_platform(a: &Platform, b: &Platform) -> bool {
    a.os == b.os
        && a.architecture == b.architecture
        && (a.variant.is_none() || b.variant.is_none() || a.variant == b.variant)
}

pub(crate) fn config_platform(config: &ImageConfig) -> Platform {
    Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
    }
}

/// `linux/arm64/v8`.
pub(crate) fn platform_name(p: &Platform) -> String {
    match &p.variant {
        Some(variant) => format!("{}/{}/{variant}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// The launch layers of every buildpack (with the app paths they capture), then the app layer
/// (with the process launchers).
fn planned_layers(input: &ExportInput<'_>) -> Result<Vec<PlannedLayer>> {
    let app_prefix = APP_DIR.trim_start_matches('/');
    let listed = std::mem::take(&mut *input.app.lock().unwrap_or_else(PoisonError::into_inner));
    let mut app: Vec<Entry> = listed
        .into_iter()
        .filter(|e| {
            input
                .plan
                .ships(e.path.strip_prefix(app_prefix).unwrap_or(&e.path))
        })
        .collect();
    let mut layers = Vec::new();
    for bp in &input.plan.buildpacks {
        for provided in input.shipped_runtimes().filter(|p| p.buildpack == bp.id) {
            layers.push(PlannedLayer {
                name: format!("{}/runtime", bp.id),
                entries: layer::normalize(provided.runtime.layer_entries(&provided.image_dir)?)?,
            });
        }
        for spec in bp.layers.iter().filter(|l| l.launch) {
            let Some(dir) = input.layer_dirs.get(&bp.id).and_then(|d| d.get(&spec.name)) else {
                continue;
            };
            let image_dir = format!("{LAYERS_DIR}/{}/{}", bp.id, spec.name);
            let captured_dir = format!("{}/{CAPTURED_DIR}", image_dir.trim_start_matches('/'));
            let mut entries: Vec<Entry> = Vec::new();
            if !is_empty_dir(dir)? {
                entries.extend(
                    layer::tree_entries(dir, &image_dir)?
                        .into_iter()
                        .filter(|e| {
                            !(e.path == captured_dir
                                || e.path.starts_with(&format!("{captured_dir}/")))
                        }),
                );
                if entries.len() == 1 {
                    entries.clear(); // only the layer directory itself: nothing of its own
                }
            }
            for path in &spec.capture {
                let path = path.trim_end_matches('/');
                let captured = format!("{app_prefix}/{path}");
                // The app's own copy (in the source, when no step ran) gives way to the layer's.
                app.retain(|e| {
                    !(e.path == captured
                        || e.path
                            .strip_prefix(captured.as_str())
                            .is_some_and(|rest| rest.starts_with('/')))
                });
                let host = dir.join(CAPTURED_DIR).join(path);
                if fs::symlink_metadata(&host).is_ok() {
                    entries.extend(layer::tree_entries(&host, &format!("{APP_DIR}/{path}"))?);
                }
            }
            if entries.is_empty() {
                continue;
            }
            layers.push(PlannedLayer {
                name: format!("{}/{}", bp.id, spec.name),
                entries: layer::normalize(entries)?,
            });
        }
    }
    if let Some(dir) = input.sbom_dir {
        layers.push(PlannedLayer {
            name: SBOM_LAYER.into(),
            entries: sbom_layer_entries(dir)?,
        });
    }
    app.extend(process_launchers(input.plan, &input.cache.store)?);
    layers.push(PlannedLayer {
        name: "app".into(),
        entries: layer::normalize(app)?,
    });
    Ok(layers)
}

/// The name of the layer holding the image's SBOM documents (recorded in the metadata label).
pub(crate) const SBOM_LAYER: &str = "kiln/sbom";

/// The [`SBOM_LAYER`]'s entries: the documents in `dir` (as [`kiln_sbom::write_dir`] writes
/// them) at [`kiln_sbom::IMAGE_DIR`]. A rebase that refreshes the SBOM makes the layer this same
/// way, so it is what a build would have made.
pub(crate) fn sbom_layer_entries(dir: &Path) -> Result<Vec<Entry>> {
    Ok(layer::normalize(layer::tree_entries(
        dir,
        &format!("/{}", kiln_sbom::IMAGE_DIR),
    )?)?)
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)
        .ctx(|| format!("reading {}", dir.display()))?
        .next()
        .is_none())
}

/// Manifest annotations of an image Kiln writes: its creation time and, for a base that has a
/// digest, the base's digest and (when it has one, see [`base_name`]) name: what a later rebase
/// starts from.
pub(crate) fn image_annotations(created: String, base: &LoadedImage) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([(spec::ANNOTATION_CREATED.to_owned(), created)]);
    if let Some(digest) = &base.manifest_digest {
        if let Some(name) = base_name(base) {
            annotations.insert(spec::ANNOTATION_BASE_NAME.into(), name);
        }
        annotations.insert(spec::ANNOTATION_BASE_DIGEST.into(), digest.to_string());
    }
    annotations
}

/// What the image records as its base's name: a registry reference as given, or the name a local
/// archive or layout gives the image in its `index.json`; nothing for an unnamed local one. Never
/// a host path: the same base bytes at another path (another runner's workspace, a relative
/// path) must give the same digest.
fn base_name(base: &LoadedImage) -> Option<String> {
    match &base.source {
        // Kiln's own stack: its stable name (`kiln-stack:debian-13/glibc`), the same everywhere.
        ImageSource::Registry(_) | ImageSource::Stack(_) => Some(base.source.to_string()),
        _ => base.ref_name.clone(),
    }
}

/// Writes `image` (blobs in `store`) as an archive or layout directory at `output`.
pub(crate) fn write_output(
    store: &BlobStore,
    image: &Image,
    format: OutputFormat,
    tags: &[Reference],
    output: &Path,
    ev: Events<'_>,
) -> Result<()> {
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    match format {
        OutputFormat::OciArchive => {
            kiln_oci::archive::write_oci_archive_named(store, image, tags, output)?
        }
        OutputFormat::OciDir => kiln_oci::archive::write_oci_dir_named(store, image, tags, output)?,
    }
    ev.note(format!(
        "wrote {} ({})",
        output.display(),
        image.manifest_digest
    ));
    Ok(())
}

/// The base config with Kiln's changes for a build's plan.
fn image_config(
    input: &ExportInput<'_>,
    base: &LoadedImage,
    built: &[LayerMetadata],
    user: Option<String>,
) -> ImageConfig {
    let plan = input.plan;
    // Runtime bins lead the image's PATH, ahead of the buildpacks' own or the base's.
    let mut launch_env = plan.launch_env.clone();
    let runtimes: Vec<&Provided> = input.shipped_runtimes().collect();
    if !runtimes.is_empty() {
        let rest = launch_env
            .get("PATH")
            .cloned()
            .or_else(|| base.config.config.env_var("PATH").map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_PATH.to_owned());
        let bins: Vec<String> = runtimes.iter().map(|p| p.image_bin()).collect();
        launch_env.insert("PATH".into(), format!("{}:{rest}", bins.join(":")));
        let libs: Vec<String> = runtimes.iter().filter_map(|p| p.image_lib()).collect();
        if !libs.is_empty() {
            launch_env.insert("LD_LIBRARY_PATH".into(), libs.join(":"));
        }
    }
    // Platforms (Cloud Run, Heroku, …) pass PORT at run time and win; this is the port the app
    // listens on without one. A base image's own PORT is kept.
    if base.config.config.env_var("PORT").is_none() {
        launch_env
            .entry("PORT".to_owned())
            .or_insert_with(|| DEFAULT_PORT.to_string());
    }
    let metadata = ImageMetadata {
        version: METADATA_VERSION,
        base: None,
        buildpacks: plan
            .buildpacks
            .iter()
            .map(|b| BuildpackRef {
                id: b.id.clone(),
                version: b.version.clone(),
            })
            .collect(),
        layers: built.to_vec(),
        processes: plan.processes.iter().map(ProcessMetadata::from).collect(),
        launch_env: Some(launch_env),
        labels: Some(input.labels.clone()),
        user,
    };
    let mut config = app_config(
        base,
        input.created.to_owned(),
        plan.processes.first().map(|p| p.command.clone()),
        metadata,
    );
    if matches!(base.source, ImageSource::Scratch) {
        // Scratch has no platform of its own: the image is the one built for (see
        // [`check_platform`]).
        let target = &input.opts.registry.platform;
        config.os = target.os.clone();
        config.architecture = target.architecture.clone();
        config.variant = target.variant.clone();
    }
    config
}

/// The port an image listens on when neither the project nor a buildpack sets `PORT`.
pub(crate) const DEFAULT_PORT: u16 = 8080;

/// Kiln's config rules on top of `base`'s config, shared by build and rebase: `PATH` defaulted,
/// launch env (from `metadata`) set, `PORT` exposed, the app dir as working dir, `entrypoint`
/// replacing the base's Entrypoint and Cmd, the build's labels over the base's, the metadata
/// label (its `base` filled in from `base`) and history for `metadata.layers`, all `created`.
pub(crate) fn app_config(
    base: &LoadedImage,
    created: String,
    entrypoint: Option<Vec<String>>,
    mut metadata: ImageMetadata,
) -> ImageConfig {
    let mut config = base.config.clone();
    config.created = Some(created.clone());
    if matches!(base.source, ImageSource::Stack(_)) {
        // Kiln assembled the stack for this image: its layers are as new as the image's own.
        for entry in &mut config.history {
            entry.created = Some(created.clone());
        }
    }
    let runtime = &mut config.config;
    if runtime.env_var("PATH").is_none() {
        runtime.set_env_var("PATH", DEFAULT_PATH);
    }
    for (key, value) in metadata.launch_env.iter().flatten() {
        runtime.set_env_var(key, value);
    }
    if let Some(port) = runtime.env_var("PORT").and_then(|p| p.parse::<u16>().ok()) {
        runtime
            .exposed_ports
            .insert(format!("{port}/tcp"), serde_json::json!({}));
    }
    if let Some(user) = &metadata.user {
        runtime.user = Some(user.clone());
    }
    runtime.working_dir = Some(APP_DIR.to_owned());
    // The base's Cmd would become arguments of our entrypoint: replace both.
    runtime.entrypoint = entrypoint;
    runtime.cmd = None;
    for (key, value) in metadata.labels.iter().flatten() {
        runtime.labels.insert(key.clone(), value.clone());
    }
    metadata.base = base.manifest_digest.as_ref().map(|digest| BaseMetadata {
        name: base_name(base),
        digest: Some(digest.clone()),
        top_layer: base.layers.last().map(|l| l.diff_id.clone()),
        layer_count: base.layers.len(),
    });
    runtime.labels.insert(
        LABEL.to_owned(),
        String::from_utf8(kiln_oci::json::to_canonical_vec(&metadata)).expect("JSON is UTF-8"),
    );
    // History must pair with layers; extend it only when the base's is consistent.
    let base_layer_history = config.history.iter().filter(|h| !h.empty_layer).count();
    if base_layer_history == base.layers.len() {
        config
            .history
            .extend(metadata.layers.iter().map(|layer| History {
                created: Some(created.clone()),
                created_by: Some(format!("kiln: layer {}", layer.name)),
                comment: None,
                empty_layer: false,
            }));
    } else {
        config.history.clear();
    }
    config
}
