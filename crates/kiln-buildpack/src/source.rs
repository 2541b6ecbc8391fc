//! Looking at the source tree without following symlinks, and reading values out of its JSON and
//! TOML files by dotted key.

use std::io::ErrorKind;
use std::path::{Component, Path};

use crate::error::{Error, Result};
use crate::manifest;
use crate::template::SourceFormat;

/// What a relative path names inside the source tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Missing,
    /// The path, or a directory on the way to it, is a symlink: never followed, since it could
    /// point outside the tree.
    Symlink,
    File,
    Dir,
    /// A socket, FIFO or device.
    Other,
}

/// Classifies `src/rel` component by component. `rel` is a checked relative path (see
/// `manifest::check_relative`); `.` components are skipped.
pub(crate) fn entry(src: &Path, rel: &str) -> Result<Entry> {
    let mut path = src.to_path_buf();
    let mut kind = Entry::Dir;
    for component in Path::new(rel).components() {
        let Component::Normal(name) = component else {
            continue;
        };
        if kind != Entry::Dir {
            // A file where a directory was expected: nothing can be below it.
            return Ok(Entry::Missing);
        }
        path.push(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Ok(Entry::Missing)
            }
            Err(source) => {
                return Err(Error::Io {
                    context: format!("inspecting {}", path.display()),
                    source,
                })
            }
        };
        let ft = meta.file_type();
        kind = if ft.is_symlink() {
            return Ok(Entry::Symlink);
        } else if ft.is_dir() {
            Entry::Dir
        } else if ft.is_file() {
            Entry::File
        } else {
            Entry::Other
        };
    }
    Ok(kind)
}

/// Reads `src/rel` if it is a regular file reached without symlinks; otherwise says what it is
/// instead (`Err(entry)` for the caller to phrase, see [`Entry::describe`]).
pub(crate) fn read_regular(src: &Path, rel: &str) -> Result<std::result::Result<Vec<u8>, Entry>> {
    match entry(src, rel)? {
        Entry::File => {
            let path = src.join(rel);
            std::fs::read(&path).map(Ok).map_err(|source| Error::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        }
        other => Ok(Err(other)),
    }
}

impl Entry {
    /// Why a path that should be a regular file is not, e.g. "is a symlink (not followed)".
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Entry::Missing => "not found",
            Entry::Symlink => "is a symlink (not followed)",
            Entry::Dir => "is a directory",
            Entry::File | Entry::Other => "is not a regular file",
        }
    }
}

/// A parsed JSON or TOML document. TOML is held as its JSON equivalent so one key lookup serves
/// both (a TOML datetime becomes an object: present, but not a scalar).
#[derive(Debug)]
pub(crate) struct Document(serde_json::Value);

/// What a dotted key names in a [`Document`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    Absent,
    /// A string, number or boolean, as text.
    Scalar(String),
    /// A table, array or TOML datetime: present, but not usable as a template value.
    Composite,
}

impl Document {
    /// Parses `bytes` as `format`; `Err` is a readable parse error (with the line).
    pub(crate) fn parse(format: SourceFormat, bytes: &[u8]) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not valid UTF-8: {e}"))?;
        match format {
            SourceFormat::Json => serde_json::from_str(text)
                .map(Document)
                .map_err(|e| e.to_string()),
            SourceFormat::Toml => text
                .parse::<toml::Table>()
                .map_err(|e| {
                    let message = manifest::one_line(e.message());
                    match e.span() {
                        Some(span) => {
                            format!("line {}: {message}", manifest::error_line(text, span.start))
                        }
                        None => message,
                    }
                })
                // Fails only for values JSON cannot hold (`nan`, `inf`).
                .and_then(|table| serde_json::to_value(table).map_err(|e| e.to_string()))
                .map(Document),
        }
    }

    /// Follows a dotted `key` through tables/objects; a numeric segment indexes an array.
    pub(crate) fn get(&self, key: &str) -> Found {
        let mut v = &self.0;
        for seg in key.split('.') {
            let next = match v {
                serde_json::Value::Object(map) => map.get(seg),
                serde_json::Value::Array(items) => {
                    seg.parse::<usize>().ok().and_then(|i| items.get(i))
                }
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => return Found::Absent,
            }
        }
        match v {
            serde_json::Value::String(s) => Found::Scalar(s.clone()),
            serde_json::Value::Number(n) => Found::Scalar(n.to_string()),
            serde_json::Value::Bool(b) => Found::Scalar(b.to_string()),
            // `null` is present as a key but has no text.
            _ => Found::Composite,
        }
    }
}

/// The file of a source format by extension (for `detect.match` keys).
pub(crate) fn format_of(file: &str) -> Option<SourceFormat> {
    if file.ends_with(".json") {
        Some(SourceFormat::Json)
    } else if file.ends_with(".toml") {
        Some(SourceFormat::Toml)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn entries_do_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("d"), root.join("link")).unwrap();
        assert_eq!(entry(root, "d").unwrap(), Entry::Dir);
        assert_eq!(entry(root, "./d/f").unwrap(), Entry::File);
        assert_eq!(entry(root, "d/f/g").unwrap(), Entry::Missing);
        assert_eq!(entry(root, "nope").unwrap(), Entry::Missing);
        assert_eq!(entry(root, "link").unwrap(), Entry::Symlink);
        assert_eq!(entry(root, "link/f").unwrap(), Entry::Symlink);
        assert_eq!(read_regular(root, "d/f").unwrap(), Ok(b"x".to_vec()));
        assert_eq!(read_regular(root, "link/f").unwrap(), Err(Entry::Symlink));
        assert_eq!(read_regular(root, "d").unwrap(), Err(Entry::Dir));
    }

    #[test]
    fn dotted_keys() {
        let json = Document::parse(
            SourceFormat::Json,
            br#"{"scripts":{"start":"node ."},"n":3,"ok":true,"a":[1,{"b":"c"}],"z":null}"#,
        )
        .unwrap();
        assert_eq!(json.get("scripts.start"), Found::Scalar("node .".into()));
        assert_eq!(json.get("n"), Found::Scalar("3".into()));
        assert_eq!(json.get("ok"), Found::Scalar("true".into()));
        assert_eq!(json.get("a.1.b"), Found::Scalar("c".into()));
        assert_eq!(json.get("scripts"), Found::Composite);
        assert_eq!(json.get("z"), Found::Composite);
        assert_eq!(json.get("scripts.stop"), Found::Absent);
        assert_eq!(json.get("n.x"), Found::Absent);

        let toml = Document::parse(
            SourceFormat::Toml,
            b"[package]\nname = \"demo\"\nedition = 2021\n[[bin]]\nname = \"b\"\n",
        )
        .unwrap();
        assert_eq!(toml.get("package.name"), Found::Scalar("demo".into()));
        assert_eq!(toml.get("package.edition"), Found::Scalar("2021".into()));
        assert_eq!(toml.get("bin.0.name"), Found::Scalar("b".into()));
        assert_eq!(toml.get("package.version"), Found::Absent);
    }

    #[test]
    fn parse_errors_are_readable() {
        let e = Document::parse(SourceFormat::Toml, b"[package]\nname = \n").unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
        let e = Document::parse(SourceFormat::Json, b"{\n\"a\": }").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(Document::parse(SourceFormat::Json, b"\xff").is_err());
    }
}
