//! A `.deb` (an `ar` archive: `debian-binary`, `control.tar.*`, `data.tar.{xz,zst,gz}`) as
//! data: its control stanza and its `data.tar` entries. Nothing is unpacked onto the host
//! root: regular files go into the blob store under their sha256 and entries point at them.
//! Paths are checked exactly as base-image archives are (`kiln_oci::source::checked_entry_path`):
//! absolute and `..` paths, and hardlinks leaving the root, are refused. Modes, symlinks
//! (targets kept verbatim: they are resolved inside the image) and hardlinks are kept;
//! owners are not (every layer entry is root-owned, as Kiln's layers are).
//!
//! Maintainer scripts are never run, but the `update-alternatives --install` calls of
//! `postinst` are read ([`Alternative`]) so that the links they make can be generated.
//!
//! The result is cached as `unpacked-v4/<sha256 of the .deb>.json` beside the blobs, so a warm
//! build reads a listing instead of decompressing again.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fetch::{write_file_atomic, Cache};

/// Bump when what is recorded for a `.deb` changes, so old listings are not reused.
const LISTING_DIR: &str = "unpacked-v4";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebContents {
    /// The `control` file of `control.tar`, as shipped (what `status.d` records).
    pub control: String,
    /// The links `postinst` installs with `update-alternatives` (literal paths only).
    #[serde(default)]
    pub alternatives: Vec<Alternative>,
    /// `data.tar` in archive order, paths normalized (`usr/bin/dash`), the root omitted.
    pub entries: Vec<DebEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebEntry {
    pub path: String,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub kind: DebKind,
}

/// One link of `update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME
/// PATH]…`: `link` (root-relative, `usr/bin/cc`) should point at `path` (absolute, as written)
/// unless an alternative of the same `name` with a higher priority is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alternative {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DebKind {
    Dir,
    /// Content in the blob store under `sha256` (hex).
    File {
        sha256: String,
        size: u64,
    },
    Symlink {
        target: String,
    },
    /// To another entry's normalized path.
    Hardlink {
        target: String,
    },
}

/// The contents of the verified `.deb` at `path` (whose sha256 is `sha256`); `id` names the
/// package in errors.
pub fn contents(cache: &Cache, path: &Path, sha256: &str, id: &str) -> Result<DebContents> {
    let listing = cache
        .root()
        .join(LISTING_DIR)
        .join(format!("{sha256}.json"));
    if let Ok(bytes) = fs::read(&listing) {
        if let Ok(contents) = serde_json::from_slice::<DebContents>(&bytes) {
            if all_blobs_present(cache, &contents) {
                return Ok(contents);
            }
        }
    }
    let contents = unpack(cache, path, id)?;
    let json = serde_json::to_vec(&contents).map_err(|e| Error::Deb {
        deb: id.to_owned(),
        why: format!("recording its listing: {e}"),
    })?;
    write_file_atomic(&listing, &json)?;
    Ok(contents)
}

fn all_blobs_present(cache: &Cache, contents: &DebContents) -> bool {
    contents.entries.iter().all(|e| match &e.kind {
        DebKind::File { sha256, .. } => kiln_oci::Digest::parse(&format!("sha256:{sha256}"))
            .is_ok_and(|d| cache.store().contains(&d)),
        _ => true,
    })
}

/// Reads the `.deb` at `path`, storing file contents in the cache's blob store.
pub fn unpack(cache: &Cache, path: &Path, id: &str) -> Result<DebContents> {
    let bad = |why: String| Error::Deb {
        deb: format!("package {id} ({})", path.display()),
        why,
    };
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut archive = ar::Archive::new(BufReader::new(file));
    let mut format_seen = false;
    let mut control = None;
    let mut entries = None;
    while let Some(member) = archive.next_entry() {
        let mut member = member.map_err(|e| bad(format!("not an ar archive: {e}")))?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        if name == "debian-binary" {
            let mut version = String::new();
            member
                .read_to_string(&mut version)
                .map_err(|e| bad(format!("reading debian-binary: {e}")))?;
            if !version.starts_with("2.") {
                return Err(bad(format!("unsupported .deb format {:?}", version.trim())));
            }
            format_seen = true;
        } else if let Some(compression) = name.strip_prefix("control.tar") {
            let reader = decompressor(compression, &mut member).map_err(&bad)?;
            control = Some(read_control_tar(reader).map_err(&bad)?);
        } else if let Some(compression) = name.strip_prefix("data.tar") {
            let reader = decompressor(compression, &mut member).map_err(&bad)?;
            entries = Some(read_data(cache, path, reader, &bad)?);
        }
        // Other members (`_gpgorigin` signatures) carry nothing for the image.
    }
    match (format_seen, control, entries) {
        (true, Some((control, alternatives)), Some(entries)) => Ok(DebContents {
            control,
            alternatives,
            entries,
        }),
        _ => Err(bad(
            "not a Debian package: debian-binary, control.tar.* or data.tar.* is missing"
                .to_owned(),
        )),
    }
}

