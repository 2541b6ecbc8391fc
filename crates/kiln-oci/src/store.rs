//! A content-addressed blob store: `ROOT/blobs/sha256/<hex>`, the same layout as an OCI image
//! layout's blob directory. Blobs are written to a temporary file in the same directory and renamed
//! into place once complete and hashed, so a killed writer never leaves a partial blob under a
//! digest name. Reads can verify content against the name.
//!
//! Concurrent writers of the same blob are safe: each writes its own temporary file and the
//! renames are atomic, so readers see either no blob or a complete one (renaming over an identical
//! file changes nothing they can observe).
//!
//! A blob on disk can still be damaged afterwards (a flipped bit, a file truncated by something
//! other than Kiln). Importers therefore ask [`BlobStore::contains_intact`], which re-hashes an
//! existing copy and drops a damaged one, before they skip importing a blob they could supply
//! again; a bad copy is then replaced instead of failing every later use of it.
//!
//! Re-hashing every cached blob on every build would make a no-op rebuild cost a read of the
//! whole cache. So once a blob (of at least [`IDENTITY_MIN_SIZE`] bytes) has been written or
//! verified, its file identity — device, inode, size, mtime and ctime — is recorded in
//! `ROOT/verified/sha256/<hex>` (temp + rename), and a blob whose identity is still the one
//! recorded is trusted without reading it. Any write to the file changes its ctime (which no
//! unprivileged call can set back), and a replaced file has another inode, so a blob changed in
//! place or swapped is re-hashed. A record is only made once the filesystem clock has moved past
//! the blob's ctime: a write in the same clock tick as the last one would otherwise leave the
//! identity unchanged (git's "racy clean" problem). Blobs are never written in place: they appear
//! by rename, and are exported by hard link only because nothing writes into them.

use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};

/// Blobs smaller than this are re-hashed rather than trusted by identity: reading a record costs
/// about as much as hashing them.
pub const IDENTITY_MIN_SIZE: u64 = 64 * 1024;

/// How long recording an identity may wait for the filesystem clock to pass a blob's ctime (one
/// clock tick, 1–10 ms, in practice); past it no record is made and the blob is re-hashed next time.
const CLOCK_WAIT: Duration = Duration::from_millis(50);

/// What identifies one version of a file: any write changes the ctime, a replacement the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(meta: &fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    const VERSION: &'static str = "kiln-blob-identity/v1";

    fn to_line(self) -> String {
        format!(
            "{} {} {} {} {}.{} {}.{}\n",
            Self::VERSION,
            self.dev,
            self.ino,
            self.size,
            self.mtime.0,
            self.mtime.1,
            self.ctime.0,
            self.ctime.1
        )
    }

    fn parse(line: &str) -> Option<FileIdentity> {
        let mut words = line.split_ascii_whitespace();
        if words.next()? != Self::VERSION {
            return None;
        }
        let mut number = || words.next()?.parse::<u64>().ok();
        let (dev, ino, size) = (number()?, number()?, number()?);
        let mut time = || {
            let (s, ns) = words.next()?.split_once('.')?;
            Some((s.parse().ok()?, ns.parse().ok()?))
        };
        let (mtime, ctime) = (time()?, time()?);
        Some(FileIdentity {
            dev,
            ino,
            size,
            mtime,
            ctime,
        })
    }
}

/// The filesystem's clock: the coarse realtime clock file timestamps are taken from.
fn coarse_now() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_REALTIME_COARSE exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    (ts.tv_sec, ts.tv_nsec)
}

