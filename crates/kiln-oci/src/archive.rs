//! Writing images out: an OCI layout directory, or an OCI layout packed in a tar that also carries
//! Docker's `manifest.json` pointing into `blobs/sha256/` (the hybrid Docker ≥ 25 writes), so one
//! file loads with `docker load`, `podman load`, `skopeo copy oci-archive:` and `docker-archive:`.
//!
//! Outputs are written to a temporary sibling path and renamed into place only when complete.
//! Each writer holds an advisory lock (`flock`) on its temporary while it works, so temporaries
//! nobody holds belong to writers that died, and the next write of the same output removes them.
//! The archive's own tar is deterministic (sorted entries, fixed mtime), so the same image gives the
//! same archive bytes.
//!
//! Layout directories get their blobs hardlinked from the store when both are on one filesystem
//! (blobs are immutable, so sharing the inode is safe), and copied otherwise.

use std::collections::BTreeMap;
use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;
use tar::{EntryType, Header};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::io_util::{kernel_copy, reflink, ExactReader, HashingReader};
use crate::json::to_canonical_vec;
use crate::reference::Reference;
use crate::spec::{
    Descriptor, ImageIndex, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
};
use crate::store::BlobStore;

/// mtime of every entry of the archive's own tar (1980-01-01T00:00:01Z, as for layers).
const ARCHIVE_MTIME: u64 = crate::layer::DEFAULT_MTIME;
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes `image` as an `oci-archive` tarball at `out`. With `tag`, the index entry carries
/// `io.containerd.image.name` (full name) and `org.opencontainers.image.ref.name` (the tag, as
/// Docker ≥ 25 writes it) and `manifest.json` gets `RepoTags: [familiar name]`.
pub fn write_oci_archive(
    store: &BlobStore,
    image: &Image,
    tag: Option<&Reference>,
    out: &Path,
) -> Result<()> {
    let tags: Vec<Reference> = tag.into_iter().cloned().collect();
    write_oci_archive_named(store, image, &tags, out)
}

/// [`write_oci_archive`] under several names: one `index.json` entry per name (all for the
/// same manifest, as `docker save` writes them) and every `name:tag` in `RepoTags`. With no
/// name, one unnamed entry. Readers given no `:REF` take the image when every entry is it.
pub fn write_oci_archive_named(
    store: &BlobStore,
    image: &Image,
    tags: &[Reference],
    out: &Path,
) -> Result<()> {
    let (parent, name) = split_out_path(out)?;
    let ctx = || format!("writing {}", out.display());
    let blobs = blob_sizes(image);
    let files = [
        ("index.json", to_canonical_vec(&index(image, tags))),
        ("manifest.json", docker_manifest(image, tags)),
        ("oci-layout", OCI_LAYOUT.to_vec()),
    ];
    // The archive's bytes follow from these alone; an output still holding exactly them (by
    // its recorded file identity) is left as it is.
    let key = archive_key(&blobs, &files);
    if store.output_is_current(out, &key) {
        return Ok(());
    }
    remove_dead_temporaries(parent, &name)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent)
        .ctx(ctx)?;
    hold(tmp.as_file()).ctx(ctx)?;
    let mut tar = ArchiveTar {
        out: BufWriter::new(tmp),
    };
    // Entries in path byte order: "blobs/" < "blobs/sha256/…" < "index.json" < "manifest.json"
    // < "oci-layout".
    tar.header(&header("blobs/", EntryType::Directory, 0o755, 0))
        .ctx(ctx)?;
    tar.header(&header("blobs/sha256/", EntryType::Directory, 0o755, 0))
        .ctx(ctx)?;
    for (digest, &size) in &blobs {
        let path = format!("blobs/sha256/{}", digest.hex());
        tar.header(&file_header(&path, size)).ctx(ctx)?;
        tar.blob(store, digest, size)?;
    }
    for (path, bytes) in files {
        tar.header(&file_header(path, bytes.len() as u64))
            .ctx(ctx)?;
        tar.out.write_all(&bytes).ctx(ctx)?;
        tar.pad(bytes.len() as u64).ctx(ctx)?;
    }
    let tmp = tar.finish().ctx(ctx)?;
    // Temporary files are created 0600; the archive is an ordinary output file.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(0o644))
        .ctx(ctx)?;
    tmp.as_file().sync_all().ctx(ctx)?;
    tmp.persist(out).map_err(|e| e.error).ctx(ctx)?;
    store.record_output(out, &key);
    Ok(())
}

