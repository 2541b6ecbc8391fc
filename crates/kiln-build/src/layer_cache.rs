//! Deciding whether a layer can be reused, and saying why.
//!
//! A layer is looked up in three steps, cheapest first:
//! 1. **stat key** — (path, kind, mode, link target, size, mtime) of every entry, from one `stat`
//!    per file. Unchanged files hit without reading a byte.
//! 2. **content key** — the same with each file's sha256 instead of its mtime. A `touch` or a
//!    fresh `git checkout` misses step 1 but hits here, and never changes a digest.
//! 3. **build** — tar → diff_id → compress → digest, then both keys are recorded.
//!
//! A hit reuses the stored [`LayerRecord`] and blob: no re-tar, no recompression. The blob is
//! re-hashed before reuse, so a corrupted cache is detected, dropped and rebuilt, never shipped.
//! Keys include the compressor tag, so changing compression never reuses a differently made layer.
//! When a layer is rebuilt, the previous fingerprint of the layer with the same name says what
//! changed ("3 files changed under src/").

use crate::events::Events;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use kiln_oci::digest::Digest;
use kiln_oci::layer::{self, Entry, EntryKind, EntryPrint, Fingerprint, LayerOptions};
use kiln_oci::spec::LayerRecord;

use crate::cache::{write_atomic, write_atomic_with, BuildCache};
use crate::error::{IoContext, Result};

/// Bump when the stat key's description changes.
const STAT_KEY_VERSION: &str = "kiln-layer-stat-key/v1";

/// Why a layer was reused or rebuilt: a typed decision with a reason, reported per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerDecision {
    /// Every entry's metadata is as recorded.
    Unchanged,
    /// Timestamps differ but every file's content is as recorded.
    ContentUnchanged,
    /// `--no-cache`.
    NoCacheRequested,
    /// Never built with this name in this cache.
    NoCache,
    /// Built before with this very content, but pruned from the cache since.
    Pruned,
    /// Same content, different compressor or layer options.
    OptionsChanged { from: String, to: String },
    /// What changed since the last build of the layer with this name.
    ContentChanged(String),
    /// A record pointed at a blob that is missing or whose bytes no longer match its digest.
    BlobCorrupt,
}

impl LayerDecision {
    pub fn reused(&self) -> bool {
        matches!(
            self,
            LayerDecision::Unchanged | LayerDecision::ContentUnchanged
        )
    }
}

impl fmt::Display for LayerDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerDecision::Unchanged => f.write_str("unchanged"),
            LayerDecision::ContentUnchanged => {
                f.write_str("content unchanged (only timestamps differ)")
            }
            LayerDecision::NoCacheRequested => f.write_str("--no-cache"),
            LayerDecision::NoCache => f.write_str("no cache"),
            LayerDecision::Pruned => f.write_str("no cache (pruned since the last build)"),
            LayerDecision::OptionsChanged { from, to } => {
                write!(f, "compressor changed ({from} -> {to})")
            }
            LayerDecision::ContentChanged(what) => f.write_str(what),
            LayerDecision::BlobCorrupt => {
                f.write_str("cached blob missing or corrupt (digest mismatch); rebuilt")
            }
        }
    }
}

/// The last build of a layer with a given name: what it contained and how it was written.
#[derive(Deserialize)]
struct Snapshot {
    options: String,
    prints: Vec<EntryPrint>,
}

/// A [`Snapshot`] as written (with its content key, for people reading the cache): the prints
/// made one at a time from the fingerprint.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    options: String,
    content_key: &'a Digest,
    prints: Prints<'a>,
}

struct Prints<'a>(&'a Fingerprint<'a>);

impl Serialize for Prints<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.prints())
    }
}

/// Looks up or builds the layer called `name` made of `entries` (normalized). Warnings (a corrupt
/// cached blob) go to `log`.
pub fn layer(
    cache: &BuildCache,
    name: &str,
    entries: &[Entry],
    opts: &LayerOptions,
    no_cache: bool,
    ev: Events<'_>,
) -> Result<(LayerRecord, LayerDecision)> {
    let stat_key = stat_key(entries, opts)?;
    let stat_path = cache.root().join("keys").join(stat_key.hex());
    if !no_cache {
        let known = fs::read_to_string(&stat_path)
            .ok()
            .and_then(|s| Digest::parse(s.trim()).ok());
        if let Some(content_key) = known {
            if let Some(record) = reusable(cache, &content_key, ev)? {
                return Ok((record, LayerDecision::Unchanged));
            }
        }
    }
    let fingerprint = Fingerprint::of(entries)?;
    let content_key = layer::content_key_of(fingerprint.prints(), opts);
    if !no_cache {
        if let Some(record) = reusable(cache, &content_key, ev)? {
            write_atomic(&stat_path, content_key.as_str().as_bytes())?;
            return Ok((record, LayerDecision::ContentUnchanged));
        }
    }
    let decision = if no_cache {
        LayerDecision::NoCacheRequested
    } else if cache.read_record(&content_key).is_some() {
        LayerDecision::BlobCorrupt
    } else {
        what_changed(cache, name, &fingerprint, opts)
    };

    let record = layer::write_layer(&cache.store, entries, opts)?;
    cache.record_layer(&content_key, &record)?;
    write_atomic(&stat_path, content_key.as_str().as_bytes())?;
    let snapshot = SnapshotOut {
        options: options_tag(opts),
        content_key: &content_key,
        prints: Prints(&fingerprint),
    };
    // Streamed, print by print: the JSON of a 200k-entry layer is tens of MiB that need not be
    // held at once.
    write_atomic_with(&snapshot_path(cache, name), |w| {
        serde_json::to_writer(w, &snapshot).map_err(std::io::Error::other)
    })?;
    Ok((record, decision))
}

