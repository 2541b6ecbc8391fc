//! `--cache-image`: the build cache shared through a registry, so a fresh CI runner starts from
//! another runner's cache. What travels (see [`crate::cache`] for the directory layout):
//!
//! - the layer records (`layers/<key>.json`) of the layers in the image just built, each with
//!   the layer blob it names, so an unchanged layer is reused without re-tarring or recompressing;
//! - every kept `cache = true` layer directory of the project (`projects/<key>/layers/<id>/<layer>/`)
//!   and every shared one (`shared/<id>/<layer>/`), packed as a deterministic layer tar (an
//!   unchanged directory gives the same blob, which a push skips). The cache image belongs to one
//!   app, so imported layers go to the building project's slots whatever project exported them.
//!
//! They are stored as one OCI manifest at the cache reference: an artifact whose config has Kiln's
//! own media type and whose "layers" are annotated with what each one is. Import never lets a tar
//! entry escape the directory it is unpacked into, and keeps local state that already exists
//! (the local cache is at least as fresh as a shared one).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufReader;

use crate::events::Events;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use kiln_oci::digest::Digest;
use kiln_oci::layer::{self, LayerOptions};
use kiln_oci::reference::Reference;
use kiln_oci::spec::{
    Descriptor, ImageManifest, LayerRecord, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST,
};
use kiln_registry::{Client, PullStats, PushStats};

use crate::cache::{BuildCache, ProjectId};
use crate::error::{Error, IoContext, Result};
use crate::layer_cache;

const CONFIG_MEDIA_TYPE: &str = "application/vnd.dev.kiln.cache.config.v1+json";
const RECORD_MEDIA_TYPE: &str = "application/vnd.dev.kiln.cache.record.v1+json";
/// On a record blob: the content key (hex) it is filed under.
const ANNOTATION_RECORD: &str = "dev.kiln.cache.record";
/// On a layer blob named by a record: that record's content key.
const ANNOTATION_RECORD_BLOB: &str = "dev.kiln.cache.record-blob";
/// On a packed cache layer directory: `<buildpack>/<layer>`.
const ANNOTATION_CACHE_LAYER: &str = "dev.kiln.cache.layer";
/// On a packed cache layer directory that is shared by every app (`shared = true`): `true`.
const ANNOTATION_CACHE_LAYER_SHARED: &str = "dev.kiln.cache.layer.shared";

/// What `--cache-image` did, for `--json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheImageReport {
    pub reference: String,
    /// Layer records and cache layer directories taken from the cache image.
    pub imported_records: usize,
    pub imported_layers: usize,
    pub pull: PullStats,
    /// Records and cache layers written to the cache image after the build.
    pub exported_records: usize,
    pub exported_layers: usize,
    pub push: PushStats,
    /// Wall time of the import before the build and of the export after it.
    pub import_ms: u64,
    pub export_ms: u64,
}

/// Brings the cache image's records and cache layers into `cache` (a missing cache image is
/// not an error: the first build creates it).
pub fn import(
    client: &Client,
    cache: &BuildCache,
    project: &ProjectId,
    reference: &Reference,
    ev: Events<'_>,
) -> Result<CacheImageReport> {
    let started = Instant::now();
    let mut report = CacheImageReport {
        reference: reference.to_string(),
        ..CacheImageReport::default()
    };
    let Some((digest, manifest)) =
        kiln_registry::pull_artifact_manifest(client, reference, &cache.store)?
    else {
        ev.note(format!("cache image {reference}: none yet"));
        return Ok(report);
    };
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(invalid(
            reference,
            format!(
                "manifest {digest} is not a Kiln cache image (config media type {:?})",
                manifest.config.media_type
            ),
        ));
    }
    let mut wanted = Vec::new();
    let mut records = Vec::new();
    let mut layers = Vec::new();
    for d in &manifest.layers {
        if let Some(key) = d.annotations.get(ANNOTATION_RECORD) {
            let key = Digest::parse(&format!("sha256:{key}"))
                .map_err(|_| invalid(reference, format!("bad record key {key:?}")))?;
            let usable = cache
                .read_record(&key)
                .is_some_and(|r| cache.store.contains(&r.descriptor.digest));
            if !usable {
                wanted.push(d.clone());
                records.push((key, d));
            }
        } else if let Some(name) = d.annotations.get(ANNOTATION_CACHE_LAYER) {
            let (buildpack, layer) = cache_layer_name(reference, name)?;
            let shared = d
                .annotations
                .get(ANNOTATION_CACHE_LAYER_SHARED)
                .is_some_and(|v| v == "true");
            let slot = cache.slot(project, buildpack, layer, shared);
            if !slot.kept.exists() {
                wanted.push(d.clone());
                layers.push((slot, d));
            }
        }
    }
    // Blobs named by the records we take.
    let mut record_blobs = BTreeMap::new();
    for d in &manifest.layers {
        if let Some(key) = d.annotations.get(ANNOTATION_RECORD_BLOB) {
            if records.iter().any(|(k, _)| k.hex() == key) {
                record_blobs.insert(key.clone(), d.clone());
                wanted.push(d.clone());
            }
        }
    }
    report.pull = kiln_registry::pull_blobs(client, reference, &cache.store, &wanted, &|t| {
        ev.transfer(t)
    })?;
    for (key, d) in records {
        let bytes = cache.store.read_verified(&d.digest)?;
        let record: LayerRecord = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(reference, format!("record {}: {e}", key.hex())))?;
        let blob = record_blobs.get(key.hex());
        if blob.map(|b| &b.digest) != Some(&record.descriptor.digest) {
            return Err(invalid(
                reference,
                format!("record {} names a blob the cache image lacks", key.hex()),
            ));
        }
        cache.record_layer(&key, &record)?;
        report.imported_records += 1;
    }
    for (slot, d) in layers {
        let tmp = cache.scratch_dir()?;
        let root = tmp.path().join("layer");
        unpack_layer(&cache.store.path(&d.digest), &root)?;
        let kept = slot.kept;
        if let Some(parent) = kept.parent() {
            fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        }
        fs::rename(&root, &kept).ctx(|| format!("saving cache layer {}", kept.display()))?;
        report.imported_layers += 1;
    }
    ev.note(format!("cache image {reference}: imported {} layer records and {} cache layers ({} bytes downloaded)",
        report.imported_records, report.imported_layers, report.pull.bytes_downloaded));
    report.import_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Writes the records of `image_layers` and every kept cache layer to the cache image.