/// Bump when the archive's layout changes for the same blobs and files.
const ARCHIVE_KEY_VERSION: &str = "kiln-oci-archive/v1";

/// What an archive's bytes are made of: its blobs (each named by its digest) and its other
/// files' bytes, length-prefixed.
fn archive_key(blobs: &BTreeMap<Digest, u64>, files: &[(&str, Vec<u8>)]) -> Digest {
    use sha2::{Digest as _, Sha256};
    let mut key = Sha256::new();
    let mut field = |bytes: &[u8]| {
        key.update((bytes.len() as u64).to_le_bytes());
        key.update(bytes);
    };
    field(ARCHIVE_KEY_VERSION.as_bytes());
    for (digest, size) in blobs {
        field(digest.as_str().as_bytes());
        field(&size.to_le_bytes());
    }
    for (path, bytes) in files {
        field(path.as_bytes());
        field(bytes);
    }
    Digest::from_sha256(key.finalize().into())
}

/// Writes `image` as an OCI image layout directory at `out` (replacing an existing layout there
/// only once the new one is complete). Same annotations as [`write_oci_archive`], no
/// `manifest.json`.
pub fn write_oci_dir(
    store: &BlobStore,
    image: &Image,
    tag: Option<&Reference>,
    out: &Path,
) -> Result<()> {
    let tags: Vec<Reference> = tag.into_iter().cloned().collect();
    write_oci_dir_named(store, image, &tags, out)
}

/// [`write_oci_dir`] under several names, as [`write_oci_archive_named`].
pub fn write_oci_dir_named(
    store: &BlobStore,
    image: &Image,
    tags: &[Reference],
    out: &Path,
) -> Result<()> {
    let (parent, name) = split_out_path(out)?;
    let ctx = || format!("writing OCI layout {}", out.display());
    // Refuse early, and again right before the swap: never replace something that is not ours.
    check_replaceable(out)?;
    remove_dead_temporaries(parent, &name)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempdir_in(parent)
        .ctx(ctx)?;
    let lock_tmp = File::open(tmp.path()).ctx(ctx)?;
    hold(&lock_tmp).ctx(ctx)?;
    // Temporary directories are created 0700; the layout is an ordinary output directory.
    fs::set_permissions(tmp.path(), Permissions::from_mode(0o755)).ctx(ctx)?;
    let blob_dir = tmp.path().join("blobs/sha256");
    fs::create_dir_all(&blob_dir).ctx(ctx)?;
    for (digest, size) in blob_sizes(image) {
        link_or_copy_blob(store, &digest, size, &blob_dir.join(digest.hex()))?;
    }
    fs::write(tmp.path().join("oci-layout"), OCI_LAYOUT).ctx(ctx)?;
    fs::write(
        tmp.path().join("index.json"),
        to_canonical_vec(&index(image, tags)),
    )
    .ctx(ctx)?;

    if check_replaceable(out)? {
        // Move the old layout aside into a temporary directory (deleted when dropped), then move
        // the new one in. There is a short window with nothing at `out`, but never a half layout.
        let trash = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".old")
            .tempdir_in(parent)
            .ctx(ctx)?;
        let lock_trash = File::open(trash.path()).ctx(ctx)?;
        hold(&lock_trash).ctx(ctx)?;
        let old = trash.path().join("old");
        fs::rename(out, &old).ctx(ctx)?;
        if let Err(e) = fs::rename(tmp.path(), out) {
            // Put the old layout back; the error that matters is the failed rename.
            let _ = fs::rename(&old, out);
            return Err(Error::io(ctx(), e));
        }
    } else {
        fs::rename(tmp.path(), out).ctx(ctx)?;
    }
    // The directory now lives at `out`: it must not be cleaned up.
    let _ = tmp.keep();
    Ok(())
}

