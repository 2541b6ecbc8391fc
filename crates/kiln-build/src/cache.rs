//! The build cache directory (`--cache-dir`):
//!
//! ```text
//! CACHE/blobs/sha256/<hex>          content-addressed blobs (layers, configs, base images)
//! CACHE/layers/<content key>.json   finished-layer records: a hit skips tar and gzip entirely
//! CACHE/buildpacks/<id>/<layer>/    `cache = true` layer directories kept between builds
//! CACHE/tmp/                        build scratch space (same filesystem, so saves are renames)
//! ```
//!
//! Every write is temp-then-rename, so a killed build leaves either the old or the new state.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_oci::digest::Digest;
use kiln_oci::spec::LayerRecord;
use kiln_oci::store::BlobStore;

use crate::error::{IoContext, Result};

pub struct BuildCache {
    root: PathBuf,
    pub store: BlobStore,
}

/// Why a layer was or wasn't taken from the cache; reported per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerDecision {
    /// Same content key, blob present: reused without re-tarring or recompressing.
    Reused,
    /// No record for this content key: the content (or compressor) changed, or never built.
    NoRecord,
    /// A record exists but its blob is gone or damaged; rebuilt.
    BlobMissing,
}

impl LayerDecision {
    pub fn reason(&self) -> &'static str {
        match self {
            LayerDecision::Reused => "content unchanged",
            LayerDecision::NoRecord => "content changed or not cached",
            LayerDecision::BlobMissing => "cached blob missing",
        }
    }
}

impl BuildCache {
    pub fn open(root: &Path) -> Result<BuildCache> {
        for dir in ["layers", "buildpacks", "tmp"] {
            fs::create_dir_all(root.join(dir))
                .ctx(|| format!("creating cache directory {}", root.join(dir).display()))?;
        }
        Ok(BuildCache {
            root: root.to_path_buf(),
            store: BlobStore::open(root)?,
        })
    }

    /// Scratch space for one build, removed when dropped.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(self.root.join("tmp"))
            .ctx(|| format!("creating a build directory in {}", self.root.display()))
    }

    /// Looks up the finished layer for `key`.
    pub fn lookup_layer(&self, key: &Digest) -> (LayerDecision, Option<LayerRecord>) {
        let path = self.record_path(key);
        let record = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<LayerRecord>(&bytes).ok());
        match record {
            None => (LayerDecision::NoRecord, None),
            Some(r) if self.store.contains(&r.descriptor.digest) => {
                (LayerDecision::Reused, Some(r))
            }
            Some(_) => (LayerDecision::BlobMissing, None),
        }
    }

    pub fn record_layer(&self, key: &Digest, record: &LayerRecord) -> Result<()> {
        let path = self.record_path(key);
        let bytes = serde_json::to_vec(record).expect("layer records serialize");
        write_atomic(&path, &bytes)
    }

    fn record_path(&self, key: &Digest) -> PathBuf {
        self.root.join("layers").join(format!("{}.json", key.hex()))
    }

    /// The kept directory of a `cache = true` layer (may not exist).
    pub fn cached_layer_dir(&self, buildpack: &str, layer: &str) -> PathBuf {
        self.root.join("buildpacks").join(buildpack).join(layer)
    }

    /// Replaces the kept directory of a cache layer with `built` (moved, not copied). The old one
    /// is renamed aside first and removed after, so a crash loses at most the cache, never mixes
    /// two builds' contents.
    pub fn save_layer_dir(&self, buildpack: &str, layer: &str, built: &Path) -> Result<()> {
        let kept = self.cached_layer_dir(buildpack, layer);
        let parent = kept.parent().expect("cache layer dirs have a parent");
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        let aside = parent.join(format!(".{layer}.old-{}", std::process::id()));
        let had_old = kept.exists();
        if had_old {
            fs::rename(&kept, &aside).ctx(|| format!("moving aside {}", kept.display()))?;
        }
        fs::rename(built, &kept).ctx(|| format!("saving cache layer {}", kept.display()))?;
        if had_old {
            fs::remove_dir_all(&aside).ctx(|| format!("removing {}", aside.display()))?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .ctx(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Copies a directory tree (files, dirs, symlinks) keeping modes; used to restore cache layers so
/// a failed build never damages what is kept.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::symlink;
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(|e| crate::error::Error::Io {
            context: format!("reading {}", from.display()),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(Path::new(""));
        let target = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&target).ctx(|| format!("creating {}", target.display()))?;
        } else if ft.is_symlink() {
            let link = fs::read_link(entry.path())
                .ctx(|| format!("reading link {}", entry.path().display()))?;
            symlink(&link, &target).ctx(|| format!("creating {}", target.display()))?;
        } else {
            fs::copy(entry.path(), &target).ctx(|| format!("copying to {}", target.display()))?;
        }
    }
    Ok(())
}
