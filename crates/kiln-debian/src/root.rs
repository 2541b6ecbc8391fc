//! The merged root of a stack, built package by package and cut into layers.
//!
//! Every entry goes through the directories the root already has: a path whose parent is a
//! symlink to a directory (merged-`/usr`'s `bin → usr/bin`, or a package's own link) lands
//! where the link points, as it would when dpkg unpacks onto a real system; so a layer never
//! puts a directory where the stack has such a link. A relative symlink that moved that way is
//! rewritten to the absolute path it meant.
//!
//! Conflicts (one path from two sources): directories merge (the first mode stays); identical
//! entries are one; otherwise the later source wins — later in the layer's order (packages by
//! name, then generated files), and upper layers over lower ones, as an overlay would — except
//! that a directory and a non-directory never replace each other (an error naming both).
//!
//! Hardlinks stay hardlinks within a layer (the first path in byte order is the file, the rest
//! link to it, as Kiln's layer writer requires).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln_oci::layer::{normalize, Entry, EntryKind};
use kiln_oci::store::BlobStore;
use kiln_oci::Digest;

use crate::error::{Error, Result};

/// What a path is in the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// Content in the blob store. `group` ties hardlinked paths together.
    File {
        sha256: String,
        size: u64,
        group: Option<String>,
    },
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Placed {
    node: Node,
    mode: u32,
    /// The package (or `kiln`, for generated files) it came from, for conflict messages.
    owner: String,
}

/// The whole root so far and the paths the current layer touched.
#[derive(Debug, Default)]
pub struct Root {
    nodes: BTreeMap<String, Placed>,
    touched: BTreeSet<String>,
}

/// How many symlinks one lookup may follow (the kernel's limit).
const MAX_LINKS: usize = 40;

impl Root {
    pub fn new() -> Root {
        Root::default()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path).map(|p| &p.node)
    }

    /// Paths of the root, in order.
    pub fn paths(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), &n.node))
    }

    /// `path` with every parent that is a symlink to a directory replaced by what it points
    /// to (the last component is not followed).
    pub fn redirect(&self, path: &str) -> String {
        let mut out: Vec<String> = Vec::new();
        let components: Vec<&str> = path.split('/').collect();
        for (i, component) in components.iter().enumerate() {
            out.push((*component).to_owned());
            if i + 1 == components.len() {
                break;
            }
            if let Some(dir) = self.resolve_dir(&out.join("/")) {
                out = if dir.is_empty() {
                    Vec::new()
                } else {
                    dir.split('/').map(str::to_owned).collect()
                };
            }
        }
        out.join("/")
    }

    /// Where the symlink at `path` leads, if it leads (through further links) to a directory.
    fn resolve_dir(&self, path: &str) -> Option<String> {
        let mut at = path.to_owned();
        for _ in 0..MAX_LINKS {
            match self.get(&at)? {
                Node::Symlink(target) => at = resolve_target(&at, target),
                Node::Dir => return (at != path).then_some(at),
                Node::File { .. } => return None,
            }
            if at.is_empty() {
                return Some(at);
            }
        }
        None
    }

    /// Places one entry (already redirected by the caller with [`Root::redirect`]), applying the
    /// conflict rules; missing parents become `0755` directories.
    pub fn place(&mut self, path: &str, node: Node, mode: u32, owner: &str) -> Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !matches!(self.get(parent), Some(Node::Dir)) {
                if let Some(Node::Symlink(_)) = self.get(parent) {
                    // Only a symlink to a non-directory can be left here by `redirect`.
                    return Err(Error::Stack(format!(
                        "{owner}: {path} is under {parent}, a symlink that does not lead to a directory"
                    )));
                }
                self.place(parent, Node::Dir, 0o755, owner)?;
            }
        }
        if let Some(existing) = self.nodes.get(path) {
            let (old_dir, new_dir) = (existing.node == Node::Dir, node == Node::Dir);
            if old_dir && new_dir {
                return Ok(());
            }
            if existing.node == node && existing.mode == mode {
                return Ok(());
            }
            if new_dir && self.resolve_dir(path).is_some() {
                // A package's `bin/` where the stack has `bin → usr/bin`.
                return Ok(());
            }
            if old_dir || new_dir {
                return Err(Error::Stack(format!(
                    "{path}: {} ships a {} where {} ships a {}",
                    owner,
                    kind(&node),
                    existing.owner,
                    kind(&existing.node)
                )));
            }
        }
        self.nodes.insert(
            path.to_owned(),
            Placed {
                node,
                mode,
                owner: owner.to_owned(),
            },
        );
        self.touched.insert(path.to_owned());
        Ok(())
    }

    /// Ties `path` (a file just placed) to `target`'s hardlink group.
    pub fn link(&mut self, path: &str, target: &str) {
        let group = match self.nodes.get(target).map(|p| &p.node) {
            Some(Node::File { group, .. }) => group.clone().unwrap_or_else(|| target.to_owned()),
            _ => return,
        };
        for p in [target, path] {
            if let Some(Placed {
                node: Node::File { group: g, .. },
                ..
            }) = self.nodes.get_mut(p)
            {
                *g = Some(group.clone());
            }
        }
    }

    /// The layer made of what was touched since the last cut: those entries plus every parent
    /// directory (with the root's mode for it), normalized. Resets the touched set.
    pub fn cut_layer(&mut self, store: &BlobStore) -> Result<Vec<Entry>> {
        let touched = std::mem::take(&mut self.touched);
        let mut paths: BTreeSet<&str> = BTreeSet::new();
        for path in &touched {
            paths.insert(path);
            for (slash, _) in path.match_indices('/') {
                paths.insert(&path[..slash]);
            }
        }
        // Hardlink groups: the first path of a group in this layer holds the content.
        let mut first_of_group: BTreeMap<&str, &str> = BTreeMap::new();
        let mut entries = Vec::with_capacity(paths.len());
        for path in paths {
            let Some(placed) = self.nodes.get(path) else {
                continue;
            };
            let kind = match &placed.node {
                Node::Dir => EntryKind::Dir,
                Node::Symlink(target) => EntryKind::Symlink {
                    target: target.clone(),
                },
                Node::File {
                    sha256,
                    size,
                    group,
                } => match group.as_deref().map(|g| (g, first_of_group.get(g))) {
                    Some((_, Some(first))) => EntryKind::Hardlink {
                        target: (*first).to_owned(),
                    },
                    other => {
                        if let Some((g, None)) = other {
                            first_of_group.insert(g, path);
                        }
                        EntryKind::file(blob_path(store, sha256)?, *size)
                    }
                },
            };
            entries.push(Entry {
                path: path.to_owned(),
                kind,
                mode: placed.mode,
            });
        }
        Ok(normalize(entries)?)
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Dir => "directory",
        Node::File { .. } => "file",
        Node::Symlink(_) => "symlink",
    }
}

