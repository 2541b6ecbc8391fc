//! The build cache directory (`--cache-dir`):
//!
//! ```text
//! CACHE/blobs/sha256/<hex>          content-addressed blobs (layers, configs, base images)
//! CACHE/layers/<content key>.json   finished-layer records: a hit skips tar and gzip entirely
//! CACHE/keys/<stat key>             stat key → content key (see `layer_cache`)
//! CACHE/snapshots/<layer name>.json the last fingerprint of each named layer, to say what changed
//! CACHE/projects/<project>/         one app's own state (see [`ProjectId`]):
//!     project.json                  the identity the key was made from
//!     layers/<id>/<layer>/          its `cache = true` layer directories kept between builds
//!     steps/<id>/<step>.json        the inputs key of the last successful run of a skippable step
//! CACHE/shared/<id>/<layer>/        `shared = true` cache layers (download caches), for every app
//! CACHE/work/projects/<project>/<id>/<layer>/, CACHE/work/shared/<id>/<layer>/
//!                                   where a build uses a cache layer (a stable path: compilers
//!                                   such as cargo key their incremental state on absolute paths)
//! CACHE/tmp/                        build scratch space (same filesystem, so saves are renames)
//! CACHE/lock                        held exclusively for a whole build
//! ```
//!
//! Every write is temp-then-rename, so a killed build leaves either the old or the new state. A
//! cache layer is *moved* into `work/` for a build ([`BuildCache::checkout`]) and moved back
//! when the build ends ([`BuildCache::checkin`]). Before a step rewrites a layer it outputs,
//! the restored copy is moved back to its kept place and the step starts from an empty directory
//! ([`BuildCache::set_aside`]): what ships is exactly what this build's step produced, and a
//! failed step leaves the last good copy in place. Layers nobody set aside are checked back in
//! whether the build succeeded or failed; only a killed build loses the layers it had out.
//! Whatever a dead build left in `tmp/` and `work/` is removed by the next one to take the lock.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use crate::events::Events;
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
    /// Opens the cache, waiting for any other build that holds it, and removes what dead
    /// builds left behind. A relative `root` is made absolute first: steps get paths inside the
    /// cache, and they run in other directories.
    pub fn open(root: &Path, ev: Events<'_>) -> Result<BuildCache> {
        let cache = BuildCache::open_without_cleaning(root, ev)?;
        let leftovers = cache.leftovers()?;
        for path in &leftovers {
            remove_any(path)?;
        }
        if !leftovers.is_empty() {
            ev.note(format!(
                "cache: removed {} leftovers of builds that did not finish",
                leftovers.len()
            ));
        }
        Ok(cache)
    }

    /// [`BuildCache::open`] without removing leftovers (for `kiln cache ls`, which counts them).
    pub fn open_without_cleaning(root: &Path, ev: Events<'_>) -> Result<BuildCache> {
        let root = std::path::absolute(root)
            .ctx(|| format!("resolving cache directory {}", root.display()))?;
        for dir in [
            "layers",
            "keys",
            "snapshots",
            "projects",
            "shared",
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
            ev.note(format!(
                "waiting for another build using {}",
                root.display()
            ));
            lock.lock()
                .ctx(|| format!("locking {}", lock_path.display()))?;
        }
        Ok(BuildCache {
            store: BlobStore::open(&root)?,
            root,
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

    pub fn record_layer(&self, key: &Digest, record: &LayerRecord) -> Result<()> {
        let path = self.record_path(key);
        let bytes = serde_json::to_vec(record).expect("layer records serialize");
        write_atomic(&path, &bytes)
    }

    fn record_path(&self, key: &Digest) -> PathBuf {
        self.root.join("layers").join(format!("{}.json", key.hex()))
    }

    /// The kept copy and the working path of one `cache = true` layer: the project's own, or
    /// the one shared by every app when `shared`.
    pub fn slot(
        &self,
        project: &ProjectId,
        buildpack: &str,
        layer: &str,
        shared: bool,
    ) -> CacheSlot {
        let (kept, work) = if shared {
            (
                self.root.join("shared").join(buildpack).join(layer),
                self.root.join("work/shared").join(buildpack).join(layer),
            )
        } else {
            (
                self.project_dir(project)
                    .join("layers")
                    .join(buildpack)
                    .join(layer),
                self.root
                    .join("work/projects")
                    .join(project.key())
                    .join(buildpack)
                    .join(layer),
            )
        };
        CacheSlot {
            name: format!("{buildpack}/{layer}"),
            buildpack: buildpack.to_owned(),
            layer: layer.to_owned(),
            shared,
            kept,
            work,
        }
    }

    /// `CACHE/projects/<key>`: the project's kept layers and step records.
    pub fn project_dir(&self, project: &ProjectId) -> PathBuf {
        self.root.join("projects").join(project.key())
    }

    /// Where the project's step records live.
    pub fn steps_dir(&self, project: &ProjectId) -> PathBuf {
        self.project_dir(project).join("steps")
    }

    /// Records which identity a project directory belongs to (for `kiln cache ls`).
    pub fn register_project(&self, project: &ProjectId) -> Result<()> {
        let dir = self.project_dir(project);
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let path = dir.join("project.json");
        if !path.exists() {
            let bytes = serde_json::to_vec(&serde_json::json!({ "identity": project.identity() }))
                .expect("project records serialize");
            write_atomic(&path, &bytes)?;
        }
        touch(&dir);
        Ok(())
    }

    /// Every kept layer of `project` and every shared one, sorted by kind then name.
    pub fn kept_slots(&self, project: &ProjectId) -> Result<Vec<CacheSlot>> {
        let mut out = Vec::new();
        for (dir, shared) in [
            (self.project_dir(project).join("layers"), false),
            (self.root.join("shared"), true),
        ] {
            for buildpack in sorted_subdirs(&dir)? {
                for layer in sorted_subdirs(&dir.join(&buildpack))? {
                    out.push(self.slot(project, &buildpack, &layer, shared));
                }
            }
        }
        Ok(out)
    }

    /// Takes a cache layer out of the cache for this build: its kept contents (if any) are
    /// moved to the slot's stable working path. Returns whether there was a kept copy.
    pub fn checkout(&self, slot: &CacheSlot) -> Result<bool> {
        if fs::symlink_metadata(&slot.work).is_ok() {
            remove_tree(&slot.work)?;
        }
        let parent = slot.work.parent().expect("work dirs have a parent");
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        let restored = slot.kept.is_dir();
        if restored {
            fs::rename(&slot.kept, &slot.work)
                .ctx(|| format!("restoring cache layer {}", slot.kept.display()))?;
        }
        Ok(restored)
    }

    /// Before a step rewrites a layer it outputs: the restored contents go back to the kept
    /// place untouched (so a failure leaves them as the last good build made them), and the
    /// step gets an empty working directory, so nothing of an earlier build can ship. `captured`
    /// lists `(path, where it is now)` for the app paths the layer captures: during the steps
    /// they live in the working copy, and belong in the kept copy under `CAPTURED_DIR`.
    pub fn set_aside(&self, slot: &CacheSlot, captured: &[(&str, PathBuf)]) -> Result<()> {
        for (path, now) in captured {
            if fs::symlink_metadata(now).is_ok() {
                let dest = slot.work.join(crate::CAPTURED_DIR).join(path);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
                }
                if fs::symlink_metadata(&dest).is_ok() {
                    remove_tree(&dest)?;
                }
                fs::rename(now, &dest)
                    .ctx(|| format!("moving {} to {}", now.display(), dest.display()))?;
            }
        }
        if fs::symlink_metadata(&slot.kept).is_ok() {
            // Already set aside by an earlier step of this build: what is in `work` is this
            // build's own output so far, which a later step of the same build may extend.
            return Ok(());
        }
        let parent = slot.kept.parent().expect("kept dirs have a parent");
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        fs::rename(&slot.work, &slot.kept)
            .ctx(|| format!("setting aside cache layer {}", slot.work.display()))?;
        fs::create_dir(&slot.work).ctx(|| format!("creating {}", slot.work.display()))?;
        fs::set_permissions(&slot.work, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("setting permissions of {}", slot.work.display()))
    }

    /// Makes a cache layer's working directory the kept copy, replacing any older copy.
    pub fn checkin(&self, slot: &CacheSlot) -> Result<()> {
        let parent = slot.kept.parent().expect("kept dirs have a parent");
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        let aside = parent.join(format!(".{}.old-{}", slot.layer, std::process::id()));
        let had_old = fs::symlink_metadata(&slot.kept).is_ok();
        if had_old {
            fs::rename(&slot.kept, &aside)
                .ctx(|| format!("moving aside {}", slot.kept.display()))?;
        }
        fs::rename(&slot.work, &slot.kept)
            .ctx(|| format!("saving cache layer {}", slot.kept.display()))?;
        touch(&slot.kept);
        if had_old {
            remove_tree(&aside)?;
        }
        Ok(())
    }

    /// Drops this build's working copy of a layer that was set aside (a failed build): the kept
    /// copy stays the last good one.
    pub fn discard(&self, slot: &CacheSlot) -> Result<()> {
        if fs::symlink_metadata(&slot.work).is_ok() {
            remove_tree(&slot.work)?;
        }
        Ok(())
    }

    /// What builds that died left behind. Meaningful with the lock held: everything that
    /// writes into the cache directory holds it, so nothing in `tmp/`, `work/` or the blob
    /// store's temporaries belongs to a live build.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        out.extend(read_dir_or_empty(&self.root.join("tmp"))?);
        // Checked-out layers sit at `work/shared/<id>/<layer>` and
        // `work/projects/<key>/<id>/<layer>`; the directories above them are scaffolding.
        let work = self.root.join("work");
        for (dir, depth) in [(work.join("shared"), 2), (work.join("projects"), 3)] {
            let mut level = vec![dir];
            for _ in 0..depth {
                let mut next = Vec::new();
                for d in level.iter().filter(|d| d.is_dir()) {
                    next.extend(read_dir_or_empty(d)?);
                }
                level = next;
            }
            out.extend(level);
        }
        let blobs = self.root.join("blobs/sha256");
        out.extend(read_dir_or_empty(&blobs)?.into_iter().filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_blob_temporary)
        }));
        // Layout from before cache layers were kept per project: never read again.
        for legacy in ["buildpacks", "steps"] {
            let dir = self.root.join(legacy);
            if dir.is_dir() {
                out.push(dir);
            }
        }
        Ok(out)
    }
}