pub fn export(
    client: &Client,
    cache: &BuildCache,
    project: &ProjectId,
    reference: &Reference,
    image_layers: &[Descriptor],
    mut report: CacheImageReport,
    ev: Events<'_>,
) -> Result<CacheImageReport> {
    let started = Instant::now();
    let store = &cache.store;
    let mut blobs = Vec::new();
    for (key, record) in records(cache)? {
        if !image_layers
            .iter()
            .any(|l| l.digest == record.descriptor.digest)
        {
            continue;
        }
        let bytes = kiln_oci::json::to_canonical_vec(&record);
        let digest = store.put_bytes(&bytes)?;
        blobs.push(annotated(
            RECORD_MEDIA_TYPE,
            digest,
            bytes.len() as u64,
            ANNOTATION_RECORD,
            key.hex(),
        ));
        let mut blob = record.descriptor.clone();
        blob.annotations =
            BTreeMap::from([(ANNOTATION_RECORD_BLOB.to_owned(), key.hex().to_owned())]);
        blobs.push(blob);
        report.exported_records += 1;
    }
    // Cache directories (compiler caches, tens of MB) only travel between runners: fast gzip
    // beats small blobs.
    let layer_opts = LayerOptions {
        compression: kiln_oci::layer::Compression::Gzip { level: 1 },
        ..LayerOptions::default()
    };
    for slot in cache.kept_slots(project)? {
        let entries = layer::normalize(layer::tree_entries(&slot.kept, "/")?)?;
        // Looked up like image layers, so an unchanged cache directory is not recompressed.
        let name = format!("cache-image/{}", slot.name);
        let (packed, _) = layer_cache::layer(cache, &name, &entries, &layer_opts, false, ev)?;
        let mut blob = annotated(
            MEDIA_TYPE_LAYER_GZIP,
            packed.descriptor.digest,
            packed.descriptor.size,
            ANNOTATION_CACHE_LAYER,
            &slot.name,
        );
        if slot.shared {
            blob.annotations
                .insert(ANNOTATION_CACHE_LAYER_SHARED.to_owned(), "true".to_owned());
        }
        blobs.push(blob);
        report.exported_layers += 1;
    }
    let config = b"{}";
    let config_digest = store.put_bytes(config)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST.to_owned(),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: config_digest,
            size: config.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        },
        layers: blobs,
        annotations: BTreeMap::new(),
        artifact_type: None,
        subject: None,
    };
    let bytes = kiln_oci::json::to_canonical_vec(&manifest);
    store.put_bytes(&bytes)?;
    let all: Vec<Descriptor> = std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect();
    let pushed = kiln_registry::push_manifest(
        client,
        store,
        reference,
        &bytes,
        MEDIA_TYPE_MANIFEST,
        &all,
        None,
    )?;
    ev.note(format!("cache image {reference}: exported {} layer records and {} cache layers ({} blobs uploaded)",
        report.exported_records, report.exported_layers, pushed.stats.blobs_uploaded));
    report.push = pushed.stats;
    report.export_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

// The helper below reads the cache directory through its documented layout (see
// `crate::cache`), so this module needs nothing from the cache's internals.

/// Every readable layer record, by content key.
fn records(cache: &BuildCache) -> Result<Vec<(Digest, LayerRecord)>> {
    let dir = cache.root().join("layers");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
        let entry = entry.ctx(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(key) = name
            .strip_suffix(".json")
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
        else {
            continue;
        };
        // Unreadable records are cache misses for builds too; they are simply not shared.
        if let Some(record) = fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok())
        {
            out.push((key, record));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn annotated(media_type: &str, digest: Digest, size: u64, key: &str, value: &str) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size,
        annotations: BTreeMap::from([(key.to_owned(), value.to_owned())]),
        platform: None,
        artifact_type: None,
    }
}

