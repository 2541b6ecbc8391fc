//! The SBOM an image carries (its `kiln/sbom` layer, [`crate::export::SBOM_LAYER`]) across a
//! rebase: read back from the layer, its Debian packages replaced by the new base's, and the
//! layer made again the way a build makes it, so that a rebase onto today's stack gives the
//! image a build on that stack would give, SBOM included.

use std::io::{Read, Write};

use serde::Serialize;

use kiln_oci::digest::Digest;
use kiln_oci::layer::{Compression, LayerOptions};
use kiln_oci::source::LoadedImage;
use kiln_oci::spec::LayerRecord;
use kiln_oci::store::BlobStore;
use kiln_sbom::{cyclonedx, Component, Document, Ecosystem, Inventory};

use super::refused;
use crate::cache::BuildCache;
use crate::error::{IoContext, Result};
use crate::events::Events;
use crate::export::{sbom_layer_entries, SBOM_LAYER};
use crate::layer_cache;
use crate::metadata::ImageMetadata;
use crate::stack::StackReport;

/// A Kiln SBOM layer is two JSON documents; anything much larger is not one.
const MAX_LAYER_SIZE: u64 = 256 << 20;

/// What `--json` says about the rebased image's SBOM.
#[derive(Debug, Clone, Serialize)]
pub struct SbomReport {
    /// Whether the `kiln/sbom` layer was made again (`false`: the image was kept as it was).
    pub refreshed: bool,
    /// Components the SBOM lists, all ecosystems.
    pub components: usize,
    /// Of these, the base's Debian packages.
    pub debian_packages: usize,
    /// Whether the base's packages are known (it carries the `dev.kiln.stack` label). When they
    /// are not, the SBOM lists no Debian package (a warning says so).
    pub base_packages_known: bool,
    /// The `kiln/sbom` layer (compressed digest).
    pub layer: Digest,
}

impl SbomReport {
    fn of(inventory: &Inventory, refreshed: bool, known: bool, layer: &LayerRecord) -> Self {
        SbomReport {
            refreshed,
            components: inventory.components().len(),
            debian_packages: inventory
                .components()
                .iter()
                .filter(|c| c.ecosystem == Ecosystem::Debian)
                .count(),
            base_packages_known: known,
            layer: layer.descriptor.digest.clone(),
        }
    }
}

/// The image's SBOM layer as found.
pub(super) struct ImageSbom {
    /// Its position among Kiln's layers (the label's `layers`).
    pub index: usize,
    layer: LayerRecord,
    spdx: Vec<u8>,
    cyclonedx: Vec<u8>,
    /// The layer's tar, its compression kind (level unknown) and its entries' mtime: what a
    /// refresh needs to make the new layer as the build made this one.
    tar: Vec<u8>,
    kind: Compression,
    mtime: u64,
}

/// The `kiln/sbom` layer of `image` (whose Kiln layers start at `base_count`), when the label
/// lists one.
pub(super) fn find(
    image: &LoadedImage,
    metadata: &ImageMetadata,
    base_count: usize,
    store: &BlobStore,
) -> Result<Option<ImageSbom>> {
    let Some(index) = metadata.layers.iter().position(|l| l.name == SBOM_LAYER) else {
        return Ok(None);
    };
    let layer = image.layers[base_count + index].clone();
    let fail = |why: String| {
        refused(
            image,
            format!("layer {SBOM_LAYER} ({}): {why}", layer.descriptor.digest),
        )
    };
    if layer.descriptor.size > MAX_LAYER_SIZE {
        return Err(fail(format!(
            "{} bytes, more than an SBOM layer can be",
            layer.descriptor.size
        )));
    }
    let blob = store.read_verified(&layer.descriptor.digest)?;
    let compression = compression_of(&layer.descriptor.media_type).ok_or_else(|| {
        fail(format!(
            "unknown media type {}",
            layer.descriptor.media_type
        ))
    })?;
    let tar = decompress(&blob, compression).map_err(|e| fail(format!("decompressing: {e}")))?;
    let mut spdx = None;
    let mut cdx = None;
    let mut read = || -> std::io::Result<()> {
        let mut archive = tar::Archive::new(tar.as_slice());
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = path.trim_start_matches("./").trim_start_matches('/');
            let slot = match path.strip_prefix(kiln_sbom::IMAGE_DIR) {
                Some(name) if name == format!("/{}", kiln_sbom::SPDX_FILE) => &mut spdx,
                Some(name) if name == format!("/{}", kiln_sbom::CYCLONEDX_FILE) => &mut cdx,
                _ => continue,
            };
            // Every entry of a layer Kiln makes has the build's mtime.
            let mtime = entry.header().mtime()?;
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            *slot = Some((bytes, mtime));
        }
        Ok(())
    };
    read().map_err(|e| fail(format!("reading its tar: {e}")))?;
    let missing = |name: &str| fail(format!("no {}/{name} in it", kiln_sbom::IMAGE_DIR));
    let (spdx, _) = spdx.ok_or_else(|| missing(kiln_sbom::SPDX_FILE))?;
    let (cyclonedx, mtime) = cdx.ok_or_else(|| missing(kiln_sbom::CYCLONEDX_FILE))?;
    Ok(Some(ImageSbom {
        index,
        layer,
        spdx,
        cyclonedx,
        tar,
        kind: compression,
        mtime,
    }))
}

