//! The image's filesystem as a container runtime would lay it out, as metadata only.
//!
//! Layers are applied in order: whiteouts (`.wh.NAME`, opaque `.wh..wh..opq`) hide what lower
//! layers put there, then the layer's entries are placed, their parent directories resolved
//! through the image's own symlinks (as containerd and umoci extract: a file under `/lib` lands
//! in `/usr/lib` when `/lib` is a link to it). Every lookup resolves symlinks against the image
//! root, never the host. No file content is held: a built layer's file is read from its host
//! source when examined; a base layer's files are examined while its blob is read, in the one
//! pass that lists it — for the few kinds of files the check needs (ELF files: their loader
//! facts; `#!` scripts: that line; `/etc/*.conf`, `/etc/*.path`: their text) — and what was
//! found is kept in a [`LayerIndex`] on disk, keyed by the blob, so the next build on the same
//! base reads no blob at all.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use kiln_oci::layer::{Entry, EntryKind, Listed};
use serde::{Deserialize, Serialize};

use crate::elf::{self, ElfInfo};
use crate::error::{Error, Result};
use crate::shell::SHEBANG_MAX;

/// How many symlinks one lookup may follow (Linux's limit).
const MAX_SYMLINK_HOPS: usize = 40;
/// The biggest text file kept (`/etc/ld.so.conf` and the like).
pub(crate) const MAX_TEXT_SIZE: u64 = 64 << 10;
/// ELF files up to this size are examined in memory; larger ones from a temporary file.
const MAX_IN_MEMORY: u64 = 8 << 20;
/// Names [`LayerIndex`] files; bump it when what they hold changes.
const INDEX_VERSION: &str = "kiln-verify-layer-index/v1";

/// One path of the image.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Index of the layer that put it there (see [`ImageFs::layer_name`]).
    pub layer: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Dir,
    File(Content),
    Symlink(String),
    /// A device, fifo or other special file: present, but nothing that can be run.
    Other,
}

/// Where what the check needs of a regular file comes from.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// A file of a layer Kiln built, examined when asked (see [`kiln_oci::layer::open_file`]).
    Host {
        source: PathBuf,
        listed: Option<Listed>,
    },
    /// A base layer's file, examined when its blob was read.
    Base(Box<Facts>),
}

/// What the check needs of a file: an ELF file's loader facts, a script's `#!` line, a
/// configuration file's text. All empty for any other file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Facts {
    /// The first line (at most [`SHEBANG_MAX`] bytes), for a file starting with `#!`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shebang: Option<String>,
    /// For a file starting with the ELF magic: what it needs, or what is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elf: Option<Result<ElfInfo, String>>,
    /// The text of a small configuration file (see [`wants_text`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Facts {
    fn is_empty(&self) -> bool {
        self.shebang.is_none() && self.elf.is_none() && self.text.is_none()
    }
}

/// Whether the text of the file at `path` (normalized) is kept: the loader's configuration.
fn wants_text(path: &str, size: u64) -> bool {
    size <= MAX_TEXT_SIZE
        && path.starts_with("etc/")
        && (path.ends_with(".conf") || path.ends_with(".path"))
}

/// What a base layer holds, as [`ImageFs`] needs it: its entries in tar order with their
/// [`Facts`]. Made in one pass over the blob; stored (JSON) so the blob is read once.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LayerIndex {
    version: String,
    items: Vec<TarItem>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TarItem {
    path: String,
    mode: u32,
    kind: TarKind,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TarKind {
    File {
        #[serde(default, skip_serializing_if = "Facts::is_empty")]
        facts: Facts,
    },
    Dir,
    Symlink {
        target: String,
    },
    Hardlink {
        target: String,
    },
    Other,
    /// `.wh.NAME`: hides NAME (the path's last component) of lower layers.
    Whiteout,
    /// `.wh..wh..opq`: hides everything lower layers have in the path's directory.
    Opaque,
}

#[derive(Debug, Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// `path` (absolute, as far as it was resolved) does not exist.
    Missing { path: String },
    /// `path` is not a directory but the lookup needed to go through it.
    NotDir { path: String },
    /// More than [`MAX_SYMLINK_HOPS`] symlinks.
    Loop,
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Missing { path } => write!(f, "{path} does not exist"),
            LookupError::NotDir { path } => write!(f, "{path} is not a directory"),
            LookupError::Loop => write!(f, "too many levels of symbolic links"),
        }
    }
}

