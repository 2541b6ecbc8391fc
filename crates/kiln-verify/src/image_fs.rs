//! The image's filesystem as a container runtime would lay it out, as metadata only.
//!
//! Layers are applied in order: whiteouts (`.wh.NAME`, opaque `.wh..wh..opq`) hide what lower
//! layers put there, then the layer's entries are placed, their parent directories resolved
//! through the image's own symlinks (as containerd and umoci extract: a file under `/lib` lands
//! in `/usr/lib` when `/lib` is a link to it). Every lookup resolves symlinks against the image
//! root, never the host. No file content is held: a file's bytes are read when asked for, from
//! its host source (layers Kiln built) or by re-reading its layer blob (base layers), spooled to
//! an unnamed temporary file in one pass per blob for all the files asked for at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use kiln_oci::layer::{Entry, EntryKind, Listed};

use crate::error::{Error, Result};

/// How many symlinks one lookup may follow (Linux's limit).
const MAX_SYMLINK_HOPS: usize = 40;

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

/// Where a regular file's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// A file of a layer Kiln built (see [`kiln_oci::layer::open_file`]).
    Host {
        source: PathBuf,
        listed: Option<Listed>,
    },
    /// The entry `entry` (normalized path) of base layer `layer`'s tar.
    InBlob { layer: usize, entry: String },
}

#[derive(Debug, Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

struct Layer {
    name: String,
    /// Base layers: the blob and how it is compressed.
    blob: Option<(PathBuf, Compression)>,
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

/// The image's filesystem: every path's kind, mode and layer, and where its bytes are.
pub struct ImageFs {
    nodes: BTreeMap<String, Node>,
    layers: Vec<Layer>,
    /// Where spooled base-layer files go.
    spool_dir: PathBuf,
    spooled: HashMap<(usize, String), File>,
}

impl ImageFs {
    /// An empty image (scratch). Base-layer files whose bytes are needed are spooled to unnamed
    /// temporary files in `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>) -> ImageFs {
        ImageFs {
            nodes: BTreeMap::new(),
            layers: Vec::new(),
            spool_dir: spool_dir.into(),
            spooled: HashMap::new(),
        }
    }