impl ImageSbom {
    /// The inventory the layer's CycloneDX document lists.
    fn inventory(&self, image: &LoadedImage) -> Result<Inventory> {
        cyclonedx::read(&self.cyclonedx).map_err(|e| {
            refused(
                image,
                format!(
                    "layer {SBOM_LAYER} ({}): {}: {e}",
                    self.layer.descriptor.digest,
                    kiln_sbom::CYCLONEDX_FILE
                ),
            )
        })
    }

    /// The image's documents as they are, to attach to it on `--publish`.
    pub(super) fn documents(&self) -> [Document; 2] {
        kiln_sbom::serialized(self.spdx.clone(), self.cyclonedx.clone())
    }

    /// The image is kept as it is: its documents, as they are, into `dir` when asked.
    pub(super) fn kept(
        &self,
        image: &LoadedImage,
        dir: Option<&std::path::Path>,
        ev: Events<'_>,
    ) -> Result<SbomReport> {
        let inventory = self.inventory(image)?;
        if let Some(dir) = dir {
            kiln_sbom::write_documents(dir, &self.documents())
                .ctx(|| format!("writing the SBOMs into {}", dir.display()))?;
            ev.note(format!(
                "sbom: {} components in {}",
                inventory.components().len(),
                dir.display()
            ));
        }
        // Kept only when the image's own stack is up to date: its packages are known.
        Ok(SbomReport::of(&inventory, false, true, &self.layer))
    }

    /// The SBOM with the Debian packages of `base` (the new base's stack; `None`: unknown, so
    /// none are listed), everything else and the subject as they were, created at `created`
    /// (the image's, which a rebase keeps); its layer made as the build made the old one.
    pub(super) fn refresh(
        &self,
        image: &LoadedImage,
        base: Option<&StackReport>,
        created: &str,
        cache: &BuildCache,
        ev: Events<'_>,
    ) -> Result<Refreshed> {
        let old = self.inventory(image)?;
        let mut components: Vec<Component> = old
            .components()
            .iter()
            .filter(|c| c.ecosystem != Ecosystem::Debian)
            .cloned()
            .collect();
        match base {
            Some(stack) => components.extend(crate::sbom::debian_components(stack)),
            None => ev.warn(format!(
                "sbom: the new base's packages are unknown (it has no {} label): the SBOM \
                 lists no Debian package",
                crate::stack::LABEL
            )),
        }
        let inventory = Inventory::new(old.subject.clone(), created, components);
        let documents = kiln_sbom::documents(&inventory);
        let scratch = cache.scratch_dir()?;
        let docs = scratch.path().join("sbom");
        kiln_sbom::write_documents(&docs, &documents)
            .ctx(|| format!("writing {}", docs.display()))?;
        let entries = sbom_layer_entries(&docs)?;
        // Only a refresh needs the build's compression level, which takes recompressing to find.
        let options = LayerOptions {
            mtime: self.mtime,
            compression: build_compression(self.kind, &self.tar, &self.layer.descriptor.digest),
            ..LayerOptions::default()
        };
        let (layer, _) = layer_cache::layer(cache, SBOM_LAYER, &entries, &options, false, ev)?;
        let report = SbomReport::of(&inventory, true, base.is_some(), &layer);
        ev.note(format!(
            "sbom: refreshed: {} components, {} of them Debian packages",
            report.components, report.debian_packages,
        ));
        Ok(Refreshed {
            layer,
            report,
            documents,
        })
    }
}

/// A refreshed SBOM and its layer.
pub(super) struct Refreshed {
    pub layer: LayerRecord,
    pub report: SbomReport,
    /// Serialized once: the layer's, `--sbom-dir`'s and the referrers' bytes.
    pub documents: [Document; 2],
}

impl Refreshed {
    /// Writes the documents into `dir` (`--sbom-dir`), as a build does.
    pub(super) fn write(&self, dir: &std::path::Path, ev: Events<'_>) -> Result<()> {
        kiln_sbom::write_documents(dir, &self.documents)
            .ctx(|| format!("writing the SBOMs into {}", dir.display()))?;
        ev.note(format!(
            "sbom: {} components in {}",
            self.report.components,
            dir.display()
        ));
        Ok(())
    }
}

