//! Small filesystem helpers std does not offer.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Sets `path`'s mtime (atime untouched) by path with `utimensat`, which unlike opening the file
/// for writing also works on read-only files and on directories we own.
pub fn set_mtime(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    utimensat(
        path,
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    )
}

/// Sets `path`'s mtime to now; best effort, as callers use it only to order pruning.
pub fn touch(path: &Path) {
    let _ = utimensat(
        path,
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    );
}

fn utimensat(path: &Path, mtime: libc::timespec) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let keep_atime = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let times = [keep_atime, mtime];
    // SAFETY: `c_path` is a valid NUL-terminated string and `times` holds the two entries
    // utimensat reads.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sets_mtime_on_read_only_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ro");
        std::fs::write(&file, "x").unwrap();
        let mut perms = std::fs::metadata(&file).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&file, perms).unwrap();
        set_mtime(&file, 1_000_000_000, 5).unwrap();
        set_mtime(dir.path(), 1_000_000_001, 0).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 5));
        assert_eq!(
            std::fs::metadata(dir.path()).unwrap().mtime(),
            1_000_000_001
        );
        touch(dir.path());
        assert!(std::fs::metadata(dir.path()).unwrap().mtime() > 1_000_000_001);
    }
}
