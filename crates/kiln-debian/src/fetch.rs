//! Downloads, verified before use, cached by content.
//!
//! Cache layout under the directory the caller gives:
//! - `blobs/sha256/<hex>`: a [`BlobStore`] holding InRelease files, `Packages.xz` indexes,
//!   `.deb`s and the files unpacked from them, each under the sha256 of its bytes;
//! - `refs/inrelease-<key>`: the digest of the last InRelease fetched from one URL; the file's
//!   mtime is when it was fetched. Younger than [`Source::max_index_age`] it is used as is;
//!   older, it is refreshed when the mirror answers, else used with a note. A cached InRelease
//!   is verified again each time it is read (its blob by the store, its signature as recorded
//!   under `refs/verified-*`, its suite and `Valid-Until` against the clock).
//!
//! - `refs/verified-<key>`: a blob holding the signed text of an InRelease whose signature
//!   verified and the key that made it, the key hashing [`VERIFICATION_VERSION`], the
//!   InRelease's digest and [`Keyring::digest`]: a signature is checked once per InRelease and
//!   keyring, not on every build (the Release it signed is still parsed and its suite and
//!   `Valid-Until` checked on every use; the InRelease blob itself is verified by the store);
//! - `refs/packages-<index sha256>`: the digest of the fields Kiln reads from that index;
//! - `refs/plan-<key>`: the digest of a resolved [`crate::lock::Lock`] (TOML), the key hashing
//!   the suites' InRelease digests, the request and [`crate::stack::RESOLVER_VERSION`], so a
//!   build over unchanged indexes resolves nothing (see [`crate::stack::resolve_fresh`]).
//!
//! Indexes and packages need no other refs: the signed Release names each index by sha256, and each
//! Packages stanza names its `.deb` by sha256, so "is it cached?" is "is that blob there?".
//! Downloads are verified (size, then sha256) before they are stored, and cached blobs again
//! before use; a download that does not match is refused, never stored.

use std::fs;
use std::io::{Read, Write};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kiln_oci::store::BlobStore;
use kiln_oci::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::http;
use crate::index::{self, Package};
use crate::mirror::Mirror;
use crate::release::{self, Keyring, Release};
use crate::resolve::Universe;

/// Where downloads are kept: the caller's directory (Kiln's cache dir, `…/debian`).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    store: BlobStore,
}

impl Cache {
    pub fn open(root: impl Into<PathBuf>) -> Result<Cache> {
        let root = root.into();
        let store = BlobStore::open(&root)?;
        Ok(Cache { root, store })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The blob a ref file under `refs/` names, if the file holds a digest and the blob is
    /// stored; anything else (missing, truncated, foreign) reads as no ref.
    pub(crate) fn read_ref(&self, path: &Path) -> Option<Digest> {
        let text = fs::read_to_string(path).ok()?;
        let digest = Digest::parse(text.trim()).ok()?;
        self.store.contains(&digest).then_some(digest)
    }

    /// Marks the ref file `path` as used now (its mtime), for `kiln cache prune`'s least recently
    /// used order. Best effort: a ref that cannot be touched only looks older.
    pub(crate) fn touch_ref(&self, path: &Path) {
        if let Ok(file) = fs::File::options().write(true).open(path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Points the ref file `path` at `digest` (temp file and rename).
    pub(crate) fn write_ref(&self, path: &Path, digest: &Digest) -> Result<()> {
        write_file_atomic(path, digest.as_str().as_bytes())
    }
}

/// Where packages come from and how indexes are trusted and refreshed.
#[derive(Debug, Clone)]
pub struct Source {
    pub mirror: Mirror,
    pub keyring: Keyring,
    /// Debian architecture (`amd64`, `arm64`).
    pub arch: String,
    pub max_index_age: Duration,
}

/// The default index age: a day, like the runtime indexes.
pub const DEFAULT_MAX_INDEX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The Debian architecture name of this machine, if Kiln knows it.
pub fn host_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        "arm" => Some("armhf"),
        "powerpc64" => Some("ppc64el"),
        "s390x" => Some("s390x"),
        "riscv64" => Some("riscv64"),
        _ => None,
    }
}

impl Source {
    /// The mirror root serving `suite`: the security archive for `*-security` suites, the main
    /// archive for the others (`-updates` included).
    pub fn uri_for(&self, suite: &str) -> Result<&str> {
        if suite.ends_with("-security") {
            self.mirror
                .security
                .as_deref()
                .ok_or_else(|| Error::NoMirror {
                    why: format!(
                        "{suite} is a security suite, but no security mirror is configured"
                    ),
                })
        } else {
            Ok(&self.mirror.archive)
        }
    }

