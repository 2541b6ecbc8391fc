//! Analyzers: ecosystem logic that a declarative rule cannot express (version requirements with
//! their source, package manager and lockfile flavour, framework and start command, workspaces).
//! A `buildpack.toml` opts in with `[detect] analyzer = "nodejs"`; the analyzer runs once the
//! buildpack's file rules pass and returns typed [`Facts`], which the plan records and which
//! templates (`${fact:NAME}`) and conditions (`when = { NAME = "value" }`) read.
//!
//! Analyzers read only fixed paths and bounded, non-recursive directory listings, never a walk of
//! the tree: detection must stay fast on a 100k-file monorepo.

mod cpp;
mod dotnet;
mod elixir;
mod go;
mod java;
mod nodejs;
mod php;
mod python;
mod ruby;
mod rust;
mod shell;
mod static_site;
mod workspace;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest;
use crate::source::{self, Entry};

/// The port a web server is told to listen on: `$PORT`, else 8080 (a shell expansion, so the
/// start command runs through `sh -c`, and `exec`s the server so it gets PID 1's signals).
pub(crate) const PORT: &str = "${PORT:-8080}";

/// The analyzers a `buildpack.toml` may name.
pub const ANALYZERS: &[&str] = &[
    "nodejs", "python", "go", "rust", "ruby", "java", "php", "dotnet", "shell", "static", "cpp",
    "elixir",
];

