//! Safe extraction of a verified `.tar.gz` runtime archive.
//!
//! Every entry must sit under the archive's one expected top directory (stripped on the way
//! out); absolute paths, `..`, device/fifo entries, symlinks whose target leaves the tree and
//! writes through an already extracted symlink are refused. Permission bits are kept (minus
//! setuid/setgid/sticky), owners and mtimes are not.

use std::fs;
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::Error;

/// Extracts `archive` (a gzip'd tar, already verified) into `dest` (an empty directory),
/// dropping the leading `top` directory. `url` names the archive in errors.
pub fn extract_tar_gz(archive: &Path, top: &str, dest: &Path, url: &str) -> Result<(), Error> {
    let file = fs::File::open(archive)
        .map_err(|e| Error::io(format!("opening {}", archive.display()), e))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let read_err = |e: io::Error| Error::Archive {
        url: url.to_owned(),
        entry: String::new(),
        why: format!("reading: {e}"),
    };
    // Directory modes are applied last, so a read-only directory does not block its children.
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let bad = |why: String| Error::Archive {
            url: url.to_owned(),
            entry: name.clone(),
            why,
        };
        let Some(rel) = relative_under_top(Path::new(&name), top).map_err(&bad)? else {
            continue; // the top directory itself
        };
        refuse_symlinked_parents(dest, &rel).map_err(&bad)?;
        let out = dest.join(&rel);
        let mode = entry.header().mode().map_err(|e| bad(e.to_string()))? & 0o777;
        let kind = entry.header().entry_type();
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        if kind != EntryType::Directory {
            remove_existing(&out)?;
        }
        match kind {
            EntryType::Directory => {
                fs::create_dir_all(&out)
                    .map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
                dir_modes.push((out, mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = fs::File::create(&out)
                    .map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
                io::copy(&mut entry, &mut f).map_err(|e| bad(format!("reading: {e}")))?;
                fs::set_permissions(&out, fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io(format!("chmod {}", out.display()), e))?;
            }
            EntryType::Symlink => {
                let target = link_name(&entry).map_err(&bad)?;
                if !symlink_stays_inside(&rel, &target) {
                    return Err(bad(format!("symlink to {target:?} leaves the archive")));
                }
                std::os::unix::fs::symlink(&target, &out)
                    .map_err(|e| Error::io(format!("symlinking {}", out.display()), e))?;
            }
            EntryType::Link => {
                let target = link_name(&entry).map_err(&bad)?;
                let target_rel = relative_under_top(Path::new(&target), top)
                    .map_err(&bad)?
                    .ok_or_else(|| bad("hardlink to the top directory".to_owned()))?;
                refuse_symlinked_parents(dest, &target_rel).map_err(&bad)?;
                fs::hard_link(dest.join(&target_rel), &out)
                    .map_err(|e| bad(format!("hardlink to {target:?}: {e}")))?;
            }
            other => return Err(bad(format!("unsupported entry type {other:?}"))),
        }
    }
    for (dir, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    }
    Ok(())
}

fn link_name<R: io::Read>(entry: &tar::Entry<R>) -> Result<String, String> {
    match entry.link_name_bytes() {
        Some(b) if !b.is_empty() => Ok(String::from_utf8_lossy(&b).into_owned()),
        _ => Err("link without a target".to_owned()),
    }
}

/// `top/a/b` → `Some(a/b)`; `top` → `None`; anything outside `top`, absolute or with `..` is an
/// error. An empty `top` is an archive whose entries sit at its root (`./dotnet`).
fn relative_under_top(path: &Path, top: &str) -> Result<Option<PathBuf>, String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`".to_owned()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path".to_owned());
            }
        }
    }
    if top.is_empty() {
        return Ok((!parts.is_empty()).then(|| parts.iter().collect()));
    }
    match parts.split_first() {
        Some((first, rest)) if *first == top => {
            Ok((!rest.is_empty()).then(|| rest.iter().collect()))
        }
        _ => Err(format!("not under the archive's top directory {top:?}")),
    }
}

/// Whether a symlink at `rel` (relative to the extraction root) pointing at `target` resolves,
/// lexically, to a path inside the root.
fn symlink_stays_inside(rel: &Path, target: &str) -> bool {
    let target = Path::new(target);
    if target.is_absolute() {
        return false;
    }
    let mut depth: usize = rel.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Refuses to write below an already extracted symlink: even one pointing inside could be
/// swapped for another entry later, and writing through links is how archives escape.
fn refuse_symlinked_parents(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut at = dest.to_path_buf();
    let parents = rel.parent().map(Path::components).into_iter().flatten();
    for c in parents {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err("path goes through a symlink in the archive".to_owned());
            }
            _ => {}
        }
    }
    Ok(())
}

/// A later entry for the same path replaces the earlier one (tar semantics), never following
/// a symlink that is there.
fn remove_existing(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .map_err(|e| Error::io(format!("replacing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets() {
        assert!(symlink_stays_inside(
            Path::new("bin/npm"),
            "../lib/npm/cli.js"
        ));
        assert!(symlink_stays_inside(Path::new("bin/python3"), "python3.11"));
        assert!(!symlink_stays_inside(
            Path::new("bin/x"),
            "../../etc/passwd"
        ));
        assert!(!symlink_stays_inside(Path::new("x"), "/etc/passwd"));
    }

    #[test]
    fn entries_must_be_under_top() {
        let top = "node-v1.0.0-linux-x64";
        assert_eq!(
            relative_under_top(Path::new("node-v1.0.0-linux-x64/bin/node"), top),
            Ok(Some(PathBuf::from("bin/node")))
        );
        assert_eq!(
            relative_under_top(Path::new("./node-v1.0.0-linux-x64/"), top),
            Ok(None)
        );
        assert!(relative_under_top(Path::new("other/bin/node"), top).is_err());
        assert!(relative_under_top(Path::new("/etc/passwd"), top).is_err());
        assert!(relative_under_top(Path::new("node-v1.0.0-linux-x64/../x"), top).is_err());
    }
}
