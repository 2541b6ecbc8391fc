//! Registry glue for the engine: loading an image from wherever its [`ImageSource`] says (local
//! sources through `kiln-oci`, registry references through `kiln-registry`, both into the same
//! blob store) and publishing an assembled image. Registry credentials stay inside the
//! `kiln-registry` client: nothing here passes them to build steps or logs.

use crate::events::Events;

use serde::Serialize;

use kiln_oci::image::Image;
use kiln_oci::reference::Reference;
use kiln_oci::source::{load_image, ImageSource, LoadedImage};
use kiln_oci::spec::Descriptor;
use kiln_oci::store::BlobStore;
use kiln_registry::{Client, PullStats, PushReport};

use crate::error::Result;

/// What was pulled for an image read from a registry.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub reference: String,
    #[serde(flatten)]
    pub stats: PullStats,
}

/// Loads `source` into `store`; registry images are pulled (blobs the store has are not
/// downloaded again).
pub fn load_any(
    source: &ImageSource,
    store: &BlobStore,
    client: &Client,
    ev: Events<'_>,
) -> Result<(LoadedImage, Option<PullReport>)> {
    let ImageSource::Registry(reference) = source else {
        return Ok((load_image(source, store)?, None));
    };
    let (image, stats) = kiln_registry::pull(client, reference, store, &|t| ev.transfer(t))?;
    ev.note(format!(
        "pulled {reference}: {} blobs downloaded ({} bytes), {} already cached",
        stats.blobs_downloaded, stats.bytes_downloaded, stats.blobs_cached
    ));
    Ok((
        image,
        Some(PullReport {
            reference: reference.to_string(),
            stats,
        }),
    ))
}

/// Pushes `image` (its blobs in `store`) to `target`. When `base` came from the same registry,
/// its repository is offered for cross-repository mounts of the base layers.
pub fn publish(
    client: &Client,
    store: &BlobStore,
    image: &Image,
    target: &Reference,
    base: Option<&ImageSource>,
    ev: Events<'_>,
) -> Result<PushReport> {
    let manifest = store.read_verified(&image.manifest_digest)?;
    let blobs: Vec<Descriptor> = std::iter::once(image.manifest.config.clone())
        .chain(image.manifest.layers.iter().cloned())
        .collect();
    let mount_from = match base {
        Some(ImageSource::Registry(b)) if b.registry == target.registry => {
            Some(b.repository.as_str())
        }
        _ => None,
    };
    let report = kiln_registry::push_manifest(
        client,
        store,
        target,
        &manifest,
        &image.manifest.media_type,
        &blobs,
        mount_from,
    )?;
    let s = &report.stats;
    ev.note(format!(
        "pushed {target} ({}): {} blobs uploaded ({} bytes), {} already there, {} mounted",
        report.manifest_digest,
        s.blobs_uploaded,
        s.bytes_uploaded,
        s.blobs_skipped,
        s.blobs_mounted
    ));
    Ok(report)
}
