//! Registry glue for the engine: loading an image from wherever its [`ImageSource`] says (local
//! sources through `kiln-oci`, registry references through `kiln-registry`, both into the same
//! blob store) and publishing an assembled image. Registry credentials stay inside the
//! `kiln-registry` client: nothing here passes them to build steps or logs.

use crate::events::Events;

use serde::Serialize;

use std::collections::BTreeMap;

use kiln_oci::image::Image;
use kiln_oci::json;
use kiln_oci::reference::Reference;
use kiln_oci::source::{load_image, ImageSource, LoadedImage};
use kiln_oci::spec::{
    Descriptor, ImageManifest, ANNOTATION_CREATED, EMPTY_JSON, MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_MANIFEST,
};
use kiln_oci::store::BlobStore;
use kiln_registry::{AttachReport, Client, PullStats, PushReport};

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

/// One `--publish`: the image's push and the artifacts attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    #[serde(flatten)]
    pub push: PushReport,
    /// The image's SBOMs, attached as OCI referrers (SPDX, then CycloneDX).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<AttachReport>,
}

/// An artifact manifest about an image, ready to attach: its bytes and what they say.
pub struct Artifact {
    pub manifest: ImageManifest,
    pub bytes: Vec<u8>,
}

/// The SBOM `documents` of `image` as OCI artifacts (image-spec 1.1: empty config, the document
/// as the one layer, `artifactType` its media type, `subject` the image), stored in `store`.
/// Deterministic: the created annotation is `created`, the SBOM's (the image's).
pub fn sbom_artifacts(
    store: &BlobStore,
    image: &Image,
    documents: &[kiln_sbom::Document],
    created: &str,
) -> Result<Vec<Artifact>> {
    let blob = |media_type: &str, bytes: &[u8]| -> Result<Descriptor> {
        Ok(Descriptor {
            media_type: media_type.to_owned(),
            digest: store.put_bytes(bytes)?,
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        })
    };
    let subject = Descriptor {
        media_type: image.manifest.media_type.clone(),
        digest: image.manifest_digest.clone(),
        size: image.manifest_size,
        annotations: BTreeMap::new(),
        platform: None,
        artifact_type: None,
    };
    documents
        .iter()
        .map(|document| {
            let manifest = ImageManifest {
                schema_version: 2,
                media_type: MEDIA_TYPE_MANIFEST.to_owned(),
                config: blob(MEDIA_TYPE_EMPTY, EMPTY_JSON)?,
                layers: vec![blob(document.media_type, &document.bytes)?],
                annotations: BTreeMap::from([(ANNOTATION_CREATED.to_owned(), created.to_owned())]),
                artifact_type: Some(document.media_type.to_owned()),
                subject: Some(subject.clone()),
            };
            let bytes = json::to_canonical_vec(&manifest);
            store.put_bytes(&bytes)?;
            Ok(Artifact { manifest, bytes })
        })
        .collect()
}

/// Pushes `image` to `target` as [`publish`] does, then attaches `artifacts` to it. A registry
/// that refuses artifacts (a 4xx answer other than an authentication or rate limit one) gets
/// a warning, not a failed build: the image itself is pushed.
pub fn publish_with(
    client: &Client,
    store: &BlobStore,
    image: &Image,
    target: &Reference,
    base: Option<&ImageSource>,
    artifacts: &[Artifact],
    ev: Events<'_>,
) -> Result<Published> {
    let push = publish(client, store, image, target, base, ev)?;
    let mut referrers = Vec::with_capacity(artifacts.len());
    for artifact in artifacts {
        match kiln_registry::attach(client, store, target, &artifact.manifest, &artifact.bytes) {
            Ok(report) => {
                let via = match &report.listed {
                    kiln_registry::Listed::ReferrersApi => "the referrers API".to_owned(),
                    kiln_registry::Listed::FallbackTag { tag } => format!("fallback tag {tag}"),
                };
                ev.note(format!(
                    "attached {} to {target} as {} (listed by {via})",
                    report.artifact_type, report.manifest_digest
                ));
                referrers.push(report);
            }
            Err(e) if e.status().is_some_and(refuses_artifacts) => {
                ev.warn(format!(
                    "the SBOM is not attached to {target}: the registry refused it: {e}"
                ));
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Published { push, referrers })
}

/// A 4xx answer that means "not this kind of manifest here", not "try again" or "who are you".
fn refuses_artifacts(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 429)
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
