//! Looking after the cache directory: `kiln cache ls` and `kiln cache prune`.
//!
//! Pruning works on whole items, least recently used first: a finished layer (its record and,
//! once nothing else refers to it, its blob), a kept cache layer directory, another blob
//! (base image layers, configs, manifests), an unpacked build root, or a Debian resolved plan
//! or recorded InRelease verification (`debian/refs/plan-*`, `verified-*`, with its blob). Leftovers of builds that died are listed by
//! `kiln cache ls` and removed by the next build or prune. "Used" is the item's mtime, which builds refresh on
//! every reuse. The build lock is held throughout, so pruning never races a build.

use crate::events::Events;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use kiln_oci::digest::Digest;
use kiln_oci::spec::LayerRecord;

use crate::cache::BuildCache;
use crate::error::{IoContext, Result};

#[derive(Debug, Clone, Serialize)]
pub struct CacheListing {
    pub cache_dir: PathBuf,
    pub total_bytes: u64,
    pub items: Vec<CacheItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheItem {
    /// `layer`, `cache-layer`, `blob`, `build-root`, `plan` (a resolved Debian plan),
    /// `verified-inrelease` (a recorded InRelease signature check), or `leftover` (what a build
    /// that died left, which the next build or prune removes).
    pub kind: &'static str,
    /// A layer's digest; `<project key>/<buildpack>/<layer>` or `shared/<buildpack>/<layer>` for
    /// kept cache layers; a blob's digest; a build root's, plan's, verification's or leftover's
    /// path in the cache.
    pub name: String,
    pub bytes: u64,
    /// Seconds since the item was last used.
    pub idle_seconds: u64,
    #[serde(skip)]
    paths: Vec<PathBuf>,
    #[serde(skip)]
    last_used: SystemTime,
}

#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    pub max_size: Option<u64>,
    pub older_than: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub removed: Vec<CacheItem>,
    pub freed_bytes: u64,
    pub remaining_bytes: u64,
}

/// Lists what the cache holds, most recently used first.
pub fn list(cache_dir: &Path) -> Result<CacheListing> {
    // Counting leftovers, not removing them: only builds and prune clean up.
    match open_existing(cache_dir, BuildCache::open_without_cleaning)? {
        Some(cache) => listing(&cache),
        None => Ok(CacheListing {
            cache_dir: cache_dir.to_path_buf(),
            total_bytes: 0,
            items: Vec::new(),
        }),
    }
}