/// The record for `content_key` if its blob is present and intact. A damaged blob is removed
/// (with its record) so it cannot be shipped.
fn reusable(
    cache: &BuildCache,
    content_key: &Digest,
    ev: Events<'_>,
) -> Result<Option<LayerRecord>> {
    let Some(record) = cache.read_record(content_key) else {
        return Ok(None);
    };
    let digest = &record.descriptor.digest;
    let present = cache.store.contains(digest);
    if cache.store.contains_intact(digest)? {
        // Only the record is marked as used (`kiln cache prune` takes the later of record and
        // blob): touching the blob would change its ctime, and so the identity that spares
        // re-hashing it next time.
        cache.touch_record(content_key);
        return Ok(Some(record));
    }
    if present {
        ev.warn(format!(
            "cached blob {digest} is corrupt; dropping it and rebuilding"
        ));
    }
    Ok(None)
}

fn options_tag(opts: &LayerOptions) -> String {
    let mut tag = format!(
        "{} mtime={} uid={} gid={}",
        opts.compression.cache_tag(),
        opts.mtime,
        opts.uid,
        opts.gid
    );
    // Only when set, so stat keys of layers written without it stay what they were.
    if let Some(o) = &opts.owned {
        tag.push_str(&format!(" owned={}:{}:{}", o.prefix, o.uid, o.gid));
    }
    tag
}

fn snapshot_path(cache: &BuildCache, name: &str) -> PathBuf {
    // Layer names are `<buildpack>/<layer>` or `app`: ids are [a-z0-9-], so `__` is unambiguous.
    cache
        .root()
        .join("snapshots")
        .join(format!("{}.json", name.replace('/', "__")))
}

