//! Small streaming helpers shared by the layer writer, the archive writer and the image reader.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Reads exactly `expected` bytes from `inner`. Running dry early is an error (a file that shrank
/// after it was measured), and [`ExactReader::check_end`] reports bytes beyond `expected` (a file
/// that grew). Tar headers carry the size up front, so either case would otherwise corrupt the tar.
pub(crate) struct ExactReader<R> {
    inner: R,
    expected: u64,
    remaining: u64,
    what: String,
}

impl<R: Read> ExactReader<R> {
    /// `what` names the source in errors ("/src/app/main.go").
    pub(crate) fn new(inner: R, expected: u64, what: String) -> Self {
        ExactReader {
            inner,
            expected,
            remaining: expected,
            what,
        }
    }

    /// Bytes still due.
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Errors unless the source ended exactly at `expected` bytes.
    pub(crate) fn check_end(mut self) -> io::Result<()> {
        let mut probe = [0u8; 1];
        if self.remaining == 0 && self.inner.read(&mut probe)? == 0 {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{} is longer than the {} bytes it had when measured (changed while being read?)",
            self.what, self.expected
        )))
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ended after {} of the {} bytes it had when measured (changed while being \
                     read?)",
                    self.what,
                    self.expected - self.remaining,
                    self.expected
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Hashes everything read through it, so a blob copied verbatim can be verified on the way.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub(crate) fn finish(self) -> (R, Digest) {
        (
            self.inner,
            Digest::from_sha256(self.hasher.finalize().into()),
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads all of `reader` into memory, refusing more than `limit` bytes: metadata files of
/// untrusted archives (index.json, manifest.json) must not be able to exhaust memory.
pub(crate) fn read_capped(reader: impl Read, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::other(format!(
            "{what} is larger than the {limit}-byte limit for metadata"
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_reader_accepts_exact_length() {
        let mut r = ExactReader::new(&b"abcd"[..], 4, "x".into());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
        r.check_end().unwrap();
    }

    #[test]
    fn exact_reader_rejects_short_and_long_sources() {
        let mut short = ExactReader::new(&b"ab"[..], 4, "short.txt".into());
        let err = io::copy(&mut short, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("short.txt ended after 2 of the 4"));

        let mut long = ExactReader::new(&b"abcdef"[..], 4, "long.txt".into());
        assert_eq!(io::copy(&mut long, &mut io::sink()).unwrap(), 4);
        let err = long.check_end().unwrap_err();
        assert!(err
            .to_string()
            .contains("long.txt is longer than the 4 bytes"));
    }

    #[test]
    fn hashing_reader_digests_what_passes() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish().1, Digest::of(b"hello world"));
    }

    #[test]
    fn read_capped_enforces_limit() {
        assert_eq!(read_capped(&b"1234"[..], 4, "f").unwrap(), b"1234");
        assert!(read_capped(&b"12345"[..], 4, "f").is_err());
    }
}