/// What a walk found: the canonical key (no leading `/`; `""` is the root) of an existing path,
/// or how far it got.
enum Walk {
    Found(String),
    /// `at` exists (a directory); `rest` (the first being the missing one) does not.
    Missing {
        at: String,
        rest: Vec<String>,
    },
    Failed(LookupError),
}

/// The image's filesystem: every path's kind, mode and layer, and what the check needs of its
/// files.
pub struct ImageFs {
    nodes: BTreeMap<String, Node>,
    /// Layer names, for messages.
    layers: Vec<String>,
    /// Where base-layer ELF files too big to examine in memory go while examined.
    spool_dir: PathBuf,
}

impl ImageFs {
    /// An empty image (scratch). Base-layer ELF files too big to examine in memory are spooled
    /// to unnamed temporary files in `spool_dir` while they are.
    pub fn new(spool_dir: impl Into<PathBuf>) -> ImageFs {
        ImageFs {
            nodes: BTreeMap::new(),
            layers: Vec::new(),
            spool_dir: spool_dir.into(),
        }
    }

    /// Applies a layer blob (a tar, gzip- or zstd-compressed as `media_type` says) on top.
    /// `name` says where it comes from in messages. With `index` (a path for this blob's
    /// content, say named by its digest), what one pass over the blob found is read from there
    /// when present, and written there otherwise.
    pub fn add_blob_layer(
        &mut self,
        name: &str,
        blob: &Path,
        media_type: &str,
        index: Option<&Path>,
    ) -> Result<()> {
        let stored = index.and_then(|path| {
            let bytes = std::fs::read(path).ok()?;
            let stored: LayerIndex = serde_json::from_slice(&bytes).ok()?;
            (stored.version == INDEX_VERSION).then_some(stored)
        });
        let layer_index = match stored {
            Some(stored) => stored,
            None => {
                let compression = compression_of(media_type).ok_or_else(|| Error::Layer {
                    layer: name.to_owned(),
                    why: format!("unsupported layer media type {media_type:?}"),
                })?;
                let made = self.index_blob(name, blob, compression)?;
                if let Some(path) = index {
                    store_index(path, &made)?;
                }
                made
            }
        };
        self.apply(name, layer_index.items);
        Ok(())
    }