/// Compares with the last build of the layer called `name`.
fn what_changed(
    cache: &BuildCache,
    name: &str,
    fingerprint: &Fingerprint<'_>,
    opts: &LayerOptions,
) -> LayerDecision {
    let previous: Option<Snapshot> = fs::read(snapshot_path(cache, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(previous) = previous else {
        return LayerDecision::NoCache;
    };
    let prints: Vec<EntryPrint> = fingerprint.prints().collect();
    if previous.prints == prints {
        let now = options_tag(opts);
        if previous.options == now {
            return LayerDecision::Pruned;
        }
        return LayerDecision::OptionsChanged {
            from: previous.options,
            to: now,
        };
    }
    LayerDecision::ContentChanged(describe_changes(&previous.prints, &prints))
}

/// "3 files changed under workspace/src/", "1 added, 2 removed, 1 changed under layers/go/bin/".
pub(crate) fn describe_changes(old: &[EntryPrint], new: &[EntryPrint]) -> String {
    let old: BTreeMap<&str, &EntryPrint> = old.iter().map(|p| (p.path.as_str(), p)).collect();
    let new: BTreeMap<&str, &EntryPrint> = new.iter().map(|p| (p.path.as_str(), p)).collect();
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    let mut paths: Vec<&str> = Vec::new();
    for (path, p) in &new {
        match old.get(path) {
            None => added += 1,
            Some(o) if o != p => changed += 1,
            Some(_) => continue,
        }
        paths.push(path);
    }
    for path in old.keys().filter(|p| !new.contains_key(*p)) {
        removed += 1;
        paths.push(path);
    }
    let mut parts = Vec::new();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let total = added + removed + changed;
    if added == 0 && removed == 0 {
        parts.push(format!("{changed} file{} changed", plural(changed)));
    } else {
        for (n, what) in [(added, "added"), (removed, "removed"), (changed, "changed")] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
    }
    let summary = parts.join(", ");
    let prefix = common_dir(&paths);
    if total == 0 {
        "layer entries changed".to_owned()
    } else if prefix.is_empty() {
        summary
    } else {
        format!("{summary} under {prefix}")
    }
}

/// The longest directory (ending in `/`) containing every path.
fn common_dir(paths: &[&str]) -> String {
    let Some(first) = paths.first() else {
        return String::new();
    };
    let mut prefix: &str = first.rfind('/').map_or("", |i| &first[..=i]);
    for p in &paths[1..] {
        while !p.starts_with(prefix) {
            let trimmed = prefix.trim_end_matches('/');
            prefix = trimmed.rfind('/').map_or("", |i| &trimmed[..=i]);
        }
    }
    prefix.to_owned()
}

/// The stat key: the listing's `lstat` of each file (one more only for files not found by a
/// walk), no content read.
fn stat_key(entries: &[Entry], opts: &LayerOptions) -> Result<Digest> {
    use std::fmt::Write as _;
    let mut key = Sha256::new();
    key.update(format!("{STAT_KEY_VERSION}\0{}\n", options_tag(opts)));
    // One line per entry, `path\0kind\0mode (octal)\0detail\n`, formatted into one reused
    // buffer.
    let mut line = String::new();
    for entry in entries {
        line.clear();
        let kind = match &entry.kind {
            EntryKind::Dir => "dir",
            EntryKind::File { .. } => "file",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Hardlink { .. } => "hardlink",
        };
        let _ = write!(line, "{}\0{kind}\0{:o}\0", entry.path, entry.mode);
        match &entry.kind {
            EntryKind::Dir => {}
            EntryKind::File {
                source,
                size,
                listed,
            } => {
                // A walked file's mtime is the walk's own: no second `lstat` per file.
                let (secs, nanos) = match listed {
                    Some(listed) => listed.mtime,
                    None => {
                        let meta = fs::symlink_metadata(source)
                            .ctx(|| format!("reading {}", source.display()))?;
                        (meta.mtime(), meta.mtime_nsec())
                    }
                };
                let _ = write!(line, "{size}\0{secs}.{nanos}");
            }
            EntryKind::Symlink { target } | EntryKind::Hardlink { target } => line.push_str(target),
        }
        line.push('\n');
        key.update(line.as_bytes());
    }
    Ok(Digest::from_sha256(key.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn print(path: &str, content: &str) -> EntryPrint {
        EntryPrint {
            path: path.into(),
            kind: "file".into(),
            mode: 0o644,
            content: content.into(),
            size: 1,
        }
    }

    #[test]
    fn a_corrupt_cached_blob_is_reported_in_the_build_log() {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/procfile-static");
        let mut opts = crate::BuildOptions::new(fixture, tmp.path().join("out.tar"));
        opts.cache_dir = tmp.path().join("cache");
        opts.kiln_env = BTreeMap::new();
        // Only the layer cache matters here: the image (httpd on scratch) never runs.
        opts.verify = false;
        let first = crate::build(&opts, &crate::events::Ignore).unwrap();
        let app = &first.layers.last().unwrap().digest;
        let blob = BuildCache::open(&opts.cache_dir, crate::events::Events::silent())
            .unwrap()
            .store
            .path(app);
        fs::remove_file(&blob).unwrap();
        fs::write(&blob, b"flipped").unwrap();

        let log = crate::events::LogLines::new(Vec::new());
        let again = crate::build(&opts, &log).unwrap();
        let log = String::from_utf8(log.into_inner()).unwrap();
        assert!(
            log.contains(&format!(
                "warning: cached blob {app} is corrupt; dropping it and rebuilding"
            )),
            "{log}"
        );
        assert_eq!(&again.layers.last().unwrap().digest, app);
    }

    #[test]
    fn app_directory_ownership_is_part_of_both_keys() {
        let entries = kiln_oci::layer::normalize(vec![Entry {
            path: "workspace/a".into(),
            kind: EntryKind::Dir,
            mode: 0o755,
        }])
        .unwrap();
        let root = LayerOptions::default();
        let nonroot = LayerOptions {
            owned: Some(kiln_oci::layer::Owned {
                prefix: "workspace".into(),
                uid: 65532,
                gid: 65532,
            }),
            ..LayerOptions::default()
        };
        // Switching `[image] user` (or the run image) must never reuse the other's layer.
        assert_ne!(
            stat_key(&entries, &root).unwrap(),
            stat_key(&entries, &nonroot).unwrap()
        );
        assert_ne!(
            kiln_oci::layer::content_key(&entries, &root).unwrap(),
            kiln_oci::layer::content_key(&entries, &nonroot).unwrap()
        );
    }

    #[test]
    fn change_descriptions_name_counts_and_the_common_directory() {
        let old = vec![
            print("workspace/src/a.go", "1"),
            print("workspace/src/b.go", "1"),
            print("workspace/src/c/d.go", "1"),
            print("workspace/README", "1"),
        ];
        let mut new = old.clone();
        new[0].content = "2".into();
        new[2].content = "2".into();
        new[1].content = "2".into();
        assert_eq!(
            describe_changes(&old, &new),
            "3 files changed under workspace/src/"
        );
        let mut new = old.clone();
        new.remove(3);
        new.push(print("workspace/src/e.go", "1"));
        new[0].content = "2".into();
        assert_eq!(
            describe_changes(&old, &new),
            "1 added, 1 removed, 1 changed under workspace/"
        );
        let one = vec![print("workspace/x", "1")];
        let other = vec![print("workspace/x", "2")];
        assert_eq!(
            describe_changes(&one, &other),
            "1 file changed under workspace/"
        );
    }
}
