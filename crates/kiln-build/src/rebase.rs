//! `kiln rebase`: put an image Kiln built on a new run image without running any build step.
//!
//! The image's `dev.kiln.metadata` label says which layers Kiln made (the top ones) and what the
//! base was (layer count and top layer). Rebase checks that the image still matches that record,
//! keeps Kiln's layers verbatim (same blobs, same digests), puts them on the new base's layers,
//! and rewrites the config with the same rules a build uses ([`crate::export::app_config`]): the
//! new base's env and user, then Kiln's launch env, working dir, entrypoint, label and history.
//!
//! With no new base given, the image is rebased onto a newer build of its own Kiln stack (its
//! `dev.kiln.stack` label: distro, flavour, run packages), resolved fresh against the mirror or
//! taken from a `kiln.lock` ([`crate::stack::restack`]); the result is what a build on that
//! stack would have made. When no package changed the image is kept as it is (same digest). An
//! image that does not run on Kiln's stack is refused. A stack rebase verifies, as a build does,
//! that the default process can start before anything is written.
//!
//! An image built with `--sbom-dir` carries its SBOM in the `kiln/sbom` layer, which lists the
//! base's Debian packages: that one layer is made again ([`sbom`]) with the new base's packages,
//! so the SBOM never describes the base the image left.

mod sbom;

use crate::events::{Cancel, Events, Observer, Phase};
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use kiln_oci::digest::Digest;
use kiln_oci::image;
use kiln_oci::reference::Reference;
use kiln_oci::source::{ImageSource, LoadedImage};
use kiln_oci::spec::{LayerRecord, ANNOTATION_CREATED};

use crate::cache::BuildCache;
use crate::error::{Error, Result};
use crate::export::{
    app_config, config_platform, image_annotations, platform_name, same_platform, verify_image,
    write_output,
};
use crate::metadata::{ImageMetadata, LABEL};
use crate::registry::{load_any, publish_with, sbom_artifacts, Published};
use crate::stack::{self, RestackReport, StackReport};
use crate::OutputFormat;

pub use sbom::SbomReport;

#[derive(Debug, Clone)]
pub struct RebaseOptions {
    /// The image to rebase (built by Kiln): a local archive/layout or a registry reference.
    pub image: ImageSource,
    /// The new base; `None`: a newer build of the image's own Kiln stack.
    pub run_image: Option<ImageSource>,
    /// With no `run_image`: the stack's packages from this `kiln.lock` instead of a fresh
    /// resolution.
    pub lock: Option<PathBuf>,
    /// `KILN_DEBIAN_*` settings for a stack rebase (mirror, cache, keyring, index age).
    pub kiln_env: BTreeMap<String, String>,
    pub output: Option<PathBuf>,
    pub format: OutputFormat,
    /// Names recorded in the written archive: one `index.json` entry per name, all in
    /// `RepoTags`.
    pub tags: Vec<Reference>,
    /// Push the rebased image to each, in order.
    pub publish: Vec<Reference>,
    /// Write the rebased image's SBOM documents here (as `kiln build --sbom-dir`); the image
    /// must carry an SBOM.
    pub sbom_dir: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub registry: kiln_registry::ClientOptions,
    /// Stops the rebase at its next checkpoint ([`crate::events::Cancel`]).
    pub cancel: Cancel,
}

#[derive(Debug, Clone, Serialize)]
pub struct RebaseReport {
    pub output: Option<PathBuf>,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// diff_ids of the base layers taken out and put in.
    pub old_base_layers: Vec<Digest>,
    pub new_base_layers: Vec<Digest>,
    /// Kiln's layers (compressed digests), kept verbatim but for a refreshed `kiln/sbom`.
    pub app_layers: Vec<Digest>,
    /// A rebase onto a newer build of the image's stack: which packages changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<RestackReport>,
    /// The image's SBOM (its `kiln/sbom` layer), when it carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<SbomReport>,
    /// The push of the first `--publish`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<Published>,
    /// Every `--publish` push, in the order given (the first is also `push`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<Published>,
}

