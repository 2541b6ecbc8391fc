//! Loading buildpacks: the built-in set (the repository's `buildpacks/` directory, embedded at
//! compile time) or a user directory laid out the same way: `<dir>/order.toml` listing ids in
//! detection order (`order = ["go", "procfile"]`) and `<dir>/<id>/buildpack.toml` for each.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::{self, invalid};
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

/// The repository's `buildpacks/` directory, embedded. Every buildpack must be listed here by
/// hand (`include_str!` needs literal paths); a test checks nothing on disk is left out.
mod builtin {
    /// Stands in for the directory in `manifest_path`s and error messages.
    pub(super) const ROOT: &str = "<builtin>";
    pub(super) const ORDER: &str = include_str!("../../../buildpacks/order.toml");
    pub(super) const BUILDPACKS: &[(&str, &str)] = &[
        (
            "nodejs",
            include_str!("../../../buildpacks/nodejs/buildpack.toml"),
        ),
        (
            "python",
            include_str!("../../../buildpacks/python/buildpack.toml"),
        ),
        (
            "ruby",
            include_str!("../../../buildpacks/ruby/buildpack.toml"),
        ),
        (
            "php",
            include_str!("../../../buildpacks/php/buildpack.toml"),
        ),
        (
            "java",
            include_str!("../../../buildpacks/java/buildpack.toml"),
        ),
        ("go", include_str!("../../../buildpacks/go/buildpack.toml")),
        (
            "rust",
            include_str!("../../../buildpacks/rust/buildpack.toml"),
        ),
        (
            "dotnet",
            include_str!("../../../buildpacks/dotnet/buildpack.toml"),
        ),
        (
            "elixir",
            include_str!("../../../buildpacks/elixir/buildpack.toml"),
        ),
        (
            "deno",
            include_str!("../../../buildpacks/deno/buildpack.toml"),
        ),
        (
            "clojure",
            include_str!("../../../buildpacks/clojure/buildpack.toml"),
        ),
        (
            "scala",
            include_str!("../../../buildpacks/scala/buildpack.toml"),
        ),
        (
            "swift",
            include_str!("../../../buildpacks/swift/buildpack.toml"),
        ),
        (
            "dart",
            include_str!("../../../buildpacks/dart/buildpack.toml"),
        ),
        (
            "zig",
            include_str!("../../../buildpacks/zig/buildpack.toml"),
        ),
        (
            "crystal",
            include_str!("../../../buildpacks/crystal/buildpack.toml"),
        ),
        (
            "gleam",
            include_str!("../../../buildpacks/gleam/buildpack.toml"),
        ),
        (
            "haskell",
            include_str!("../../../buildpacks/haskell/buildpack.toml"),
        ),
        (
            "cobol",
            include_str!("../../../buildpacks/cobol/buildpack.toml"),
        ),
        (
            "cpp",
            include_str!("../../../buildpacks/cpp/buildpack.toml"),
        ),
        (
            "static",
            include_str!("../../../buildpacks/static/buildpack.toml"),
        ),
        (
            "shell",
            include_str!("../../../buildpacks/shell/buildpack.toml"),
        ),
        (
            "procfile",
            include_str!("../../../buildpacks/procfile/buildpack.toml"),
        ),
    ];
}

/// `order.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderToml {
    order: Vec<String>,
}

impl Buildpack {
    /// Parses and validates the text of a `buildpack.toml`; `manifest_path` is recorded and named
    /// in errors.
    pub fn from_toml(text: &str, manifest_path: PathBuf) -> Result<Buildpack> {
        let spec: BuildpackToml = manifest::parse_toml(text, &manifest_path)?;
        manifest::validate_buildpack(&spec, &manifest_path)?;
        Ok(Buildpack {
            spec,
            manifest_path,
        })
    }
}

impl BuildpackSet {
    /// The built-in buildpacks, in the order of `buildpacks/order.toml`.
    pub fn builtin() -> Result<BuildpackSet> {
        let root = Path::new(builtin::ROOT);
        load(root, builtin::ORDER, |id, path| {
            builtin::BUILDPACKS
                .iter()
                .find(|(name, _)| *name == id)
                .map(|(_, text)| (*text).to_owned())
                .ok_or_else(|| invalid(path, "listed in order.toml but not embedded"))
        })
    }

    /// Loads `<dir>/order.toml` and each listed `<dir>/<id>/buildpack.toml`. Errors name the file
    /// and line; an id that does not match its directory name is an error.
    pub fn load_dir(dir: &Path) -> Result<BuildpackSet> {
        let order_path = dir.join("order.toml");
        let order = read(&order_path)?;
        load(dir, &order, |_, path| read(path))
    }

    pub fn get(&self, id: &str) -> Option<&Buildpack> {
        self.buildpacks.iter().find(|b| b.spec.buildpack.id == id)
    }
}

