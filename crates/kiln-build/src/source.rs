//! The source tree: validating it and making the private working copy steps run in.
//!
//! The copy keeps file modes and mtimes (see `layer_cache`) and leaves out `.git` directories and whatever `.dockerignore` and `kiln.toml`
//! `[build] exclude` name. Symlinks are copied as symlinks, never followed, and one that resolves
//! outside the tree (absolute, climbing above the root with `..`, or doing either through other
//! links of the tree) is an error: following it would let a build read, and ship, files from
//! outside the project.
//!
//! The tree can change between listing and copying. Files are therefore read through
//! [`kiln_oci::layer::open_file`] (below the listing's root handle, no symlink in any component,
//! the inode that was listed), and the copy is written below a handle on the working copy with
//! `*at` calls that follow no symlink and never replace what is there.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use walkdir::WalkDir;

use kiln_oci::layer::{Entry, EntryKind, Listed, TreeRoot};

use crate::error::{Error, IoContext, Result};
use crate::ignore::ExcludeRules;

/// How many links one resolution may follow: the kernel's own limit (`MAXSYMLINKS`). A longer
/// chain is refused; the kernel would not follow it either, so it is a loop or a mistake.
const MAX_LINK_HOPS: usize = 40;

/// Directories never copied, whatever the ignore files say.
const ALWAYS_EXCLUDED: &[&str] = &["**/.git"];

/// Resolves and checks the source directory.
pub fn resolve_source(path: &Path) -> Result<PathBuf> {
    let canonical = fs::canonicalize(path).map_err(|e| Error::Source {
        path: path.to_path_buf(),
        why: format!("cannot open it: {e}"),
    })?;
    if !canonical.is_dir() {
        return Err(Error::Source {
            path: path.to_path_buf(),
            why: "is not a directory".into(),
        });
    }
    Ok(canonical)
}