fn compression_of(media_type: &str) -> Option<Compression> {
    if media_type.ends_with("gzip") {
        Some(Compression::DEFAULT)
    } else if media_type.ends_with("zstd") {
        Some(Compression::Zstd { level: 3 })
    } else if media_type.ends_with(".tar") {
        Some(Compression::None)
    } else {
        None
    }
}

fn decompress(blob: &[u8], compression: Compression) -> std::io::Result<Vec<u8>> {
    let reader: Box<dyn Read + '_> = match compression {
        Compression::None => return Ok(blob.to_vec()),
        Compression::Gzip { .. } => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::new(blob)?),
    };
    let mut tar = Vec::new();
    reader.take(MAX_LAYER_SIZE + 1).read_to_end(&mut tar)?;
    if tar.len() as u64 > MAX_LAYER_SIZE {
        return Err(std::io::Error::other(format!(
            "more than {MAX_LAYER_SIZE} bytes uncompressed"
        )));
    }
    Ok(tar)
}

/// The compression level the build used (`kiln build --compression`), found by compressing the
/// layer's tar at each level until one gives the layer's digest: the image does not record it,
/// and a refreshed layer compressed otherwise would differ from the one a build makes. The
/// default level is tried first; when several levels give the same bytes for this tar, the
/// first is taken. A layer no level reproduces (another compressor made it) gets the default
/// level of its kind.
fn build_compression(kind: Compression, tar: &[u8], digest: &Digest) -> Compression {
    let candidates: Vec<Compression> = match kind {
        Compression::None => return kind,
        Compression::Gzip { .. } => std::iter::once(kind)
            .chain((0..=9).map(|level| Compression::Gzip { level }))
            .collect(),
        Compression::Zstd { .. } => std::iter::once(kind)
            .chain((1..=19).map(|level| Compression::Zstd { level }))
            .collect(),
    };
    let compress = |compression: Compression| -> std::io::Result<Vec<u8>> {
        match compression {
            Compression::Gzip { level } => {
                let mut gz = kiln_oci::compress::ParallelGzWriter::new(Vec::new(), level)?;
                gz.write_all(tar)?;
                gz.finish()
            }
            Compression::Zstd { level } => zstd::stream::encode_all(tar, level),
            Compression::None => Ok(tar.to_vec()),
        }
    };
    candidates
        .into_iter()
        .find(|&c| compress(c).is_ok_and(|bytes| &Digest::of(&bytes) == digest))
        .unwrap_or(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::layer::{normalize, write_layer, Entry, EntryKind};

    /// A layer of one file made with `compression`: its digest and tar.
    fn layer(
        store: &BlobStore,
        dir: &std::path::Path,
        compression: Compression,
    ) -> (Digest, Vec<u8>) {
        let file = dir.join("doc.json");
        let text: String = (0..2000)
            .map(|i| format!("{{\"n\": {}}}\n", i * 7919 % 1000))
            .collect();
        std::fs::write(&file, &text).unwrap();
        let entries = vec![Entry {
            path: "layers/kiln/sbom/doc.json".into(),
            kind: EntryKind::file(&file, text.len() as u64),
            mode: 0o644,
        }];
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let record = write_layer(store, &normalize(entries).unwrap(), &opts).unwrap();
        let blob = store.read_verified(&record.descriptor.digest).unwrap();
        let kind = compression_of(&record.descriptor.media_type).unwrap();
        let tar = decompress(&blob, kind).unwrap();
        (record.descriptor.digest, tar)
    }

    #[test]
    fn build_compression_finds_a_level_that_makes_the_layer_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        for made in [
            Compression::Gzip { level: 9 },
            Compression::Gzip { level: 1 },
            Compression::DEFAULT,
            Compression::Zstd { level: 12 },
            Compression::None,
        ] {
            let (digest, tar) = layer(&store, dir.path(), made);
            let kind = compression_of(made.media_type()).unwrap();
            let found = build_compression(kind, &tar, &digest);
            // Levels that give the same bytes are as good as the one used.
            assert_eq!(
                layer(&store, dir.path(), found).0,
                digest,
                "{made:?}: {found:?}"
            );
            if made != Compression::DEFAULT {
                assert_ne!(found, Compression::DEFAULT, "{made:?}");
            }
        }
        // No level reproduces it: the default of its kind.
        let (_, tar) = layer(&store, dir.path(), Compression::Gzip { level: 9 });
        let other = Digest::of(b"another compressor's bytes");
        assert_eq!(
            build_compression(Compression::DEFAULT, &tar, &other),
            Compression::DEFAULT
        );
    }
}