/// Moves the image onto a new base, telling `observer` what happens; stops with
/// [`Error::Cancelled`] once `opts.cancel` is cancelled.
pub fn rebase(opts: &RebaseOptions, observer: &dyn Observer) -> Result<RebaseReport> {
    let ev = Events::new(observer, &opts.cancel);
    ev.phase(Phase::Rebase, || rebase_with(opts, ev))
}

fn rebase_with(opts: &RebaseOptions, ev: Events<'_>) -> Result<RebaseReport> {
    let cache = BuildCache::open(&opts.cache_dir, ev)?;
    let client = kiln_registry::Client::new(opts.registry.clone());
    let (image, _) = load_any(&opts.image, &cache.store, &client, ev)?;
    let (metadata, base_count) = kiln_layers(&image)?;
    let image_sbom = sbom::find(&image, &metadata, base_count, &cache.store)?;
    if let (Some(dir), None) = (&opts.sbom_dir, &image_sbom) {
        return Err(refused(
            &image,
            format!(
                "--sbom-dir {}: the image carries no SBOM (no {} layer): build it with --sbom-dir",
                dir.display(),
                crate::export::SBOM_LAYER
            ),
        ));
    }
    let (new_base, restacked) = match &opts.run_image {
        Some(run_image) => (load_any(run_image, &cache.store, &client, ev)?.0, None),
        None => {
            let label = stack_label(&image, &metadata, base_count)?;
            let (new_base, report) = stack::restack(
                &label,
                opts.lock.as_deref(),
                &opts.kiln_env,
                &opts.cache_dir,
                &cache.store,
                ev,
            )?;
            match new_base {
                Some(new_base) => (new_base, Some(report)),
                None => {
                    let kept = UpToDate {
                        image: &image,
                        base_count,
                        report,
                        sbom: image_sbom.as_ref(),
                    };
                    return unchanged(opts, &cache, &client, kept, ev);
                }
            }
        }
    };
    // Kiln's layers are kept as they are, so the new base must be of their platform.
    let platform = config_platform(&image.config);
    let new_platform = config_platform(&new_base.config);
    let scratch = matches!(new_base.source, ImageSource::Scratch);
    if !scratch && !same_platform(&new_platform, &platform) {
        return Err(Error::Oci(kiln_oci::Error::InvalidImage {
            image: new_base.source.to_string(),
            why: format!(
                "is {} but {} is {}: a rebase keeps the image's own layers, made for {2}",
                platform_name(&new_platform),
                image.source,
                platform_name(&platform)
            ),
        }));
    }
    let mut app_layers: Vec<LayerRecord> = image.layers[base_count..].to_vec();

    let created = created_of(&image);
    let mut metadata = metadata;
    let sbom = match &image_sbom {
        Some(found) => {
            // The new base's packages: the stack it was restacked onto, else what a run image
            // Kiln assembled says of itself.
            let base_stack = match &restacked {
                Some(report) => Some(report.stack.clone()),
                None => stack::from_config(&new_base.config),
            };
            let refreshed = found.refresh(&image, base_stack.as_ref(), &created, &cache, ev)?;
            // The label records the new layer, so the next rebase finds the image consistent.
            metadata.layers[found.index].diff_id = refreshed.layer.diff_id.clone();
            app_layers[found.index] = refreshed.layer.clone();
            Some(refreshed)
        }
        None => None,
    };
    if metadata.launch_env.is_none() {
        // Images from before launch env was recorded: keep what the old image set that the new
        // base does not already say.
        let base_env = &new_base.config.config.env;
        metadata.launch_env = Some(
            image
                .config
                .config
                .env
                .iter()
                .filter(|kv| !base_env.contains(kv))
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
    }
    let mut config = app_config(
        &new_base,
        created.clone(),
        image.config.config.entrypoint.clone(),
        metadata,
    );
    if scratch {
        config.os = platform.os;
        config.architecture = platform.architecture;
        config.variant = platform.variant;
    }
    if restacked.is_some() {
        // New packages under the app: check that its default process still starts.
        let base = new_base.layers.iter().map(|l| ("the new stack", l));
        let app = app_layers.iter().map(|l| ("the image", l));
        verify_image(&cache, base.chain(app), Vec::new(), &config, ev)?;
    }
    let records: Vec<LayerRecord> = new_base
        .layers
        .iter()
        .chain(app_layers.iter())
        .cloned()
        .collect();
    let rebased = image::assemble(
        &cache.store,
        config,
        &records,
        image_annotations(created.clone(), &new_base),
    )?;
    if let (Some(dir), Some(refreshed)) = (&opts.sbom_dir, &sbom) {
        refreshed.write(dir, ev)?;
    }
    let sbom_documents = sbom
        .as_ref()
        .map(|refreshed| (&refreshed.documents[..], created.as_str()));
    let pushes = write_and_publish(opts, &cache, &client, &rebased, sbom_documents, ev)?;
    Ok(RebaseReport {
        output: opts.output.clone(),
        manifest_digest: rebased.manifest_digest,
        config_digest: rebased.config_digest,
        old_base_layers: image.layers[..base_count]
            .iter()
            .map(|l| l.diff_id.clone())
            .collect(),
        new_base_layers: new_base.layers.iter().map(|l| l.diff_id.clone()).collect(),
        app_layers: app_layers
            .iter()
            .map(|l| l.descriptor.digest.clone())
            .collect(),
        stack: restacked,
        sbom: sbom.map(|refreshed| refreshed.report),
        push: pushes.first().cloned(),
        pushes,
    })
}

/// Writes `image` to `--output` (named by every `--tag`) and pushes it to each `--publish`, in
/// order, as asked.
fn write_and_publish(
    opts: &RebaseOptions,
    cache: &BuildCache,
    client: &kiln_registry::Client,
    image: &image::Image,
    sbom: Option<(&[kiln_sbom::Document], &str)>,
    ev: Events<'_>,
) -> Result<Vec<Published>> {
    if let Some(output) = &opts.output {
        write_output(&cache.store, image, opts.format, &opts.tags, output, ev)?;
    }
    let artifacts = match sbom {
        Some((documents, created)) if !opts.publish.is_empty() => {
            sbom_artifacts(&cache.store, image, documents, created)?
        }
        _ => Vec::new(),
    };
    opts.publish
        .iter()
        .map(|target| {
            publish_with(
                client,
                &cache.store,
                image,
                target,
                opts.run_image.as_ref(),
                &artifacts,
                ev,
            )
        })
        .collect()
}

/// The image's creation time, which a rebase keeps.
fn created_of(image: &LoadedImage) -> String {
    image
        .config
        .created
        .clone()
        .or_else(|| image.annotations.get(ANNOTATION_CREATED).cloned())
        .unwrap_or_else(|| kiln_oci::spec::rfc3339(kiln_oci::layer::DEFAULT_MTIME))
}

/// The stack an image runs on, from its label, after checking that its base layers are that
/// stack's (an image built on a Kiln-built image carries the label too, over more layers).
fn stack_label(
    image: &LoadedImage,
    metadata: &ImageMetadata,
    base_count: usize,
) -> Result<StackReport> {
    let fail = |why: String| refused(image, format!("cannot rebase onto a newer stack: {why}"));
    let json = image
        .config
        .config
        .labels
        .get(stack::LABEL)
        .ok_or_else(|| {
            fail(format!(
                "no {} label: it does not run on Kiln's stack; pass --run-image NEW",
                stack::LABEL
            ))
        })?;
    let label: StackReport = serde_json::from_str(json)
        .map_err(|e| fail(format!("the {} label is not valid: {e}", stack::LABEL)))?;
    let stack_name = ImageSource::Stack(format!("{}/{}", label.distro, label.flavour)).to_string();
    let recorded = metadata.base.as_ref().and_then(|b| b.name.as_deref());
    let mut layers: Vec<&str> = label.packages.iter().map(|p| p.layer.as_str()).collect();
    layers.dedup();
    if recorded != Some(stack_name.as_str()) || layers.len() != base_count {
        return Err(fail(format!(
            "its base is {} ({base_count} layers), not {stack_name} ({} layers); pass --run-image NEW",
            recorded.unwrap_or("(unnamed)"),
            layers.len()
        )));
    }
    Ok(label)
}

/// An image whose stack is up to date, and what is known of it.
struct UpToDate<'a> {
    image: &'a LoadedImage,
    base_count: usize,
    report: RestackReport,
    sbom: Option<&'a sbom::ImageSbom>,
}

