//! Assembling an image: the config and manifest blobs for a list of layers, written canonically.
//!
//! The manifest is always an OCI manifest. Base layers that came with Docker media types keep their
//! bytes and digest but are listed under the equivalent OCI media type, because a manifest must
//! never mix Docker and OCI media types (registries and runtimes reject or mis-handle that).

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::json;
use crate::spec::{
    Descriptor, ImageConfig, ImageManifest, LayerRecord, RootFs, DOCKER_MEDIA_TYPE_LAYER_GZIP,
    DOCKER_MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_MANIFEST,
};
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
    mut config: ImageConfig,
    layers: &[LayerRecord],
    manifest_annotations: BTreeMap<String, String>,
) -> Result<Image> {
    for (i, layer) in layers.iter().enumerate() {
        if !store.contains(&layer.descriptor.digest) {
            return Err(Error::InvalidImage {
                image: format!("being assembled in {}", store.root().display()),
                why: format!(
                    "layer {i} ({}, diff_id {}) is not in the blob store",
                    layer.descriptor.digest, layer.diff_id
                ),
            });
        }
    }
    config.rootfs = RootFs {
        kind: "layers".to_owned(),
        diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
    };
    let config_bytes = json::to_canonical_vec(&config);
    let config_digest = store.put_bytes(&config_bytes)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST.to_owned(),
        config: Descriptor {
            media_type: MEDIA_TYPE_CONFIG.to_owned(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: oci_layer_media_type(&l.descriptor.media_type).to_owned(),
                ..l.descriptor.clone()
            })
            .collect(),
        annotations: manifest_annotations,
        artifact_type: None,
        subject: None,
    };
    let manifest_bytes = json::to_canonical_vec(&manifest);
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    Ok(Image {
        manifest,
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        config,
        config_digest,
    })
}

/// The OCI media type for the same layer bytes (Docker's gzip/tar layer types are byte-for-byte
/// the OCI ones); other types pass through.
fn oci_layer_media_type(media_type: &str) -> &str {
    match media_type {
        DOCKER_MEDIA_TYPE_LAYER_GZIP => MEDIA_TYPE_LAYER_GZIP,
        DOCKER_MEDIA_TYPE_LAYER_TAR => MEDIA_TYPE_LAYER_TAR,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ANNOTATION_CREATED;

    fn layer(store: &BlobStore, bytes: &[u8], media_type: &str) -> LayerRecord {
        let digest = store.put_bytes(bytes).unwrap();
        LayerRecord {
            descriptor: Descriptor {
                media_type: media_type.to_owned(),
                digest,
                size: bytes.len() as u64,
                annotations: BTreeMap::new(),
                platform: None,
                artifact_type: None,
            },
            diff_id: Digest::of(b"uncompressed"),
        }
    }

    #[test]
    fn assemble_writes_canonical_config_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let layers = vec![
            layer(&store, b"base", DOCKER_MEDIA_TYPE_LAYER_GZIP),
            layer(&store, b"app", MEDIA_TYPE_LAYER_GZIP),
        ];
        let annotations = BTreeMap::from([(ANNOTATION_CREATED.to_owned(), "x".to_owned())]);
        let image = assemble(
            &store,
            ImageConfig::for_host(),
            &layers,
            annotations.clone(),
        )
        .unwrap();

        let config_bytes = store.read_verified(&image.config_digest).unwrap();
        assert_eq!(config_bytes, json::to_canonical_vec(&image.config));
        let config: ImageConfig = serde_json::from_slice(&config_bytes).unwrap();
        assert_eq!(config.rootfs.kind, "layers");
        assert_eq!(
            config.rootfs.diff_ids,
            vec![layers[0].diff_id.clone(), layers[1].diff_id.clone()]
        );

        let manifest_bytes = store.read_verified(&image.manifest_digest).unwrap();
        assert_eq!(manifest_bytes.len() as u64, image.manifest_size);
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest, image.manifest);
        assert_eq!(manifest.schema_version, 2);
        assert_eq!(manifest.media_type, MEDIA_TYPE_MANIFEST);
        assert_eq!(manifest.config.media_type, MEDIA_TYPE_CONFIG);
        assert_eq!(manifest.config.size, config_bytes.len() as u64);
        assert_eq!(manifest.annotations, annotations);
        // Docker layer types become their OCI equivalents; digests stay.
        assert_eq!(manifest.layers[0].media_type, MEDIA_TYPE_LAYER_GZIP);
        assert_eq!(manifest.layers[0].digest, layers[0].descriptor.digest);
        assert_eq!(manifest.layers[1], layers[1].descriptor);
        let text = String::from_utf8(manifest_bytes).unwrap();
        assert!(text.starts_with(r#"{"annotations":"#), "{text}");

        // Same inputs, same digests.
        let again = assemble(&store, ImageConfig::for_host(), &layers, annotations).unwrap();
        assert_eq!(again.manifest_digest, image.manifest_digest);
    }

    #[test]
    fn missing_layer_blob_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut missing = layer(&store, b"x", MEDIA_TYPE_LAYER_GZIP);
        missing.descriptor.digest = Digest::of(b"not stored");
        let err = assemble(
            &store,
            ImageConfig::for_host(),
            &[missing.clone()],
            BTreeMap::new(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("layer 0") && msg.contains(missing.descriptor.digest.as_str()),
            "{msg}"
        );
    }
}