/// The cache at `cache_dir`, or `None` when there is no such directory: looking at a cache
/// (or pruning one) must not create it, e.g. at a mistyped `--cache-dir`.
fn open_existing(
    cache_dir: &Path,
    open: fn(&Path, Events<'_>) -> Result<BuildCache>,
) -> Result<Option<BuildCache>> {
    match fs::symlink_metadata(cache_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => open(cache_dir, Events::silent()).map(Some),
    }
}

fn listing(cache: &BuildCache) -> Result<CacheListing> {
    let root = cache.root();
    let now = SystemTime::now();
    let mut items = Vec::new();
    let mut claimed: BTreeSet<Digest> = BTreeSet::new();
    for (record_path, record) in records(root)? {
        let blob = cache.store.path(&record.descriptor.digest);
        let blob_meta = fs::metadata(&blob).ok();
        let last_used = [fs::metadata(&record_path).ok(), blob_meta.clone()]
            .into_iter()
            .flatten()
            .filter_map(|m| m.modified().ok())
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut paths = vec![record_path];
        if claimed.insert(record.descriptor.digest.clone()) && blob_meta.is_some() {
            paths.push(blob);
        }
        items.push(item(
            "layer",
            record.descriptor.digest.to_string(),
            paths,
            last_used,
            now,
        )?);
    }
    // `<project key>/<buildpack>/<layer>` for an app's own, `shared/<buildpack>/<layer>`.
    let mut kept = Vec::new();
    for project in read_dir_sorted(&root.join("projects"))? {
        for bp in read_dir_sorted(&project.join("layers"))? {
            for layer in read_dir_sorted(&bp)? {
                kept.push((format!("{}/{}", file_name(&project), file_name(&bp)), layer));
            }
        }
    }
    for bp in read_dir_sorted(&root.join("shared"))? {
        for layer in read_dir_sorted(&bp)? {
            kept.push((format!("shared/{}", file_name(&bp)), layer));
        }
    }
    for (owner, layer) in kept {
        let name = format!("{owner}/{}", file_name(&layer));
        let last_used = fs::metadata(&layer)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        items.push(item("cache-layer", name, vec![layer], last_used, now)?);
    }
    // Only `kiln cache ls` sees these: every build and prune removes them first.
    for path in cache.leftovers()? {
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let last_used = fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        items.push(item("leftover", name, vec![path], last_used, now)?);
    }
    for blob in read_dir_sorted(&root.join("blobs/sha256"))? {
        let Ok(digest) = Digest::parse(&format!("sha256:{}", file_name(&blob))) else {
            continue; // temporary files of a blob being written
        };
        if claimed.contains(&digest) {
            continue;
        }
        let last_used = fs::metadata(&blob)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        items.push(item(
            "blob",
            digest.to_string(),
            vec![blob],
            last_used,
            now,
        )?);
    }
    // The default Debian cache's resolved plans and recorded InRelease verifications: each a
    // ref and the blob it names, the ref touched by every build that uses it. (Its downloads
    // are content-addressed and named by signed indexes; the `inrelease-*` refs say when an
    // index was fetched.)
    let debian = root.join("debian");
    let mut debian_claimed = BTreeSet::new();
    for ref_path in read_dir_sorted(&debian.join("refs"))? {
        let name = file_name(&ref_path);
        let kind = if name.starts_with("plan-") {
            "plan"
        } else if name.starts_with("verified-") {
            "verified-inrelease"
        } else {
            continue;
        };
        let blob = fs::read_to_string(&ref_path)
            .ok()
            .and_then(|s| Digest::parse(s.trim()).ok())
            .map(|d| debian.join("blobs/sha256").join(d.hex()))
            .filter(|blob| blob.is_file() && debian_claimed.insert(blob.clone()));
        let last_used = fs::metadata(&ref_path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let paths = std::iter::once(ref_path).chain(blob).collect();
        items.push(item(
            kind,
            format!("debian/refs/{name}"),
            paths,
            last_used,
            now,
        )?);
    }
    // Unpacked build roots in the default Debian cache (`KILN_DEBIAN_CACHE` elsewhere is the
    // caller's to manage); a build that uses one touches it. Half-unpacked ones start with `.`.
    let roots = root.join(crate::build_root::ROOTS_DIR);
    for dir in read_dir_sorted(&roots)? {
        if file_name(&dir).starts_with('.') {
            continue;
        }
        let last_used = fs::metadata(&dir)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let name = format!("{}/{}", crate::build_root::ROOTS_DIR, file_name(&dir));
        items.push(item("build-root", name, vec![dir], last_used, now)?);
    }
    items.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.name.cmp(&b.name)));
    Ok(CacheListing {
        cache_dir: root.to_path_buf(),
        total_bytes: items.iter().map(|i| i.bytes).sum(),
        items,
    })
}

/// Removes items older than `older_than`, then least recently used ones until the cache fits
/// in `max_size`.
pub fn prune(cache_dir: &Path, policy: &PrunePolicy) -> Result<PruneReport> {
    let Some(cache) = open_existing(cache_dir, BuildCache::open)? else {
        return Ok(PruneReport {
            removed: Vec::new(),
            freed_bytes: 0,
            remaining_bytes: 0,
        });
    };
    let listing = listing(&cache)?;
    let mut remaining = listing.total_bytes;
    let mut removed = Vec::new();
    // Oldest first.
    for item in listing.items.into_iter().rev() {
        let too_old = policy
            .older_than
            .is_some_and(|d| item.idle_seconds >= d.as_secs());
        let too_big = policy.max_size.is_some_and(|max| remaining > max);
        if !(too_old || too_big) {
            continue;
        }
        for path in &item.paths {
            let meta = fs::symlink_metadata(path).ctx(|| format!("reading {}", path.display()))?;
            if item.kind == "build-root" {
                kiln_debian::build_root::remove_tree(path)
            } else if meta.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            }
            .ctx(|| format!("removing {}", path.display()))?;
        }
        remaining -= item.bytes;
        removed.push(item);
    }
    if removed.iter().any(|i| i.kind == "build-root") {
        let roots = cache.root().join(crate::build_root::ROOTS_DIR);
        kiln_debian::build_root::remove_unlinked_files(&roots)
            .ctx(|| format!("removing unused shared files of {}", roots.display()))?;
    }
    drop_dangling_keys(&cache)?;
    Ok(PruneReport {
        freed_bytes: removed.iter().map(|i| i.bytes).sum(),
        removed,
        remaining_bytes: remaining,
    })
}