fn invalid(reference: &Reference, why: String) -> Error {
    Error::Oci(kiln_oci::Error::InvalidImage {
        image: format!("cache image {reference}"),
        why,
    })
}

/// `<buildpack>/<layer>`, each one plain path component (nothing that could leave the cache).
fn cache_layer_name<'a>(reference: &Reference, name: &'a str) -> Result<(&'a str, &'a str)> {
    let plain = |c: &str| !c.is_empty() && c != "." && c != ".." && !c.contains(['/', '\0']);
    match name.split_once('/') {
        Some((bp, layer)) if plain(bp) && plain(layer) => Ok((bp, layer)),
        _ => Err(invalid(reference, format!("bad cache layer name {name:?}"))),
    }
}

/// Unpacks the gzip layer tar at `blob` into the new directory `dest`. Entries must be plain
/// relative paths of directories, files or symlinks; the tar crate's `unpack` additionally
/// refuses to write through a symlink to outside `dest`.
fn unpack_layer(blob: &Path, dest: &Path) -> Result<()> {
    let open = || -> Result<tar::Archive<flate2::read::GzDecoder<BufReader<File>>>> {
        let file = File::open(blob).ctx(|| format!("opening {}", blob.display()))?;
        Ok(tar::Archive::new(flate2::read::GzDecoder::new(
            BufReader::new(file),
        )))
    };
    let unsafe_entry = |entry: &str, why: &'static str| {
        Error::Oci(kiln_oci::Error::UnsafePath {
            archive: blob.to_owned(),
            entry: entry.to_owned(),
            why,
        })
    };
    let ctx = || format!("reading cache layer {}", blob.display());
    // First pass: check every entry before anything is written.
    let mut archive = open()?;
    for entry in archive.entries().ctx(ctx)? {
        let entry = entry.ctx(ctx)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if path.starts_with('/') {
            return Err(unsafe_entry(&path, "absolute path"));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(unsafe_entry(&path, "'..' path component"));
        }
        use tar::EntryType::*;
        match entry.header().entry_type() {
            Regular | Directory | Symlink | XHeader => {}
            _ => return Err(unsafe_entry(&path, "only files, directories and symlinks")),
        }
    }
    fs::create_dir_all(dest).ctx(|| format!("creating {}", dest.display()))?;
    let mut archive = open()?;
    archive.set_preserve_permissions(true);
    archive.unpack(dest).ctx(|| {
        format!(
            "unpacking cache layer {} into {}",
            blob.display(),
            dest.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A gzip tar whose entries are written with raw names (the tar crate refuses `..` itself).
    fn raw_tar(dir: &Path, entries: &[(&str, tar::EntryType, &str)]) -> PathBuf {
        let path = dir.join("layer.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut builder = tar::Builder::new(gz);
        for (name, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            if !link.is_empty() {
                header.set_link_name(link).unwrap();
            }
            let body: &[u8] = if *kind == tar::EntryType::Regular {
                b"x"
            } else {
                b""
            };
            header.set_size(body.len() as u64);
            header.set_cksum();
            builder.append(&header, body).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn unpacking_never_leaves_the_destination() {
        use tar::EntryType::{Regular, Symlink};
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let cases: [&[(&str, tar::EntryType, &str)]; 3] = [
            &[("../evil", Regular, "")],
            &[("/abs", Regular, "")],
            &[
                ("link", Symlink, outside.to_str().unwrap()),
                ("link/evil", Regular, ""),
            ],
        ];
        for (i, entries) in cases.iter().enumerate() {
            let case = tmp.path().join(format!("case{i}"));
            fs::create_dir(&case).unwrap();
            let blob = raw_tar(&case, entries);
            let dest = case.join("dest");
            assert!(unpack_layer(&blob, &dest).is_err(), "case {i} unpacked");
            assert!(!tmp.path().join("evil").exists() && !outside.join("evil").exists());
        }
        // A benign layer unpacks.
        let case = tmp.path().join("ok");
        fs::create_dir(&case).unwrap();
        let blob = raw_tar(&case, &[("a", Regular, ""), ("b", Symlink, "a")]);
        unpack_layer(&blob, &case.join("dest")).unwrap();
        assert_eq!(fs::read(case.join("dest/a")).unwrap(), b"x");
    }

    #[test]
    fn cache_layer_names_are_single_components() {
        let r = Reference::parse("localhost:5000/c:1").unwrap();
        assert_eq!(
            cache_layer_name(&r, "go/go-cache").unwrap(),
            ("go", "go-cache")
        );
        for bad in ["go", "../x", "go/..", "go/a/b", "/go", "go/", "./x"] {
            assert!(cache_layer_name(&r, bad).is_err(), "{bad}");
        }
    }
}