/// The archive's own tar, written by hand so that blob contents can go in by kernel copy: each
/// entry is a 512-byte header, the content, and zeros up to the next 512-byte boundary; two zero
/// blocks end it.
struct ArchiveTar {
    out: BufWriter<tempfile::NamedTempFile>,
}

impl ArchiveTar {
    fn header(&mut self, header: &Header) -> io::Result<()> {
        self.out.write_all(header.as_bytes())
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][rem..])?;
        }
        Ok(())
    }

    /// Appends the blob's `size` bytes. A blob the store vouches for (its file identity is the one
    /// recorded when it was verified) is copied by the kernel without being read here; any other
    /// is hashed on the way, and a mismatch is an error.
    fn blob(&mut self, store: &BlobStore, digest: &Digest, size: u64) -> Result<()> {
        let blob = store.open_for_copy(digest)?;
        let what = store.path(digest).display().to_string();
        let ctx = || format!("copying blob {what}");
        if blob.trusted && blob.file.metadata().ctx(ctx)?.len() == size {
            self.out.flush().ctx(ctx)?;
            kernel_copy(&blob.file, self.out.get_ref().as_file(), size, &what).ctx(ctx)?;
        } else {
            copy_checked(blob.file, size, digest, what.clone(), &mut self.out, ctx)?;
        }
        self.pad(size).ctx(ctx)
    }

    fn finish(mut self) -> io::Result<tempfile::NamedTempFile> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Takes the advisory lock that marks a temporary as in use (released when `file` closes).
fn hold(file: &File) -> io::Result<()> {
    file.try_lock().map_err(|e| match e {
        fs::TryLockError::Error(e) => e,
        fs::TryLockError::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            "a fresh temporary file is locked by someone else",
        ),
    })
}

/// Whether `file_name` is one of the temporaries written for output `name`: `.NAME.RANDOM.tmp`
/// (being written) or `.NAME.RANDOM.old` (an old layout being replaced).
pub fn is_output_temporary(file_name: &str, name: &str) -> bool {
    file_name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp").or(rest.strip_suffix(".old")))
        // tempfile's random part has no dots: `.app.tar.X.tmp` is not a temporary of `app`.
        .is_some_and(|random| !random.is_empty() && !random.contains('.'))
}

/// Removes temporaries of output `name` in `parent` whose writer is gone (nobody holds their
/// lock). Returns how many were removed.
pub fn remove_dead_temporaries(parent: &Path, name: &str) -> Result<usize> {
    let ctx = |path: &Path| format!("removing the leftover {}", path.display());
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        // A missing parent fails later with the real error.
        Err(_) => return Ok(0),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_output_temporary(&file_name, name) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue; // never ours
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // a live writer
        }
        if meta.is_dir() {
            fs::remove_dir_all(&path).ctx(|| ctx(&path))?;
        } else {
            fs::remove_file(&path).ctx(|| ctx(&path))?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// `out`'s parent directory (`.` for a bare name) and file name.
fn split_out_path(out: &Path) -> Result<(&Path, String)> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Error::io(
                format!("writing {}", out.display()),
                io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name"),
            )
        })?
        .to_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

/// Whether `out` exists and may be replaced (an OCI layout or an empty directory); an error when
/// it exists and is anything else.
fn check_replaceable(out: &Path) -> Result<bool> {
    let md = match fs::symlink_metadata(out) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("inspecting {}", out.display()), e)),
    };
    let replaceable = md.is_dir()
        && (out.join("oci-layout").is_file()
            || fs::read_dir(out)
                .ctx(|| format!("reading {}", out.display()))?
                .next()
                .is_none());
    if replaceable {
        Ok(true)
    } else {
        Err(Error::io(
            format!("writing OCI layout {}", out.display()),
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is neither an OCI image layout nor an empty directory; \
                 not replacing it",
            ),
        ))
    }
}