/// Stat keys and snapshots pointing at removed records would only cost a lookup; remove them so
/// the cache stays tidy.
fn drop_dangling_keys(cache: &BuildCache) -> Result<()> {
    for key_file in read_dir_sorted(&cache.root().join("keys"))? {
        let target = fs::read_to_string(&key_file)
            .ok()
            .and_then(|s| Digest::parse(s.trim()).ok());
        if target.is_none_or(|d| cache.read_record(&d).is_none()) {
            fs::remove_file(&key_file).ctx(|| format!("removing {}", key_file.display()))?;
        }
    }
    Ok(())
}

fn records(root: &Path) -> Result<Vec<(PathBuf, LayerRecord)>> {
    let mut out = Vec::new();
    for path in read_dir_sorted(&root.join("layers"))? {
        let record = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok());
        if let Some(record) = record {
            out.push((path, record));
        }
    }
    Ok(out)
}

fn item(
    kind: &'static str,
    name: String,
    paths: Vec<PathBuf>,
    last_used: SystemTime,
    now: SystemTime,
) -> Result<CacheItem> {
    let mut bytes = 0;
    for path in &paths {
        bytes += disk_usage(path)?;
    }
    Ok(CacheItem {
        kind,
        name,
        bytes,
        idle_seconds: now.duration_since(last_used).map_or(0, |d| d.as_secs()),
        paths,
        last_used,
    })
}

fn disk_usage(path: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in walkdir::WalkDir::new(path).follow_links(false) {
        let entry = entry.map_err(|e| crate::error::Error::Io {
            context: format!("reading {}", path.display()),
            source: e.into(),
        })?;
        if entry.file_type().is_file() {
            // A file with several names (build roots share theirs) counts once, split among
            // its names.
            total += entry.metadata().map_or(0, |m| {
                use std::os::unix::fs::MetadataExt;
                m.len() / m.nlink().max(1)
            });
        }
    }
    Ok(total)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            // Hidden entries are in-progress temporaries of a writer.
            .filter(|p| !file_name(p).starts_with('.'))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).ctx(|| format!("reading {}", dir.display())),
    };
    out.sort();
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses `500M`, `2G`, `1.5GiB`, `300k` or a plain byte count (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 500M, 2G, 1048576"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    Ok((value * multiplier as f64) as u64)
}

/// Parses `90s`, `30m`, `12h`, `7d`, `2w`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let (number, unit) = t.split_at(t.len().saturating_sub(1));
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: expected e.g. 30m, 12h, 7d"
            ))
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30m, 12h, 7d"))?;
    Ok(Duration::from_secs(n * seconds))
}

