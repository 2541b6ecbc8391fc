//! A provided runtime as layer entries: its `include` paths under `root`, minus `prune`, placed
//! at an image directory, ready for `kiln_oci::layer::write_layer`.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_oci::layer::{normalize, tree_entries, Entry, EntryKind};

use crate::{Error, ProvidedRuntime};

impl ProvidedRuntime {
    /// The runtime's files placed under `image_dir` (`/layers/node/runtime`), pruned, sorted
    /// and with parent directories (the output of `kiln_oci::layer::normalize`). Symlinks are
    /// kept as symlinks; a hardlink whose first path was pruned becomes a regular file.
    pub fn layer_entries(&self, image_dir: &str) -> Result<Vec<Entry>, Error> {
        let image_dir = image_dir.trim_matches('/');
        let layer_err = |source| Error::Layer {
            root: self.root.clone(),
            source,
        };
        let mut entries = Vec::new();
        for include in &self.include {
            let host = self.root.join(include);
            let md = fs::symlink_metadata(&host)
                .map_err(|e| Error::io(format!("reading {}", host.display()), e))?;
            let image_path = join(image_dir, include);
            if md.is_dir() {
                entries.extend(tree_entries(&host, &image_path).map_err(layer_err)?);
            } else {
                entries.push(single_entry(&host, &md, image_path)?);
            }
        }
        entries.retain(|e| !self.is_pruned(&relative(image_dir, &e.path)));
        let kept: HashSet<String> = entries.iter().map(|e| e.path.clone()).collect();
        for entry in &mut entries {
            if let EntryKind::Hardlink { target } = &entry.kind {
                if !kept.contains(target) {
                    let source = self.root.join(relative(image_dir, &entry.path));
                    let size = fs::metadata(&source)
                        .map_err(|e| Error::io(format!("reading {}", source.display()), e))?
                        .len();
                    entry.kind = EntryKind::file(source, size);
                }
            }
        }
        normalize(entries).map_err(layer_err)
    }
}

/// `image_dir` + `rel`, where `rel` may be `.` (the whole root).
fn join(image_dir: &str, rel: &Path) -> String {
    let rel = rel.to_string_lossy();
    let rel = rel.trim_start_matches("./").trim_matches('/');
    match (image_dir.is_empty(), rel.is_empty() || rel == ".") {
        (_, true) => image_dir.to_owned(),
        (true, false) => rel.to_owned(),
        (false, false) => format!("{image_dir}/{rel}"),
    }
}

/// An image path back to a path relative to the runtime root.
fn relative(image_dir: &str, path: &str) -> PathBuf {
    let rel = if image_dir.is_empty() {
        path
    } else {
        path.strip_prefix(image_dir)
            .map_or(path, |r| r.trim_start_matches('/'))
    };
    PathBuf::from(rel)
}

fn single_entry(host: &Path, md: &fs::Metadata, path: String) -> Result<Entry, Error> {
    let kind = if md.file_type().is_symlink() {
        let target = fs::read_link(host)
            .map_err(|e| Error::io(format!("reading link {}", host.display()), e))?;
        EntryKind::Symlink {
            target: target.to_string_lossy().into_owned(),
        }
    } else if md.is_file() {
        EntryKind::file(host.to_path_buf(), md.len())
    } else {
        return Err(Error::io(
            format!("packing {}", host.display()),
            std::io::Error::other("not a file, directory or symlink"),
        ));
    };
    Ok(Entry {
        path,
        kind,
        mode: md.mode() & 0o7777,
    })
}
