//! Reading back an image: its layers (joined with Kiln's metadata label, so each layer names the
//! buildpack layer that made it), processes, entrypoint, env and base image.

use serde::Serialize;

use kiln_oci::digest::Digest;
use kiln_oci::source::ImageSource;
use kiln_oci::store::BlobStore;

use crate::error::{IoContext, Result};
use crate::metadata::{BaseMetadata, ImageMetadata, ProcessMetadata, LABEL};

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub image: String,
    pub manifest_digest: Option<Digest>,
    pub architecture: String,
    pub os: String,
    pub created: Option<String>,
    pub layers: Vec<InspectedLayer>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub processes: Vec<ProcessMetadata>,
    pub base: Option<BaseMetadata>,
    /// The Kiln stack the image runs on (distro, packages), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<crate::stack::StackReport>,
    /// Whether the image carries Kiln's metadata label.
    pub built_by_kiln: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectedLayer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
    /// `base`, `go/bin`, `app`, or `unknown` for images Kiln did not build.
    pub made_by: String,
}

/// Inspects an image; its blobs are read into a temporary store that is removed afterwards.
/// `registry` says how a registry image is reached (and `registry.env` where its credentials
/// are).
pub fn inspect(
    source: &ImageSource,
    registry: kiln_registry::ClientOptions,
) -> Result<InspectReport> {
    let scratch = tempfile::tempdir().ctx(|| "creating a temporary directory")?;
    let store = BlobStore::open(scratch.path())?;
    let client = kiln_registry::Client::new(registry);
    let (image, _) =
        crate::registry::load_any(source, &store, &client, crate::events::Events::silent())?;
    let runtime = &image.config.config;
    let metadata: Option<ImageMetadata> = runtime
        .labels
        .get(LABEL)
        .and_then(|json| serde_json::from_str(json).ok());
    let base_count = metadata
        .as_ref()
        .map(|m| m.layers.len())
        .map(|ours| image.layers.len().saturating_sub(ours));
    let layers = image
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let made_by = match (&metadata, base_count) {
                (Some(m), Some(base)) if i >= base => m
                    .layers
                    .get(i - base)
                    .filter(|ours| ours.diff_id == l.diff_id)
                    .map_or("unknown".to_owned(), |ours| ours.name.clone()),
                (Some(_), Some(_)) => "base".to_owned(),
                _ => "unknown".to_owned(),
            };
            InspectedLayer {
                digest: l.descriptor.digest.clone(),
                diff_id: l.diff_id.clone(),
                media_type: l.descriptor.media_type.clone(),
                size: l.descriptor.size,
                made_by,
            }
        })
        .collect();
    Ok(InspectReport {
        image: source.to_string(),
        manifest_digest: image.manifest_digest.clone(),
        architecture: image.config.architecture.clone(),
        os: image.config.os.clone(),
        created: image.config.created.clone(),
        layers,
        entrypoint: runtime.entrypoint.clone(),
        cmd: runtime.cmd.clone(),
        working_dir: runtime.working_dir.clone(),
        user: runtime.user.clone(),
        env: runtime.env.clone(),
        processes: metadata
            .as_ref()
            .map(|m| m.processes.clone())
            .unwrap_or_default(),
        base: metadata.as_ref().and_then(|m| m.base.clone()),
        stack: crate::stack::from_config(&image.config),
        built_by_kiln: metadata.is_some(),
    })
}
