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

/// Copies `src` into `dest` (which must exist), honouring `rules`. Returns the number of entries
/// copied. Modes are kept; timestamps are not (layers carry fixed ones).
pub fn copy_tree(src: &Path, dest: &Path, rules: &ExcludeRules) -> Result<usize> {
    let prune = !rules.has_exceptions();
    let mut copied = 0;
    let walker = WalkDir::new(src)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|entry| {
            // With no `!` exceptions an excluded directory can be skipped whole.
            !(prune && relative(src, entry.path()).is_some_and(|rel| rules.is_excluded(&rel)))
        });
    for entry in walker {
        let entry = entry.map_err(|e| Error::Source {
            path: e.path().unwrap_or(src).to_path_buf(),
            why: format!("cannot read it: {e}"),
        })?;
        let Some(rel) = relative(src, entry.path()) else {
            continue;
        };
        if rules.is_excluded(&rel) {
            continue;
        }
        let target = dest.join(&rel);
        let file_type = entry.file_type();
        let copy_err = |e: std::io::Error| Error::Source {
            path: entry.path().to_path_buf(),
            why: format!("cannot copy it: {e}"),
        };
        if file_type.is_dir() {
            fs::create_dir_all(&target).map_err(copy_err)?;
            let mode = entry.metadata().map_err(|e| Error::Source {
                path: entry.path().to_path_buf(),
                why: e.to_string(),
            })?;
            fs::set_permissions(
                &target,
                fs::Permissions::from_mode(mode.permissions().mode()),
            )
            .map_err(copy_err)?;
        } else if file_type.is_symlink() {
            let link = fs::read_link(entry.path()).map_err(copy_err)?;
            check_link_stays_inside(&rel, &link).map_err(|why| Error::Source {
                path: entry.path().to_path_buf(),
                why,
            })?;
            ensure_parent(&target)?;
            symlink(&link, &target).map_err(copy_err)?;
        } else if file_type.is_file() {
            ensure_parent(&target)?;
            fs::copy(entry.path(), &target).map_err(copy_err)?;
            // Keep the source's mtime: layer stat keys then hit for untouched files (the layer
            // itself always carries the fixed SOURCE_DATE_EPOCH mtime).
            if let Ok(meta) = entry.metadata() {
                crate::fsutil::set_mtime(&target, meta.mtime(), meta.mtime_nsec())
                    .map_err(copy_err)?;
            }
        } else {
            return Err(Error::Source {
                path: entry.path().to_path_buf(),
                why: "is a socket, fifo or device; only files, directories and symlinks can go into an image"
                    .into(),
            });
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

/// `path` relative to `root`, `/`-separated; `None` for the root itself or non-UTF-8 names.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let s = rel.to_str()?;
    (!s.is_empty()).then(|| s.to_owned())
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
        copy_tree(s, dest.path(), &rules).unwrap();
        let d = dest.path();
        assert!(!d.join(".git").exists());
        assert!(!d.join("logs").exists());
        assert!(!d.join("secret.env").exists());
        assert!(d.join(".dockerignore").exists());
        let mode = fs::metadata(d.join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::read_link(d.join("start")).unwrap(), Path::new("run.sh"));
    }

    #[test]
    fn escaping_symlink_is_an_error_naming_it() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        symlink("../../etc/passwd", src.path().join("passwd")).unwrap();
        let rules = exclude_rules(src.path(), &[]).unwrap();
        let err = copy_tree(src.path(), dest.path(), &rules)
            .unwrap_err()
            .to_string();
        assert!(err.contains("passwd"), "{err}");
        assert!(err.contains("outside the source tree"), "{err}");
    }
}
