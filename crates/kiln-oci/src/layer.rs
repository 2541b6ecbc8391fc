//! Deterministic layer tars.
//!
//! A layer is described as a sorted list of [`Entry`]s (image paths → host content) and written in
//! one streaming pass: tar → sha256 (diff_id) → gzip → sha256 (digest) → blob store. The tar is
//! built header by header (never `tar::Builder::append_dir_all`, which follows symlinks, keeps
//! filesystem order and host owners):
//! - entries sorted by path bytes, no duplicates, an explicit `0755` entry for every parent
//!   directory not given explicitly;
//! - mtime fixed to [`LayerOptions::mtime`], uid/gid from options for every entry (default 0, so
//!   added parents are root-owned unless the options say otherwise), no user/group names;
//! - permission bits kept (`mode & 0o7777`, so exec/setuid bits survive);
//! - symlinks stored as symlinks, never followed; hardlinks only to an earlier entry of the same
//!   layer (files sharing a host inode become hardlinks to the first such path);
//! - a file found by a walk is reopened below the walk's root handle without following any
//!   symlink, and must be the very file listed (same inode, still regular, same size): a file or
//!   parent directory swapped after listing is an error, never a way to pack a host file;
//! - PAX extended headers only where needed (path > ustar limits, link target > 100 bytes, size ≥
//!   8 GiB); no global PAX headers, no GNU long-name entries, no sparse entries;
//! - gzip: one member, header mtime 0, no file name.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, FileType, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::{Builder, EntryType, Header};
use walkdir::WalkDir;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::io_util::ExactReader;
pub use crate::io_util::TreeRoot;
use crate::spec::{Descriptor, LayerRecord};
use crate::store::BlobStore;

/// 1980-01-01T00:00:01Z: the default layer mtime (what CNB uses; some tools mis-handle 0).
pub const DEFAULT_MTIME: u64 = 315_532_801;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip at `level` 0–9 (zlib-rs deflate, parallel fixed-size blocks in one member).
    Gzip { level: u32 },
    /// zstd at `level` 1–19 (`application/vnd.oci.image.layer.v1.tar+zstd`; needs Docker ≥ 23 or
    /// containerd ≥ 1.5 to pull).
    Zstd { level: i32 },
}

