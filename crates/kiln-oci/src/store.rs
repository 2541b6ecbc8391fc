//! A content-addressed blob store: `ROOT/blobs/sha256/<hex>`, the same layout as an OCI image
//! layout's blob directory. Blobs are written to a temporary file in the same directory and renamed
//! into place once complete and hashed, so a killed writer never leaves a partial blob under a
//! digest name. Reads can verify content against the name.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// An in-progress blob: write into it, then [`BlobWriter::commit`] to hash-name it.
/// Dropping it without committing deletes the temporary file.
pub struct BlobWriter {
    _private: (),
}

impl BlobStore {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobStore> {
        let _ = root.into();
        todo!()
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

    /// Stores `bytes`, returning their digest (a no-op when already present).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let _ = bytes;
        todo!()
    }

    /// Streams `reader` into the store; when `expected` is given, a mismatch is an error and nothing
    /// is stored. Returns the digest and size.
    pub fn put_reader(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let _ = (reader, expected);
        todo!()
    }

    /// Starts a blob whose digest is only known once fully written.
    pub fn writer(&self) -> Result<BlobWriter> {
        todo!()
    }

    /// Reads a whole blob (for small JSON blobs), verifying its digest.
    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>> {
        let _ = digest;
        todo!()
    }

    /// Opens a blob for streaming (no verification; callers copying it verbatim re-hash as they go).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let _ = digest;
        todo!()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
        todo!()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        todo!()
    }
}

impl BlobWriter {
    /// Fsyncs, names the blob by the digest of what was written, and returns (digest, size).
    pub fn commit(self) -> Result<(Digest, u64)> {
        todo!()
    }
}
