//! A resolved stack as data: which suites (their InRelease digest and date) and, layer by
//! layer, exactly which packages. A fresh resolution produces one; `kiln.lock` (TOML) stores
//! one; building from it uses exactly those `.deb`s (from the cache, else the pool).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fetch::{write_file_atomic, DebRef};

/// Bump when the file's meaning changes; older locks are then refused with a hint.
pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub lock_version: u32,
    /// `debian-13`.
    pub distro: String,
    /// Debian architecture (`amd64`).
    pub arch: String,
    pub suite: Vec<SuiteInfo>,
    pub layer: Vec<LockedLayer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuiteInfo {
    pub name: String,
    /// The Release `Date`.
    pub date: String,
    /// sha256 (hex) of the InRelease the packages were chosen from.
    pub inrelease_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedLayer {
    /// `static`, `glibc`, `packages`.
    pub name: String,
    /// What was asked for (relations as written), so a changed request is noticed.
    pub requested: Vec<String>,
    pub package: Vec<DebRef>,
}

impl Lock {
    pub fn layer(&self, name: &str) -> Option<&LockedLayer> {
        self.layer.iter().find(|l| l.name == name)
    }

    /// Every package, layer by layer.
    pub fn packages(&self) -> impl Iterator<Item = &DebRef> {
        self.layer.iter().flat_map(|l| &l.package)
    }

    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string(self).map_err(|e| Error::Lock {
            path: "kiln.lock".to_owned(),
            why: format!("serializing: {e}"),
        })?;
        Ok(format!(
            "# Written by `kiln lock`: the Debian packages of this app's run image. Commit it;\n# `kiln lock --update` re-resolves.\n{body}"
        ))
    }

    /// Reads `path`; `Ok(None)` when there is no such file.
    pub fn read(path: &Path) -> Result<Option<Lock>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let bad = |why: String| Error::Lock {
            path: path.display().to_string(),
            why,
        };
        let lock: Lock = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if lock.lock_version != LOCK_VERSION {
            return Err(bad(format!(
                "lock_version {} is not {LOCK_VERSION}: run `kiln lock --update`",
                lock.lock_version
            )));
        }
        for deb in lock.packages() {
            if deb.sha256.len() != 64 || !deb.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "package {}: sha256 {:?} is not 64 hex digits",
                    deb.id(),
                    deb.sha256
                )));
            }
        }
        Ok(Some(lock))
    }

    /// Writes `path` (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_file_atomic(path, self.to_toml()?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> Lock {
        Lock {
            lock_version: LOCK_VERSION,
            distro: "debian-13".into(),
            arch: "amd64".into(),
            suite: vec![SuiteInfo {
                name: "trixie".into(),
                date: "Sat, 21 Nov 2026 09:15:44 UTC".into(),
                inrelease_sha256: "ab".repeat(32),
            }],
            layer: vec![LockedLayer {
                name: "static".into(),
                requested: vec!["netbase".into()],
                package: vec![DebRef {
                    name: "netbase".into(),
                    version: "6.5".into(),
                    architecture: "all".into(),
                    suite: "trixie".into(),
                    filename: "pool/main/n/netbase/netbase_6.5_all.deb".into(),
                    size: 1234,
                    sha256: "cd".repeat(32),
                }],
            }],
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.lock");
        assert_eq!(Lock::read(&path).unwrap(), None);
        lock().write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("[[layer.package]]\nname = \"netbase\"\nversion = \"6.5\""),
            "{text}"
        );
        assert_eq!(Lock::read(&path).unwrap(), Some(lock()));
    }

    #[test]
    fn refuses_bad_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.lock");
        let mut bad = lock();
        bad.layer[0].package[0].sha256 = "zz".into();
        bad.write(&path).unwrap();
        let err = Lock::read(&path).unwrap_err().to_string();
        assert!(err.contains("package netbase=6.5: sha256 \"zz\""), "{err}");
        let mut old = lock();
        old.lock_version = 0;
        old.write(&path).unwrap();
        assert!(Lock::read(&path)
            .unwrap_err()
            .to_string()
            .contains("kiln lock --update"));
    }
}
