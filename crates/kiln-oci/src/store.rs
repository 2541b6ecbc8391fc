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

use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// An in-progress blob: write into it, then [`BlobWriter::commit`] to hash-name it.
/// Dropping it without committing deletes the temporary file.
pub struct BlobWriter {
    inner: HashingWriter<BufWriter<NamedTempFile>>,
    dir: PathBuf,
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
        let mut hasher = HashingWriter::new(io::sink());
        io::copy(&mut file, &mut hasher).ctx(|| format!("verifying blob {}", path.display()))?;
        if hasher.finish().1 == *digest {
            return Ok(true);
        }
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(
                format!("removing corrupt blob {}", path.display()),
                e,
            )),
            _ => Ok(false),
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
            dir,
        })
    }

    /// Reads a whole blob (for small JSON blobs), verifying its digest.
    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        let bytes = fs::read(&path).ctx(|| format!("reading blob {}", path.display()))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
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
        let dest = self.dir.join(digest.hex());
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
        file.persist(&dest).map_err(|e| e.error).ctx(ctx)?;
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
    }
}
