//! Loading buildpacks: the built-in set (the repository's `buildpacks/` directory, embedded at
//! compile time) or a user directory laid out the same way: `<dir>/order.toml` listing ids in
//! detection order (`order = ["go", "procfile"]`) and `<dir>/<id>/buildpack.toml` for each.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::spec::BuildpackToml;

#[derive(Debug, Clone)]
pub struct Buildpack {
    pub spec: BuildpackToml,
    /// Where it was read from: a real path, or `<builtin>/go/buildpack.toml`.
    pub manifest_path: PathBuf,
}

/// Buildpacks in detection order.
#[derive(Debug, Clone)]
pub struct BuildpackSet {
    pub buildpacks: Vec<Buildpack>,
}

impl BuildpackSet {
    /// The built-in buildpacks, in the order of `buildpacks/order.toml`.
    pub fn builtin() -> Result<BuildpackSet> {
        todo!()
    }

    /// Loads `<dir>/order.toml` and each listed `<dir>/<id>/buildpack.toml`. Errors name the file
    /// and line; an id that does not match its directory name is an error.
    pub fn load_dir(dir: &Path) -> Result<BuildpackSet> {
        let _ = dir;
        todo!()
    }

    pub fn get(&self, id: &str) -> Option<&Buildpack> {
        self.buildpacks.iter().find(|b| b.spec.buildpack.id == id)
    }
}