/// Temporary files the blob store writes before renaming (`.tmp-*`).
fn is_blob_temporary(name: &str) -> bool {
    name.starts_with(".tmp")
}

fn read_dir_or_empty(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        out.push(entry.ctx(|| format!("reading {}", dir.display()))?.path());
    }
    out.sort();
    Ok(out)
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<String>> {
    Ok(read_dir_or_empty(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .filter(|name| !name.starts_with('.'))
        .collect())
}

fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => remove_tree(path),
        Ok(_) => fs::remove_file(path).ctx(|| format!("removing {}", path.display())),
        Err(_) => Ok(()),
    }
}

/// One `cache = true` layer's place in the cache: see [`BuildCache::slot`].
#[derive(Debug, Clone)]
pub struct CacheSlot {
    /// `buildpack/layer`, for logs.
    pub name: String,
    pub buildpack: String,
    pub layer: String,
    pub shared: bool,
    /// Where it is kept between builds.
    pub kept: PathBuf,
    /// Where a build uses it.
    pub work: PathBuf,
}

/// Whose cache layers a build uses. Two apps sharing one `--cache-dir` (the usual CI setup) must
/// never see each other's layers, and one app must find its own on the next build — from any
/// checkout path when it names itself. The identity is, first found:
///
/// 1. the name given by the caller (`--project`, `KILN_PROJECT`) or `kiln.toml` `[project] name`;
/// 2. the repository of the image's `--tag`, else of `--publish` (as `pack` keys its cache
///    volumes by image name);
/// 3. the app's absolute source path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectId {
    identity: String,
    key: String,
}

impl ProjectId {
    /// `identity` is any string (`name:web`, `image:registry.example/team/web`, `path:/src/web`);
    /// the key is a readable slug of it plus 16 hex digits of its sha256.
    pub fn new(identity: impl Into<String>) -> ProjectId {
        let identity = identity.into();
        let hash = Digest::of(identity.as_bytes());
        let tail = identity
            .rsplit(['/', ':'])
            .find(|s| !s.is_empty())
            .unwrap_or("app");
        let slug: String = tail
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let key = format!("{slug}-{}", &hash.hex()[..16]);
        ProjectId { identity, key }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The directory name under `CACHE/projects/`.
    pub fn key(&self) -> &str {
        &self.key
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
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// [`write_atomic`] for content streamed by `write` (through a buffer) rather than held whole.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(tmp);
    write(&mut out)
        .and_then(|()| out.flush())
        .ctx(|| format!("writing {}", path.display()))?;
    let tmp = out
        .into_inner()
        .map_err(|e| e.into_error())
        .ctx(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(())
}