/// Sizes for humans: `16.9 MiB`.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Groups item counts and bytes by kind, for summaries.
pub fn totals_by_kind(items: &[CacheItem]) -> BTreeMap<&'static str, (usize, u64)> {
    let mut totals = BTreeMap::new();
    for item in items {
        let entry = totals.entry(item.kind).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += item.bytes;
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cache_lists_and_prunes_as_empty_without_being_created() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no/such/cache");
        let listing = list(&missing).unwrap();
        assert_eq!((listing.total_bytes, listing.items.len()), (0, 0));
        assert_eq!(listing.cache_dir, missing);
        let policy = PrunePolicy {
            max_size: Some(0),
            older_than: None,
        };
        let report = prune(&missing, &policy).unwrap();
        assert_eq!((report.removed.len(), report.remaining_bytes), (0, 0));
        assert!(
            !tmp.path().join("no").exists(),
            "the cache directory was created"
        );
    }

    #[test]
    fn build_roots_are_listed_and_pruned_even_with_read_only_directories() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let roots = tmp.path().join(crate::build_root::ROOTS_DIR);
        let usr = roots.join("k1/usr");
        fs::create_dir_all(&usr).unwrap();
        fs::write(usr.join("tool"), vec![b'x'; 5000]).unwrap();
        // A file shared with other roots: its copy in `.files` goes once no root links to it.
        let shared = roots
            .join(kiln_debian::build_root::FILES_DIR)
            .join("0644/ab");
        fs::create_dir_all(shared.parent().unwrap()).unwrap();
        fs::write(&shared, vec![b'y'; 3000]).unwrap();
        fs::hard_link(&shared, usr.join("lib")).unwrap();
        fs::set_permissions(&usr, fs::Permissions::from_mode(0o555)).unwrap();
        fs::create_dir_all(roots.join(".unpacking-1")).unwrap();
        let listing = list(tmp.path()).unwrap();
        let found: Vec<(&str, &str)> = listing
            .items
            .iter()
            .filter(|i| i.kind == "build-root")
            .map(|i| (i.kind, i.name.as_str()))
            .collect();
        assert_eq!(found, [("build-root", "debian/roots/k1")]);
        let k1 = listing
            .items
            .iter()
            .find(|i| i.kind == "build-root")
            .unwrap();
        assert_eq!(k1.bytes, 5000 + 3000 / 2, "the shared file counts half");
        let policy = PrunePolicy {
            max_size: Some(0),
            older_than: None,
        };
        let report = prune(tmp.path(), &policy).unwrap();
        assert!(report.removed.iter().any(|i| i.kind == "build-root"));
        assert!(!roots.join("k1").exists());
        assert!(!shared.exists(), "the unlinked shared copy stayed");
    }

    #[test]
    fn debian_plans_and_verifications_are_listed_and_pruned_least_recently_used_first() {
        let tmp = tempfile::tempdir().unwrap();
        let debian = kiln_debian::fetch::Cache::open(tmp.path().join("debian")).unwrap();
        let refs = tmp.path().join("debian/refs");
        fs::create_dir_all(&refs).unwrap();
        let put_ref = |name: &str, bytes: &[u8], days_idle: u64| {
            let digest = debian.store().put_bytes(bytes).unwrap();
            let path = refs.join(name);
            fs::write(&path, digest.as_str()).unwrap();
            let used = SystemTime::now() - Duration::from_secs(days_idle * 86_400);
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(used)
                .unwrap();
            debian.store().path(&digest)
        };
        let old_plan = put_ref("plan-old", &[b'p'; 3000], 10);
        let new_plan = put_ref("plan-new", &[b'q'; 2000], 0);
        let verified = put_ref("verified-v", &[b'v'; 1000], 9);
        // An index's fetch time, not a use: neither listed nor pruned here.
        let index = put_ref("inrelease-i", &[b'i'; 500], 30);
        let listing = list(tmp.path()).unwrap();
        let found: Vec<(&str, &str, u64)> = listing
            .items
            .iter()
            .map(|i| (i.kind, i.name.as_str(), i.bytes))
            .collect();
        let ref_bytes = 71; // "sha256:" and 64 hex digits
        assert_eq!(
            found,
            [
                ("plan", "debian/refs/plan-new", 2000 + ref_bytes),
                (
                    "verified-inrelease",
                    "debian/refs/verified-v",
                    1000 + ref_bytes
                ),
                ("plan", "debian/refs/plan-old", 3000 + ref_bytes),
            ]
        );
        let policy = PrunePolicy {
            max_size: None,
            older_than: Some(Duration::from_secs(7 * 86_400)),
        };
        let report = prune(tmp.path(), &policy).unwrap();
        let removed: Vec<&str> = report.removed.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(removed, ["debian/refs/plan-old", "debian/refs/verified-v"]);
        assert!(!refs.join("plan-old").exists() && !old_plan.exists());
        assert!(!refs.join("verified-v").exists() && !verified.exists());
        assert!(refs.join("plan-new").exists() && new_plan.exists());
        assert!(refs.join("inrelease-i").exists() && index.exists());
        assert_eq!(report.remaining_bytes, 2000 + ref_bytes);
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(human_size(17_700_000), "16.9 MiB");
    }
}
