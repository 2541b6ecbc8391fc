//! The source tree: validating it and making the private working copy steps run in.
//!
//! The copy keeps file modes and mtimes (see `layer_cache`) and leaves out `.git` directories and whatever `.dockerignore` and `kiln.toml`
//! `[build] exclude` name. Symlinks are copied as symlinks, never followed, and one whose target
//! leaves the tree (absolute, or climbing above the root with `..`) is an error: following it would
//! let a build read, and ship, files from outside the project.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use walkdir::WalkDir;

use kiln_oci::layer::{Entry, EntryKind};

use crate::error::{Error, IoContext, Result};
use crate::ignore::ExcludeRules;

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
/// `image_dir` (the directory itself first, mode 0755) whose files point into `src`. Symlinks are
/// checked to stay inside the tree; sockets, fifos, devices and non-UTF-8 names are errors.
pub fn source_entries(src: &Path, rules: &ExcludeRules, image_dir: &str) -> Result<Vec<Entry>> {
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
            // With no `!` exceptions an excluded directory can be skipped whole.
            !(prune && relative(src, entry.path()).is_ok_and(|rel| rules.is_excluded(&rel)))
        });
    for entry in walker {
        let entry = entry.map_err(|e| Error::Source {
            path: e.path().unwrap_or(src).to_path_buf(),
            why: format!("cannot read it: {e}"),
        })?;
        let rel = relative(src, entry.path())?;
        if rules.is_excluded(&rel) {
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
            check_link_stays_inside(&rel, &link).map_err(bad)?;
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
    Ok(entries)
}

/// Recreates `entries` (from [`source_entries`] with the same `image_dir`) under `dest`, which
/// must exist: the private working copy steps run in. Modes and file mtimes are kept (layer stat
/// keys then hit for untouched files; layers themselves carry the fixed SOURCE_DATE_EPOCH).
pub fn materialize(entries: &[Entry], image_dir: &str, dest: &Path) -> Result<usize> {
    let prefix = format!("{}/", image_dir.trim_matches('/'));
    let mut copied = 0;
    for entry in entries {
        let Some(rel) = entry.path.strip_prefix(&prefix) else {
            continue; // the app directory itself: `dest`
        };
        let target = dest.join(rel);
        let ctx = || format!("copying {rel} into the working copy");
        match &entry.kind {
            EntryKind::Dir => {
                fs::create_dir_all(&target).ctx(ctx)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode)).ctx(ctx)?;
            }
            EntryKind::Symlink { target: link } => {
                ensure_parent(&target)?;
                symlink(link, &target).ctx(ctx)?;
            }
            EntryKind::File { source, .. } => {
                ensure_parent(&target)?;
                fs::copy(source, &target).ctx(ctx)?;
                let meta = fs::symlink_metadata(source).ctx(ctx)?;
                crate::fsutil::set_mtime(&target, meta.mtime(), meta.mtime_nsec()).ctx(ctx)?;
            }
            EntryKind::Hardlink { .. } => {
                return Err(Error::Source {
                    path: target,
                    why: "source listings never contain hardlinks".into(),
                })
            }
        }
        copied += 1;
    }
    Ok(copied)
}

fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display())),
        None => Ok(()),
    }
}

/// `path` (below `root`) relative to `root`, `/`-separated. Non-UTF-8 names are an error: image
/// paths are UTF-8, and silently dropping a file would ship an incomplete app.
fn relative(root: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Source {
            path: path.to_path_buf(),
            why: "has a name that is not UTF-8".into(),
        })
}

/// A link at `rel` (relative to the root) with target `link` must resolve inside the root.
fn check_link_stays_inside(rel: &str, link: &Path) -> Result<(), String> {
    if link.is_absolute() {
        return Err(format!(
            "is a symlink to the absolute path {}, outside the source tree",
            link.display()
        ));
    }
    // Depth of the link's directory below the root, then walk the target's components.
    let mut depth = rel.matches('/').count() as i64;
    for component in link.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => depth = -1,
        }
        if depth < 0 {
            return Err(format!(
                "is a symlink to {}, which points outside the source tree",
                link.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside() {
        assert!(check_link_stays_inside("a", Path::new("b")).is_ok());
        assert!(check_link_stays_inside("d/a", Path::new("../b")).is_ok());
        assert!(check_link_stays_inside("d/a", Path::new("../../b")).is_err());
        assert!(check_link_stays_inside("a", Path::new("../x")).is_err());
        assert!(check_link_stays_inside("a", Path::new("/etc/passwd")).is_err());
        assert!(check_link_stays_inside("d/a", Path::new("../d/../../x")).is_err());
        assert!(check_link_stays_inside("d/e/a", Path::new("./../f")).is_ok());
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

    /// A source tree `src/` with `d/f.txt` ("public!") listed for `/workspace`, and a same-sized
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

        fs::remove_file(dest.join("d")).unwrap();
        fs::create_dir(dest.join("d")).unwrap();
        symlink(t.path("outside/f.txt"), dest.join("d/f.txt")).unwrap();
        let err = materialize(&t.entries, "/workspace", &dest)
            .unwrap_err()
            .to_string();
        assert!(err.contains("d/f.txt"), "{err}");
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
