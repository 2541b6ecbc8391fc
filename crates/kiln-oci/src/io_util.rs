//! Small streaming helpers shared by the layer writer, the archive writer and the image reader,
//! and [`TreeRoot`]: opening paths below a directory without following symlinks.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
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

/// A directory held open so that paths below it are opened without following any symlink: the
/// root a tree was listed from, or a working copy being written. Holding the handle means a root
/// renamed or replaced later changes nothing; resolving beneath it means a file or a parent
/// directory swapped for a symlink after listing is an error, never a way out of the tree.
#[derive(Debug, Clone)]
pub struct TreeRoot {
    fd: Arc<OwnedFd>,
    path: Arc<Path>,
}

/// Set once `openat2` turned out to be missing (kernel < 5.6, or a seccomp filter refusing it), so
/// later opens go straight to the per-component walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl TreeRoot {
    /// Opens the directory `path`. Symlinks in `path` itself are followed: it is the caller's
    /// trusted starting point, and only what lies below it is confined.
    pub fn open(path: &Path) -> io::Result<TreeRoot> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(TreeRoot {
            fd: Arc::new(fd),
            path: path.into(),
        })
    }

    /// The path the root was opened by (for messages, and to relate listed paths to it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (relative, without `..`; empty for the root itself) below the root with
    /// `flags`, refusing a symlink in any component, the last one included (`ELOOP` or
    /// `ENOTDIR`). With `O_PATH`, also pass `O_DIRECTORY`: an `O_PATH | O_NOFOLLOW` open of a
    /// symlink succeeds and refers to the link.
    pub fn open_beneath(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(self.fd.as_fd(), rel, flags, Mode::empty(), resolve) {
                Err(Errno::NOSYS) | Err(Errno::PERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
                result => return result.map_err(io::Error::from),
            }
        }
        open_by_components(self.fd.as_fd(), rel, flags)
    }
}