fn decompressor<'a>(
    suffix: &str,
    reader: &'a mut dyn Read,
) -> std::result::Result<Box<dyn Read + 'a>, String> {
    Ok(match suffix {
        "" => Box::new(reader),
        ".xz" => Box::new(lzma_rust2::XzReader::new(reader, true)),
        ".zst" => Box::new(zstd::Decoder::new(reader).map_err(|e| format!("zstd: {e}"))?),
        ".gz" => Box::new(flate2::read::GzDecoder::new(reader)),
        other => return Err(format!("unsupported compression {other:?}")),
    })
}

/// The `control` file and the alternatives `postinst` installs.
fn read_control_tar(
    reader: Box<dyn Read + '_>,
) -> std::result::Result<(String, Vec<Alternative>), String> {
    let mut tar = tar::Archive::new(reader);
    let (mut control, mut postinst) = (None, String::new());
    for entry in tar.entries().map_err(|e| format!("control.tar: {e}"))? {
        let entry = entry.map_err(|e| format!("control.tar: {e}"))?;
        let path = entry.path_bytes();
        let name = path.strip_prefix(b"./").unwrap_or(&path).to_vec();
        let mut text = String::new();
        if name == b"control" || name == b"postinst" {
            entry
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| format!("control.tar: {}: {e}", String::from_utf8_lossy(&name)))?;
        }
        match name.as_slice() {
            b"control" => control = Some(text),
            b"postinst" => postinst = text,
            _ => {}
        }
    }
    let control = control.ok_or("control.tar has no control file")?;
    Ok((control, parse_alternatives(&postinst)))
}

/// The `update-alternatives --install` calls of a maintainer script whose paths are literal,
/// or made literal by the script's own plain assignments (`basedir=/usr/share/maven`,
/// `tools='jar javac'`, `mandir=$basedir/man`; a variable keeps its last literal value, so an
/// assignment from a command such as `priority=$(expr $priority - 1)` is ignored), also inside
/// `for NAME in WORDS…; do … done` loops over literal words or such a variable (PHP's `for
/// binary in php phar; do`, OpenJDK's `for i in $jdk_hl_tools; do`). A call built from other
/// shell variables is skipped: its links cannot be known without running the script.
pub fn parse_alternatives(script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut found = Vec::new();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    // The enclosing `for` loops: (variable, its words).
    let mut loops: Vec<(String, Vec<String>)> = Vec::new();
    for line in joined.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["for", var, "in", rest @ ..] => {
                let items = rest
                    .iter()
                    .take_while(|w| !matches!(**w, ";" | "do" | "; do"))
                    .map(|w| expand_vars(w.trim_end_matches(';'), &vars))
                    .flat_map(|w| w.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .collect();
                loops.push(((*var).to_owned(), items));
                continue;
            }
            ["done", ..] => {
                loops.pop();
                continue;
            }
            _ => {}
        }
        if let Some((name, value)) = assignment(line.trim(), &vars) {
            vars.insert(name, value);
            continue;
        }
        if !line.contains("update-alternatives") {
            continue;
        }
        for expanded in expand_loops(line, &loops) {
            found.extend(parse_install(&expand_vars(&expanded, &vars)));
        }
    }
    found
}