/// What an analyzer (and the buildpack's declarative `[[versions]]`/`[[frameworks]]`) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The runtime/toolchain version *requirement* and where it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Sourced>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_manager: Option<PackageManager>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    /// The inferred `web` command line (a Procfile or `kiln.toml` still wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<Workspaces>,
    /// Further named values for `${fact:NAME}` and `when` (`lockfile`, `installer`, `bin`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// Things a user should know (an unknown LTS name kept as written, several candidates, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced {
    pub version: String,
    /// `package.json engines.node`, `.nvmrc`, `KILN_NODE_VERSION`, `kiln.toml versions.nodejs`.
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageManager {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Start {
    pub command: String,
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workspaces {
    /// `npm`, `yarn`, `pnpm`, `cargo`, `go`.
    pub tool: String,
    /// Member globs or paths as declared.
    pub members: Vec<String>,
    /// A task runner on top (`turborepo`, `nx`, `lerna`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<String>,
}

impl Facts {
    /// The value of fact `name` for templates and conditions.
    pub fn get(&self, name: &str) -> Option<String> {
        match name {
            "version" => self.version.as_ref().map(|v| v.version.clone()),
            "package_manager" => self.package_manager.as_ref().map(|p| p.name.clone()),
            "package_manager_version" => self
                .package_manager
                .as_ref()
                .and_then(|p| p.version.clone()),
            "framework" => self.framework.clone(),
            "start" => self.start.as_ref().map(|s| s.command.clone()),
            _ => self.values.get(name).cloned(),
        }
    }

    pub(crate) fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(name.to_owned(), value.into());
    }

    pub(crate) fn start(&mut self, command: impl Into<String>, from: impl Into<String>) {
        self.start = Some(Start {
            command: command.into(),
            from: from.into(),
        });
    }
}

/// Runs analyzer `name` on the app at `src`. Malformed manifests are errors naming file and line.
/// `prefix` is the app root relative to the source root (`""` or `"app/"`), for error messages.
/// `pins` are what the user chose that analyzers read.
pub(crate) fn run(name: &str, src: &Path, prefix: &str, pins: Pins) -> Result<Facts> {
    let tree = Tree { src, prefix };
    let app = pins.app;
    match name {
        "nodejs" => nodejs::analyze(&tree, app),
        "python" => python::analyze(&tree),
        "go" => go::analyze(&tree, app),
        "rust" => rust::analyze(&tree, app, pins.link),
        "ruby" => ruby::analyze(&tree),
        "java" => java::analyze(&tree),
        "php" => php::analyze(&tree),
        "dotnet" => dotnet::analyze(&tree),
        "shell" => shell::analyze(&tree),
        "static" => static_site::analyze(&tree),
        "cpp" => cpp::analyze(&tree),
        "elixir" => elixir::analyze(&tree),
        // Validation only lets known names through.
        other => Err(Error::Template(format!("unknown analyzer {other:?}"))),
    }
}

/// The version the app itself declares, for the image's `org.opencontainers.image.version`
/// label: `package.json` `version` (`nodejs`), `Cargo.toml` `[package] version` (`rust`, a
/// literal string only: an inherited `version.workspace = true` gives none), `pyproject.toml`
/// `[project] version` or `[tool.poetry] version` (`python`). Other buildpacks declare none.
/// Same reading rules as the analyzers (regular files, no symlinks; malformed files are errors
/// naming file and line).
pub fn app_version(src: &Path, buildpack: &str) -> Result<Option<Sourced>> {
    let tree = Tree { src, prefix: "" };
    let found = match buildpack {
        "nodejs" => tree.json("package.json")?.and_then(|pkg| {
            json_str(&pkg, "version").map(|v| (v.to_owned(), "package.json version"))
        }),
        "rust" => tree.toml("Cargo.toml")?.and_then(|cargo| {
            toml_str(&cargo, "package.version")
                .map(|v| (v.to_owned(), "Cargo.toml package.version"))
        }),
        "python" => tree.toml("pyproject.toml")?.and_then(|py| {
            toml_str(&py, "project.version")
                .map(|v| (v.to_owned(), "pyproject.toml project.version"))
                .or_else(|| {
                    toml_str(&py, "tool.poetry.version")
                        .map(|v| (v.to_owned(), "pyproject.toml tool.poetry.version"))
                })
        }),
        _ => None,
    };
    Ok(found
        .filter(|(v, _)| !v.trim().is_empty())
        .map(|(version, from)| Sourced {
            version,
            from: from.to_owned(),
        }))
}

/// What the user pinned (`kiln.toml`, `KILN_*`; see [`crate::settings::Settings`]) that
/// analyzers read, each with its source.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pins<'a> {
    /// The monorepo app (`kiln.toml` `app` / `KILN_APP`: a directory relative to the app root),
    /// for analyzers that understand workspaces.
    pub(crate) app: Option<&'a (String, String)>,
    /// How the binary links (`kiln.toml` `build.link` / `KILN_LINK`), for the rust analyzer.
    pub(crate) link: Option<&'a (String, String)>,
}

/// Read access to the source tree for analyzers: regular files reached without symlinks only.
pub(crate) struct Tree<'a> {
    pub(crate) src: &'a Path,
    pub(crate) prefix: &'a str,
}

