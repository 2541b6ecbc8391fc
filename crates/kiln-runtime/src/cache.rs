//! The cache both fetching providers share: upstream indexes kept with the time they were
//! fetched (see the crate docs for the reuse rule), and results placed atomically. Temporary
//! names start with `.tmp-` and live beside the result, so renames are atomic and a crash
//! leaves only dot-names that no provider picks up.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use tempfile::{NamedTempFile, TempDir};

use crate::{http, Error};

/// The index at `url`, cached in `dir` as `index-<url key>.<ext>`: the cached copy when younger
/// than `max_age`, else a fresh one (cached again), else the stale cached copy when the mirror
/// cannot be reached.
pub fn load_index(
    url: &str,
    ask: http::Ask,
    ext: &str,
    dir: &Path,
    max_age: Duration,
) -> Result<Vec<u8>, Error> {
    let key = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
    let cached = dir.join(format!("index-{key}.{ext}"));
    let age = fs::metadata(&cached)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
    if age.is_some_and(|a| a < max_age) {
        if let Ok(bytes) = fs::read(&cached) {
            return Ok(bytes);
        }
    }
    match http::get_bytes(url, ask) {
        Ok(bytes) => {
            write_atomic(dir, &cached, &bytes)?;
            Ok(bytes)
        }
        Err(e) => fs::read(&cached).map_err(|_| e),
    }
}

pub fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp = temp_file(dir)?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io(format!("writing {}", tmp.path().display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("renaming into {}", path.display()), e.error))?;
    Ok(())
}

/// A `.tmp-` file in `dir` (created if missing), removed unless persisted.
pub fn temp_file(dir: &Path) -> Result<NamedTempFile, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))
}

/// A `.tmp-` directory in `dir`, removed unless [`place`]d.
pub fn temp_dir(dir: &Path) -> Result<TempDir, Error> {
    tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(dir)
        .map_err(|e| {
            Error::io(
                format!("creating a temporary directory in {}", dir.display()),
                e,
            )
        })
}

/// Renames the finished `staging` directory to `root`.
pub fn place(staging: TempDir, root: &Path) -> Result<(), Error> {
    if let Err(e) = fs::rename(staging.path(), root) {
        // Another build finished the same runtime first: theirs is just as verified.
        if !root.is_dir() {
            return Err(Error::io(format!("renaming into {}", root.display()), e));
        }
    }
    Ok(())
}
