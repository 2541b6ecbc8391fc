//! Small filesystem helpers std does not offer.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use kiln_oci::layer::TreeRoot;
use rustix::fs::{Mode, OFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
use rustix::io::Errno;

/// Sets the mtime (atime untouched) of the open file `fd`: by handle, so it is the file written,
/// whatever its path points to by now.
pub fn set_mtime(fd: impl AsFd, secs: i64, nanos: i64) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &mtime_only(secs, nanos))?)
}

/// Sets `path`'s mtime to now; best effort, as callers use it only to order pruning.
pub fn touch(path: &Path) {
    let times = mtime_only(0, UTIME_NOW);
    let _ = rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::empty());
}

fn mtime_only(secs: i64, nanos: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    }
}

/// Opens the directory `rel` below `root` (an `O_PATH` handle for `*at` calls), creating missing
/// components with mode 0755 (the mode layers give implied parents). No component may be a
/// symlink, existing or raced in: a link planted where a directory belongs is an error, never a
/// way to write outside `root`.
pub fn dir_beneath(root: &TreeRoot, rel: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY;
    match root.open_beneath(rel, flags) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        opened => return opened,
    }
    let mut dir = root.open_beneath(Path::new(""), flags)?;
    for component in rel.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let next = rustix::fs::openat(
            &dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        dir = next;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sets_mtime_on_read_only_files_and_touches_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ro");
        std::fs::write(&file, "x").unwrap();
        let mut perms = std::fs::metadata(&file).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&file, perms).unwrap();
        set_mtime(std::fs::File::open(&file).unwrap(), 1_000_000_000, 5).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 5));
        set_mtime(std::fs::File::open(dir.path()).unwrap(), 1_000_000_001, 0).unwrap();
        touch(dir.path());
        assert!(std::fs::metadata(dir.path()).unwrap().mtime() > 1_000_000_001);
    }

    #[test]
    fn dir_beneath_creates_missing_parents_but_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("link")).unwrap();
        let tree = TreeRoot::open(&root).unwrap();
        dir_beneath(&tree, Path::new("a/b/c")).unwrap();
        assert!(root.join("a/b/c").is_dir());
        assert!(dir_beneath(&tree, Path::new("link")).is_err());
        assert!(dir_beneath(&tree, Path::new("link/new")).is_err());
        assert!(!dir.path().join("new").exists());
    }
}
