//! The build cache directory (`--cache-dir`):
//!
//! ```text
//! CACHE/blobs/sha256/<hex>          content-addressed blobs (layers, configs, base images)
//! CACHE/layers/<content key>.json   finished-layer records: a hit skips tar and gzip entirely
//! CACHE/buildpacks/<id>/<layer>/    `cache = true` layer directories kept between builds
//! CACHE/work/<id>/<layer>/          where a build uses a cache layer (a stable path: compilers
//!                                   such as cargo key their incremental state on absolute paths)
//! CACHE/tmp/                        build scratch space (same filesystem, so saves are renames)
//! CACHE/lock                        held exclusively for a whole build
//! ```
//!
//! Every write is temp-then-rename, so a killed build leaves either the old or the new state. A
//! cache layer is *moved* into `work/` for a build and moved back only when the build succeeds:
//! a failed or killed build loses that layer's cache, but never saves a half-updated one.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_oci::digest::Digest;
use kiln_oci::spec::LayerRecord;
use kiln_oci::store::BlobStore;

use crate::error::{IoContext, Result};

pub struct BuildCache {
    root: PathBuf,
    pub store: BlobStore,
    /// Held for the life of the build: builds sharing a cache directory take turns.
    _lock: fs::File,
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
    /// Opens the cache, waiting for any other build that holds it.
    pub fn open(root: &Path, log: &mut dyn std::io::Write) -> Result<BuildCache> {
        for dir in ["layers", "buildpacks", "work", "tmp"] {
            fs::create_dir_all(root.join(dir))
                .ctx(|| format!("creating cache directory {}", root.join(dir).display()))?;
        }
        let lock_path = root.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx(|| format!("opening {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            let _ = writeln!(log, "waiting for another build using {}", root.display());
            lock.lock()
                .ctx(|| format!("locking {}", lock_path.display()))?;
        }
        Ok(BuildCache {
            root: root.to_path_buf(),
            store: BlobStore::open(root)?,
            _lock: lock,
        })
    }

    /// The cache directory (layout above).
    pub fn root(&self) -> &Path {
        &self.root
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

    fn kept_layer_dir(&self, buildpack: &str, layer: &str) -> PathBuf {
        self.root.join("buildpacks").join(buildpack).join(layer)
    }

    /// Takes a `cache = true` layer out of the cache for this build: its kept contents (if any)
    /// are moved to a stable working path, which is returned. Leftovers of a build that died are
    /// discarded, since they may be half-updated.
    pub fn checkout_layer_dir(&self, buildpack: &str, layer: &str) -> Result<(PathBuf, bool)> {
        let work = self.root.join("work").join(buildpack).join(layer);
        if fs::symlink_metadata(&work).is_ok() {
            remove_tree(&work)?;
        }
        let parent = work.parent().expect("work dirs have a parent");
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        let kept = self.kept_layer_dir(buildpack, layer);
        let restored = kept.is_dir();
        if restored {
            fs::rename(&kept, &work).ctx(|| format!("restoring cache layer {}", kept.display()))?;
        }
        Ok((work, restored))
    }

    /// Puts a cache layer's working directory back as the kept copy (after a successful build).
    pub fn checkin_layer_dir(&self, buildpack: &str, layer: &str, work: &Path) -> Result<()> {
        let kept = self.kept_layer_dir(buildpack, layer);
        let parent = kept.parent().expect("kept dirs have a parent");
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        fs::rename(work, &kept).ctx(|| format!("saving cache layer {}", kept.display()))
    }
}

/// Removes a directory tree, first making read-only directories writable (Go's module cache
/// marks its directories 0555, which would stop a non-root removal).
fn remove_tree(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
        }
    }
    fs::remove_dir_all(dir).ctx(|| format!("removing {}", dir.display()))
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