    /// Lists the blob's entries, examining the files the check may need.
    fn index_blob(&self, name: &str, blob: &Path, compression: Compression) -> Result<LayerIndex> {
        let mut items = Vec::new();
        for_each_entry(blob, compression, name, |path, entry| {
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let base = split_last(&path).1;
            let link = || {
                entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default()
            };
            let kind = if base == ".wh..wh..opq" {
                TarKind::Opaque
            } else if base.starts_with(".wh.") {
                TarKind::Whiteout
            } else {
                match header.entry_type() {
                    tar::EntryType::Regular
                    | tar::EntryType::Continuous
                    | tar::EntryType::GNUSparse => {
                        let size = entry.size();
                        TarKind::File {
                            facts: self.examine_entry(&path, size, entry)?,
                        }
                    }
                    tar::EntryType::Directory => TarKind::Dir,
                    tar::EntryType::Symlink => TarKind::Symlink { target: link() },
                    tar::EntryType::Link => match normalize(&link()) {
                        Some(target) => TarKind::Hardlink { target },
                        None => return Ok(()),
                    },
                    tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                        TarKind::Other
                    }
                    _ => return Ok(()), // global PAX headers and the like: no path of the image
                }
            };
            items.push(TarItem { path, mode, kind });
            Ok(())
        })?;
        Ok(LayerIndex {
            version: INDEX_VERSION.to_owned(),
            items,
        })
    }

    /// Examines a base layer's file as the tar stream goes by.
    fn examine_entry(&self, path: &str, size: u64, entry: &mut dyn Read) -> Result<Facts> {
        let ctx = |e: io::Error| Error::Io {
            context: format!("reading {path} of a base layer"),
            source: e,
        };
        let mut head = Vec::with_capacity(SHEBANG_MAX);
        (&mut *entry)
            .take(SHEBANG_MAX as u64)
            .read_to_end(&mut head)
            .map_err(ctx)?;
        let mut facts = Facts::default();
        if head.starts_with(elf::MAGIC) {
            let mut rest = head.as_slice().chain(entry);
            facts.elf = Some(if size <= MAX_IN_MEMORY {
                let mut bytes = Vec::with_capacity(size as usize);
                rest.read_to_end(&mut bytes).map_err(ctx)?;
                elf::parse(io::Cursor::new(bytes))
            } else {
                let mut spooled = tempfile::tempfile_in(&self.spool_dir).map_err(ctx)?;
                io::copy(&mut rest, &mut spooled).map_err(ctx)?;
                elf::parse(spooled)
            });
        } else if head.starts_with(b"#!") {
            facts.shebang = Some(first_line(&head));
        } else if wants_text(path, size) {
            let mut bytes = head;
            (&mut *entry)
                .take(MAX_TEXT_SIZE)
                .read_to_end(&mut bytes)
                .map_err(ctx)?;
            facts.text = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok(facts)
    }

    /// Applies a base layer's items: whiteouts (hiding lower layers' paths only, wherever they
    /// stand in its tar), then its entries in order.
    fn apply(&mut self, name: &str, items: Vec<TarItem>) {
        let layer = self.layers.len();
        self.layers.push(name.to_owned());
        for item in &items {
            if !matches!(item.kind, TarKind::Whiteout | TarKind::Opaque) {
                continue;
            }
            let (parent, base) = split_last(&item.path);
            let Walk::Found(dir) = self.walk(parent, true) else {
                continue;
            };
            match item.kind {
                TarKind::Whiteout => self.remove_tree(&join(&dir, &base[".wh.".len()..])),
                _ => self.remove_children(&dir),
            }
        }
        for TarItem { path, mode, kind } in items {
            let kind = match kind {
                TarKind::File { facts } => Kind::File(Content::Base(Box::new(facts))),
                TarKind::Dir => Kind::Dir,
                TarKind::Symlink { target } => Kind::Symlink(target),
                TarKind::Other => Kind::Other,
                TarKind::Hardlink { target } => {
                    self.hardlink(&path, &target, layer);
                    continue;
                }
                TarKind::Whiteout | TarKind::Opaque => continue,
            };
            self.place(&path, Node { kind, mode, layer });
        }
    }

    /// Applies a layer Kiln built from `entries` (normalized, as [`kiln_oci::layer::normalize`]
    /// leaves them) on top.
    pub fn add_entries(&mut self, name: &str, entries: Vec<Entry>) {
        let index = self.layers.len();
        self.layers.push(name.to_owned());
        for entry in entries {
            let Some(path) = normalize(&entry.path) else {
                continue;
            };
            let kind = match entry.kind {
                EntryKind::Dir => Kind::Dir,
                EntryKind::File { source, listed, .. } => {
                    Kind::File(Content::Host { source, listed })
                }
                EntryKind::Symlink { target } => Kind::Symlink(target),
                EntryKind::Hardlink { target } => {
                    self.hardlink(&path, &target, index);
                    continue;
                }
            };
            self.place(
                &path,
                Node {
                    kind,
                    mode: entry.mode & 0o7777,
                    layer: index,
                },
            );
        }
    }

    /// What layer `index` is called in messages.
    pub(crate) fn layer_name(&self, index: usize) -> &str {
        &self.layers[index]
    }

    pub(crate) fn node(&self, key: &str) -> Option<&Node> {
        if key.is_empty() {
            return None;
        }
        self.nodes.get(key)
    }

    /// Resolves `path` (absolute, or relative to the root) following every symlink, the last
    /// component's too when `follow_last`. Returns the canonical absolute path.
    pub(crate) fn resolve(&self, path: &str, follow_last: bool) -> Result<String, LookupError> {
        match self.walk(path, follow_last) {
            Walk::Found(key) => Ok(format!("/{key}")),
            Walk::Missing { at, rest } => Err(LookupError::Missing {
                path: format!("/{}", join(&at, &rest[0])),
            }),
            Walk::Failed(e) => Err(e),
        }
    }

    /// The canonical absolute paths of every file, directory or link whose name is `name`.
    pub(crate) fn find_by_name(&self, name: &str) -> Vec<(String, &Node)> {
        self.nodes
            .iter()
            .filter(|(key, _)| split_last(key).1 == name)
            .map(|(key, node)| (format!("/{key}"), node))
            .collect()
    }

    /// Names of the entries of directory `dir` (canonical, absolute).
    pub(crate) fn children(&self, dir: &str) -> Vec<String> {
        let key = dir.trim_start_matches('/');
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .filter_map(|k| {
                let rest = &k[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
            })
            .collect()
    }

    /// What the check needs of the regular file at canonical path `path`.
    pub(crate) fn examine(&self, path: &str) -> Result<Facts> {
        let key = path.trim_start_matches('/');
        match self.node(key).map(|n| &n.kind) {
            Some(Kind::File(Content::Base(facts))) => Ok((**facts).clone()),
            Some(Kind::File(Content::Host { source, listed })) => {
                let ctx = |e: io::Error| Error::Io {
                    context: format!("reading {} (the image's {path})", source.display()),
                    source: e,
                };
                let mut file = kiln_oci::layer::open_file(source, listed.as_ref(), key)?;
                let mut head = Vec::with_capacity(SHEBANG_MAX);
                (&mut file)
                    .take(SHEBANG_MAX as u64)
                    .read_to_end(&mut head)
                    .map_err(ctx)?;
                let mut facts = Facts::default();
                if head.starts_with(elf::MAGIC) {
                    file.rewind().map_err(ctx)?;
                    facts.elf = Some(elf::parse(file));
                } else if head.starts_with(b"#!") {
                    facts.shebang = Some(first_line(&head));
                } else if wants_text(key, file.metadata().map_err(ctx)?.len()) {
                    let mut bytes = head;
                    file.take(MAX_TEXT_SIZE)
                        .read_to_end(&mut bytes)
                        .map_err(ctx)?;
                    facts.text = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                Ok(facts)
            }
            _ => Err(Error::Internal(format!(
                "{path} is not a regular file of the image"
            ))),
        }
    }

    /// A hardlink at `path` is another name for the inode of the file `target`: its content and
    /// mode. One to a path that is no regular file would fail to extract: nothing is placed.
    fn hardlink(&mut self, path: &str, target: &str, layer: usize) {
        let found = match self.walk(target, false) {
            Walk::Found(key) => self.nodes.get(&key).cloned(),
            _ => None,
        };
        if let Some(node) = found.filter(|n| matches!(n.kind, Kind::File(_))) {
            self.place(path, Node { layer, ..node });
        }
    }

    /// Puts `node` at `path`, its parents resolved through the image's symlinks (missing ones
    /// made as directories). A directory over a directory only takes the new mode; anything else
    /// replaces what was there, with its subtree.
    fn place(&mut self, path: &str, node: Node) {
        let (parent, name) = split_last(path);
        let Some(parent) = self.make_dirs(parent, node.layer) else {
            return; // a parent is a file: extraction would fail on this entry
        };
        let key = join(&parent, name);
        if let (Some(existing), Kind::Dir) = (self.nodes.get_mut(&key), &node.kind) {
            if matches!(existing.kind, Kind::Dir) {
                existing.mode = node.mode;
                return;
            }
        }
        self.remove_tree(&key);
        self.nodes.insert(key, node);
    }

    /// Resolves directory `path`, making each missing component a directory (0755, of `layer`).
    fn make_dirs(&mut self, path: &str, layer: usize) -> Option<String> {
        // Each round makes one directory; symlinks may add components, bounded by the hop limit.
        for _ in 0..=(path.split('/').count() + MAX_SYMLINK_HOPS) {
            match self.walk(path, true) {
                Walk::Found(key) if key.is_empty() => return Some(key),
                Walk::Found(key) => {
                    return matches!(self.nodes.get(&key)?.kind, Kind::Dir).then_some(key)
                }
                Walk::Missing { at, rest } => {
                    let name = rest.first().filter(|n| n.as_str() != "..")?;
                    self.nodes.insert(
                        join(&at, name),
                        Node {
                            kind: Kind::Dir,
                            mode: 0o755,
                            layer,
                        },
                    );
                }
                Walk::Failed(_) => return None,
            }
        }
        None
    }

    /// Walks `path` from the root, following symlinks against the image root.
    fn walk(&self, path: &str, follow_last: bool) -> Walk {
        // Components still to walk, the next one last.
        let mut todo: Vec<String> = components(path).rev().map(str::to_owned).collect();
        let mut at: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = todo.pop() {
            match component.as_str() {
                "" | "." => continue,
                ".." => {
                    at.pop();
                    continue;
                }
                _ => {}
            }
            let here = at.join("/");
            let key = join(&here, &component);
            let last = todo.iter().all(|c| c.is_empty() || c == ".");
            match self.nodes.get(&key).map(|n| &n.kind) {
                None => {
                    let mut rest = vec![component];
                    rest.extend(todo.into_iter().rev());
                    return Walk::Missing { at: here, rest };
                }
                Some(Kind::Symlink(target)) if follow_last || !last => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Walk::Failed(LookupError::Loop);
                    }
                    if target.starts_with('/') {
                        at.clear();
                    }
                    todo.extend(components(target).rev().map(str::to_owned));
                }
                Some(Kind::Dir) => at.push(component),
                Some(_) if last => at.push(component),
                Some(_) => {
                    return Walk::Failed(LookupError::NotDir {
                        path: format!("/{key}"),
                    })
                }
            }
        }
        Walk::Found(at.join("/"))
    }

    fn remove_tree(&mut self, key: &str) {
        self.nodes.remove(key);
        self.remove_children(key);
    }

    fn remove_children(&mut self, key: &str) {
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }
}