    /// The suites of a distribution release: the release itself, its `-updates` suite when the
    /// mirror reads those, and its security suite where a security mirror is known.
    pub fn suites(&self, codename: &str) -> Vec<String> {
        let mut suites = vec![codename.to_owned()];
        if self.mirror.updates {
            suites.push(format!("{codename}-updates"));
        }
        if self.mirror.security.is_some() {
            suites.push(format!("{codename}-security"));
        }
        suites
    }
}

/// The verified Release of `suite`. `notes` collects what a user should know (a stale index
/// used because the mirror did not answer).
pub fn release(
    source: &Source,
    cache: &Cache,
    suite: &str,
    notes: &mut Vec<String>,
) -> Result<Release> {
    let url = format!("{}/dists/{suite}/InRelease", source.uri_for(suite)?);
    let key = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
    let refs = cache.root.join("refs");
    let ref_path = refs.join(format!("inrelease-{key}"));
    let cached = cached_ref(&ref_path, cache);
    let now = release::now_unix();
    if let Some((digest, age)) = &cached {
        if *age < source.max_index_age {
            // A cached copy that no longer verifies (another keyring, past Valid-Until) is
            // fetched again rather than trusted.
            let bytes = cache.store.read_verified(digest)?;
            if let Ok(release) = verify_release(source, cache, &bytes, &url, suite, now) {
                return Ok(release);
            }
        }
    }
    // InRelease files are ~150 KB; anything far larger is not one.
    match http::get_bytes(&url, 16 << 20) {
        Ok(bytes) => {
            // Verified before it is stored: a bad signature is refused, not cached.
            let release = verify_release(source, cache, &bytes, &url, suite, now)?;
            let digest = cache.store.put_bytes(&bytes)?;
            cache.write_ref(&ref_path, &digest)?;
            Ok(release)
        }
        Err(failure) => {
            let Some((digest, age)) = cached else {
                return Err(failure.error);
            };
            let bytes = cache.store.read_verified(&digest)?;
            let release = verify_release(source, cache, &bytes, &url, suite, now)?;
            notes.push(format!(
                "using the cached {suite} index from {} ({} h old): {}",
                release.date,
                age.as_secs() / 3600,
                failure.error
            ));
            Ok(release)
        }
    }
}

/// Bump when what [`release::verify_signature`] accepts changes: signatures recorded as
/// verified by an older version are then checked again.
pub const VERIFICATION_VERSION: u32 = 1;

/// What a `refs/verified-*` blob starts with.
const VERIFIED_MAGIC: &str = "kiln-verified-inrelease/v1\n";

/// The Release of the InRelease `bytes` from `url`: its signature checked with the source's
/// keyring — or found recorded as checked, for these exact bytes and keys (`refs/verified-*`) —,
/// then its suite and `Valid-Until` checked against `now` (seconds since the epoch).
pub fn verify_release(
    source: &Source,
    cache: &Cache,
    bytes: &[u8],
    url: &str,
    suite: &str,
    now: i64,
) -> Result<Release> {
    let inrelease = hex::encode(Sha256::digest(bytes));
    let ref_path = cache.root.join("refs").join(format!(
        "verified-{}",
        verification_key(&inrelease, source.keyring.digest())
    ));
    let signed = match recorded_signature(cache, &ref_path) {
        Some(signed) => {
            cache.touch_ref(&ref_path);
            signed
        }
        None => {
            let signed = release::verify_signature(bytes, &source.keyring, url, now)?;
            let record = format!("{VERIFIED_MAGIC}{}\n{}", signed.signed_by, signed.text);
            let digest = cache.store.put_bytes(record.as_bytes())?;
            cache.write_ref(&ref_path, &digest)?;
            signed
        }
    };
    release::release_of(&signed, &inrelease, url, suite, now)
}

/// What a verification is recorded under: the version of the rules, the InRelease's sha256 and
/// the keyring's, each length-prefixed.
fn verification_key(inrelease_sha256: &str, keyring_digest: &str) -> String {
    let mut key = Sha256::new();
    for field in [
        &VERIFICATION_VERSION.to_le_bytes()[..],
        inrelease_sha256.as_bytes(),
        keyring_digest.as_bytes(),
    ] {
        key.update((field.len() as u64).to_le_bytes());
        key.update(field);
    }
    hex::encode(key.finalize())
}

/// The signature `ref_path` records as verified, if its blob verifies and parses; anything else
/// reads as none (and the signature is checked again).
fn recorded_signature(cache: &Cache, ref_path: &Path) -> Option<release::Signed> {
    let digest = cache.read_ref(ref_path)?;
    let bytes = cache.store.read_verified(&digest).ok()?;
    let record = String::from_utf8(bytes).ok()?;
    let (signed_by, text) = record.strip_prefix(VERIFIED_MAGIC)?.split_once('\n')?;
    Some(release::Signed {
        text: text.to_owned(),
        signed_by: signed_by.to_owned(),
    })
}

fn cached_ref(path: &Path, cache: &Cache) -> Option<(Digest, Duration)> {
    let digest = cache.read_ref(path)?;
    let fetched = fs::metadata(path).and_then(|m| m.modified()).ok()?;
    let age = SystemTime::now()
        .duration_since(fetched)
        .unwrap_or_default();
    Some((digest, age))
}

/// The packages of `main/binary-ARCH` of a verified `release`.
pub fn packages(source: &Source, cache: &Cache, release: &Release) -> Result<Vec<Package>> {
    let path = format!("main/binary-{}/Packages.xz", source.arch);
    let sum = release.file(&path)?;
    let url = format!(
        "{}/dists/{}/{path}",
        source.uri_for(&release.suite)?,
        release.suite
    );
    let digest = digest_of_hex(&sum.sha256, &url)?;
    // The fields Kiln reads, extracted once from the verified index (a quarter of its size,
    // and no xz to decompress on the next build).
    let extract_ref = cache
        .root
        .join("refs")
        .join(format!("packages-{}", digest.hex()));
    if let Some(extract) = cache.read_ref(&extract_ref) {
        let text =
            String::from_utf8(cache.store.read_verified(&extract)?).map_err(|_| Error::Parse {
                what: format!("{url} (cached extract {extract})"),
                why: "not UTF-8".to_owned(),
            })?;
        return index::parse_packages(&text, &release.suite, &format!("{url} (extract)"));
    }
    let cached = cache.store.path(&digest);
    let bytes = if cache.store.contains(&digest) {
        // Verified below (size and sha256) before it is decompressed, like a download.
        fs::read(&cached).ctx(|| format!("reading {}", cached.display()))?
    } else {
        let bytes = http::get_bytes(&url, sum.size).map_err(|f| f.error)?;
        index::verify(&bytes, sum, &url)?;
        cache.store.put_bytes(&bytes)?;
        bytes
    };
    let plain = release
        .files
        .get(path.trim_end_matches(".xz"))
        .map(|f| f.size);
    let text = index::unpack_verified(&bytes, sum, plain, &url)?;
    let packages = index::parse_packages(&text, &release.suite, &url)?;
    let extract = cache.store.put_bytes(index::extract(&text).as_bytes())?;
    cache.write_ref(&extract_ref, &extract)?;
    Ok(packages)
}

/// Releases and packages of `codename` and its updates and security suites (see
/// [`Source::suites`]), each InRelease verified, as one [`Universe`]: of a package in several
/// suites the highest version wins.
pub fn universe(
    source: &Source,
    cache: &Cache,
    codename: &str,
    notes: &mut Vec<String>,
) -> Result<(Vec<Release>, Universe)> {
    let releases = releases(source, cache, codename, notes)?;
    let universe = universe_of(source, cache, &releases)?;
    Ok((releases, universe))
}

/// The verified Releases of `codename`'s suites ([`Source::suites`]), in that order.
pub fn releases(
    source: &Source,
    cache: &Cache,
    codename: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<Release>> {
    source
        .suites(codename)
        .iter()
        .map(|suite| release(source, cache, suite, notes))
        .collect()
}

/// The packages of `releases` (from [`releases`]) as one [`Universe`].
pub fn universe_of(source: &Source, cache: &Cache, releases: &[Release]) -> Result<Universe> {
    let indexes = releases
        .iter()
        .map(|release| packages(source, cache, release))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<&str> = releases.iter().map(|r| r.suite.as_str()).collect();
    Ok(Universe::new(&names, indexes))
}

/// Exactly which `.deb` to use: chosen from a Packages index, or read from a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebRef {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The suite whose index listed it; decides the mirror (archive or security).
    pub suite: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

impl DebRef {
    /// `name=version`, for messages.
    pub fn id(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

impl From<&Package> for DebRef {
    fn from(p: &Package) -> DebRef {
        DebRef {
            name: p.name.clone(),
            version: p.version.to_string(),
            architecture: p.architecture.clone(),
            suite: p.suite.clone(),
            filename: p.filename.clone(),
            size: p.size,
            sha256: p.sha256.clone(),
        }
    }
}

/// Why a `.deb` could not be had: `gone` when the mirror answered that it does not have it.
#[derive(Debug)]
pub struct DebFailure {
    pub gone: bool,
    pub error: Error,
}

impl From<Error> for DebFailure {
    fn from(error: Error) -> Self {
        DebFailure { gone: false, error }
    }
}

/// The path of the verified `.deb` in the cache, downloading it first when needed.
pub fn deb(
    source: &Source,
    cache: &Cache,
    deb: &DebRef,
) -> std::result::Result<PathBuf, DebFailure> {
    let what = format!("package {} ({})", deb.id(), deb.filename);
    let digest = digest_of_hex(&deb.sha256, &what)?;
    let path = cache.store.path(&digest);
    if cache.store.contains(&digest) {
        verify_file(&path, deb, &what)?;
        return Ok(path);
    }
    if Path::new(&deb.filename)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::Checksum {
            what,
            why: "the pool path is not a plain relative path".to_owned(),
        }
        .into());
    }
    let url = format!("{}/{}", source.uri_for(&deb.suite)?, deb.filename);
    let body = http::get(&url).map_err(|f| DebFailure {
        gone: f.gone,
        error: f.error,
    })?;
    // Stored only if it hashes to the listed sha256 (`take` bounds a mirror sending more).
    match cache
        .store
        .put_reader(body.take(deb.size + 1), Some(&digest))
    {
        Ok(_) => Ok(path),
        Err(kiln_oci::Error::DigestMismatch { actual, .. }) => Err(Error::Checksum {
            what,
            why: format!(
                "{url} has {actual}, but Packages lists sha256:{} ({} bytes); not stored",
                deb.sha256, deb.size
            ),
        }
        .into()),
        Err(e) => Err(Error::from(e).into()),
    }
}

/// Re-hashes a cached `.deb` (a corrupted cache must not reach an image).
fn verify_file(path: &Path, deb: &DebRef, what: &str) -> Result<()> {
    let mut file = fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let size =
        std::io::copy(&mut file, &mut hasher).ctx(|| format!("reading {}", path.display()))?;
    let actual = hex::encode(hasher.finalize());
    if size != deb.size || actual != deb.sha256 {
        return Err(Error::Checksum {
            what: what.to_owned(),
            why: format!(
                "the cached copy {} is corrupt ({size} bytes, sha256 {actual}); delete it to download again",
                path.display()
            ),
        });
    }
    Ok(())
}

fn digest_of_hex(hex: &str, what: &str) -> Result<Digest> {
    Digest::parse(&format!("sha256:{hex}")).map_err(|_| Error::Parse {
        what: what.to_owned(),
        why: format!("{hex:?} is not a sha256"),
    })
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .ctx(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("renaming into {}", path.display()), e.error))?;
    Ok(())
}

/// `write_atomic` for other modules' cache records.
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic(dir, path, bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::index::parse_packages;
    use crate::relation::parse_relations;
    use crate::resolve::resolve;

    /// tzdata's stanza as bookworm's and bookworm-updates' `main/binary-amd64/Packages` list it
    /// (recorded 2026-11-30), but for the fields given.
    fn tzdata(version: &str, size: u64, sha256: &str) -> String {
        format!(
            "Package: tzdata\nVersion: {version}\nArchitecture: all\nProvides: tzdata-bookworm\n\
             Depends: debconf (>= 0.5) | debconf-2.0\n\
             Filename: pool/main/t/tzdata/tzdata_{version}_all.deb\nSize: {size}\nSHA256: {sha256}\n"
        )
    }

    /// bookworm's (the point release's).
    fn bookworm_tzdata() -> String {
        let sha256 = "0edb49f4dffe0d5608069f7e4ba4d69544d3b9e86fc314dd8b75e9958d8e5e98";
        tzdata("2026b-0+deb12u1", 304148, sha256)
    }

    /// bookworm-updates': after the point release it still lists this older one.
    fn bookworm_updates_tzdata() -> String {
        let sha256 = "a17042cb951b80d0c9462a73dec6ad31fc6adeae4ed92209601dc97d1019d7f2";
        tzdata("2025b-0+deb12u1", 299412, sha256)
    }

    fn source(updates: bool, security: bool) -> Source {
        Source {
            mirror: Mirror {
                archive: "http://archive.test/debian".to_owned(),
                security: security.then(|| "http://security.test/debian-security".to_owned()),
                updates,
                origin: "test".to_owned(),
            },
            keyring: Keyring::embedded().unwrap(),
            arch: "amd64".to_owned(),
            max_index_age: DEFAULT_MAX_INDEX_AGE,
        }
    }

    #[test]
    fn updates_suites_are_read_from_the_archive_when_the_mirror_says_so() {
        let both = source(true, true);
        assert_eq!(
            both.suites("trixie"),
            ["trixie", "trixie-updates", "trixie-security"]
        );
        assert_eq!(
            both.uri_for("trixie-updates").unwrap(),
            "http://archive.test/debian"
        );
        assert_eq!(
            both.uri_for("trixie-security").unwrap(),
            "http://security.test/debian-security"
        );
        assert_eq!(
            source(false, true).suites("bookworm"),
            ["bookworm", "bookworm-security"]
        );
        assert_eq!(
            source(true, false).suites("bookworm"),
            ["bookworm", "bookworm-updates"]
        );
        let err = source(true, false)
            .uri_for("bookworm-security")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bookworm-security is a security suite"),
            "{err}"
        );
    }