    /// Applies a layer blob (a tar, gzip- or zstd-compressed as `media_type` says) on top,
    /// reading only its headers. `name` says where it comes from in messages.
    pub fn add_blob_layer(&mut self, name: &str, blob: &Path, media_type: &str) -> Result<()> {
        let compression = compression_of(media_type).ok_or_else(|| Error::Layer {
            layer: name.to_owned(),
            why: format!("unsupported layer media type {media_type:?}"),
        })?;
        let index = self.layers.len();
        self.layers.push(Layer {
            name: name.to_owned(),
            blob: Some((blob.to_owned(), compression)),
        });
        let mut items: Vec<(String, TarItem, u32)> = Vec::new();
        let mut whiteouts: Vec<(String, Option<String>)> = Vec::new();
        for_each_entry(blob, compression, name, |path, entry| {
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let (parent, base) = split_last(&path);
            if base == ".wh..wh..opq" {
                whiteouts.push((parent.to_owned(), None));
                return Ok(());
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                whiteouts.push((parent.to_owned(), Some(hidden.to_owned())));
                return Ok(());
            }
            let link = || {
                entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default()
            };
            let item = match header.entry_type() {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => TarItem::File,
                tar::EntryType::Directory => TarItem::Dir,
                tar::EntryType::Symlink => TarItem::Symlink(link()),
                tar::EntryType::Link => match normalize(&link()) {
                    Some(target) => TarItem::Hardlink(target),
                    None => return Ok(()),
                },
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    TarItem::Other
                }
                _ => return Ok(()), // global PAX headers and the like: no path of the image
            };
            items.push((path, item, mode));
            Ok(())
        })?;
        // Whiteouts hide lower layers' paths only, wherever they stand in this layer's tar.
        for (parent, hidden) in whiteouts {
            let Walk::Found(dir) = self.walk(&parent, true) else {
                continue;
            };
            match hidden {
                Some(name) => {
                    let key = join(&dir, &name);
                    self.remove_tree(&key);
                }
                None => self.remove_children(&dir),
            }
        }
        for (path, item, mode) in items {
            let kind = match item {
                TarItem::File => Kind::File(Content::InBlob {
                    layer: index,
                    entry: path.clone(),
                }),
                TarItem::Dir => Kind::Dir,
                TarItem::Symlink(target) => Kind::Symlink(target),
                TarItem::Other => Kind::Other,
                TarItem::Hardlink(target) => {
                    self.hardlink(&path, &target, index);
                    continue;
                }
            };
            self.place(
                &path,
                Node {
                    kind,
                    mode,
                    layer: index,
                },
            );
        }
        Ok(())
    }

    /// Applies a layer Kiln built from `entries` (normalized, as [`kiln_oci::layer::normalize`]
    /// leaves them) on top.
    pub fn add_entries(&mut self, name: &str, entries: Vec<Entry>) {
        let index = self.layers.len();
        self.layers.push(Layer {
            name: name.to_owned(),
            blob: None,
        });
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
        &self.layers[index].name
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

    /// Makes the bytes of the files at these canonical paths readable with [`ImageFs::open`]:
    /// one pass over each base layer blob that holds any of them.
    pub(crate) fn fetch(&mut self, paths: &[String]) -> Result<()> {
        let mut wanted: BTreeMap<usize, HashSet<String>> = BTreeMap::new();
        for path in paths {
            if let Some(Node {
                kind: Kind::File(Content::InBlob { layer, entry }),
                ..
            }) = self.node(path.trim_start_matches('/'))
            {
                if !self.spooled.contains_key(&(*layer, entry.clone())) {
                    wanted.entry(*layer).or_default().insert(entry.clone());
                }
            }
        }
        for (layer, entries) in wanted {
            let Layer { name, blob } = &self.layers[layer];
            let Some((blob, compression)) = blob else {
                continue;
            };
            let spool_dir = &self.spool_dir;
            let spooled = &mut self.spooled;
            for_each_entry(blob, *compression, name, |path, entry| {
                if entries.contains(&path) {
                    let ctx = |e: io::Error| Error::Io {
                        context: format!("spooling {path} of {name} to {}", spool_dir.display()),
                        source: e,
                    };
                    let mut file = tempfile::tempfile_in(spool_dir).map_err(ctx)?;
                    io::copy(entry, &mut file).map_err(ctx)?;
                    // A later entry of the same path in one tar wins, as on extraction.
                    spooled.insert((layer, path), file);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Opens the regular file at canonical path `path` (fetched first when from a base layer).
    pub(crate) fn open(&self, path: &str) -> Result<File> {
        let key = path.trim_start_matches('/');
        let Some(Node {
            kind: Kind::File(content),
            ..
        }) = self.node(key)
        else {
            return Err(Error::Internal(format!(
                "{path} is not a regular file of the image"
            )));
        };
        match content {
            Content::Host { source, listed } => {
                Ok(kiln_oci::layer::open_file(source, listed.as_ref(), key)?)
            }
            Content::InBlob { layer, entry } => {
                let file = self
                    .spooled
                    .get(&(*layer, entry.clone()))
                    .ok_or_else(|| Error::Internal(format!("{path} was not fetched")))?;
                // Clones share the offset, which writing left at the end.
                let file = file.try_clone().and_then(|mut f| f.rewind().map(|()| f));
                file.map_err(|e| Error::Io {
                    context: format!("reopening the spooled copy of {path}"),
                    source: e,
                })
            }
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
                    let Some(name) = rest.first().filter(|n| n.as_str() != "..") else {
                        return None;
                    };
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

enum TarItem {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
    Other,
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