/// No package changed: the image as it is (same digest, SBOM layer included), written and
/// pushed as asked.
fn unchanged(
    opts: &RebaseOptions,
    cache: &BuildCache,
    client: &kiln_registry::Client,
    kept: UpToDate<'_>,
    ev: Events<'_>,
) -> Result<RebaseReport> {
    let UpToDate {
        image,
        base_count,
        report,
        sbom: found,
    } = kept;
    let same = image::assemble(
        &cache.store,
        image.config.clone(),
        &image.layers,
        image.annotations.clone(),
    )?;
    if image.manifest_digest.as_ref() != Some(&same.manifest_digest) {
        let had = image.manifest_digest.as_ref();
        return Err(refused(
            image,
            format!(
                "its stack is up to date, but its manifest does not read back as Kiln wrote it ({}, not {})",
                same.manifest_digest,
                had.map_or("none".to_owned(), |d| d.to_string())
            ),
        ));
    }
    let sbom = found
        .map(|found| found.kept(image, opts.sbom_dir.as_deref(), ev))
        .transpose()?;
    let documents = found.map(sbom::ImageSbom::documents);
    let created = created_of(image);
    let sbom_documents = documents.as_ref().map(|d| (&d[..], created.as_str()));
    let pushes = write_and_publish(opts, cache, client, &same, sbom_documents, ev)?;
    let base: Vec<Digest> = image.layers[..base_count]
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    Ok(RebaseReport {
        output: opts.output.clone(),
        manifest_digest: same.manifest_digest,
        config_digest: same.config_digest,
        old_base_layers: base.clone(),
        new_base_layers: base,
        app_layers: image.layers[base_count..]
            .iter()
            .map(|l| l.descriptor.digest.clone())
            .collect(),
        stack: Some(report),
        sbom,
        push: pushes.first().cloned(),
        pushes,
    })
}