/// Reads `order` (the text of `<root>/order.toml`), then each buildpack through `read_manifest`
/// (given the id and `<root>/<id>/buildpack.toml`).
fn load(
    root: &Path,
    order: &str,
    mut read_manifest: impl FnMut(&str, &Path) -> Result<String>,
) -> Result<BuildpackSet> {
    let order_path = root.join("order.toml");
    let order: OrderToml = manifest::parse_toml(order, &order_path)?;
    // The whole list is checked before any manifest is read, so order.toml's own mistakes are
    // reported as such.
    let mut seen = BTreeSet::new();
    for id in &order.order {
        // Ids become path components: checking them keeps `order` from reaching outside `root`.
        if !manifest::is_name(id) {
            return Err(invalid(
                &order_path,
                format!("buildpack id {id:?} must match [a-z0-9-]+"),
            ));
        }
        if !seen.insert(id.as_str()) {
            return Err(invalid(&order_path, format!("{id:?} listed twice")));
        }
    }
    let mut buildpacks = Vec::with_capacity(order.order.len());
    for id in &order.order {
        let path = root.join(id).join("buildpack.toml");
        let text = read_manifest(id, &path)?;
        let buildpack = Buildpack::from_toml(&text, path)?;
        if buildpack.spec.buildpack.id != *id {
            return Err(invalid(
                &buildpack.manifest_path,
                format!(
                    "buildpack.id is {:?} but its directory is {id:?}; they must match",
                    buildpack.spec.buildpack.id
                ),
            ));
        }
        buildpacks.push(buildpack);
    }
    Ok(BuildpackSet { buildpacks })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// The repository's `buildpacks/` directory.
    fn repo_buildpacks() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../buildpacks")
    }

    #[test]
    fn builtin_loads_in_order() {
        let set = BuildpackSet::builtin().unwrap();
        let ids: Vec<_> = set
            .buildpacks
            .iter()
            .map(|b| b.spec.buildpack.id.as_str())
            .collect();
        assert_eq!(ids.len(), 23);
        assert_eq!(ids[0], "nodejs");
        assert_eq!(ids[22], "procfile");
        assert_eq!(
            set.get("go").unwrap().manifest_path,
            PathBuf::from("<builtin>/go/buildpack.toml")
        );
        assert!(set.get("perl").is_none());
    }

    /// A buildpack added to `buildpacks/` but not to the embedded list or to `order.toml` would
    /// silently never run.
    #[test]
    fn every_buildpack_on_disk_is_embedded_and_ordered() {
        let order: OrderToml =
            toml::from_str(&fs::read_to_string(repo_buildpacks().join("order.toml")).unwrap())
                .unwrap();
        let mut on_disk = Vec::new();
        for entry in fs::read_dir(repo_buildpacks()).unwrap() {
            let entry = entry.unwrap();
            let manifest = entry.path().join("buildpack.toml");
            if manifest.is_file() {
                let id = entry.file_name().into_string().unwrap();
                let embedded = builtin::BUILDPACKS
                    .iter()
                    .find(|(name, _)| *name == id)
                    .unwrap_or_else(|| panic!("buildpacks/{id} is not in builtin::BUILDPACKS"));
                assert_eq!(embedded.1, fs::read_to_string(&manifest).unwrap(), "{id}");
                assert!(
                    order.order.contains(&id),
                    "buildpacks/{id} is not in order.toml"
                );
                on_disk.push(id);
            }
        }
        assert_eq!(on_disk.len(), builtin::BUILDPACKS.len(), "{on_disk:?}");
        assert_eq!(
            builtin::ORDER,
            fs::read_to_string(repo_buildpacks().join("order.toml")).unwrap()
        );
    }

    #[test]
    fn load_dir_reads_the_repository_layout() {
        let set = BuildpackSet::load_dir(&repo_buildpacks()).unwrap();
        let builtin = BuildpackSet::builtin().unwrap();
        assert_eq!(set.buildpacks.len(), builtin.buildpacks.len());
        for (a, b) in set.buildpacks.iter().zip(&builtin.buildpacks) {
            assert_eq!(a.spec, b.spec);
        }
        assert!(set.buildpacks[0]
            .manifest_path
            .ends_with("nodejs/buildpack.toml"));
    }

    #[test]
    fn order_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = BuildpackSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().join("order.toml").display().to_string()),
            "{err}"
        );

        fs::write(dir.path().join("order.toml"), "order = [\"../etc\"]\n").unwrap();
        let err = BuildpackSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("\"../etc\" must match"), "{err}");

        fs::write(dir.path().join("order.toml"), "order = [\"a\", \"a\"]\n").unwrap();
        let err = BuildpackSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("\"a\" listed twice"), "{err}");

        fs::write(dir.path().join("order.toml"), "\norder = \"go\"\n").unwrap();
        let err = BuildpackSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("order.toml:2:"), "{err}");
    }
}