fn compression_of(media_type: &str) -> Option<Compression> {
    if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        Some(Compression::Gzip)
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Some(Compression::Zstd)
    } else if media_type.ends_with(".tar") {
        Some(Compression::None)
    } else {
        None
    }
}

/// Calls `visit` with each entry of the layer tar `blob` and its normalized path (entries whose
/// path has a `..` component are skipped: no runtime would extract them).
fn for_each_entry(
    blob: &Path,
    compression: Compression,
    layer: &str,
    mut visit: impl FnMut(String, &mut tar::Entry<'_, Box<dyn Read + '_>>) -> Result<()>,
) -> Result<()> {
    let ctx = |e: io::Error| Error::Layer {
        layer: layer.to_owned(),
        why: format!("reading {}: {e}", blob.display()),
    };
    let file = BufReader::new(File::open(blob).map_err(ctx)?);
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        // Several gzip members are one stream to container runtimes too.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(ctx)?),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(ctx)? {
        let mut entry = entry.map_err(ctx)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalize(&raw) else {
            continue;
        };
        visit(path, &mut entry)?;
    }
    Ok(())
}

/// `./usr/bin/` → `usr/bin`; `None` for the root itself or a path with a `..` component.
fn normalize(path: &str) -> Option<String> {
    let parts: Vec<&str> = components(path)
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/')
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
pub(crate) fn split_last(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The first line of `head`, a `#!` line.
fn first_line(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
    String::from_utf8_lossy(line).into_owned()
}

/// Writes `index` to `path`, temp then rename.
fn store_index(path: &Path, index: &LayerIndex) -> Result<()> {
    let ctx = |e: io::Error| Error::Io {
        context: format!("writing {}", path.display()),
        source: e,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(ctx)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(ctx)?;
    let bytes = serde_json::to_vec(index).map_err(|e| ctx(e.into()))?;
    tmp.write_all(&bytes).map_err(ctx)?;
    tmp.persist(path).map_err(|e| ctx(e.error))?;
    Ok(())
}