/// The image's Kiln metadata and how many base layers lie under Kiln's, after checking both
/// against the image's layers.
fn kiln_layers(image: &LoadedImage) -> Result<(ImageMetadata, usize)> {
    let fail = |why: String| refused(image, format!("cannot rebase: {why}"));
    let label = image
        .config
        .config
        .labels
        .get(LABEL)
        .ok_or_else(|| fail(format!("no {LABEL} label: not built by Kiln")))?;
    let metadata: ImageMetadata = serde_json::from_str(label)
        .map_err(|e| fail(format!("the {LABEL} label is not valid: {e}")))?;
    let ours = metadata.layers.len();
    let base_count = image.layers.len().checked_sub(ours).ok_or_else(|| {
        fail(format!(
            "the label lists {ours} Kiln layers but the image has only {}",
            image.layers.len()
        ))
    })?;
    for (layer, recorded) in image.layers[base_count..].iter().zip(&metadata.layers) {
        if layer.diff_id != recorded.diff_id {
            return Err(fail(format!(
                "layer {} has diff_id {}, but the label records {}",
                recorded.name, layer.diff_id, recorded.diff_id
            )));
        }
    }
    if let Some(base) = &metadata.base {
        let top = image.layers[..base_count].last().map(|l| &l.diff_id);
        if base.layer_count != base_count || top != base.top_layer.as_ref() {
            return Err(fail(format!(
                "its base layers do not match the recorded base {} ({} layers, top {})",
                base.name.as_deref().unwrap_or("(unnamed)"),
                base.layer_count,
                base.top_layer
                    .as_ref()
                    .map_or("none".to_owned(), |d| d.to_string())
            )));
        }
    } else if base_count != 0 {
        return Err(fail(format!(
            "{base_count} base layers but no recorded base to check them against"
        )));
    }
    Ok((metadata, base_count))
}

fn refused(image: &LoadedImage, why: String) -> Error {
    Error::Oci(kiln_oci::Error::InvalidImage {
        image: image.source.to_string(),
        why,
    })
}
