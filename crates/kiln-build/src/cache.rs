//! The build cache directory (`--cache-dir`):
//!
//! ```text
//! CACHE/blobs/sha256/<hex>          content-addressed blobs (layers, configs, base images)
//! CACHE/layers/<content key>.json   finished-layer records: a hit skips tar and gzip entirely
//! CACHE/keys/<stat key>             stat key → content key (see `layer_cache`)
//! CACHE/snapshots/<layer name>.json the last fingerprint of each named layer, to say what changed
//! CACHE/steps/<id>/<step>.json      the inputs key of the last successful run of a skippable step
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
use crate::fsutil::touch;

pub struct BuildCache {
    root: PathBuf,
    pub store: BlobStore,
    /// Held for the life of the build: builds sharing a cache directory take turns.
    _lock: fs::File,
}

impl BuildCache {
    /// Opens the cache, waiting for any other build that holds it.
    pub fn open(root: &Path, log: &mut dyn std::io::Write) -> Result<BuildCache> {
        for dir in [
            "layers",
            "keys",
            "snapshots",
            "steps",
            "buildpacks",
            "work",
            "tmp",
        ] {
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

    /// Scratch space for one build, removed when dropped.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(self.root.join("tmp"))
            .ctx(|| format!("creating a build directory in {}", self.root.display()))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The finished-layer record for a content key, if any (unreadable records count as none).
    pub fn read_record(&self, key: &Digest) -> Option<LayerRecord> {
        let bytes = fs::read(self.record_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Marks a record as used now, for `kiln cache prune`'s least-recently-used order.
    pub fn touch_record(&self, key: &Digest) {
        touch(&self.record_path(key));
    }

    /// Marks a blob as used now (see [`BuildCache::touch_record`]).
    pub fn touch_blob(&self, digest: &Digest) {
        touch(&self.store.path(digest));
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

    /// Copies a checked-out cache layer back to its kept place before a step rewrites it, so a
    /// failing build leaves the previous cache intact (the copy is replaced on success).
    /// `captured` lists `(path, where it is now)` for the app paths the layer captures: during
    /// the steps they live in the working copy, and belong in the copy under `CAPTURED_DIR`.
    pub fn keep_copy_of_layer_dir(
        &self,
        buildpack: &str,
        layer: &str,
        work: &Path,
        captured: &[(&str, PathBuf)],
    ) -> Result<()> {
        let kept = self.kept_layer_dir(buildpack, layer);
        if kept.exists() {
            return Ok(());
        }
        let parent = kept.parent().expect("kept dirs have a parent");
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{layer}.copy-"))
            .tempdir_in(parent)
            .ctx(|| format!("creating a directory in {}", parent.display()))?;
        copy_tree(work, tmp.path())?;
        for (path, now) in captured {
            if fs::symlink_metadata(now).is_ok() {
                let dest = tmp.path().join(crate::CAPTURED_DIR).join(path);
                fs::create_dir_all(&dest).ctx(|| format!("creating {}", dest.display()))?;
                copy_tree(now, &dest)?;
            }
        }
        fs::rename(tmp.keep(), &kept).ctx(|| format!("saving {}", kept.display()))
    }

    /// Makes a cache layer's working directory the kept copy (after a successful build),
    /// replacing any older copy.
    pub fn checkin_layer_dir(&self, buildpack: &str, layer: &str, work: &Path) -> Result<()> {
        let kept = self.kept_layer_dir(buildpack, layer);
        let parent = kept.parent().expect("kept dirs have a parent");
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        let aside = parent.join(format!(".{layer}.old-{}", std::process::id()));
        let had_old = fs::symlink_metadata(&kept).is_ok();
        if had_old {
            fs::rename(&kept, &aside).ctx(|| format!("moving aside {}", kept.display()))?;
        }
        fs::rename(work, &kept).ctx(|| format!("saving cache layer {}", kept.display()))?;
        touch(&kept);
        if had_old {
            remove_tree(&aside)?;
        }
        Ok(())
    }
}

/// Copies a directory tree (files, directories with their modes, symlinks as symlinks).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    for entry in walkdir::WalkDir::new(from).follow_links(false).min_depth(1) {
        let entry = entry.map_err(|e| crate::error::Error::Io {
            context: format!("reading {}", from.display()),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        let ctx = || format!("copying {} to {}", entry.path().display(), target.display());
        let file_type = entry.file_type();
        if file_type.is_dir() {
            fs::create_dir(&target).ctx(ctx)?;
            let mode = entry
                .metadata()
                .map(|m| m.permissions().mode())
                .unwrap_or(0o755);
            // Keep read-only directories writable by us until removal (see `remove_tree`).
            fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o700)).ctx(ctx)?;
        } else if file_type.is_symlink() {
            symlink(fs::read_link(entry.path()).ctx(ctx)?, &target).ctx(ctx)?;
        } else {
            fs::copy(entry.path(), &target).ctx(ctx)?;
        }
    }
    Ok(())
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