/// `NAME=VALUE` alone on a line, with a value that is literal once the variables known so far
/// are expanded (quotes around it dropped).
fn assignment(line: &str, vars: &BTreeMap<String, String>) -> Option<(String, String)> {
    let (name, value) = line.split_once('=')?;
    let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        return None;
    }
    let quoted = ['\'', '"']
        .into_iter()
        .find_map(|q| value.strip_prefix(q)?.strip_suffix(q));
    let value = match quoted {
        Some(inner) => inner,
        None if value.contains(char::is_whitespace) => return None,
        None => value,
    };
    let value = expand_vars(value, vars);
    (!value.contains(['$', '`', '(', ')', ';', '|', '&'])).then(|| (name.to_owned(), value))
}

/// `text` with each `$NAME` / `${NAME}` that `vars` knows replaced; others are left as written.
fn expand_vars(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match vars.get(name) {
            Some(value) if !name.is_empty() => {
                out.push_str(value);
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `line` once per combination of the enclosing loops' words, their variables replaced.
fn expand_loops(line: &str, loops: &[(String, Vec<String>)]) -> Vec<String> {
    let mut lines = vec![line.to_owned()];
    for (var, items) in loops {
        lines = lines
            .iter()
            .flat_map(|l| {
                items
                    .iter()
                    .map(move |item| expand_vars(l, &BTreeMap::from([(var.clone(), item.clone())])))
            })
            .collect();
    }
    lines
}

/// The links of one `update-alternatives … --install LINK NAME PATH PRIORITY [--slave …]…`.
fn parse_install(line: &str) -> Vec<Alternative> {
    let Some(at) = line.find("update-alternatives") else {
        return Vec::new();
    };
    let words: Vec<&str> = line[at..]
        .split_whitespace()
        .take_while(|w| !matches!(*w, "||" | "&&" | ";" | "|"))
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'' || c == ';'))
        .collect();
    let Some(install) = words.iter().position(|w| *w == "--install") else {
        return Vec::new();
    };
    let Some(&[link, name, path, priority]) = words.get(install + 1..install + 5) else {
        return Vec::new();
    };
    let Ok(priority) = priority.parse::<i64>() else {
        return Vec::new();
    };
    let mut links = vec![(link, name, path)];
    let mut rest = &words[install + 5..];
    while let [flag, link, name, path, tail @ ..] = rest {
        if *flag != "--slave" {
            break;
        }
        links.push((link, name, path));
        rest = tail;
    }
    let literal = |w: &str| w.starts_with('/') && !w.contains(['$', '`', '*']);
    links
        .into_iter()
        .filter(|(link, name, path)| literal(link) && literal(path) && !name.contains('$'))
        .map(|(link, name, path)| Alternative {
            link: link.trim_start_matches('/').to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            priority,
        })
        .collect()
}

fn read_data(
    cache: &Cache,
    deb: &Path,
    reader: Box<dyn Read + '_>,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<DebEntry>> {
    use tar::EntryType::*;
    let mut tar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in tar.entries().map_err(|e| bad(format!("data.tar: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("data.tar: {e}")))?;
        let raw = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| bad("data.tar: a path is not UTF-8".to_owned()))?;
        let kind = entry.header().entry_type();
        let mode = entry
            .header()
            .mode()
            .map_err(|e| bad(format!("{raw}: {e}")))?
            & 0o7777;
        let link = || -> Result<String> {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad(format!("{raw}: link without a target")))?;
            String::from_utf8(target.into_owned())
                .map_err(|_| bad(format!("{raw}: link target is not UTF-8")))
        };
        let (path, kind) = match kind {
            XGlobalHeader => continue,
            Directory => (
                kiln_oci::source::checked_entry_path(deb, &raw)?,
                DebKind::Dir,
            ),
            Symlink => {
                let target = link()?;
                let path = kiln_oci::source::checked_entry_path(deb, &raw)?;
                (path, DebKind::Symlink { target })
            }
            Link => {
                let target = link()?;
                let (path, target) = kiln_oci::source::checked_hardlink(deb, &raw, &target)?;
                (path, DebKind::Hardlink { target })
            }
            Regular | Continuous => {
                let path = kiln_oci::source::checked_entry_path(deb, &raw)?;
                let (digest, size) = cache.store().put_reader(&mut entry, None)?;
                (
                    path,
                    DebKind::File {
                        sha256: digest.hex().to_owned(),
                        size,
                    },
                )
            }
            other => {
                return Err(bad(format!(
                    "{raw}: {other:?} entries (devices, fifos) cannot go into an image"
                )))
            }
        };
        if path.is_empty() {
            continue;
        }
        out.push(DebEntry { path, mode, kind });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One data.tar entry: `(raw path, type, mode, content or link target)`.
    type Raw<'a> = (&'a str, tar::EntryType, u32, &'a str);

    /// A tar whose names are written raw (the tar crate's own setters refuse `..`).
    fn tar_of(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, mode, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            let body: &[u8] = if kind.is_file() { data.as_bytes() } else { &[] };
            if kind.is_symlink() || kind.is_hard_link() {
                header.as_old_mut().linkname[..data.len()].copy_from_slice(data.as_bytes());
            }
            header.set_size(body.len() as u64);
            header.set_cksum();
            builder.append(&header, body).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn deb_of(dir: &Path, data: &[Raw<'_>]) -> std::path::PathBuf {
        let control = tar_of(&[(
            "./control",
            tar::EntryType::Regular,
            0o644,
            "Package: t\nVersion: 1\n",
        )]);
        let mut ar = ar::Builder::new(Vec::new());
        for (name, bytes) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", gz(&control)),
            ("data.tar.gz", gz(&tar_of(data))),
        ] {
            let header = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
            ar.append(&header, bytes.as_slice()).unwrap();
        }
        let path = dir.join("t.deb");
        fs::write(&path, ar.into_inner().unwrap()).unwrap();
        path
    }

    #[test]
    fn keeps_modes_symlinks_and_hardlinks_and_the_control_stanza() {
        use tar::EntryType::*;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let deb = deb_of(
            dir.path(),
            &[
                ("./", Directory, 0o755, ""),
                ("./usr/bin/", Directory, 0o755, ""),
                ("./usr/bin/tool", Regular, 0o4755, "#!/bin/sh\n"),
                ("./usr/bin/again", Link, 0o4755, "./usr/bin/tool"),
                ("./usr/bin/alias", Symlink, 0o777, "tool"),
            ],
        );
        let contents = unpack(&cache, &deb, "t=1").unwrap();
        assert_eq!(contents.control, "Package: t\nVersion: 1\n");
        let summary: Vec<(&str, u32, &DebKind)> = contents
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.mode, &e.kind))
            .collect();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"#!/bin/sh\n"));
        assert_eq!(
            summary,
            [
                ("usr/bin", 0o755, &DebKind::Dir),
                (
                    "usr/bin/tool",
                    0o4755,
                    &DebKind::File {
                        sha256: sha.clone(),
                        size: 10
                    }
                ),
                (
                    "usr/bin/again",
                    0o4755,
                    &DebKind::Hardlink {
                        target: "usr/bin/tool".into()
                    }
                ),
                (
                    "usr/bin/alias",
                    0o777,
                    &DebKind::Symlink {
                        target: "tool".into()
                    }
                ),
            ]
        );
        // The content went into the blob store, never onto the host root.
        let digest = kiln_oci::Digest::parse(&format!("sha256:{sha}")).unwrap();
        assert_eq!(
            cache.store().read_verified(&digest).unwrap(),
            b"#!/bin/sh\n"
        );
        // Cached listing: the same contents without unpacking again.
        let listed = contents_cached(&cache, &deb, &sha);
        assert_eq!(listed, contents);
    }

    fn contents_cached(cache: &Cache, deb: &Path, sha: &str) -> DebContents {
        let first = contents(cache, deb, sha, "t=1").unwrap();
        fs::remove_file(deb).unwrap();
        let second = contents(cache, deb, sha, "t=1").unwrap();
        assert_eq!(first, second);
        second
    }

    #[test]
    fn postinst_alternatives_with_literal_paths_are_read() {
        let script = "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n\
            update-alternatives --quiet --install /usr/bin/cc cc /usr/bin/gcc 20 \\\n\
            --slave /usr/share/man/man1/cc.1.gz cc.1.gz /usr/share/man/man1/gcc.1.gz\n\
            update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 || true\n\
            update-alternatives --install /usr/bin/$x x /usr/bin/$x.real 10\n\
            update-alternatives --remove cc /usr/bin/gcc\nfi\n\
            for binary in php phar; do\n\
            \tupdate-alternatives \\\n\t--install /usr/bin/${binary} ${binary} /usr/bin/${binary}8.4 84\n\
            done\n";
        let found = parse_alternatives(script);
        let links: Vec<(&str, &str, i64)> = found
            .iter()
            .map(|a| (a.link.as_str(), a.path.as_str(), a.priority))
            .collect();
        assert_eq!(
            links,
            [
                ("usr/bin/cc", "/usr/bin/gcc", 20),
                (
                    "usr/share/man/man1/cc.1.gz",
                    "/usr/share/man/man1/gcc.1.gz",
                    20
                ),
                ("usr/bin/awk", "/usr/bin/mawk", 5),
                ("usr/bin/php", "/usr/bin/php8.4", 84),
                ("usr/bin/phar", "/usr/bin/phar8.4", 84),
            ]
        );
    }

    /// Maven's and OpenJDK's postinsts name their paths through plain variables.
    #[test]
    fn postinst_alternatives_through_the_scripts_own_variables_are_read() {
        let maven = "basedir=/usr/share/maven\npriority=300\ncase \"$1\" in\nconfigure)\n\
            update-alternatives \\\n    --install /usr/bin/mvn mvn $basedir/bin/mvn $priority \\\n\
            --slave \\\n        /usr/bin/mvnDebug \\\n        mvnDebug \\\n        \
            $basedir/bin/mvnDebug\n;;\nesac\n";
        let links = |found: Vec<Alternative>| -> Vec<(String, String, i64)> {
            found
                .into_iter()
                .map(|a| (a.link, a.path, a.priority))
                .collect()
        };
        assert_eq!(
            links(parse_alternatives(maven)),
            [
                ("usr/bin/mvn".into(), "/usr/share/maven/bin/mvn".into(), 300),
                (
                    "usr/bin/mvnDebug".into(),
                    "/usr/share/maven/bin/mvnDebug".into(),
                    300
                ),
            ]
        );
        let jdk = "priority=2111\nbasedir=/usr/lib/jvm/java-21-openjdk-amd64\n\
            mandir=$basedir/man\njdk_hl_tools='jar javac'\n\
            if [ -n \"$multiarch\" ]; then\n\tpriority=$(expr $priority - 1)\nfi\n\
            for i in $jdk_hl_tools; do\n\tunset slave1 || true\n\
            update-alternatives \\\n --install \\\n /usr/bin/$i \\\n $i \\\n\
            $basedir/bin/$i \\\n $priority \\\n $slave1\ndone\n\
            update-alternatives --install /usr/bin/x x $unknown/x 1\n";
        assert_eq!(
            links(parse_alternatives(jdk)),
            [
                (
                    "usr/bin/jar".into(),
                    "/usr/lib/jvm/java-21-openjdk-amd64/bin/jar".into(),
                    2111
                ),
                (
                    "usr/bin/javac".into(),
                    "/usr/lib/jvm/java-21-openjdk-amd64/bin/javac".into(),
                    2111
                ),
            ]
        );
    }

    #[test]
    fn escaping_paths_are_refused_as_in_base_archives() {
        use tar::EntryType::*;
        for (bad, why) in [
            (
                ("./../etc/passwd", Regular, 0o644, "x"),
                "'..' path component",
            ),
            (("/etc/passwd", Regular, 0o644, "x"), "absolute path"),
            (
                ("./usr/x", Link, 0o644, "../../etc/shadow"),
                "link target leaves the archive root",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let cache = Cache::open(dir.path().join("cache")).unwrap();
            let deb = deb_of(dir.path(), &[bad]);
            let err = unpack(&cache, &deb, "t=1").unwrap_err().to_string();
            assert!(
                err.contains("escapes the archive root") && err.contains(why),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let deb = deb_of(dir.path(), &[("./dev/null", Char, 0o666, "")]);
        let err = unpack(&cache, &deb, "t=1").unwrap_err().to_string();
        assert!(err.contains("cannot go into an image"), "{err}");
    }
}