/// Waits until the filesystem clock is past `ctime`, so that any later write to the file gets
/// another ctime. False if that takes longer than [`CLOCK_WAIT`] (a clock set back).
fn wait_past(ctime: (i64, i64)) -> bool {
    let started = Instant::now();
    while coarse_now() <= ctime {
        if started.elapsed() > CLOCK_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A blob opened for copying, and whether it may be copied without re-hashing it.
pub struct OpenBlob {
    pub file: File,
    /// The open file's identity is the one recorded when its content was last verified.
    pub trusted: bool,
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// An in-progress blob: write into it, then [`BlobWriter::commit`] to hash-name it.
/// Dropping it without committing deletes the temporary file.
pub struct BlobWriter {
    inner: HashingWriter<BufWriter<NamedTempFile>>,
    store: BlobStore,
}

impl BlobStore {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobStore> {
        let store = BlobStore { root: root.into() };
        let dir = store.blob_dir();
        fs::create_dir_all(&dir).ctx(|| format!("creating blob store {}", dir.display()))?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ROOT/blobs/sha256/<hex>` (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Whether the store holds `digest` with content that still hashes to it. A damaged copy is
    /// removed (and `false` returned), so the caller imports the blob again rather than trusting
    /// it; costs one read of the blob.
    pub fn contains_intact(&self, digest: &Digest) -> Result<bool> {
        let path = self.path(digest);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(format!("opening blob {}", path.display()), e)),
        };
        let ctx = || format!("verifying blob {}", path.display());
        let before = file.metadata().ctx(ctx)?;
        if self.identity_is_recorded(digest, &before) {
            return Ok(true);
        }
        // Past the file's ctime before reading it: a write after this point changes the ctime.
        let recordable = before.len() >= IDENTITY_MIN_SIZE && wait_past(ctime_of(&before));
        let mut hasher = HashingWriter::new(io::sink());
        io::copy(&mut file, &mut hasher).ctx(ctx)?;
        if hasher.finish().1 == *digest {
            let after = file.metadata().ctx(ctx)?;
            if recordable && FileIdentity::of(&after) == FileIdentity::of(&before) {
                self.record_identity(digest, &after);
            }
            return Ok(true);
        }
        self.forget_identity(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(
                format!("removing corrupt blob {}", path.display()),
                e,
            )),
            _ => Ok(false),
        }
    }

    /// Opens a blob for copying verbatim, saying whether its identity is the one recorded when it
    /// was last verified (then its bytes need no re-hashing; otherwise the caller hashes them).
    pub fn open_for_copy(&self, digest: &Digest) -> Result<OpenBlob> {
        let file = self.open_blob(digest)?;
        let meta = file
            .metadata()
            .ctx(|| format!("reading metadata of blob {}", self.path(digest).display()))?;
        let trusted = self.identity_is_recorded(digest, &meta);
        Ok(OpenBlob { file, trusted })
    }

    /// `ROOT/verified/sha256/<hex>`: the identity `digest`'s blob had when last verified.
    fn identity_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("verified/sha256").join(digest.hex())
    }

    fn identity_is_recorded(&self, digest: &Digest, meta: &fs::Metadata) -> bool {
        meta.is_file()
            && meta.len() >= IDENTITY_MIN_SIZE
            && fs::read_to_string(self.identity_path(digest))
                .ok()
                .and_then(|line| FileIdentity::parse(&line))
                == Some(FileIdentity::of(meta))
    }

    /// Records `meta` as the identity of `digest`'s verified blob. Best effort: without a record
    /// the blob is simply re-hashed next time.
    fn record_identity(&self, digest: &Digest, meta: &fs::Metadata) {
        let path = self.identity_path(digest);
        let Some(dir) = path.parent() else { return };
        let write = || -> io::Result<()> {
            fs::create_dir_all(dir)?;
            let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
            tmp.write_all(FileIdentity::of(meta).to_line().as_bytes())?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        if write().is_err() {
            self.forget_identity(digest);
        }
    }

    fn forget_identity(&self, digest: &Digest) {
        let _ = fs::remove_file(self.identity_path(digest));
    }

    /// `ROOT/verified/outputs/<sha256 of the path>`: what was last written to an output path.
    fn output_record_path(&self, out: &Path) -> PathBuf {
        let name = Digest::of(out.as_os_str().as_encoded_bytes());
        self.root.join("verified/outputs").join(name.hex())
    }

    /// Whether the regular file at `out` is the one [`BlobStore::record_output`] recorded for
    /// content `key`, untouched since (same identity: see the module docs): then writing that
    /// content there again would change nothing.
    pub fn output_is_current(&self, out: &Path, key: &Digest) -> bool {
        let Ok(meta) = fs::symlink_metadata(out) else {
            return false;
        };
        let Ok(record) = fs::read_to_string(self.output_record_path(out)) else {
            return false;
        };
        let Some((recorded_key, identity)) = record.split_once(' ') else {
            return false;
        };
        meta.is_file()
            && recorded_key == key.as_str()
            && FileIdentity::parse(identity) == Some(FileIdentity::of(&meta))
    }

    /// Records that the file just renamed into place at `out` holds content `key`. Best
    /// effort, and only once the filesystem clock is past the file's ctime (as for blobs);
    /// without a record the output is simply written again next time.
    pub fn record_output(&self, out: &Path, key: &Digest) {
        let path = self.output_record_path(out);
        let _ = fs::remove_file(&path);
        let Ok(meta) = fs::symlink_metadata(out) else {
            return;
        };
        if !meta.is_file() || !wait_past(ctime_of(&meta)) {
            return;
        }
        let Some(dir) = path.parent() else { return };
        let write = || -> io::Result<()> {
            fs::create_dir_all(dir)?;
            let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
            let line = format!("{key} {}", FileIdentity::of(&meta).to_line());
            tmp.write_all(line.as_bytes())?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        if write().is_err() {
            let _ = fs::remove_file(&path);
        }
    }

    /// Stores `bytes`, returning their digest (a no-op when an intact copy is present).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if !self.contains_intact(&digest)? {
            self.put_reader(bytes, Some(&digest))?;
        }
        Ok(digest)
    }

    /// Streams `reader` into the store; when `expected` is given, a mismatch is an error and nothing
    /// is stored. Returns the digest and size.
    pub fn put_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let mut writer = self.writer()?;
        let what = || match expected {
            Some(d) => format!("writing blob {d} into {}", self.root.display()),
            None => format!("writing a blob into {}", self.root.display()),
        };
        io::copy(&mut reader, &mut writer).ctx(what)?;
        writer.commit_checked(expected)
    }

    /// Starts a blob whose digest is only known once fully written.
    pub fn writer(&self) -> Result<BlobWriter> {
        let dir = self.blob_dir();
        let file = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .ctx(|| format!("creating a temporary blob in {}", dir.display()))?;
        Ok(BlobWriter {
            inner: HashingWriter::new(BufWriter::new(file)),
            store: self.clone(),
        })
    }

    /// Reads a whole blob (JSON blobs, package indexes), verifying its digest — by its recorded
    /// identity when it has one (see the module docs), else by hashing it.
    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        let ctx = || format!("reading blob {}", path.display());
        let mut file = File::open(&path).ctx(ctx)?;
        let before = file.metadata().ctx(ctx)?;
        let trusted = self.identity_is_recorded(digest, &before);
        let recordable =
            !trusted && before.len() >= IDENTITY_MIN_SIZE && wait_past(ctime_of(&before));
        let mut bytes = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).ctx(ctx)?;
        if trusted && bytes.len() as u64 == before.len() {
            return Ok(bytes);
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if recordable {
            if let Ok(after) = file.metadata() {
                if FileIdentity::of(&after) == FileIdentity::of(&before) {
                    self.record_identity(digest, &after);
                }
            }
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming (no verification; callers copying it verbatim re-hash as they go).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).ctx(|| format!("opening blob {}", path.display()))
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
}

fn ctime_of(meta: &fs::Metadata) -> (i64, i64) {
    (meta.ctime(), meta.ctime_nsec())
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Fsyncs, names the blob by the digest of what was written, and returns (digest, size).
    pub fn commit(self) -> Result<(Digest, u64)> {
        self.commit_checked(None)
    }

    /// [`BlobWriter::commit`], refusing (and deleting the temporary file) when the content does
    /// not hash to `expected`.
    fn commit_checked(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (buffered, digest, size) = self.inner.finish();
        if let Some(expected) = expected {
            if expected != &digest {
                // `buffered` drops here, deleting the temporary file.
                return Err(Error::DigestMismatch {
                    expected: expected.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let dest = self.store.path(&digest);
        let ctx = || format!("storing blob {}", dest.display());
        let file = buffered.into_inner().map_err(|e| e.into_error()).ctx(ctx)?;
        // Temporary files are created 0600; blobs are content, not secrets, and get exported by
        // hardlink into layout directories other tools read.
        file.as_file()
            .set_permissions(Permissions::from_mode(0o644))
            .ctx(ctx)?;
        // Data must be on disk before the name appears, or a crash could leave a truncated blob
        // under a valid digest name.
        file.as_file().sync_all().ctx(ctx)?;
        let file = file.persist(&dest).map_err(|e| e.error).ctx(ctx)?;
        // We wrote these bytes and hashed them on the way: record what the file is now, once the
        // filesystem clock has moved past its last change.
        if size >= IDENTITY_MIN_SIZE {
            let store = &self.store;
            if let Ok(before) = file.metadata() {
                if wait_past(ctime_of(&before)) {
                    match file.metadata() {
                        Ok(after) if FileIdentity::of(&after) == FileIdentity::of(&before) => {
                            store.record_identity(&digest, &after)
                        }
                        _ => store.forget_identity(&digest),
                    }
                } else {
                    store.forget_identity(&digest);
                }
            }
        }
        Ok((digest, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_dir_names(store: &BlobStore) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn put_bytes_names_blob_by_digest_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(store.contains(&d));
        assert_eq!(
            store.path(&d),
            dir.path().join("store/blobs/sha256").join(d.hex())
        );
        assert_eq!(store.read_verified(&d).unwrap(), b"hello");
        // Idempotent, and no temporary files are left behind.
        assert_eq!(store.put_bytes(b"hello").unwrap(), d);
        assert_eq!(blob_dir_names(&store), vec![d.hex().to_owned()]);
        let mode = fs::metadata(store.path(&d)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn put_reader_with_wrong_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let wrong = Digest::of(b"something else");
        let err = store.put_reader(&b"hello"[..], Some(&wrong)).unwrap_err();
        match err {
            Error::DigestMismatch { expected, actual } => {
                assert_eq!(expected, wrong.to_string());
                assert_eq!(actual, Digest::of(b"hello").to_string());
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(blob_dir_names(&store).is_empty());
        assert!(!store.contains(&Digest::of(b"hello")));
    }

    #[test]
    fn uncommitted_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"partial").unwrap();
        assert_eq!(blob_dir_names(&store).len(), 1, "the temporary file exists");
        drop(w);
        assert!(blob_dir_names(&store).is_empty());
    }

    #[test]
    fn writer_commit_returns_digest_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"abc").unwrap();
        w.write_all(b"def").unwrap();
        let (d, n) = w.commit().unwrap();
        assert_eq!((d.clone(), n), (Digest::of(b"abcdef"), 6));
        assert_eq!(fs::read(store.path(&d)).unwrap(), b"abcdef");
    }

    #[test]
    fn concurrent_writers_of_the_same_blob_agree() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| store.put_reader(&content[..], None).unwrap());
            }
        });
        let d = Digest::of(&content);
        assert_eq!(store.read_verified(&d).unwrap(), content);
        assert_eq!(blob_dir_names(&store), vec![d.hex().to_owned()]);
    }

    #[test]
    fn damaged_blobs_are_dropped_and_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put_bytes(b"original").unwrap();
        assert!(store.contains_intact(&d).unwrap());
        fs::write(store.path(&d), b"originaL").unwrap();
        assert!(!store.contains_intact(&d).unwrap());
        assert!(!store.contains(&d), "the damaged copy is gone");
        assert!(!store.contains_intact(&Digest::of(b"never stored")).unwrap());
        // put_bytes replaces a damaged copy instead of keeping it.
        fs::write(store.path(&d), b"originaL").unwrap();
        assert_eq!(store.put_bytes(b"original").unwrap(), d);
        assert_eq!(store.read_verified(&d).unwrap(), b"original");
    }

    /// Bytes that do not compress, so a blob is above [`IDENTITY_MIN_SIZE`].
    fn large_content() -> Vec<u8> {
        (0..IDENTITY_MIN_SIZE as u32)
            .flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes())
            .collect()
    }

    #[test]
    fn a_verified_blob_is_trusted_until_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let content = large_content();
        let (d, _) = store.put_reader(&content[..], None).unwrap();
        let record = fs::read_to_string(store.identity_path(&d)).unwrap();
        let meta = fs::metadata(store.path(&d)).unwrap();
        assert_eq!(FileIdentity::parse(&record), Some(FileIdentity::of(&meta)));
        assert!(store.open_for_copy(&d).unwrap().trusted);
        assert!(store.contains_intact(&d).unwrap());

        // Changed in place, same size: the ctime moves, so the record no longer vouches for it.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(store.path(&d))
            .unwrap();
        file.write_all(b"X").unwrap();
        drop(file);
        assert_eq!(
            fs::metadata(store.path(&d)).unwrap().len(),
            content.len() as u64
        );
        assert!(!store.open_for_copy(&d).unwrap().trusted);
        assert!(
            !store.contains_intact(&d).unwrap(),
            "the modified blob is re-hashed"
        );
        assert!(!store.contains(&d), "and dropped");
        assert!(!store.identity_path(&d).exists(), "with its record");

        // Stored again, verified again: trusted again.
        store.put_reader(&content[..], Some(&d)).unwrap();
        assert!(store.open_for_copy(&d).unwrap().trusted);
    }

    #[test]
    fn a_trusted_blob_is_not_read_and_an_untrusted_one_is_recorded_once_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let content = large_content();
        let (d, _) = store.put_reader(&content[..], None).unwrap();
        // Without a record, verification hashes the blob, and records it.
        fs::remove_file(store.identity_path(&d)).unwrap();
        assert!(!store.open_for_copy(&d).unwrap().trusted);
        assert!(store.contains_intact(&d).unwrap());
        assert!(store.open_for_copy(&d).unwrap().trusted);
        // A record matching the file is all a trusted check looks at: content that no longer
        // hashes to the name passes (which is why only Kiln's own writes and hashes make records).
        let mut bad = content.clone();
        bad[7] ^= 1;
        fs::write(store.path(&d), &bad).unwrap();
        store.record_identity(&d, &fs::metadata(store.path(&d)).unwrap());
        assert!(store.contains_intact(&d).unwrap());
        // Small blobs are never recorded: they are always re-hashed.
        let small = store.put_bytes(b"small").unwrap();
        assert!(!store.identity_path(&small).exists());
        fs::write(store.path(&small), b"smalL").unwrap();
        assert!(!store.contains_intact(&small).unwrap());
    }

    #[test]
    fn a_write_in_the_clock_tick_of_the_last_change_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (d, _) = store.put_reader(&large_content()[..], None).unwrap();
        let meta = fs::metadata(store.path(&d)).unwrap();
        // The record is made only once the filesystem clock is past the blob's last change.
        assert!(coarse_now() > ctime_of(&meta));
        assert!(FileIdentity::parse("kiln-blob-identity/v1 1 2 3 4.5").is_none());
        assert!(FileIdentity::parse("other 1 2 3 4.5 6.7").is_none());
    }

    #[test]
    fn read_verified_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put_bytes(b"original").unwrap();
        fs::write(store.path(&d), b"tampered").unwrap();
        assert!(matches!(
            store.read_verified(&d),
            Err(Error::DigestMismatch { .. })
        ));
        // A large blob read through its recorded identity is caught too once changed in place.
        let content = large_content();
        let (big, _) = store.put_reader(&content[..], None).unwrap();
        assert_eq!(store.read_verified(&big).unwrap(), content);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(store.path(&big))
            .unwrap();
        file.write_all(b"Z").unwrap();
        drop(file);
        assert!(matches!(
            store.read_verified(&big),
            Err(Error::DigestMismatch { .. })
        ));
    }
}
