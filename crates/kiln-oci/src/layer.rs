//! Deterministic layer tars.
//!
//! A layer is described as a sorted list of [`Entry`]s (image paths → host content) and written in
//! one streaming pass: tar → sha256 (diff_id) → gzip → sha256 (digest) → blob store. The tar is
//! built header by header (never `tar::Builder::append_dir_all`, which follows symlinks, keeps
//! filesystem order and host owners):
//! - entries sorted by path bytes, no duplicates, an explicit `0755` root-owned entry for every
//!   parent directory not given explicitly;
//! - mtime fixed to [`LayerOptions::mtime`], uid/gid from options (default 0), no user/group names;
//! - permission bits kept (`mode & 0o7777`, so exec/setuid bits survive);
//! - symlinks stored as symlinks, never followed; hardlinks only to an earlier entry of the same
//!   layer (files sharing a host inode become hardlinks to the first such path);
//! - PAX extended headers only where needed (path > ustar limits, link target > 100 bytes, size ≥
//!   8 GiB); no global PAX headers, no GNU long-name entries, no sparse entries;
//! - gzip: one member, header mtime 0, no file name.

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::Result;
use crate::spec::LayerRecord;
use crate::store::BlobStore;

/// 1980-01-01T00:00:01Z: the default layer mtime (what CNB uses; some tools mis-handle 0).
pub const DEFAULT_MTIME: u64 = 315_532_801;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip at `level` 0–9 with the zlib-rs backend.
    Gzip { level: u32 },
}

impl Compression {
    pub const DEFAULT: Compression = Compression::Gzip { level: 6 };

    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => crate::spec::MEDIA_TYPE_LAYER_TAR,
            Compression::Gzip { .. } => crate::spec::MEDIA_TYPE_LAYER_GZIP,
        }
    }

    /// A stable description that goes into cache keys (`gzip-6/flate2-zlib-rs`): changing the
    /// compressor or its level must never silently reuse or change cached layers.
    pub fn cache_tag(self) -> String {
        todo!()
    }
}

#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// mtime for every entry (seconds since the epoch).
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    pub compression: Compression,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mtime: DEFAULT_MTIME,
            uid: 0,
            gid: 0,
            compression: Compression::DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file whose bytes are read from `source` when the layer is written.
    File {
        source: PathBuf,
        size: u64,
    },
    Symlink {
        target: String,
    },
    /// A hardlink to an earlier entry's path (image-relative, no leading `/`).
    Hardlink {
        target: String,
    },
}

/// One tar entry. `path` is image-relative with no leading `/` and no `.`/`..` components
/// (`workspace/app/main.go`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
}

/// Walks `host_root` (never following symlinks) and returns entries for its contents placed under
/// `image_dir` (e.g. `/workspace`), the directory itself included. Files sharing an inode become
/// hardlinks to the first path in sorted order. Sockets/devices/fifos are an error naming the file.
pub fn tree_entries(host_root: &Path, image_dir: &str) -> Result<Vec<Entry>> {
    let _ = (host_root, image_dir);
    todo!()
}

/// Sorts entries, adds missing parent directories (0755), rejects duplicate paths and invalid
/// paths (absolute, `..`, empty components).
pub fn normalize(entries: Vec<Entry>) -> Result<Vec<Entry>> {
    let _ = entries;
    todo!()
}

/// A cache key for a layer made of `entries` with `opts`: sha256 over a versioned, canonical
/// description of every entry (path, kind, mode, link target, and a sha256 of file content) plus
/// mtime/uid/gid and [`Compression::cache_tag`]. Independent of host mtimes and of the host path
/// the files live at. `entries` must be normalized.
pub fn content_key(entries: &[Entry], opts: &LayerOptions) -> Result<Digest> {
    let _ = (entries, opts);
    todo!()
}

/// Writes `entries` (normalized) as a layer blob into `store` in one streaming pass and returns
/// its record (compressed digest/size/media type and the uncompressed diff_id). Memory use does not
/// grow with layer size.
pub fn write_layer(
    store: &BlobStore,
    entries: &[Entry],
    opts: &LayerOptions,
) -> Result<LayerRecord> {
    let _ = (store, entries, opts);
    todo!()
}