fn link_or_copy_blob(store: &BlobStore, digest: &Digest, size: u64, dest: &Path) -> Result<()> {
    let src = store.path(digest);
    // Blobs are immutable (the store replaces them only by rename), so the layout may share
    // the inode.
    if fs::hard_link(&src, dest).is_ok() {
        return Ok(());
    }
    // Different filesystem (EXDEV) or no hardlink support: reflink or copy. A blob the store
    // vouches for goes by kernel copy; any other is verified on the way.
    let ctx = || format!("copying blob {} to {}", src.display(), dest.display());
    let blob = store.open_for_copy(digest)?;
    let mut file = File::create(dest).ctx(ctx)?;
    if blob.trusted && blob.file.metadata().ctx(ctx)?.len() == size {
        if !reflink(&blob.file, &file) {
            kernel_copy(&blob.file, &file, size, &src.display().to_string()).ctx(ctx)?;
        }
        file.sync_all().ctx(ctx)?;
        return Ok(());
    }
    copy_checked(
        blob.file,
        size,
        digest,
        src.display().to_string(),
        &mut file,
        ctx,
    )?;
    file.sync_all().ctx(ctx)?;
    Ok(())
}

/// Every blob of `image` (config, manifest, layers; each once) with its size, in digest order.
fn blob_sizes(image: &Image) -> BTreeMap<Digest, u64> {
    let mut blobs = BTreeMap::new();
    blobs.insert(image.manifest_digest.clone(), image.manifest_size);
    blobs.insert(image.config_digest.clone(), image.manifest.config.size);
    for layer in &image.manifest.layers {
        blobs.insert(layer.digest.clone(), layer.size);
    }
    blobs
}

/// `index.json`: one manifest descriptor per name, named as Docker ≥ 25 names it (one unnamed
/// descriptor without a name).
fn index(image: &Image, tags: &[Reference]) -> ImageIndex {
    let descriptor = |annotations| Descriptor {
        media_type: MEDIA_TYPE_MANIFEST.to_owned(),
        digest: image.manifest_digest.clone(),
        size: image.manifest_size,
        annotations,
        platform: None,
        artifact_type: None,
    };
    let mut manifests: Vec<Descriptor> = tags
        .iter()
        .map(|reference| {
            let mut annotations = BTreeMap::new();
            annotations.insert(ANNOTATION_CONTAINERD_NAME.to_owned(), reference.full_name());
            if let Some(tag) = &reference.tag {
                annotations.insert(ANNOTATION_REF_NAME.to_owned(), tag.clone());
            }
            descriptor(annotations)
        })
        .collect();
    if manifests.is_empty() {
        manifests.push(descriptor(BTreeMap::new()));
    }
    ImageIndex {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX.to_owned(),
        manifests,
        annotations: BTreeMap::new(),
    }
}

/// Docker's `manifest.json` for `docker load`, pointing into `blobs/sha256/`.
fn docker_manifest(image: &Image, tags: &[Reference]) -> Vec<u8> {
    let blob_path = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    // RepoTags hold `name:tag`; a digest-only reference has no tag to give.
    let mut repo_tags: Vec<String> = tags
        .iter()
        .filter(|r| r.tag.is_some())
        .map(|r| {
            Reference {
                digest: None,
                ..r.clone()
            }
            .familiar_name()
        })
        .collect();
    repo_tags.dedup();
    let layers: Vec<String> = image
        .manifest
        .layers
        .iter()
        .map(|l| blob_path(&l.digest))
        .collect();
    to_canonical_vec(&json!([{
        "Config": blob_path(&image.config_digest),
        "RepoTags": repo_tags,
        "Layers": layers,
    }]))
}

fn file_header(path: &str, size: u64) -> Header {
    header(path, EntryType::Regular, 0o644, size)
}