impl Tree<'_> {
    pub(crate) fn is_file(&self, rel: &str) -> bool {
        matches!(source::entry(self.src, rel), Ok(Entry::File))
    }

    pub(crate) fn is_dir(&self, rel: &str) -> bool {
        matches!(source::entry(self.src, rel), Ok(Entry::Dir))
    }

    /// The file's text, `None` when absent (or not a regular file). Invalid UTF-8 is an error.
    pub(crate) fn text(&self, rel: &str) -> Result<Option<String>> {
        match source::read_regular(self.src, rel)? {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| self.malformed(rel, None, format!("not valid UTF-8: {e}"))),
            Err(_) => Ok(None),
        }
    }

    /// The first of `files` that exists, with its text.
    pub(crate) fn first_text(
        &self,
        files: &[&'static str],
    ) -> Result<Option<(&'static str, String)>> {
        for file in files {
            if let Some(text) = self.text(file)? {
                return Ok(Some((file, text)));
            }
        }
        Ok(None)
    }

    /// Parses a JSON file; a syntax error names the file, line and column.
    pub(crate) fn json(&self, rel: &str) -> Result<Option<serde_json::Value>> {
        let Some(text) = self.text(rel)? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            // serde_json appends " at line L column C"; the location is given separately.
            let message = e.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            // serde_json gives column 0 when the input ended before the value did.
            let location = Some((e.line(), e.column().max(1)));
            self.malformed(rel, location, format!("invalid JSON: {message}"))
        })
    }

    /// Parses a JSON5 file (pnpm's `package.json5`); a syntax error names the file, line and
    /// column.
    pub(crate) fn json5(&self, rel: &str) -> Result<Option<serde_json::Value>> {
        let Some(text) = self.text(rel)? else {
            return Ok(None);
        };
        json5::from_str(&text).map(Some).map_err(|e| {
            let json5::Error::Message { msg, location } = e;
            // pest draws the spot over several lines; its last line says what was expected.
            let message = msg
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("= "))
                .unwrap_or(msg.lines().next().unwrap_or_default())
                .to_owned();
            let location = location.map(|l| (l.line, l.column));
            self.malformed(rel, location, format!("invalid JSON5: {message}"))
        })
    }

    /// Parses a TOML file; a syntax error names the file, line and column.
    pub(crate) fn toml(&self, rel: &str) -> Result<Option<toml::Table>> {
        let Some(text) = self.text(rel)? else {
            return Ok(None);
        };
        text.parse::<toml::Table>().map(Some).map_err(|e| {
            let message = manifest::one_line(e.message());
            let location = e
                .span()
                .map(|span| manifest::error_location(&text, span.start));
            self.malformed(rel, location, format!("invalid TOML: {message}"))
        })
    }

    /// Names of the regular files (or directories) directly in `dir`, sorted; hidden entries
    /// skipped. One `read_dir`, never recursive.
    pub(crate) fn list(&self, dir: &str, dirs: bool) -> Result<Vec<String>> {
        let dir_is_dir = dir == "." || self.is_dir(dir);
        if !dir_is_dir {
            return Ok(Vec::new());
        }
        let path = self.src.join(dir);
        let entries = std::fs::read_dir(&path).map_err(|source| Error::Io {
            context: format!("listing {}", path.display()),
            source,
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                context: format!("listing {}", path.display()),
                source,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // file_type() does not follow symlinks, so a symlink is neither.
            let Ok(ft) = entry.file_type() else { continue };
            if name.starts_with('.') || (if dirs { !ft.is_dir() } else { !ft.is_file() }) {
                continue;
            }
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// `location` is `(line, column)`, both 1-based.
    fn malformed(&self, rel: &str, location: Option<(usize, usize)>, message: String) -> Error {
        Error::Manifest {
            // Relative: errors and snapshots must not depend on where the tree lives.
            path: format!("{}{rel}", self.prefix).into(),
            line: location.map(|(line, _)| line),
            column: location.map(|(_, column)| column),
            message,
        }
    }
}

/// The first candidate that has a value, with its source. Candidates are in precedence order;
/// all are computed up front (each is a small fixed file), the first present one wins.
pub(crate) fn first_version(candidates: Vec<(Option<String>, String)>) -> Option<Sourced> {
    candidates
        .into_iter()
        .find_map(|(version, from)| version.map(|version| Sourced { version, from }))
}

/// A version as written in a version file: first non-empty line, trimmed, without a leading `v`.
pub(crate) fn version_text(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let line = line
        .strip_prefix('v')
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(line);
    Some(line.to_owned())
}

impl Tree<'_> {
    /// The version a tool-version manager pins for one of `tools`, with the file and key it came
    /// from: mise's `mise.toml` / `.mise.toml` `[tools]` first (mise prefers them), then asdf's
    /// (and mise's) `.tool-versions`. `(None, "…")` when none pins it, for [`first_version`].
    pub(crate) fn tool_manager_version(&self, tools: &[&str]) -> Result<(Option<String>, String)> {
        for file in ["mise.toml", ".mise.toml"] {
            let Some(table) = self.toml(file)? else {
                continue;
            };
            let pinned = tools.iter().find_map(|tool| {
                let value = table.get("tools")?.get(*tool)?;
                let version = match value {
                    toml::Value::String(v) => Some(v.clone()),
                    // Several versions: the first is the one `mise` activates.
                    toml::Value::Array(list) => list.first()?.as_str().map(str::to_owned),
                    toml::Value::Table(t) => t.get("version")?.as_str().map(str::to_owned),
                    _ => None,
                }?;
                Some((version, format!("{file} tools.{tool}")))
            });
            if let Some((version, from)) = pinned {
                return Ok((Some(version), from));
            }
        }
        let text = self.text(".tool-versions")?;
        for tool in tools {
            if let Some(version) = text.as_deref().and_then(|t| tool_version(t, &[tool])) {
                return Ok((Some(version), format!(".tool-versions {tool}")));
            }
        }
        Ok((None, format!(".tool-versions {}", tools[0])))
    }
}

/// The version of `tool` in an asdf/mise `.tool-versions` (`nodejs 20.11.0`).
pub(crate) fn tool_version(text: &str, tools: &[&str]) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let tool = words.next()?;
        let version = words.next()?;
        tools.contains(&tool).then(|| version.to_owned())
    })
}