impl Compression {
    /// gzip level 4: on this project's benchmark tree it is ~2× faster than level 6 for ~3 %
    /// more bytes (see README, "Performance").
    pub const DEFAULT: Compression = Compression::Gzip { level: 4 };

    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => crate::spec::MEDIA_TYPE_LAYER_TAR,
            Compression::Gzip { .. } => crate::spec::MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd { .. } => crate::spec::MEDIA_TYPE_LAYER_ZSTD,
        }
    }

    /// A stable description that goes into cache keys (`gzip-4/b1048576/zlib-rs-0.6`): changing
    /// the compressor, its level, block layout or implementation version must never silently
    /// reuse cached layers made differently.
    pub fn cache_tag(self) -> String {
        match self {
            Compression::None => "none".to_owned(),
            Compression::Gzip { level } => format!(
                "gzip-{level}/b{}/{}",
                crate::compress::GZIP_BLOCK_SIZE,
                crate::compress::DEFLATE_IMPL
            ),
            Compression::Zstd { level } => {
                format!("zstd-{level}/zstd-{}", zstd::zstd_safe::version_string())
            }
        }
    }

    /// Parses `gzip`, `gzip:LEVEL`, `zstd`, `zstd:LEVEL` or `none`.
    pub fn parse(s: &str) -> std::result::Result<Compression, String> {
        let (name, level) = s.split_once(':').map_or((s, None), |(n, l)| (n, Some(l)));
        match (name, level) {
            ("none", None) => Ok(Compression::None),
            ("gzip", None) => Ok(Compression::DEFAULT),
            ("gzip", Some(l)) => match l.parse::<u32>() {
                Ok(level @ 0..=9) => Ok(Compression::Gzip { level }),
                _ => Err(format!("gzip level must be 0-9, not {l:?}")),
            },
            ("zstd", None) => Ok(Compression::Zstd { level: 3 }),
            ("zstd", Some(l)) => match l.parse::<i32>() {
                Ok(level @ 1..=19) => Ok(Compression::Zstd { level }),
                _ => Err(format!("zstd level must be 1-19, not {l:?}")),
            },
            _ => Err(format!(
                "unknown compression {s:?}: expected gzip[:LEVEL], zstd[:LEVEL] or none"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// mtime for every entry (seconds since the epoch).
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    pub compression: Compression,
    /// Entries at or below one path owned by other ids than `uid`/`gid` (the app directory
    /// of an image whose process runs as a non-root user).
    pub owned: Option<Owned>,
}

/// The ids of the entries at or below `prefix` (image-relative, no leading or trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub prefix: String,
    pub uid: u64,
    pub gid: u64,
}

impl LayerOptions {
    /// The (uid, gid) of the entry at `path`.
    fn ids(&self, path: &str) -> (u64, u64) {
        match &self.owned {
            Some(o)
                if path == o.prefix
                    || path
                        .strip_prefix(o.prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/')) =>
            {
                (o.uid, o.gid)
            }
            _ => (self.uid, self.gid),
        }
    }
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mtime: DEFAULT_MTIME,
            uid: 0,
            gid: 0,
            compression: Compression::DEFAULT,
            owned: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file whose bytes are read from `source` when the layer is written (see
    /// [`open_file`]).
    File {
        source: PathBuf,
        size: u64,
        /// How a directory walk found it; `None` for a path the caller vouches for as a whole.
        listed: Option<Listed>,
    },
    Symlink {
        target: String,
    },
    /// A hardlink to an earlier entry's path (image-relative, no leading `/`).
    Hardlink {
        target: String,
    },
}

impl EntryKind {
    /// A regular file at a path the caller vouches for as a whole (not found by a walk).
    pub fn file(source: impl Into<PathBuf>, size: u64) -> EntryKind {
        EntryKind::File {
            source: source.into(),
            size,
            listed: None,
        }
    }
}

/// Where a directory walk found a file: the walk's root, held open, and the file's identity then,
/// so that reading it later can refuse anything else (see [`open_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The walk's root; the entry's `source` lies below its path.
    pub root: TreeRoot,
    pub dev: u64,
    pub ino: u64,
    /// The walk's mtime (seconds, nanoseconds): cache stat keys use it instead of a second
    /// `lstat` of every file.
    pub mtime: (i64, i64),
}

impl Listed {
    /// `meta` is the walk's (not following) metadata of a file below `root`.
    pub fn new(root: &TreeRoot, meta: &fs::Metadata) -> Listed {
        Listed {
            root: root.clone(),
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
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

/// Version of the layer format and of the [`content_key`] description. Bump it whenever the tar
/// bytes written for the same entries change, so old cache entries stop matching.
const CONTENT_KEY_VERSION: &str = "kiln-layer-content-key/v2";

/// ustar field limits: `name` 100 bytes, `prefix` 155, `linkname` 100, `size` 11 octal digits.
const USTAR_NAME_MAX: usize = 100;
const USTAR_PREFIX_MAX: usize = 155;
const USTAR_LINK_MAX: usize = 100;
const USTAR_SIZE_MAX: u64 = 0o777_7777_7777;

/// Walks `host_root` (never following symlinks) and returns entries for its contents placed under
/// `image_dir` (e.g. `/workspace`), the directory itself included. Files sharing an inode become
/// hardlinks to the first path in sorted order. Sockets/devices/fifos are an error naming the file.
///
/// The result is sorted but parents of `image_dir` are not added: pass it (possibly combined with
/// other entries) through [`normalize`]. With `image_dir` `/`, the contents go to the image root
/// and no entry is made for the root itself.
pub fn tree_entries(host_root: &Path, image_dir: &str) -> Result<Vec<Entry>> {
    let prefix = image_dir.trim_matches('/');
    if !prefix.is_empty() {
        validate_path(prefix)?;
    }
    let root = TreeRoot::open(host_root).ctx(|| format!("opening {}", host_root.display()))?;
    let mut found: Vec<(Entry, Option<(u64, u64)>)> = Vec::new();
    for item in WalkDir::new(host_root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let item = item.map_err(|e| {
            let at = e.path().unwrap_or(host_root).display().to_string();
            Error::io(format!("walking {at}"), e.into())
        })?;
        let host_path = item.path();
        let rel = host_path.strip_prefix(host_root).unwrap_or(host_path);
        let rel = rel.to_str().ok_or_else(|| Error::InvalidEntry {
            path: host_path.display().to_string(),
            why: "file name is not valid UTF-8".to_owned(),
        })?;
        let md = item.metadata().map_err(|e| {
            Error::io(
                format!("reading metadata of {}", host_path.display()),
                e.into(),
            )
        })?;
        let file_type = md.file_type();
        if item.depth() == 0 && !file_type.is_dir() {
            return Err(Error::InvalidEntry {
                path: host_path.display().to_string(),
                why: "not a directory".to_owned(),
            });
        }
        let path = match (prefix.is_empty(), rel.is_empty()) {
            (true, true) => continue,
            (true, false) => rel.to_owned(),
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}/{rel}"),
        };
        let kind = if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_file() {
            EntryKind::File {
                source: host_path.to_owned(),
                size: md.len(),
                listed: Some(Listed::new(&root, &md)),
            }
        } else if file_type.is_symlink() {
            let target = fs::read_link(host_path)
                .ctx(|| format!("reading symlink {}", host_path.display()))?;
            let target =
                target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| Error::InvalidEntry {
                        path: host_path.display().to_string(),
                        why: "symlink target is not valid UTF-8".to_owned(),
                    })?;
            EntryKind::Symlink { target }
        } else {
            return Err(Error::InvalidEntry {
                path: host_path.display().to_string(),
                why: format!(
                    "is a {}; only regular files, directories and symlinks can go into a layer",
                    special_kind(file_type)
                ),
            });
        };
        let inode = (file_type.is_file() && md.nlink() > 1).then(|| (md.dev(), md.ino()));
        let mode = md.mode() & 0o7777;
        found.push((Entry { path, kind, mode }, inode));
    }
    // Walk order is per-directory name order, which differs from whole-path byte order
    // ("a.txt" < "a/b"); hardlink targets must be the first path in the order the tar is written.
    found.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    let mut first_path_of_inode: HashMap<(u64, u64), String> = HashMap::new();
    let mut entries = Vec::with_capacity(found.len());
    for (mut entry, inode) in found {
        if let Some(key) = inode {
            match first_path_of_inode.entry(key) {
                MapEntry::Occupied(first) => {
                    entry.kind = EntryKind::Hardlink {
                        target: first.get().clone(),
                    }
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(entry.path.clone());
                }
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn special_kind(file_type: FileType) -> &'static str {
    if file_type.is_socket() {
        "socket"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Sorts entries, adds missing parent directories (0755), rejects duplicate paths and invalid
/// paths (absolute, `..`, empty components).
pub fn normalize(mut entries: Vec<Entry>) -> Result<Vec<Entry>> {
    for entry in &entries {
        validate_path(&entry.path)?;
    }
    // `String`'s order is byte order, which is what "sorted by path bytes" means.
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(dup) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(invalid(&dup[0].path, "duplicate path"));
    }
    let present: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut missing = BTreeSet::new();
    for entry in &entries {
        // Up to the first ancestor that is present or already found missing: its own
        // ancestors were (or will be) looked at from its entry.
        let mut path = entry.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            if present.contains(parent) || missing.contains(parent) {
                break;
            }
            missing.insert(parent.to_owned());
            path = parent;
        }
    }
    if !missing.is_empty() {
        entries.extend(missing.into_iter().map(|path| Entry {
            path,
            kind: EntryKind::Dir,
            mode: 0o755,
        }));
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        // The parents added are prefixes of valid paths, so valid themselves.
    }
    check_structure(&entries)?;
    Ok(entries)
}

/// What a layer's content is, entry by entry, independent of where its files live on the host
/// and of their timestamps. The basis of [`content_key`], and of "what changed" reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryPrint {
    pub path: String,
    /// `dir`, `file`, `symlink` or `hardlink`.
    pub kind: String,
    pub mode: u32,
    /// Link target for links; the sha256 of the content for files; empty for directories.
    pub content: String,
    pub size: u64,
}

/// The fingerprint of normalized entries, held compactly: the entries themselves (borrowed) and
/// the sha256 of each file's content, 32 bytes a file; [`Fingerprint::prints`] makes the
/// [`EntryPrint`]s one at a time, so a 200k-entry layer is never held twice over.
pub struct Fingerprint<'a> {
    entries: &'a [Entry],
    /// One per [`EntryKind::File`] entry, in entry order.
    file_digests: Vec<[u8; 32]>,
}

impl<'a> Fingerprint<'a> {
    /// Fingerprints normalized `entries`, hashing file contents in parallel.
    pub fn of(entries: &'a [Entry]) -> Result<Fingerprint<'a>> {
        use rayon::prelude::*;
        check_normalized(entries)?;
        let file_digests = entries
            .par_iter()
            .filter_map(|entry| match &entry.kind {
                EntryKind::File {
                    source,
                    size,
                    listed,
                } => Some(hash_file(source, *size, listed.as_ref(), &entry.path)),
                _ => None,
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Fingerprint {
            entries,
            file_digests,
        })
    }

    /// The entries' prints, in entry order.
    pub fn prints(&self) -> impl Iterator<Item = EntryPrint> + '_ {
        let mut digests = self.file_digests.iter();
        self.entries.iter().map(move |entry| {
            let (kind, content, size) = match &entry.kind {
                EntryKind::Dir => ("dir", String::new(), 0),
                EntryKind::File { size, .. } => {
                    let digest = digests.next().map(hex::encode).unwrap_or_default();
                    ("file", digest, *size)
                }
                EntryKind::Symlink { target } => ("symlink", target.clone(), 0),
                EntryKind::Hardlink { target } => ("hardlink", target.clone(), 0),
            };
            EntryPrint {
                path: entry.path.clone(),
                kind: kind.to_owned(),
                mode: entry.mode & 0o7777,
                content,
                size,
            }
        })
    }
}

/// A cache key for a layer with these prints written with `opts`: sha256 over a versioned,
/// canonical description of every entry plus mtime/uid/gid and [`Compression::cache_tag`].
pub fn content_key_of(prints: impl IntoIterator<Item = EntryPrint>, opts: &LayerOptions) -> Digest {
    use std::fmt::Write as _;
    let mut key = Sha256::new();
    // Fields are NUL-separated and paths/targets cannot contain NUL (checked when normalizing),
    // so the description parses one way only.
    key.update(format!(
        "{CONTENT_KEY_VERSION}\0mtime={}\0uid={}\0gid={}\0compression={}\n",
        opts.mtime,
        opts.uid,
        opts.gid,
        opts.compression.cache_tag()
    ));
    // Only when set, so the keys of layers written without it stay what they were.
    if let Some(o) = &opts.owned {
        key.update(format!("owned={}\0{}\0{}\n", o.prefix, o.uid, o.gid));
    }
    let mut line = String::new();
    for p in prints {
        line.clear();
        let _ = writeln!(
            line,
            "{}\0{}\0{:o}\0{}\0{}",
            p.path, p.kind, p.mode, p.content, p.size
        );
        key.update(line.as_bytes());
    }
    Digest::from_sha256(key.finalize().into())
}

/// [`Fingerprint::of`] then [`content_key_of`]: independent of host paths and host mtimes.
pub fn content_key(entries: &[Entry], opts: &LayerOptions) -> Result<Digest> {
    Ok(content_key_of(Fingerprint::of(entries)?.prints(), opts))
}

/// Writes `entries` (normalized) as a layer blob into `store` in one streaming pass and returns
/// its record (compressed digest/size/media type and the uncompressed diff_id). Memory use does not
/// grow with layer size.
pub fn write_layer(
    store: &BlobStore,
    entries: &[Entry],
    opts: &LayerOptions,
) -> Result<LayerRecord> {
    check_normalized(entries)?;
    let blob = store.writer()?;
    let (blob, diff_id) = match opts.compression {
        Compression::None => {
            let (blob, diff_id, _) = write_tar(HashingWriter::new(blob), entries, opts)?.finish();
            (blob, diff_id)
        }
        Compression::Gzip { level } => {
            if level > 9 {
                return Err(Error::io(
                    "writing layer",
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("gzip level {level} is out of range 0-9"),
                    ),
                ));
            }
            let gzip = crate::compress::ParallelGzWriter::new(blob, level)
                .ctx(|| "starting the layer's gzip stream")?;
            let (gzip, diff_id, _) = write_tar(HashingWriter::new(gzip), entries, opts)?.finish();
            let blob = gzip.finish().ctx(|| "finishing the layer's gzip stream")?;
            (blob, diff_id)
        }
        Compression::Zstd { level } => {
            let zstd = zstd::Encoder::new(blob, level).ctx(|| "starting zstd")?;
            let (zstd, diff_id, _) = write_tar(HashingWriter::new(zstd), entries, opts)?.finish();
            let blob = zstd.finish().ctx(|| "finishing the layer's zstd stream")?;
            (blob, diff_id)
        }
    };
    let (digest, size) = blob.commit()?;
    Ok(LayerRecord {
        descriptor: Descriptor {
            media_type: opts.compression.media_type().to_owned(),
            digest,
            size,
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        },
        diff_id,
    })
}

/// Writes the tar stream (entries and the two end blocks) into `out` and returns it.
fn write_tar<W: Write>(out: W, entries: &[Entry], opts: &LayerOptions) -> Result<W> {
    let mut builder = Builder::new(out);
    for entry in entries {
        append_entry(&mut builder, entry, opts)?;
    }
    builder.into_inner().ctx(|| "finishing the layer tar")
}

fn append_entry<W: Write>(
    builder: &mut Builder<W>,
    entry: &Entry,
    opts: &LayerOptions,
) -> Result<()> {
    let ctx = || format!("writing layer entry {}", entry.path);
    let (header, pax) = entry_header(entry, opts);
    if let Some(records) = pax {
        let pax_header = pax_header(&entry.path, records.len() as u64, opts);
        builder.append(&pax_header, records.as_slice()).ctx(ctx)?;
    }
    let EntryKind::File {
        source,
        size,
        listed,
    } = &entry.kind
    else {
        return builder.append(&header, io::empty()).ctx(ctx);
    };
    let file = open_file(source, listed.as_ref(), &entry.path)?;
    let mut content = ExactReader::new(file, *size, source.display().to_string());
    builder.append(&header, &mut content).ctx(ctx)?;
    content.check_end().ctx(ctx)
}

/// The ustar header for `entry`, plus PAX records when a field does not fit ustar.
fn entry_header(entry: &Entry, opts: &LayerOptions) -> (Header, Option<Vec<u8>>) {
    let mut header = Header::new_ustar();
    let mut pax = Vec::new();
    let name = match entry.kind {
        EntryKind::Dir => format!("{}/", entry.path),
        _ => entry.path.clone(),
    };
    if !set_ustar_path(&mut header, name.as_bytes()) {
        pax_record(&mut pax, "path", name.as_bytes());
        // Readers use the PAX path; the ustar field only needs to be deterministic.
        set_ustar_path(&mut header, &name.as_bytes()[..USTAR_NAME_MAX]);
    }
    header.set_mode(entry.mode & 0o7777);
    let (uid, gid) = opts.ids(&entry.path);
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_mtime(opts.mtime);
    header.set_size(0);
    match &entry.kind {
        EntryKind::Dir => header.set_entry_type(EntryType::Directory),
        EntryKind::File { size, .. } => {
            header.set_entry_type(EntryType::Regular);
            if *size > USTAR_SIZE_MAX {
                pax_record(&mut pax, "size", size.to_string().as_bytes());
            } else {
                header.set_size(*size);
            }
        }
        EntryKind::Symlink { target } | EntryKind::Hardlink { target } => {
            header.set_entry_type(if matches!(entry.kind, EntryKind::Symlink { .. }) {
                EntryType::Symlink
            } else {
                EntryType::Link
            });
            let bytes = target.as_bytes();
            if bytes.len() > USTAR_LINK_MAX {
                pax_record(&mut pax, "linkpath", bytes);
            }
            set_ustar_field(
                &mut header_ustar(&mut header).linkname,
                &bytes[..bytes.len().min(USTAR_LINK_MAX)],
            );
        }
    }
    header.set_cksum();
    (header, (!pax.is_empty()).then_some(pax))
}

/// A PAX extended header announcing `len` bytes of records for `path`.
fn pax_header(path: &str, len: u64, opts: &LayerOptions) -> Header {
    let mut header = Header::new_ustar();
    // Any deterministic name works (readers ignore it); keep it under the 100-byte name field.
    let base = path.rsplit('/').next().unwrap_or(path).as_bytes();
    let mut name = b"PaxHeaders/".to_vec();
    name.extend_from_slice(&base[..base.len().min(USTAR_NAME_MAX - name.len())]);
    set_ustar_field(&mut header_ustar(&mut header).name, &name);
    header.set_entry_type(EntryType::XHeader);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(opts.mtime);
    header.set_size(len);
    header.set_cksum();
    header
}

fn header_ustar(header: &mut Header) -> &mut tar::UstarHeader {
    header
        .as_ustar_mut()
        .expect("Header::new_ustar always has the ustar layout")
}

/// Stores `path` in the ustar `name` field, or split at a `/` into `prefix` and `name`. Returns
/// false when it does not fit either way (a PAX `path` record is needed). The tar crate's own
/// `set_path` is not used because it rewrites paths through `Path::components`.
fn set_ustar_path(header: &mut Header, path: &[u8]) -> bool {
    let ustar = header_ustar(header);
    if path.len() <= USTAR_NAME_MAX {
        set_ustar_field(&mut ustar.name, path);
        return true;
    }
    // The rightmost usable '/' gives the shortest name. A trailing '/' (directories) cannot be
    // the split point: the name part must not be empty.
    let last_candidate = (path.len() - 1).min(USTAR_PREFIX_MAX + 1);
    let Some(split) = path[..last_candidate].iter().rposition(|&b| b == b'/') else {
        return false;
    };
    let (prefix, name) = (&path[..split], &path[split + 1..]);
    if name.len() > USTAR_NAME_MAX {
        return false;
    }
    set_ustar_field(&mut ustar.prefix, prefix);
    set_ustar_field(&mut ustar.name, name);
    true
}

/// Copies `value` into a zero-filled header field (callers guarantee it fits).
fn set_ustar_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

/// Appends one PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record,
/// its own digits included.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest;
    loop {
        let next = rest + len.to_string().len();
        if next == len {
            break;
        }
        len = next;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Opens the source of a regular-file entry (`source` and `listed` of [`EntryKind::File`]) for
/// reading, checking it still is the regular file that was listed. A listed file is opened below
/// its walk's root handle with no symlink allowed in any component, and must have the inode the
/// walk saw: a file or a parent directory swapped for a symlink, or a file replaced (say by a
/// hardlink to a file elsewhere), after listing is an error naming it. Without `listed`, only the
/// last component is kept from being a symlink. Callers check the size ([`write_layer`] does).
pub fn open_file(source: &Path, listed: Option<&Listed>, entry_path: &str) -> Result<File> {
    let ctx = || format!("opening {} for layer entry {entry_path}", source.display());
    // O_NONBLOCK: opening a file swapped for a fifo must not hang (no effect on regular files).
    let file = match listed {
        Some(listed) => {
            let rel = source.strip_prefix(listed.root.path()).map_err(|_| {
                invalid(
                    entry_path,
                    &format!(
                        "{} is not below {}, the directory it was listed from",
                        source.display(),
                        listed.root.path().display()
                    ),
                )
            })?;
            let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK;
            File::from(listed.root.open_beneath(rel, flags).map_err(|e| {
                let why = match e.raw_os_error() {
                    Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV) => {
                        " (it or a parent directory is now a symlink: changed since it was listed?)"
                    }
                    _ => "",
                };
                Error::io(format!("{}{why}", ctx()), e)
            })?)
        }
        None => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(source)
            .ctx(ctx)?,
    };
    let meta = file
        .metadata()
        .ctx(|| format!("reading metadata of {}", source.display()))?;
    if !meta.is_file() {
        return Err(invalid(
            entry_path,
            &format!("{} is no longer a regular file", source.display()),
        ));
    }
    if let Some(listed) = listed {
        if (meta.dev(), meta.ino()) != (listed.dev, listed.ino) {
            return Err(invalid(
                entry_path,
                &format!(
                    "{} is not the file that was listed (replaced since?)",
                    source.display()
                ),
            ));
        }
    }
    Ok(file)
}

fn hash_file(
    source: &Path,
    size: u64,
    listed: Option<&Listed>,
    entry_path: &str,
) -> Result<[u8; 32]> {
    let ctx = || format!("hashing {}", source.display());
    let file = open_file(source, listed, entry_path)?;
    let mut reader = ExactReader::new(file, size, source.display().to_string());
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher).ctx(ctx)?;
    reader.check_end().ctx(ctx)?;
    Ok(hasher.finalize().into())
}

fn invalid(path: &str, why: &str) -> Error {
    Error::InvalidEntry {
        path: path.to_owned(),
        why: why.to_owned(),
    }
}

/// Image-relative, no leading `/`, no empty, `.` or `..` components, no NUL.
fn validate_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(invalid(path, "empty path"));
    }
    if path.starts_with('/') {
        return Err(invalid(
            path,
            "absolute path (layer paths are image-relative, without a leading '/')",
        ));
    }
    if path.contains('\0') {
        return Err(invalid(path, "contains a NUL byte"));
    }
    for component in path.split('/') {
        match component {
            "" => {
                return Err(invalid(
                    path,
                    "empty path component ('//' or a trailing '/')",
                ))
            }
            "." | ".." => return Err(invalid(path, "'.' and '..' components are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

/// What [`normalize`] guarantees: valid paths, strictly sorted (so no duplicates), every parent
/// present as a directory, hardlinks pointing at an earlier regular file, sane link targets.
fn check_normalized(entries: &[Entry]) -> Result<()> {
    for entry in entries {
        validate_path(&entry.path)?;
    }
    check_structure(entries)
}

/// [`check_normalized`] for entries whose paths are known to be valid.
fn check_structure(entries: &[Entry]) -> Result<()> {
    let mut dirs: HashSet<&str> = HashSet::new();
    // Only hardlink targets are looked up among the files.
    let has_hardlinks = entries
        .iter()
        .any(|e| matches!(e.kind, EntryKind::Hardlink { .. }));
    let mut files: HashSet<&str> = HashSet::new();
    let mut previous: Option<&str> = None;
    for entry in entries {
        let path = entry.path.as_str();
        if let Some(previous) = previous {
            if previous == path {
                return Err(invalid(path, "duplicate path"));
            }
            if previous > path {
                return Err(invalid(
                    path,
                    "entries are not sorted (pass them through normalize)",
                ));
            }
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !dirs.contains(parent) {
                return Err(invalid(
                    path,
                    &format!("parent {parent:?} is missing or not a directory"),
                ));
            }
        }
        match &entry.kind {
            EntryKind::Dir => {
                dirs.insert(path);
            }
            EntryKind::File { .. } if has_hardlinks => {
                files.insert(path);
            }
            EntryKind::File { .. } => {}
            EntryKind::Symlink { target } => {
                if target.is_empty() || target.contains('\0') {
                    return Err(invalid(path, "symlink target is empty or contains NUL"));
                }
            }
            EntryKind::Hardlink { target } => {
                if !files.contains(target.as_str()) {
                    return Err(invalid(
                        path,
                        &format!(
                            "hardlink target {target:?} is not an earlier regular file of this layer"
                        ),
                    ));
                }
            }
        }
        previous = Some(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime};

    use crate::spec::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR};

    /// (path, entry type, mode, link target, uid, gid, mtime, uname, gname, content)
    type ReadEntry = (
        String,
        EntryType,
        u32,
        Option<String>,
        u64,
        u64,
        u64,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
    );

    fn read_tar(tar_bytes: &[u8]) -> Vec<ReadEntry> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap());
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (
                    path,
                    h.entry_type(),
                    h.mode().unwrap(),
                    link,
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mtime().unwrap(),
                    h.username_bytes().unwrap_or_default().to_vec(),
                    h.groupname_bytes().unwrap_or_default().to_vec(),
                    content,
                )
            })
            .collect()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    const LONG_TARGET_LEN: usize = 150;

    fn long_dir() -> String {
        // 4 components of 49 chars: 199 bytes, over ustar's 100-byte name, and the last
        // component plus file name make any split's name part exceed 100 bytes.
        (0..4)
            .map(|i| format!("{i}{}", "d".repeat(48)))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// A host tree exercising every entry kind. Returns its root.
    fn make_tree(root: &Path, mtime: SystemTime) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        set_mode(&root.join("bin/app"), 0o755);
        fs::write(root.join("bin/suid"), b"setuid").unwrap();
        set_mode(&root.join("bin/suid"), 0o4755);
        std::os::unix::fs::symlink("app", root.join("bin/link")).unwrap();
        fs::write(root.join("etc/conf"), b"key=value\n").unwrap();
        set_mode(&root.join("etc/conf"), 0o640);
        fs::hard_link(root.join("etc/conf"), root.join("etc/conf2")).unwrap();
        let long = root.join(long_dir());
        fs::create_dir_all(&long).unwrap();
        let long_file = long.join(format!("f{}", "x".repeat(60)));
        fs::write(&long_file, b"deep").unwrap();
        std::os::unix::fs::symlink("t".repeat(LONG_TARGET_LEN), root.join("longlink")).unwrap();
        set_mode(root, 0o750);
        for e in walkdir::WalkDir::new(root).contents_first(true) {
            let e = e.unwrap();
            if !e.file_type().is_symlink() {
                File::open(e.path()).unwrap().set_modified(mtime).unwrap();
            }
        }
    }

    fn tree_layer(host: &Path, opts: &LayerOptions) -> (BlobStore, LayerRecord, Vec<Entry>) {
        let store_dir = tempfile::tempdir().unwrap().keep();
        let store = BlobStore::open(store_dir).unwrap();
        let entries = normalize(tree_entries(host, "/app").unwrap()).unwrap();
        let record = write_layer(&store, &entries, opts).unwrap();
        (store, record, entries)
    }

    #[test]
    fn gzip_layer_reads_back_with_all_rules_applied() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("src");
        make_tree(
            &host,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let opts = LayerOptions::default();
        let (store, record, _) = tree_layer(&host, &opts);
        assert_eq!(record.descriptor.media_type, MEDIA_TYPE_LAYER_GZIP);
        let blob = fs::read(store.path(&record.descriptor.digest)).unwrap();
        assert_eq!(record.descriptor.size, blob.len() as u64);
        assert_eq!(record.descriptor.digest, Digest::of(&blob));

        let tar_bytes = gunzip(&blob);
        assert_eq!(record.diff_id, Digest::of(&tar_bytes));
        assert!(tar_bytes.ends_with(&[0u8; 1024]));

        let entries = read_tar(&tar_bytes);
        let long_dir = long_dir();
        let long_file = format!("app/{long_dir}/f{}", "x".repeat(60));
        let mut expected_paths = vec![
            "app/".to_owned(),
            format!("app/{}/", &long_dir[..49]),
            format!("app/{}/", &long_dir[..99]),
            format!("app/{}/", &long_dir[..149]),
            format!("app/{long_dir}/"),
            long_file.clone(),
            "app/bin/".to_owned(),
            "app/bin/app".to_owned(),
            "app/bin/link".to_owned(),
            "app/bin/suid".to_owned(),
            "app/etc/".to_owned(),
            "app/etc/conf".to_owned(),
            "app/etc/conf2".to_owned(),
            "app/longlink".to_owned(),
        ];
        expected_paths.sort_by(|a, b| a.trim_end_matches('/').cmp(b.trim_end_matches('/')));
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths, expected_paths);
        assert!(long_file.len() > 200);

        let find = |p: &str| entries.iter().find(|e| e.0 == p).unwrap();
        for e in &entries {
            assert_eq!(e.6, DEFAULT_MTIME, "{}", e.0);
            assert_eq!((e.4, e.5), (0, 0), "{}", e.0);
            assert!(
                e.7.is_empty() && e.8.is_empty(),
                "{} has user/group names",
                e.0
            );
        }
        assert_eq!(find("app/").1, EntryType::Directory);
        assert_eq!(find("app/").2, 0o750, "image_dir keeps the host dir's mode");
        let app = find("app/bin/app");
        assert_eq!((app.1, app.2), (EntryType::Regular, 0o755));
        assert_eq!(app.9, b"#!/bin/sh\necho hi\n");
        assert_eq!(find("app/bin/suid").2, 0o4755);
        let link = find("app/bin/link");
        assert_eq!(
            (link.1, link.3.as_deref()),
            (EntryType::Symlink, Some("app"))
        );
        let conf = find("app/etc/conf");
        assert_eq!(
            (conf.1, conf.2, conf.9.as_slice()),
            (EntryType::Regular, 0o640, &b"key=value\n"[..])
        );
        let conf2 = find("app/etc/conf2");
        assert_eq!(
            (conf2.1, conf2.3.as_deref()),
            (EntryType::Link, Some("app/etc/conf"))
        );
        assert_eq!(find(&long_file).9, b"deep");
        let target = "t".repeat(LONG_TARGET_LEN);
        assert_eq!(find("app/longlink").3.as_deref(), Some(target.as_str()));

        // PAX headers exist exactly for the over-long path and the over-long link target, and
        // none of them is global; no GNU long-name entries.
        let mut raw = tar::Archive::new(tar_bytes.as_slice());
        let raw_entries = raw.entries().unwrap().raw(true);
        let mut pax_keys = Vec::new();
        let mut pax_count = 0;
        for e in raw_entries {
            let mut e = e.unwrap();
            let kind = e.header().entry_type();
            assert!(
                !kind.is_gnu_longname()
                    && !kind.is_gnu_longlink()
                    && !kind.is_pax_global_extensions()
            );
            assert!(!kind.is_gnu_sparse());
            if kind.is_pax_local_extensions() {
                pax_count += 1;
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                for rec in tar::PaxExtensions::new(&body) {
                    pax_keys.push(rec.unwrap().key().unwrap().to_owned());
                }
            }
        }
        assert_eq!(pax_count, 2);
        pax_keys.sort();
        assert_eq!(pax_keys, ["linkpath", "path"]);
    }

    #[test]
    fn gzip_stream_is_one_member_with_zero_mtime_and_no_name() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let entries = normalize(vec![Entry {
            path: "a/b".into(),
            kind: EntryKind::Symlink { target: "c".into() },
            mode: 0o777,
        }])
        .unwrap();
        let record = write_layer(&store, &entries, &LayerOptions::default()).unwrap();
        let blob = fs::read(store.path(&record.descriptor.digest)).unwrap();
        assert_eq!(&blob[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(blob[3] & 0x08, 0, "FNAME flag must be clear");
        assert_eq!(&blob[4..8], &[0, 0, 0, 0], "gzip header mtime");
        let mut decoder = flate2::bufread::GzDecoder::new(blob.as_slice());
        let mut tar_bytes = Vec::new();
        decoder.read_to_end(&mut tar_bytes).unwrap();
        assert!(
            decoder.into_inner().is_empty(),
            "bytes after the first gzip member"
        );
        assert_eq!(Digest::of(&tar_bytes), record.diff_id);
        // normalize added the parent directory, root-owned 0755.
        let read = read_tar(&tar_bytes);
        assert_eq!(read[0].0, "a/");
        assert_eq!(
            (read[0].1, read[0].2, read[0].4),
            (EntryType::Directory, 0o755, 0)
        );
    }

    #[test]
    fn same_content_at_different_host_paths_and_mtimes_gives_same_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("elsewhere/two"));
        make_tree(
            &one,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        );
        make_tree(
            &two,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        let opts = LayerOptions::default();
        let (_s1, r1, e1) = tree_layer(&one, &opts);
        let (_s2, r2, e2) = tree_layer(&two, &opts);
        assert_eq!(r1, r2);
        let k1 = content_key(&e1, &opts).unwrap();
        assert_eq!(k1, content_key(&e2, &opts).unwrap());
        // Writing the same entries again gives the same bytes.
        let (_s3, r3, _) = tree_layer(&one, &opts);
        assert_eq!(r1, r3);

        // The key follows content, options and compression.
        let other_level = LayerOptions {
            compression: Compression::Gzip { level: 1 },
            ..opts.clone()
        };
        assert_ne!(content_key(&e1, &other_level).unwrap(), k1);
        let other_mtime = LayerOptions {
            mtime: 1,
            ..opts.clone()
        };
        assert_ne!(content_key(&e1, &other_mtime).unwrap(), k1);
        fs::write(two.join("etc/conf"), b"key=other\n").unwrap();
        assert_ne!(content_key(&e2, &opts).unwrap(), k1);
    }

    #[test]
    fn uncompressed_layer_digest_is_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("src");
        make_tree(&host, SystemTime::now());
        let opts = LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        };
        let (store, record, _) = tree_layer(&host, &opts);
        assert_eq!(record.descriptor.media_type, MEDIA_TYPE_LAYER_TAR);
        assert_eq!(record.descriptor.digest, record.diff_id);
        let blob = fs::read(store.path(&record.diff_id)).unwrap();
        assert_eq!(blob.len() % 512, 0);
        assert_eq!(read_tar(&blob).len(), 14);
    }

    #[test]
    fn uid_gid_come_from_options() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let entries = normalize(vec![Entry {
            path: "home/cnb".into(),
            kind: EntryKind::Dir,
            mode: 0o700,
        }])
        .unwrap();
        let opts = LayerOptions {
            uid: 1000,
            gid: 1001,
            mtime: 42,
            compression: Compression::None,
            owned: None,
        };
        let record = write_layer(&store, &entries, &opts).unwrap();
        let read = read_tar(&fs::read(store.path(&record.diff_id)).unwrap());
        assert_eq!(read[1].0, "home/cnb/");
        assert_eq!(
            (read[1].2, read[1].4, read[1].5, read[1].6),
            (0o700, 1000, 1001, 42)
        );
    }

    #[test]
    fn owned_prefix_gets_its_own_ids_and_its_own_content_key() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let dir = |p: &str| Entry {
            path: p.into(),
            kind: EntryKind::Dir,
            mode: 0o755,
        };
        let entries = normalize(vec![
            dir("workspace/tmp"),
            dir("workspaces"),
            dir("layers/x"),
        ])
        .unwrap();
        let plain = LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        };
        let opts = LayerOptions {
            owned: Some(Owned {
                prefix: "workspace".into(),
                uid: 65532,
                gid: 65533,
            }),
            ..plain.clone()
        };
        let record = write_layer(&store, &entries, &opts).unwrap();
        let ids: Vec<(String, u64, u64)> =
            read_tar(&fs::read(store.path(&record.diff_id)).unwrap())
                .into_iter()
                .map(|e| (e.0, e.4, e.5))
                .collect();
        assert_eq!(
            ids,
            [
                ("layers/".to_owned(), 0, 0),
                ("layers/x/".to_owned(), 0, 0),
                ("workspace/".to_owned(), 65532, 65533),
                ("workspace/tmp/".to_owned(), 65532, 65533),
                ("workspaces/".to_owned(), 0, 0),
            ]
        );
        assert_ne!(
            content_key(&entries, &opts).unwrap(),
            content_key(&entries, &plain).unwrap()
        );
    }

    #[test]
    fn huge_sizes_use_pax_and_mid_length_paths_use_the_ustar_prefix() {
        let opts = LayerOptions::default();
        let big = Entry {
            path: "big".into(),
            kind: EntryKind::file(PathBuf::from("/nonexistent"), 9 << 30),
            mode: 0o644,
        };
        let (header, pax) = entry_header(&big, &opts);
        assert_eq!(pax.unwrap(), b"19 size=9663676416\n");
        assert_eq!(header.entry_size().unwrap(), 0);

        let exact = Entry {
            path: format!("{}/{}", "p".repeat(150), "n".repeat(99)),
            kind: EntryKind::Dir,
            mode: 0o755,
        };
        let (header, pax) = entry_header(&exact, &opts);
        assert!(pax.is_none(), "fits prefix (150) + name (99 + '/')");
        assert_eq!(
            header.path_bytes().into_owned(),
            format!("{}/", exact.path).into_bytes()
        );
    }

    #[test]
    fn pax_record_lengths_count_their_own_digits() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", b"abc");
        assert_eq!(out, b"12 path=abc\n");
        out.clear();
        // Without its length the record is 98 bytes; "98 " would make it 100, which needs a third
        // digit, so the fixed point is 101.
        let value = vec![b'v'; 91];
        pax_record(&mut out, "path", &value);
        assert_eq!(out.len(), 101);
        assert!(out.starts_with(b"101 path="));
    }

    #[test]
    fn normalize_rejects_bad_paths_and_duplicates() {
        let dir = |p: &str| Entry {
            path: p.to_owned(),
            kind: EntryKind::Dir,
            mode: 0o755,
        };
        for bad in ["/abs", "a/../b", "..", "./a", "a//b", "a/", "", "a/./b"] {
            let err = normalize(vec![dir(bad)]).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidEntry { path, .. } if path == bad),
                "{bad:?}: {err}"
            );
        }
        let err = normalize(vec![dir("x"), dir("a"), dir("x")]).unwrap_err();
        assert!(err.to_string().contains("\"x\"") && err.to_string().contains("duplicate"));

        let err = normalize(vec![Entry {
            path: "b".into(),
            kind: EntryKind::Hardlink { target: "a".into() },
            mode: 0o644,
        }])
        .unwrap_err();
        assert!(err.to_string().contains("hardlink target"), "{err}");

        let err = normalize(vec![
            Entry {
                path: "f".into(),
                kind: EntryKind::Symlink { target: "x".into() },
                mode: 0o777,
            },
            dir("f/child"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn write_layer_refuses_unnormalized_entries() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let entries = vec![
            Entry {
                path: "b".into(),
                kind: EntryKind::Dir,
                mode: 0o755,
            },
            Entry {
                path: "a".into(),
                kind: EntryKind::Dir,
                mode: 0o755,
            },
        ];
        assert!(write_layer(&store, &entries, &LayerOptions::default()).is_err());
    }

    #[test]
    fn files_changing_size_after_the_walk_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("src");
        fs::create_dir(&host).unwrap();
        fs::write(host.join("grows"), b"1234").unwrap();
        let entries = normalize(tree_entries(&host, "/w").unwrap()).unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();

        fs::write(host.join("grows"), b"123456").unwrap();
        let err = write_layer(&store, &entries, &LayerOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("w/grows") && msg.contains("longer than the 4 bytes"),
            "{msg}"
        );

        fs::write(host.join("grows"), b"12").unwrap();
        let err = write_layer(&store, &entries, &LayerOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("grows") && msg.contains("ended after 2 of the 4"),
            "{msg}"
        );
        assert!(content_key(&entries, &LayerOptions::default()).is_err());
        // Failed writes leave no blobs behind.
        assert_eq!(
            fs::read_dir(store.root().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    /// A tree with `d/secret.txt` ("public!") listed, and a same-sized `secret.txt` ("SECRET!")
    /// outside it that a swap after the walk tries to smuggle in.
    fn listed_tree_with_outside_secret() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<Entry>) {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("src");
        let outside = dir.path().join("outside");
        fs::create_dir_all(host.join("d")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(host.join("d/secret.txt"), b"public!").unwrap();
        fs::write(outside.join("secret.txt"), b"SECRET!").unwrap();
        let entries = normalize(tree_entries(&host, "/w").unwrap()).unwrap();
        (dir, host, outside, entries)
    }

    /// The error writing `entries` as a layer gives; a layer written anyway fails the test, saying
    /// whether it packed the secret.
    fn layer_without_secret(store: &BlobStore, entries: &[Entry]) -> String {
        let opts = LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        };
        match write_layer(store, entries, &opts) {
            Ok(record) => {
                let tar = fs::read(store.path(&record.descriptor.digest)).unwrap();
                let leaked = tar.windows(7).any(|w| w == b"SECRET!");
                panic!("the layer was written (outside file packed: {leaked})");
            }
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_parent_directory_swapped_for_a_symlink_after_the_walk_is_refused() {
        let (dir, host, outside, entries) = listed_tree_with_outside_secret();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        fs::rename(host.join("d"), host.join("d.old")).unwrap();
        std::os::unix::fs::symlink(&outside, host.join("d")).unwrap();
        let msg = layer_without_secret(&store, &entries);
        assert!(msg.contains("d/secret.txt"), "{msg}");
        assert!(content_key(&entries, &LayerOptions::default()).is_err());
    }

    #[test]
    fn a_file_replaced_by_another_after_the_walk_is_refused() {
        let (dir, host, outside, entries) = listed_tree_with_outside_secret();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        // Same size, so only the identity check can tell: a hardlink to a file outside the tree.
        fs::remove_file(host.join("d/secret.txt")).unwrap();
        fs::hard_link(outside.join("secret.txt"), host.join("d/secret.txt")).unwrap();
        let msg = layer_without_secret(&store, &entries);
        assert!(msg.contains("d/secret.txt"), "{msg}");
        assert!(msg.contains("not the file that was listed"), "{msg}");
    }

    #[test]
    fn tree_entries_rejects_fifos_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: c_path is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let err = tree_entries(dir.path(), "/x").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&fifo.display().to_string()) && msg.contains("fifo"),
            "{msg}"
        );
    }

    #[test]
    fn tree_entries_at_image_root_has_no_root_entry() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"x").unwrap();
        let entries = tree_entries(dir.path(), "/").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].path, "f");
    }

    #[test]
    fn cache_tags() {
        assert_eq!(
            Compression::DEFAULT.cache_tag(),
            "gzip-4/b1048576/zlib-rs-0.6"
        );
        assert_eq!(
            Compression::Gzip { level: 1 }.cache_tag(),
            "gzip-1/b1048576/zlib-rs-0.6"
        );
        assert!(Compression::Zstd { level: 3 }
            .cache_tag()
            .starts_with("zstd-3/zstd-1."));
        assert_eq!(Compression::None.cache_tag(), "none");
    }

    #[test]
    fn compression_parses_names_and_levels() {
        assert_eq!(Compression::parse("gzip"), Ok(Compression::DEFAULT));
        assert_eq!(
            Compression::parse("gzip:9"),
            Ok(Compression::Gzip { level: 9 })
        );
        assert_eq!(
            Compression::parse("zstd:19"),
            Ok(Compression::Zstd { level: 19 })
        );
        assert_eq!(Compression::parse("none"), Ok(Compression::None));
        assert!(Compression::parse("gzip:10").unwrap_err().contains("0-9"));
        assert!(Compression::parse("zstd:0").unwrap_err().contains("1-19"));
        assert!(Compression::parse("brotli").is_err());
    }

    #[test]
    fn zstd_layer_round_trips_with_its_media_type() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"zstd content").unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let entries = normalize(tree_entries(dir.path(), "/x").unwrap()).unwrap();
        let opts = LayerOptions {
            compression: Compression::Zstd { level: 3 },
            ..LayerOptions::default()
        };
        let record = write_layer(&store, &entries, &opts).unwrap();
        assert_eq!(
            record.descriptor.media_type,
            crate::spec::MEDIA_TYPE_LAYER_ZSTD
        );
        let blob = fs::read(store.path(&record.descriptor.digest)).unwrap();
        let tar = zstd::decode_all(&blob[..]).unwrap();
        assert_eq!(Digest::of(&tar), record.diff_id);
        assert!(tar.windows(12).any(|w| w == b"zstd content"));
    }
}