    /// The highest version across the suites wins, and the lock records the suite it came from.
    fn tzdata_from(indexes: &[(&str, String)]) -> DebRef {
        let names: Vec<&str> = indexes.iter().map(|(suite, _)| *suite).collect();
        let parsed = indexes
            .iter()
            .map(|(suite, text)| parse_packages(text, suite, "Packages").unwrap())
            .collect();
        let universe = Universe::new(&names, parsed);
        let roots = parse_relations("tzdata").unwrap();
        let got = resolve(&universe, &roots, &BTreeMap::new(), false).unwrap();
        assert_eq!(got.len(), 1);
        DebRef::from(&got[0])
    }

    #[test]
    fn the_highest_version_across_the_suite_and_its_updates_wins_with_its_suite() {
        // As recorded: the stale -updates entry loses to the point release.
        let deb = tzdata_from(&[
            ("bookworm", bookworm_tzdata()),
            ("bookworm-updates", bookworm_updates_tzdata()),
        ]);
        assert_eq!(deb.id(), "tzdata=2026b-0+deb12u1");
        assert_eq!(deb.suite, "bookworm");
        assert_eq!(
            deb.filename,
            "pool/main/t/tzdata/tzdata_2026b-0+deb12u1_all.deb"
        );
        // Between point releases it is the other way round (here the older stanza stands in
        // for the point release's): the fix from -updates wins, and is fetched from the archive.
        let deb = tzdata_from(&[
            ("bookworm", bookworm_updates_tzdata()),
            ("bookworm-updates", bookworm_tzdata()),
        ]);
        assert_eq!(deb.id(), "tzdata=2026b-0+deb12u1");
        assert_eq!(deb.suite, "bookworm-updates");
        assert_eq!(
            source(true, true).uri_for(&deb.suite).unwrap(),
            "http://archive.test/debian"
        );
        // The same version in both: the release's own entry (the same pool file) is kept.
        let deb = tzdata_from(&[
            ("bookworm", bookworm_tzdata()),
            ("bookworm-updates", bookworm_tzdata()),
        ]);
        assert_eq!(deb.suite, "bookworm");
    }
}