fn blob_path(store: &BlobStore, sha256: &str) -> Result<PathBuf> {
    let digest = Digest::parse(&format!("sha256:{sha256}"))?;
    Ok(store.path(&digest))
}

/// The root-relative path a symlink at `link` with `target` points to (`..` stops at the root,
/// as the kernel does).
pub fn resolve_target(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut p: Vec<&str> = link.split('/').collect();
        p.pop();
        p
    };
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sha: char) -> Node {
        Node::File {
            sha256: sha.to_string().repeat(64),
            size: 1,
            group: None,
        }
    }

    fn merged_usr() -> Root {
        let mut root = Root::new();
        for dir in ["bin", "lib"] {
            root.place(&format!("usr/{dir}"), Node::Dir, 0o755, "kiln")
                .unwrap();
            root.place(dir, Node::Symlink(format!("usr/{dir}")), 0o777, "kiln")
                .unwrap();
        }
        root
    }

    #[test]
    fn paths_under_merged_usr_links_land_in_usr_and_dirs_never_replace_links() {
        let mut root = merged_usr();
        assert_eq!(root.redirect("bin/dash"), "usr/bin/dash");
        assert_eq!(
            root.redirect("lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(root.redirect("bin"), "bin");
        root.place("bin", Node::Dir, 0o755, "dash").unwrap();
        assert_eq!(root.get("bin"), Some(&Node::Symlink("usr/bin".into())));
        root.place(&root.redirect("bin/dash"), file('a'), 0o755, "dash")
            .unwrap();
        assert!(root.get("usr/bin/dash").is_some());
        assert!(root.get("bin/dash").is_none());
    }

    #[test]
    fn later_sources_win_but_dirs_and_files_never_swap() {
        let mut root = Root::new();
        root.place("etc/passwd", file('a'), 0o644, "base").unwrap();
        root.place("etc/passwd", file('b'), 0o644, "kiln").unwrap();
        assert_eq!(root.get("etc/passwd"), Some(&file('b')));
        let err = root.place("etc", file('c'), 0o644, "evil").unwrap_err();
        assert_eq!(
            err.to_string(),
            "etc: evil ships a file where base ships a directory"
        );
    }

    #[test]
    fn layers_hold_what_changed_with_parents_and_hardlinks() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(store_dir.path()).unwrap();
        let mut root = Root::new();
        root.place("tmp", Node::Dir, 0o1777, "base-files").unwrap();
        root.place("usr/bin/b", file('a'), 0o755, "p").unwrap();
        root.place("usr/bin/a", file('a'), 0o755, "p").unwrap();
        root.link("usr/bin/a", "usr/bin/b");
        let first = root.cut_layer(&store).unwrap();
        let summary: Vec<(String, String)> = first
            .iter()
            .map(|e| {
                (
                    e.path.clone(),
                    format!("{:?}", std::mem::discriminant(&e.kind)),
                )
            })
            .collect();
        assert_eq!(summary.len(), 5);
        assert!(matches!(
            first.iter().find(|e| e.path == "usr/bin/a").unwrap().kind,
            EntryKind::File { .. }
        ));
        assert_eq!(
            first.iter().find(|e| e.path == "usr/bin/b").unwrap().kind,
            EntryKind::Hardlink {
                target: "usr/bin/a".into()
            }
        );
        root.place("tmp/x", file('c'), 0o644, "q").unwrap();
        let second = root.cut_layer(&store).unwrap();
        let paths: Vec<(&str, u32)> = second.iter().map(|e| (e.path.as_str(), e.mode)).collect();
        // The parent keeps the root's mode (1777), not a default 0755.
        assert_eq!(paths, [("tmp", 0o1777), ("tmp/x", 0o644)]);
    }

    #[test]
    fn symlink_targets_resolve_inside_the_root() {
        assert_eq!(
            resolve_target("usr/lib64/ld.so", "../lib/x/ld.so"),
            "usr/lib/x/ld.so"
        );
        assert_eq!(resolve_target("a/b", "/etc/ssl"), "etc/ssl");
        assert_eq!(resolve_target("a", "../../../x"), "x");
    }
}