/// Paths are what identifies a root in entries compared for equality; the handle has no value.
impl PartialEq for TreeRoot {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for TreeRoot {}

/// [`TreeRoot::open_beneath`] without `openat2`: one `openat` per component, each directory with
/// `O_NOFOLLOW | O_DIRECTORY` relative to the one before, so no component can be a symlink.
fn open_by_components(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let mut names: Vec<&OsStr> = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a path below the root", rel.display()),
                ))
            }
        }
    }
    let Some((last, parents)) = names.split_last() else {
        return Ok(rustix::fs::openat(root, ".", flags, Mode::empty())?);
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir: Option<OwnedFd> = None;
    for name in parents {
        let at = dir.as_ref().map_or(root, AsFd::as_fd);
        let next = rustix::fs::openat(at, *name, dir_flags, Mode::empty())?;
        dir = Some(next);
    }
    let at = dir.as_ref().map_or(root, AsFd::as_fd);
    Ok(rustix::fs::openat(at, *last, flags, Mode::empty())?)
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

/// Copies `len` bytes from `from`'s file offset to `to`'s, in the kernel where it can
/// (`copy_file_range`, which reflinks on filesystems that share extents, such as btrfs and XFS),
/// else through a buffer. Both offsets advance. A source shorter than `len` is an error.
pub(crate) fn kernel_copy(from: &File, to: &File, len: u64, what: &str) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        match rustix::fs::copy_file_range(from, None, to, None, chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{what} ended after {} of its {len} bytes", len - left),
                ))
            }
            Ok(n) => left -= n as u64,
            // Not between these files (another filesystem on old kernels, special files):
            // nothing was copied by this call, so the rest goes through a buffer.
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP | Errno::PERM) => {
                let mut rest = ExactReader::new(from, left, what.to_owned());
                io::copy(&mut rest, &mut &*to)?;
                left = 0;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Makes `to` share `from`'s extents (`FICLONE`: btrfs, XFS, bcachefs…). False where the
/// filesystem cannot, and nothing is written then.
pub(crate) fn reflink(from: &File, to: &File) -> bool {
    rustix::fs::ioctl_ficlone(to, from).is_ok()
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

    /// `root/d/f` with `d` then swapped for a symlink to `outside/` holding an `f` too (and moved
    /// to `d.old`, also reachable through the link `inside`).
    fn root_with_swapped_parent() -> (tempfile::TempDir, TreeRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(root.join("d/f"), "in").unwrap();
        std::fs::write(dir.path().join("outside/f"), "out").unwrap();
        std::fs::write(root.join("top"), "top").unwrap();
        std::os::unix::fs::symlink("top", root.join("link")).unwrap();
        let tree = TreeRoot::open(&root).unwrap();
        std::fs::rename(root.join("d"), root.join("d.old")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("d")).unwrap();
        // A link that stays inside is refused too: a listed path never went through one.
        std::os::unix::fs::symlink("d.old", root.join("inside")).unwrap();
        (dir, tree)
    }

    fn read_fd(fd: OwnedFd) -> String {
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn open_beneath_refuses_symlinks_in_any_component() {
        let (_dir, tree) = root_with_swapped_parent();
        assert_eq!(
            read_fd(tree.open_beneath(Path::new("top"), OFlags::RDONLY).unwrap()),
            "top"
        );
        assert_eq!(
            read_fd(
                tree.open_beneath(Path::new("d.old/f"), OFlags::RDONLY)
                    .unwrap()
            ),
            "in"
        );
        for rel in ["d/f", "inside/f", "link", "../root/top", "/etc/passwd"] {
            assert!(
                tree.open_beneath(Path::new(rel), OFlags::RDONLY).is_err(),
                "{rel}"
            );
        }
        let dir = OFlags::PATH | OFlags::DIRECTORY;
        assert!(tree.open_beneath(Path::new("d"), dir).is_err());
        assert!(tree.open_beneath(Path::new(""), dir).is_ok());
    }

    /// The fallback for kernels without `openat2` gives the same answers.
    #[test]
    fn open_by_components_refuses_symlinks_in_any_component() {
        let (_dir, tree) = root_with_swapped_parent();
        let open = |rel: &str, flags| open_by_components(tree.fd.as_fd(), Path::new(rel), flags);
        let rdonly = OFlags::RDONLY | OFlags::NOFOLLOW;
        assert_eq!(read_fd(open("top", rdonly).unwrap()), "top");
        assert_eq!(read_fd(open("./d.old/f", rdonly).unwrap()), "in");
        for rel in ["d/f", "inside/f", "link", "../root/top", "/etc/passwd"] {
            assert!(open(rel, rdonly).is_err(), "{rel}");
        }
        let dir = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        assert!(open("d", dir).is_err());
        assert!(open("", dir).is_ok());
    }

    #[test]
    fn hashing_reader_digests_what_passes() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish().1, Digest::of(b"hello world"));
    }

    #[test]
    fn kernel_copy_appends_at_the_offsets_and_refuses_short_sources() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("from"), &content).unwrap();
        let from = File::open(dir.path().join("from")).unwrap();
        let mut to = File::create(dir.path().join("to")).unwrap();
        std::io::Write::write_all(&mut to, b"head").unwrap();
        kernel_copy(&from, &to, content.len() as u64, "from").unwrap();
        std::io::Write::write_all(&mut to, b"tail").unwrap();
        let out = std::fs::read(dir.path().join("to")).unwrap();
        assert_eq!(&out[..4], b"head");
        assert_eq!(&out[4..4 + content.len()], &content[..]);
        assert_eq!(&out[4 + content.len()..], b"tail");

        let from = File::open(dir.path().join("from")).unwrap();
        let err = kernel_copy(&from, &to, content.len() as u64 + 10, "from").unwrap_err();
        assert!(
            err.to_string()
                .contains("from ended after 300000 of its 300010"),
            "{err}"
        );
    }

    #[test]
    fn read_capped_enforces_limit() {
        assert_eq!(read_capped(&b"1234"[..], 4, "f").unwrap(), b"1234");
        assert!(read_capped(&b"12345"[..], 4, "f").is_err());
    }
}