/// A fixed-metadata ustar header (all archive paths are short enough for ustar).
fn header(path: &str, kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_ustar();
    let bytes = path.as_bytes();
    if let Some(ustar) = h.as_ustar_mut() {
        ustar.name[..bytes.len()].copy_from_slice(bytes);
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(ARCHIVE_MTIME);
    h.set_size(size);
    h.set_cksum();
    h
}

/// Copies exactly `size` bytes of `blob` into `out`, hashing them on the way: a blob shorter or
/// longer than `size`, or whose bytes are not `digest`'s, is an error.
fn copy_checked(
    blob: File,
    size: u64,
    digest: &Digest,
    what: String,
    out: &mut impl Write,
    ctx: impl Fn() -> String,
) -> Result<()> {
    let mut content = HashingReader::new(ExactReader::new(blob, size, what));
    io::copy(&mut content, out).ctx(&ctx)?;
    let (content, actual) = content.finish();
    content.check_end().ctx(&ctx)?;
    if &actual != digest {
        return Err(Error::DigestMismatch {
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    use crate::test_util::small_image;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        store: BlobStore,
        image: Image,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let store = BlobStore::open(root.join("store")).unwrap();
        let image = small_image(&store, &root.join("src"));
        Fixture {
            _dir: dir,
            root,
            store,
            image,
        }
    }

    /// (path, type, mode, mtime, uid, content) of every entry.
    fn entries(archive: &Path) -> Vec<(String, EntryType, u32, u64, u64, Vec<u8>)> {
        let bytes = fs::read(archive).unwrap();
        let mut tar = tar::Archive::new(bytes.as_slice());
        tar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    content,
                )
            })
            .collect()
    }

    #[test]
    fn tagged_archive_has_layout_names_and_docker_manifest() {
        let f = fixture();
        let out = f.root.join("image.tar");
        let tag = Reference::parse("kiln-test/interop:1").unwrap();
        write_oci_archive(&f.store, &f.image, Some(&tag), &out).unwrap();

        let entries = entries(&out);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let mut blobs = [
            f.image.manifest_digest.clone(),
            f.image.config_digest.clone(),
            f.image.manifest.layers[0].digest.clone(),
        ];
        blobs.sort();
        let mut expected = vec!["blobs/".to_owned(), "blobs/sha256/".to_owned()];
        expected.extend(blobs.iter().map(|d| format!("blobs/sha256/{}", d.hex())));
        expected.extend(["index.json", "manifest.json", "oci-layout"].map(String::from));
        assert_eq!(paths, expected);
        for (path, kind, mode, mtime, uid, content) in &entries {
            assert_eq!((*mtime, *uid), (ARCHIVE_MTIME, 0), "{path}");
            let want_mode = if *kind == EntryType::Directory {
                0o755
            } else {
                0o644
            };
            assert_eq!(*mode, want_mode, "{path}");
            if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(Digest::of(content).hex(), hex);
            }
        }
        let content = |name: &str| &entries.iter().find(|e| e.0 == name).unwrap().5;
        assert_eq!(content("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#);

        let index: ImageIndex = serde_json::from_slice(content("index.json")).unwrap();
        assert_eq!(to_canonical_vec(&index), *content("index.json"));
        assert_eq!(
            (index.schema_version, index.media_type.as_str()),
            (2, MEDIA_TYPE_INDEX)
        );
        let m = &index.manifests[0];
        assert_eq!(m.media_type, MEDIA_TYPE_MANIFEST);
        assert_eq!(
            (&m.digest, m.size),
            (&f.image.manifest_digest, f.image.manifest_size)
        );
        assert_eq!(
            m.annotations,
            BTreeMap::from([
                (
                    ANNOTATION_CONTAINERD_NAME.to_owned(),
                    "docker.io/kiln-test/interop:1".to_owned()
                ),
                (ANNOTATION_REF_NAME.to_owned(), "1".to_owned()),
            ])
        );

        let docker: serde_json::Value = serde_json::from_slice(content("manifest.json")).unwrap();
        assert_eq!(
            docker,
            json!([{
                "Config": format!("blobs/sha256/{}", f.image.config_digest.hex()),
                "RepoTags": ["kiln-test/interop:1"],
                "Layers": [format!("blobs/sha256/{}", f.image.manifest.layers[0].digest.hex())],
            }])
        );
        let mode = fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn same_image_gives_byte_identical_archives() {
        let f = fixture();
        let tag = Reference::parse("app:v1").unwrap();
        let (a, b) = (f.root.join("a.tar"), f.root.join("b.tar"));
        write_oci_archive(&f.store, &f.image, Some(&tag), &a).unwrap();
        write_oci_archive(&f.store, &f.image, Some(&tag), &b).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        // A second image built from identical inputs in another store is identical too.
        let g = fixture();
        let c = g.root.join("c.tar");
        write_oci_archive(&g.store, &g.image, Some(&tag), &c).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&c).unwrap());
    }

    #[test]
    fn an_unchanged_archive_is_left_in_place_and_a_touched_one_written_again() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        let tag = Reference::parse("app:v1").unwrap();
        let out = f.root.join("image.tar");
        write_oci_archive(&f.store, &f.image, Some(&tag), &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        let inode = || fs::metadata(&out).unwrap().ino();
        let first = inode();
        // Same image, same names: the file already holds these bytes, so it is not replaced.
        write_oci_archive(&f.store, &f.image, Some(&tag), &out).unwrap();
        assert_eq!(inode(), first);
        // Another name is other bytes.
        write_oci_archive(&f.store, &f.image, None, &out).unwrap();
        assert_ne!(inode(), first);
        write_oci_archive(&f.store, &f.image, Some(&tag), &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), bytes);
        // Changed in place (same inode, new ctime): written again, whole.
        let again = inode();
        let mut damaged = bytes.clone();
        damaged[600] ^= 0xff;
        fs::write(&out, &damaged).unwrap();
        assert_eq!(inode(), again);
        write_oci_archive(&f.store, &f.image, Some(&tag), &out).unwrap();
        assert_ne!(inode(), again);
        assert_eq!(fs::read(&out).unwrap(), bytes);
    }

    #[test]
    fn archive_under_several_names_lists_each_for_one_manifest() {
        let f = fixture();
        let out = f.root.join("image.tar");
        let names = [
            Reference::parse("registry.example/app:1.2").unwrap(),
            Reference::parse("app:latest").unwrap(),
        ];
        write_oci_archive_named(&f.store, &f.image, &names, &out).unwrap();
        let entries = entries(&out);
        let content = |name: &str| &entries.iter().find(|e| e.0 == name).unwrap().5;
        let index: ImageIndex = serde_json::from_slice(content("index.json")).unwrap();
        assert_eq!(index.manifests.len(), 2);
        assert!(index
            .manifests
            .iter()
            .all(|d| d.digest == f.image.manifest_digest));
        assert_eq!(
            index.manifests[0].annotations[ANNOTATION_CONTAINERD_NAME],
            "registry.example/app:1.2"
        );
        assert_eq!(
            index.manifests[1].annotations[ANNOTATION_REF_NAME],
            "latest"
        );
        let docker: serde_json::Value = serde_json::from_slice(content("manifest.json")).unwrap();
        assert_eq!(
            docker[0]["RepoTags"],
            json!(["registry.example/app:1.2", "app:latest"])
        );
        // Read back without a name (every entry is the one image) and by either name.
        let store = BlobStore::open(f.root.join("read")).unwrap();
        for reference in [None, Some("1.2".to_owned()), Some("app:latest".to_owned())] {
            let source = crate::source::ImageSource::OciArchive {
                path: out.clone(),
                reference: reference.clone(),
            };
            let loaded = crate::source::load_image(&source, &store).unwrap();
            assert_eq!(
                loaded.manifest_digest.as_ref(),
                Some(&f.image.manifest_digest),
                "{reference:?}"
            );
        }
    }

    #[test]
    fn untagged_archive_has_no_names() {
        let f = fixture();
        let out = f.root.join("image.tar");
        write_oci_archive(&f.store, &f.image, None, &out).unwrap();
        let entries = entries(&out);
        let content = |name: &str| &entries.iter().find(|e| e.0 == name).unwrap().5;
        let index: ImageIndex = serde_json::from_slice(content("index.json")).unwrap();
        assert!(index.manifests[0].annotations.is_empty());
        let docker: serde_json::Value = serde_json::from_slice(content("manifest.json")).unwrap();
        assert_eq!(docker[0]["RepoTags"], json!([]));
    }

    #[test]
    fn failed_archive_write_leaves_nothing() {
        let f = fixture();
        fs::remove_file(f.store.path(&f.image.manifest.layers[0].digest)).unwrap();
        let out_dir = f.root.join("out");
        fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("image.tar");
        assert!(write_oci_archive(&f.store, &f.image, None, &out).is_err());
        assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);
        assert!(write_oci_dir(&f.store, &f.image, None, &out_dir.join("layout")).is_err());
        assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_store_blob_is_not_archived() {
        let f = fixture();
        let layer = f.store.path(&f.image.manifest.layers[0].digest);
        let mut bytes = fs::read(&layer).unwrap();
        bytes[20] ^= 0xff;
        fs::write(&layer, bytes).unwrap();
        let out = f.root.join("image.tar");
        let err = write_oci_archive(&f.store, &f.image, None, &out).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!out.exists());
    }

    /// An image whose layer blob is large enough for the store to record (and trust) it.
    fn large_image(root: &Path, store: &BlobStore) -> Image {
        let host = root.join("big");
        fs::create_dir_all(&host).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        fs::write(host.join("noise.bin"), noise).unwrap();
        let entries =
            crate::layer::normalize(crate::layer::tree_entries(&host, "/x").unwrap()).unwrap();
        let opts = crate::layer::LayerOptions::default();
        let layer = crate::layer::write_layer(store, &entries, &opts).unwrap();
        let config = crate::spec::ImageConfig::for_host();
        crate::image::assemble(store, config, &[layer], BTreeMap::new()).unwrap()
    }

    #[test]
    fn trusted_blobs_go_by_kernel_copy_into_the_same_bytes_and_changed_ones_are_caught() {
        let f = fixture();
        let image = large_image(&f.root, &f.store);
        let layer = &image.manifest.layers[0].digest;
        assert!(f.store.open_for_copy(layer).unwrap().trusted);
        let (a, b) = (f.root.join("a.tar"), f.root.join("b.tar"));
        write_oci_archive(&f.store, &image, None, &a).unwrap();
        // Without the identity records every blob is hashed through a buffer: same bytes.
        fs::remove_dir_all(f.store.root().join("verified")).unwrap();
        assert!(!f.store.open_for_copy(layer).unwrap().trusted);
        write_oci_archive(&f.store, &image, None, &b).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let found = entries(&a);
        let blob = found
            .iter()
            .find(|e| e.0 == format!("blobs/sha256/{}", layer.hex()))
            .unwrap();
        assert_eq!(&Digest::of(&blob.5), layer);
        assert_eq!(fs::metadata(&a).unwrap().len() % 512, 0);

        // Trusted again once verified, then changed in place: the archive refuses it.
        assert!(f.store.contains_intact(layer).unwrap());
        assert!(f.store.open_for_copy(layer).unwrap().trusted);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(f.store.path(layer))
            .unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(100)).unwrap();
        file.write_all(b"\xff\x00").unwrap();
        drop(file);
        let out = f.root.join("c.tar");
        let err = write_oci_archive(&f.store, &image, None, &out).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn oci_dir_is_written_and_replaced_only_when_safe() {
        let f = fixture();
        let out = f.root.join("layout");
        let tag = Reference::parse("kiln-test/interop:1").unwrap();
        write_oci_dir(&f.store, &f.image, Some(&tag), &out).unwrap();
        assert_eq!(fs::read(out.join("oci-layout")).unwrap(), OCI_LAYOUT);
        assert!(!out.join("manifest.json").exists());
        let index: ImageIndex =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index.manifests[0].annotations[ANNOTATION_REF_NAME], "1");
        let mode = fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        for d in blob_sizes(&f.image).keys() {
            let blob = fs::read(out.join("blobs/sha256").join(d.hex())).unwrap();
            assert_eq!(&Digest::of(&blob), d);
        }

        // An existing layout is replaced (a stray file in it disappears).
        fs::write(out.join("stray"), b"x").unwrap();
        write_oci_dir(&f.store, &f.image, None, &out).unwrap();
        assert!(!out.join("stray").exists());
        let index: ImageIndex =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        assert!(index.manifests[0].annotations.is_empty());

        // An empty directory is fine; anything else is left alone.
        let empty = f.root.join("empty");
        fs::create_dir(&empty).unwrap();
        write_oci_dir(&f.store, &f.image, None, &empty).unwrap();
        assert!(empty.join("index.json").is_file());

        let precious = f.root.join("precious");
        fs::create_dir(&precious).unwrap();
        fs::write(precious.join("notes.txt"), b"keep me").unwrap();
        let err = write_oci_dir(&f.store, &f.image, None, &precious).unwrap_err();
        assert!(err.to_string().contains("not replacing it"), "{err}");
        assert_eq!(fs::read(precious.join("notes.txt")).unwrap(), b"keep me");
        assert_eq!(fs::read_dir(&precious).unwrap().count(), 1);

        let a_file = f.root.join("file");
        fs::write(&a_file, b"data").unwrap();
        assert!(write_oci_dir(&f.store, &f.image, None, &a_file).is_err());
        assert_eq!(fs::read(&a_file).unwrap(), b"data");

        // No temporary or trash directories are left next to the outputs.
        let leftovers: Vec<_> = fs::read_dir(&f.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn dead_temporaries_are_removed_and_live_ones_kept() {
        let f = fixture();
        let out = f.root.join("app.tar");
        // What a killed writer leaves: a temporary file and a layout directory nobody holds.
        let dead_file = f.root.join(".app.tar.Ab12Cd.tmp");
        fs::write(&dead_file, b"half an archive").unwrap();
        let dead_dir = f.root.join(".app.tar.Xy34Zw.old");
        fs::create_dir_all(dead_dir.join("old/blobs")).unwrap();
        // A live writer's temporary: locked through its own open file.
        let live = f.root.join(".app.tar.Live00.tmp");
        fs::write(&live, b"being written").unwrap();
        let writer = File::open(&live).unwrap();
        writer.try_lock().unwrap();
        // Other files, including another output's temporary, are never touched.
        let other = f.root.join(".other.tar.Qq11Qq.tmp");
        fs::write(&other, b"not ours").unwrap();

        write_oci_archive(&f.store, &f.image, None, &out).unwrap();
        assert!(out.is_file());
        assert!(!dead_file.exists());
        assert!(!dead_dir.exists());
        assert_eq!(fs::read(&live).unwrap(), b"being written");
        assert_eq!(fs::read(&other).unwrap(), b"not ours");
        drop(writer);
        assert_eq!(remove_dead_temporaries(&f.root, "app.tar").unwrap(), 1);
        assert!(!live.exists());
    }

    #[test]
    fn output_temporaries_are_recognised_by_name() {
        assert!(is_output_temporary(".app.tar.x1.tmp", "app.tar"));
        assert!(is_output_temporary(".layout.Q.old", "layout"));
        assert!(!is_output_temporary(".app.tar.x1.tmp", "app"));
        assert!(!is_output_temporary("app.tar", "app.tar"));
        assert!(!is_output_temporary(".app.tar.x1.part", "app.tar"));
    }
}