/// The exclusion rules for `src`: built-ins, `.dockerignore`, then `kiln.toml` excludes.
pub fn exclude_rules(src: &Path, project_excludes: &[String]) -> Result<ExcludeRules> {
    let mut rules = ExcludeRules::default();
    rules.add(
        ALWAYS_EXCLUDED.iter().copied(),
        Path::new("<built-in excludes>"),
    )?;
    let dockerignore = src.join(".dockerignore");
    match fs::symlink_metadata(&dockerignore) {
        Ok(meta) if meta.file_type().is_file() => {
            let text = fs::read_to_string(&dockerignore)
                .ctx(|| format!("reading {}", dockerignore.display()))?;
            rules.add(text.lines(), &dockerignore)?;
        }
        Ok(_) => {
            return Err(Error::Source {
                path: dockerignore,
                why: "is not a regular file".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx(|| format!("reading {}", dockerignore.display())),
    }
    rules.add(
        project_excludes.iter().map(String::as_str),
        &src.join("kiln.toml"),
    )?;
    Ok(rules)
}

/// The app's entries: everything under `src` that `rules` keep, as layer entries under
/// `image_dir` (the directory itself first, mode 0755) whose files point into `src`, listed from a
/// handle on `src`. Symlinks are checked to resolve inside the tree as listed; sockets, fifos,
/// devices and non-UTF-8 names are errors.
pub fn source_entries(src: &Path, rules: &ExcludeRules, image_dir: &str) -> Result<Vec<Entry>> {
    let root = TreeRoot::open(src).map_err(|e| Error::Source {
        path: src.to_path_buf(),
        why: format!("cannot open it: {e}"),
    })?;
    let prefix = image_dir.trim_matches('/');
    let mut entries = vec![Entry {
        path: prefix.to_owned(),
        kind: EntryKind::Dir,
        mode: 0o755,
    }];
    let prune = !rules.has_exceptions();
    let walker = WalkDir::new(src)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|entry| {
            // With no `!` exceptions an excluded directory can be skipped whole, and an entry
            // reached has no excluded parent.
            !(prune
                && relative(src, entry.path())
                    .is_ok_and(|rel| rules.is_excluded_below_kept_parent(&rel)))
        });
    for entry in walker {
        let entry = entry.map_err(|e| Error::Source {
            path: e.path().unwrap_or(src).to_path_buf(),
            why: format!("cannot read it: {e}"),
        })?;
        let rel = relative(src, entry.path())?;
        // Pruning already dropped whatever the rules exclude.
        if !prune && rules.is_excluded(&rel) {
            continue;
        }
        let bad = |why: String| Error::Source {
            path: entry.path().to_path_buf(),
            why,
        };
        let meta = entry.metadata().map_err(|e| bad(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o7777;
        let file_type = entry.file_type();
        let kind = if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_symlink() {
            let link = fs::read_link(entry.path()).map_err(|e| bad(e.to_string()))?;
            let target = link
                .to_str()
                .ok_or_else(|| bad("is a symlink whose target is not UTF-8".into()))?;
            EntryKind::Symlink {
                target: target.to_owned(),
            }
        } else if file_type.is_file() {
            EntryKind::File {
                source: entry.path().to_path_buf(),
                size: meta.len(),
                listed: Some(Listed::new(&root, &meta)),
            }
        } else {
            return Err(bad(
                "is a socket, fifo or device; only files, directories and symlinks can go into an image"
                    .into(),
            ));
        };
        entries.push(Entry {
            path: format!("{prefix}/{rel}"),
            kind,
            mode,
        });
    }
    check_links_stay_inside(src, prefix, &entries)?;
    Ok(entries)
}

/// Every symlink of `entries` (listed from `src` under `prefix`) must resolve inside the tree.
/// Resolution uses the listing, not the live tree, so it judges exactly the links that will be
/// copied and packed.
fn check_links_stay_inside(src: &Path, prefix: &str, entries: &[Entry]) -> Result<()> {
    let rel = |entry: &Entry| {
        entry
            .path
            .strip_prefix(prefix)
            .and_then(|p| p.strip_prefix('/'))
            .map(str::to_owned)
    };
    let links: HashMap<String, &str> = entries
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::Symlink { target } => Some((rel(entry)?, target.as_str())),
            _ => None,
        })
        .collect();
    for entry in entries {
        let (EntryKind::Symlink { target }, Some(at)) = (&entry.kind, rel(entry)) else {
            continue;
        };
        resolve_inside(&at, target, &links).map_err(|why| Error::Source {
            path: src.join(&at),
            why,
        })?;
    }
    Ok(())
}

/// Resolves the link at `rel` (relative to the root) with target `link` the way the kernel
/// would, component by component: `..` climbs, and a component that is one of `links` (the tree's
/// symlinks by relative path) is replaced by its target, up to [`MAX_LINK_HOPS`] links. Names
/// that are not links are taken lexically, whether they exist or not (a missing directory cannot
/// hide a link). Errors say why the link leaves the tree.
fn resolve_inside(rel: &str, link: &str, links: &HashMap<String, &str>) -> Result<(), String> {
    // The directory the link sits in, then the components still to walk (next one last).
    let mut here: Vec<&str> = rel.split('/').collect();
    here.pop();
    let mut pending: Vec<&str> = link.split('/').rev().collect();
    // The innermost link followed so far, to say through what a chain leaves the tree.
    let mut via: Option<(String, &str)> = None;
    let mut hops = 1;
    let escapes = |via: &Option<(String, &str)>| match via {
        None => format!("is a symlink to {link}, which points outside the source tree"),
        Some((path, target)) => format!(
            "is a symlink to {link}, which resolves outside the source tree through the link \
             {path} -> {target}"
        ),
    };
    if link.starts_with('/') {
        return Err(format!(
            "is a symlink to the absolute path {link}, outside the source tree"
        ));
    }
    while let Some(name) = pending.pop() {
        match name {
            "" | "." => {}
            ".." => {
                if here.pop().is_none() {
                    return Err(escapes(&via));
                }
            }
            name => {
                here.push(name);
                let path = here.join("/");
                let Some(&target) = links.get(&path) else {
                    continue;
                };
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(format!(
                        "is a symlink to {link} that does not resolve within {MAX_LINK_HOPS} \
                         links (a symlink loop?)"
                    ));
                }
                here.pop();
                if target.starts_with('/') {
                    via = Some((path, target));
                    return Err(escapes(&via));
                }
                pending.extend(target.split('/').rev());
                via = Some((path, target));
            }
        }
    }
    Ok(())
}

/// Recreates `entries` (from [`source_entries`] with the same `image_dir`) under `dest`, which
/// must exist: the private working copy steps run in. Modes and file mtimes are kept (layer stat
/// keys then hit for untouched files; layers themselves carry the fixed SOURCE_DATE_EPOCH).
/// Nothing already in `dest` is replaced or followed: a name that exists is an error.
pub fn materialize(entries: &[Entry], image_dir: &str, dest: &Path) -> Result<usize> {
    let prefix = format!("{}/", image_dir.trim_matches('/'));
    let dest_root = TreeRoot::open(dest).ctx(|| format!("opening {}", dest.display()))?;
    // Entries come in walk order, so runs of them share a parent: keep its handle.
    let mut parent: Option<(&str, OwnedFd)> = None;
    let mut dirs = Vec::new();
    let mut copied = 0;
    for entry in entries {
        let Some(rel) = entry.path.strip_prefix(&prefix) else {
            continue; // the app directory itself: `dest`
        };
        let ctx = || format!("copying {rel} into the working copy");
        let (parent_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let at = match parent.take() {
            Some((cached, fd)) if cached == parent_rel => fd,
            _ => crate::fsutil::dir_beneath(&dest_root, Path::new(parent_rel)).ctx(ctx)?,
        };
        match &entry.kind {
            EntryKind::Dir => {
                // Owner-writable until every child is in; the real mode is set at the end.
                rustix::fs::mkdirat(&at, name, Mode::from_raw_mode(0o700))
                    .map_err(io::Error::from)
                    .ctx(ctx)?;
                dirs.push((rel, entry.mode));
            }
            EntryKind::Symlink { target } => {
                rustix::fs::symlinkat(target.as_str(), &at, name)
                    .map_err(io::Error::from)
                    .ctx(ctx)?;
            }
            EntryKind::File {
                source,
                size,
                listed,
            } => {
                let mut from = kiln_oci::layer::open_file(source, listed.as_ref(), &entry.path)?;
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let mut to = rustix::fs::openat(&at, name, flags, Mode::from_raw_mode(0o600))
                    .map(File::from)
                    .map_err(io::Error::from)
                    .ctx(ctx)?;
                let written = io::copy(&mut from, &mut to).ctx(ctx)?;
                if written != *size {
                    return Err(Error::Source {
                        path: source.clone(),
                        why: format!(
                            "had {size} bytes when listed but {written} when copied (changed \
                             while being copied?)"
                        ),
                    });
                }
                let meta = from.metadata().ctx(ctx)?;
                to.set_permissions(fs::Permissions::from_mode(entry.mode))
                    .ctx(ctx)?;
                crate::fsutil::set_mtime(&to, meta.mtime(), meta.mtime_nsec()).ctx(ctx)?;
            }
            EntryKind::Hardlink { .. } => {
                return Err(Error::Source {
                    path: dest.join(rel),
                    why: "source listings never contain hardlinks".into(),
                })
            }
        }
        parent = Some((parent_rel, at));
        copied += 1;
    }
    // Deepest first, so a read-only directory's own children were all created before.
    for (rel, mode) in dirs.into_iter().rev() {
        let ctx = || format!("setting the mode of {rel} in the working copy");
        let dir = dest_root
            .open_beneath(Path::new(rel), OFlags::RDONLY | OFlags::DIRECTORY)
            .map(File::from)
            .ctx(ctx)?;
        dir.set_permissions(fs::Permissions::from_mode(mode))
            .ctx(ctx)?;
    }
    Ok(copied)
}

/// `path` (below `root`) relative to `root`, `/`-separated. Non-UTF-8 names are an error: image
/// paths are UTF-8, and silently dropping a file would ship an incomplete app.
fn relative(root: &Path, path: &Path) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;
    // A walk's paths are `root`, `/`, then the rest: strip those bytes when they are there
    // (component-wise `strip_prefix` costs more than the rest of a listed entry), else compare
    // components.
    let fast = path
        .as_os_str()
        .as_bytes()
        .strip_prefix(root.as_os_str().as_bytes())
        .and_then(|rest| rest.strip_prefix(b"/"))
        .filter(|_| !root.as_os_str().as_bytes().ends_with(b"/"))
        .map(|rest| Path::new(std::ffi::OsStr::from_bytes(rest)));
    let rel = fast.unwrap_or_else(|| path.strip_prefix(root).unwrap_or(path));
    rel.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Source {
            path: path.to_path_buf(),
            why: "has a name that is not UTF-8".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_must_stay_inside() {
        let none = HashMap::new();
        assert!(resolve_inside("a", "b", &none).is_ok());
        assert!(resolve_inside("d/a", "../b", &none).is_ok());
        assert!(resolve_inside("d/a", "../../b", &none).is_err());
        assert!(resolve_inside("a", "../x", &none).is_err());
        assert!(resolve_inside("a", "/etc/passwd", &none).is_err());
        assert!(resolve_inside("d/a", "../d/../../x", &none).is_err());
        assert!(resolve_inside("d/e/a", "./../f", &none).is_ok());
        let links = HashMap::from([("d/abs".to_owned(), "/etc")]);
        let err = resolve_inside("x", "d/abs/passwd", &links).unwrap_err();
        assert!(err.contains("through the link d/abs -> /etc"), "{err}");
    }

    #[test]
    fn copy_excludes_git_and_ignored_and_keeps_modes() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir_all(s.join(".git/objects")).unwrap();
        fs::write(s.join(".git/HEAD"), "ref").unwrap();
        fs::create_dir_all(s.join("logs")).unwrap();
        fs::write(s.join("logs/a.log"), "x").unwrap();
        fs::write(s.join(".dockerignore"), "logs\n").unwrap();
        fs::write(s.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(s.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(s.join("secret.env"), "TOKEN=1").unwrap();
        symlink("run.sh", s.join("start")).unwrap();
        let rules = exclude_rules(s, &["secret.env".to_owned()]).unwrap();
        let entries = source_entries(s, &rules, "/workspace").unwrap();
        materialize(&entries, "/workspace", dest.path()).unwrap();
        let d = dest.path();
        assert!(!d.join(".git").exists());
        assert!(!d.join("logs").exists());
        assert!(!d.join("secret.env").exists());
        assert!(d.join(".dockerignore").exists());
        let mode = fs::metadata(d.join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::read_link(d.join("start")).unwrap(), Path::new("run.sh"));
    }

    /// A source tree `src/` with `d/f.txt` ("public!") and `top.txt` listed for `/workspace`, and a same-sized
    /// `outside/f.txt` ("SECRET!") that swaps after the listing try to smuggle in.
    struct Listed {
        tmp: tempfile::TempDir,
        entries: Vec<Entry>,
    }

    impl Listed {
        fn new() -> Listed {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("src");
            fs::create_dir_all(src.join("d")).unwrap();
            fs::create_dir_all(tmp.path().join("outside")).unwrap();
            fs::write(src.join("d/f.txt"), "public!").unwrap();
            fs::write(src.join("top.txt"), "top").unwrap();
            fs::write(tmp.path().join("outside/f.txt"), "SECRET!").unwrap();
            let rules = exclude_rules(&src, &[]).unwrap();
            let entries = source_entries(&src, &rules, "/workspace").unwrap();
            Listed { tmp, entries }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.tmp.path().join(rel)
        }

        /// `materialize` into a fresh `dest/`: its error, after checking nothing outside leaked.
        fn materialize_err(&self) -> String {
            let dest = self.path("dest");
            fs::create_dir(&dest).unwrap();
            let result = materialize(&self.entries, "/workspace", &dest);
            let copied = fs::read(dest.join("d/f.txt")).unwrap_or_default();
            assert_ne!(copied, b"SECRET!", "the outside file was copied");
            result.unwrap_err().to_string()
        }
    }

    #[test]
    fn copy_refuses_a_file_swapped_for_a_symlink_after_listing() {
        let t = Listed::new();
        fs::remove_file(t.path("src/d/f.txt")).unwrap();
        symlink(t.path("outside/f.txt"), t.path("src/d/f.txt")).unwrap();
        let err = t.materialize_err();
        assert!(err.contains("d/f.txt"), "{err}");
    }

    #[test]
    fn copy_refuses_a_parent_directory_swapped_for_a_symlink_after_listing() {
        let t = Listed::new();
        fs::rename(t.path("src/d"), t.path("src/d.old")).unwrap();
        symlink(t.path("outside"), t.path("src/d")).unwrap();
        let err = t.materialize_err();
        assert!(err.contains("d/f.txt"), "{err}");
    }

    #[test]
    fn static_app_layer_refuses_a_parent_swapped_after_listing() {
        let t = Listed::new();
        fs::rename(t.path("src/d"), t.path("src/d.old")).unwrap();
        symlink(t.path("outside"), t.path("src/d")).unwrap();
        let store = kiln_oci::store::BlobStore::open(t.path("store")).unwrap();
        let entries = kiln_oci::layer::normalize(t.entries.clone()).unwrap();
        let opts = kiln_oci::layer::LayerOptions::default();
        let err = kiln_oci::layer::write_layer(&store, &entries, &opts)
            .map(|record| record.diff_id)
            .unwrap_err()
            .to_string();
        assert!(err.contains("d/f.txt"), "{err}");
    }

    #[test]
    fn copy_never_writes_through_a_symlink_planted_in_the_destination() {
        let t = Listed::new();
        let dest = t.path("dest");
        fs::create_dir(&dest).unwrap();
        symlink(t.path("outside"), dest.join("d")).unwrap();
        let err = materialize(&t.entries, "/workspace", &dest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("copying d "), "{err}");
        assert_eq!(fs::read(t.path("outside/f.txt")).unwrap(), b"SECRET!");

        let dest = t.path("dest2");
        fs::create_dir(&dest).unwrap();
        symlink(t.path("outside/f.txt"), dest.join("top.txt")).unwrap();
        let err = materialize(&t.entries, "/workspace", &dest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("copying top.txt "), "{err}");
        assert_eq!(fs::read(t.path("outside/f.txt")).unwrap(), b"SECRET!");
    }

    #[test]
    fn symlink_resolving_outside_through_another_link_is_an_error() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir(s.join("dir")).unwrap();
        symlink("..", s.join("dir/up")).unwrap();
        symlink("dir/up/../outside.txt", s.join("x")).unwrap();
        let rules = exclude_rules(s, &[]).unwrap();
        let err = source_entries(s, &rules, "/workspace")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x: "), "{err}");
        assert!(err.contains("outside the source tree"), "{err}");
    }

    #[test]
    fn symlink_chains_that_stay_inside_are_kept_and_loops_refused() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir_all(s.join("dir/sub")).unwrap();
        symlink("..", s.join("dir/up")).unwrap();
        symlink("dir/up/dir/sub", s.join("ok")).unwrap();
        symlink("ok/../../f", s.join("ok2")).unwrap();
        let rules = exclude_rules(s, &[]).unwrap();
        let entries = source_entries(s, &rules, "/workspace").unwrap();
        assert!(entries.iter().any(|e| e.path == "workspace/ok2"));

        symlink("loop2", s.join("loop1")).unwrap();
        symlink("loop1/x", s.join("loop2")).unwrap();
        let err = source_entries(s, &rules, "/workspace")
            .unwrap_err()
            .to_string();
        assert!(err.contains("loop1"), "{err}");
        assert!(err.contains("loop"), "{err}");
    }

    #[test]
    fn escaping_symlink_is_an_error_naming_it() {
        let src = tempfile::tempdir().unwrap();
        symlink("../../etc/passwd", src.path().join("passwd")).unwrap();
        let rules = exclude_rules(src.path(), &[]).unwrap();
        let err = source_entries(src.path(), &rules, "/workspace")
            .unwrap_err()
            .to_string();
        assert!(err.contains("passwd"), "{err}");
        assert!(err.contains("outside the source tree"), "{err}");
    }
}
