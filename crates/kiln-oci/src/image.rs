//! Assembling an image: the config and manifest blobs for a list of layers, written canonically.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::Result;
use crate::spec::{ImageConfig, ImageManifest, LayerRecord};
use crate::store::BlobStore;

/// An image whose config, manifest and layer blobs are all in a [`BlobStore`].
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: ImageManifest,
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    pub config: ImageConfig,
    pub config_digest: Digest,
}

/// Writes `config` (its `rootfs` set from `layers`' diff_ids, `type = "layers"`) and a manifest
/// listing `layers` in order, both as canonical JSON, into `store`. Every layer blob must already
/// be in the store.
pub fn assemble(
    store: &BlobStore,
    config: ImageConfig,
    layers: &[LayerRecord],
    manifest_annotations: BTreeMap<String, String>,
) -> Result<Image> {
    let _ = (store, config, layers, manifest_annotations);
    todo!()
}
