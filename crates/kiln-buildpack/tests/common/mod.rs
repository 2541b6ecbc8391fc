//! Shared test support: small source trees written from (path, text) pairs.

use std::fs;

use tempfile::TempDir;

/// A temporary tree holding `files` (parents created).
pub fn tree(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}