/// The text between `before` and `after` at the first occurrence of `before` in `text`.
pub(crate) fn between(text: &str, before: &str, after: &str) -> Option<String> {
    let start = text.find(before)? + before.len();
    let rest = &text[start..];
    let end = rest.find(after)?;
    let value = rest[..end].trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// A dotted key in a JSON value, as a string.
pub(crate) fn json_str<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    key.split('.')
        .try_fold(v, |v, seg| v.get(seg))
        .and_then(|v| v.as_str())
}

/// A dotted key in a TOML table, as a string.
pub(crate) fn toml_str<'a>(t: &'a toml::Table, key: &str) -> Option<&'a str> {
    let mut segs = key.split('.');
    let first = t.get(segs.next()?)?;
    segs.try_fold(first, |v, seg| v.get(seg))
        .and_then(|v| v.as_str())
}

/// Whether a requirements-style dependency list names `package` (case-insensitive, as a whole
/// distribution name).
pub(crate) fn mentions_package(text: &str, package: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.match_indices(package).any(|(at, _)| {
        let before = lower[..at].chars().next_back();
        let after = lower[at + package.len()..].chars().next();
        let boundary = |c: Option<char>| {
            c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        };
        boundary(before) && boundary(after)
    })
}

/// Runs `analyze` on a temporary tree holding `files` (`(path, text)`, parents created), for
/// analyzers' unit tests.
#[cfg(test)]
pub(crate) fn analyze_files(
    analyze: impl FnOnce(&Tree) -> Result<Facts>,
    files: &[(&str, &str)],
) -> Result<Facts> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    analyze(&Tree {
        src: dir.path(),
        prefix: "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_match_whole_distribution_names() {
        assert!(mentions_package("Django==5.0\n", "django"));
        assert!(mentions_package("flask = \"*\"", "flask"));
        assert!(!mentions_package("flask-cors\n", "flask"));
        assert!(!mentions_package("django-environ\n", "django"));
    }

    #[test]
    fn mise_toml_pins_before_tool_versions() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree {
            src: dir.path(),
            prefix: "",
        };
        std::fs::write(
            dir.path().join(".tool-versions"),
            "nodejs 18.1.0\npython 3.11\n",
        )
        .unwrap();
        assert_eq!(
            tree.tool_manager_version(&["node", "nodejs"]).unwrap(),
            (Some("18.1.0".into()), ".tool-versions nodejs".into())
        );
        std::fs::write(
            dir.path().join(".mise.toml"),
            "[tools]\nnode = [\"22\", \"20\"]\npython = { version = \"3.12\" }\n",
        )
        .unwrap();
        assert_eq!(
            tree.tool_manager_version(&["node", "nodejs"]).unwrap(),
            (Some("22".into()), ".mise.toml tools.node".into())
        );
        std::fs::write(dir.path().join("mise.toml"), "[tools]\npython = \"3.13\"\n").unwrap();
        assert_eq!(
            tree.tool_manager_version(&["python"]).unwrap(),
            (Some("3.13".into()), "mise.toml tools.python".into())
        );
        assert_eq!(
            tree.tool_manager_version(&["ruby"]).unwrap(),
            (None, ".tool-versions ruby".into())
        );
    }

    #[test]
    fn app_version_from_each_ecosystems_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let version = |bp: &str| {
            app_version(dir.path(), bp)
                .unwrap()
                .map(|s| (s.version, s.from))
        };
        assert_eq!(version("nodejs"), None);
        write("package.json", r#"{"name": "web", "version": "1.4.2"}"#);
        write(
            "Cargo.toml",
            "[package]\nname = \"a\"\nversion.workspace = true\n",
        );
        write("pyproject.toml", "[tool.poetry]\nversion = \"0.3.0\"\n");
        assert_eq!(
            version("nodejs"),
            Some(("1.4.2".into(), "package.json version".into()))
        );
        assert_eq!(
            version("rust"),
            None,
            "an inherited version is not a string"
        );
        assert_eq!(
            version("python"),
            Some(("0.3.0".into(), "pyproject.toml tool.poetry.version".into()))
        );
        write(
            "pyproject.toml",
            "[project]\nversion = \"2.0\"\n[tool.poetry]\nversion = \"0.3.0\"\n",
        );
        assert_eq!(version("python").unwrap().0, "2.0");
        write("Cargo.toml", "[package]\nversion = \"0.9.1\"\n");
        assert_eq!(version("rust").unwrap().0, "0.9.1");
        assert_eq!(version("go"), None);
        write("package.json", "{\n  \"version\": ,\n}");
        let err = app_version(dir.path(), "nodejs").unwrap_err().to_string();
        assert!(err.contains("package.json") && err.contains('2'), "{err}");
    }

    #[test]
    fn version_files_and_tool_versions() {
        assert_eq!(version_text("\n# c\nv20.1.0\n").as_deref(), Some("20.1.0"));
        assert_eq!(version_text("lts/iron").as_deref(), Some("lts/iron"));
        assert_eq!(
            tool_version("nodejs 20.1.0\npython 3.12\n", &["python"]).as_deref(),
            Some("3.12")
        );
        assert_eq!(
            between("a: \"1.2\" b", "a: \"", "\"").as_deref(),
            Some("1.2")
        );
        let first = first_version(vec![(None, "x".into()), (Some("2".into()), "y".into())]);
        assert_eq!(first.map(|s| s.from).as_deref(), Some("y"));
    }

    #[test]
    fn malformed_json_and_toml_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{\n  \"x\": ,\n}").unwrap();
        std::fs::write(dir.path().join("b.toml"), "[a]\r\nx = = 1\r\n").unwrap();
        let tree = Tree {
            src: dir.path(),
            prefix: "app/",
        };
        let err = tree.json("a.json").unwrap_err().to_string();
        assert_eq!(err, "app/a.json:2:8: invalid JSON: expected value");
        let err = tree.toml("b.toml").unwrap_err().to_string();
        assert!(err.starts_with("app/b.toml:2:5: invalid TOML"), "{err}");
        std::fs::write(dir.path().join("c.json5"), "{\n  // c\n  x: ,\n}").unwrap();
        let err = tree.json5("c.json5").unwrap_err().to_string();
        assert!(err.starts_with("app/c.json5:3:"), "{err}");
        assert!(err.contains("invalid JSON5: expected"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
