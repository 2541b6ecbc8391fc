//! Reading images: base ("run") images for builds and images to inspect.
//!
//! Accepted forms: `scratch`, `oci-archive:PATH[:REF]`, `oci:DIR[:REF]`, `docker-archive:PATH`
//! (as skopeo spells them; the path ends at the first `:`), and registry references
//! (`docker://REF` or a bare `REF`). This crate speaks no HTTP: [`load_image`] reads local sources
//! only; a registry client loads registry images through [`load_from_descriptor`], handing it a
//! fetch function, so both paths share the same manifest/index/config checks. Blobs are imported into a
//! [`BlobStore`] verbatim (never recompressed), each verified against its digest. Archives are read
//! defensively: an entry with an absolute path, a `..` component, a device or fifo is rejected with
//! an error naming the archive and entry, and so is a link in an OCI archive. Docker archives
//! legitimately use links (`docker save` and skopeo store a shared layer once and link to it):
//! there a link whose target stays inside the archive is accepted as another name for that file,
//! used only to look up `manifest.json` paths (nothing is ever extracted). Multi-platform indexes
//! select the host platform.
//!
//! Archives are read in one streaming pass: blob entries go straight into the store (verified
//! against their names), only small metadata files (`index.json`, `manifest.json`) are held in
//! memory, and those with a size cap. Docker media types are accepted; base layer descriptors are
//! kept verbatim (media type, digest, size) because their blobs are copied, never recompressed.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::io_util::{read_capped, ExactReader};
use crate::reference::Reference;
use crate::spec::{
    Descriptor, ImageConfig, ImageIndex, ImageManifest, LayerRecord, Platform,
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, DOCKER_MEDIA_TYPE_CONFIG,
    DOCKER_MEDIA_TYPE_MANIFEST, DOCKER_MEDIA_TYPE_MANIFEST_LIST, MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD,
    MEDIA_TYPE_MANIFEST,
};
use crate::store::BlobStore;

const ACCEPTED_FORMS: &str = "accepted forms: scratch, oci-archive:PATH[:REF], oci:DIR[:REF], \
     docker-archive:PATH, docker://REF or a registry reference";
/// Largest metadata file (index.json, manifest.json) or JSON blob (manifest, index, config) read
/// into memory. Real ones are kilobytes; the cap keeps a hostile archive from exhausting memory.
const MAX_JSON_SIZE: u64 = 16 << 20;
/// How deep indexes may nest (Docker ≥ 25 archives: index.json → image index → manifest).
const MAX_INDEX_DEPTH: usize = 4;
/// How many links a docker archive may chain from a manifest.json path to a file.
const MAX_LINK_HOPS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Scratch,
    OciArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    OciDir {
        path: PathBuf,
        reference: Option<String>,
    },
    DockerArchive {
        path: PathBuf,
    },
    /// An image in a registry (`docker://REF`, or a bare reference such as `ubuntu:24.04`).
    Registry(Reference),
    /// A run image Kiln assembles itself from packages (`debian-13/glibc`); recorded as the
    /// base name `kiln-stack:NAME`. Not loadable from here: the engine builds it.
    Stack(String),
}

impl ImageSource {
    /// The image file at `path`, named without a transport (`--run-image ./base.tar`): an
    /// oci-archive or a docker-archive, told apart by its entries. Only headers are read; the
    /// archive is checked in full when it is loaded.
    pub fn sniff_archive(path: &Path) -> Result<ImageSource> {
        let what = || format!("reading {}", path.display());
        let file = File::open(path).ctx(what)?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut docker_manifest = false;
        for entry in archive.entries().ctx(what)? {
            let entry = entry.ctx(what)?;
            let name = entry.path_bytes();
            let name = name.strip_prefix(b"./").unwrap_or(&name);
            // Docker >= 25 writes both: its index.json makes it a full OCI archive.
            match name {
                b"oci-layout" | b"index.json" => {
                    return Ok(ImageSource::OciArchive {
                        path: path.to_path_buf(),
                        reference: None,
                    })
                }
                b"manifest.json" => docker_manifest = true,
                _ => {}
            }
        }
        if docker_manifest {
            return Ok(ImageSource::DockerArchive {
                path: path.to_path_buf(),
            });
        }
        Err(invalid_image(
            &path.display().to_string(),
            "neither an oci-archive (no oci-layout or index.json) nor a docker-archive (no manifest.json)"
                .to_owned(),
        ))
    }
}

impl std::str::FromStr for ImageSource {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<ImageSource> {
        let fail = |why: String| Error::InvalidReference {
            reference: s.to_owned(),
            why: format!("{why}; {ACCEPTED_FORMS}"),
        };
        if s == "scratch" {
            return Ok(ImageSource::Scratch);
        }
        if let Some(reference) = s.strip_prefix("docker://") {
            return Ok(ImageSource::Registry(Reference::parse(reference)?));
        }
        let transport = s.split_once(':').map(|(t, _)| t);
        if !matches!(transport, Some("oci-archive" | "oci" | "docker-archive")) {
            // Not a local transport: a bare registry reference (`ubuntu`, `localhost:5000/app`).
            return Reference::parse(s)
                .map(ImageSource::Registry)
                .map_err(|e| match e {
                    Error::InvalidReference { why, .. } => fail(why),
                    other => other,
                });
        }
        let Some((transport, rest)) = s.split_once(':') else {
            return Err(fail("not an image source".to_owned()));
        };
        // As in skopeo, the path ends at the first ':'; the rest (which may contain ':') is REF.
        let (path, reference) = match rest.split_once(':') {
            Some((path, reference)) => (path, Some(reference)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(fail("empty path".to_owned()));
        }
        if reference == Some("") {
            return Err(fail("empty reference after ':'".to_owned()));
        }
        let path = PathBuf::from(path);
        let reference = reference.map(str::to_owned);
        match transport {
            "oci-archive" => Ok(ImageSource::OciArchive { path, reference }),
            "oci" => Ok(ImageSource::OciDir { path, reference }),
            "docker-archive" if reference.is_some() => Err(fail(
                "docker-archive takes no reference (the archive must hold exactly one image)"
                    .to_owned(),
            )),
            "docker-archive" => Ok(ImageSource::DockerArchive { path }),
            other => Err(fail(format!("unknown transport {other:?}"))),
        }
    }
}

impl std::fmt::Display for ImageSource {
    /// The canonical spelling (`oci-archive:/abs/run.tar:latest`), recorded as the base name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (transport, path, reference) = match self {
            ImageSource::Scratch => return f.write_str("scratch"),
            ImageSource::OciArchive { path, reference } => ("oci-archive", path, reference),
            ImageSource::OciDir { path, reference } => ("oci", path, reference),
            ImageSource::DockerArchive { path } => ("docker-archive", path, &None),
            ImageSource::Registry(reference) => return write!(f, "docker://{reference}"),
            ImageSource::Stack(name) => return write!(f, "kiln-stack:{name}"),
        };
        write!(f, "{transport}:{}", path.display())?;
        if let Some(reference) = reference {
            write!(f, ":{reference}")?;
        }
        Ok(())
    }
}

/// An image whose layer blobs are in a [`BlobStore`].
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub source: ImageSource,
    /// `None` for `scratch`, and for `docker-archive` (its `manifest.json` is not a content-addressed
    /// manifest, so there is no digest to record).
    pub manifest_digest: Option<Digest>,
    /// For `scratch`: an empty config for the host platform.
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
    /// Manifest annotations of the loaded image.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The name a local layout's `index.json` gives the image (`io.containerd.image.name`, else
    /// `org.opencontainers.image.ref.name`): what it can be recorded as, path-free. `None` for
    /// registry images (their reference names them) and unnamed entries.
    pub ref_name: Option<String>,
}

/// Loads `source`, importing its blobs into `store`.
pub fn load_image(source: &ImageSource, store: &BlobStore) -> Result<LoadedImage> {
    match source {
        ImageSource::Scratch => Ok(LoadedImage {
            source: source.clone(),
            manifest_digest: None,
            config: ImageConfig::for_host(),
            layers: Vec::new(),
            annotations: Default::default(),
            ref_name: None,
        }),
        ImageSource::OciArchive { path, reference } => {
            let index = import_oci_archive(path, store)?;
            let image = source.to_string();
            // Every blob of the archive is in the store now; one it lacks is simply missing.
            let fetch = |d: &Descriptor| {
                if store.contains(&d.digest) {
                    Ok(())
                } else {
                    Err(invalid_image(
                        &image,
                        format!(
                            "references blob {}, which the archive does not contain",
                            d.digest
                        ),
                    ))
                }
            };
            resolve(source, store, &index, reference.as_deref(), &fetch)
        }
        ImageSource::OciDir { path, reference } => {
            let index_path = path.join("index.json");
            let index_file =
                File::open(&index_path).ctx(|| format!("opening {}", index_path.display()))?;
            let what = index_path.display().to_string();
            let bytes =
                read_capped(index_file, MAX_JSON_SIZE, &what).ctx(|| format!("reading {what}"))?;
            let index: ImageIndex = parse_json(&bytes, &what)?;
            let image = source.to_string();
            let fetch = |d: &Descriptor| copy_from_dir(&image, path, store, &d.digest);
            resolve(source, store, &index, reference.as_deref(), &fetch)
        }
        ImageSource::DockerArchive { path } => load_docker_archive(source, path, store),
        ImageSource::Registry(_) => Err(invalid_image(
            &source.to_string(),
            "registry images are pulled by a registry client (kiln-registry), not read locally"
                .to_owned(),
        )),
        ImageSource::Stack(_) => Err(invalid_image(
            &source.to_string(),
            "stacks are assembled from packages by the engine (kiln-build), not read locally"
                .to_owned(),
        )),
    }
}

/// Loads the image that `root` (a manifest or an index, selecting `platform`) describes, calling
/// `fetch` to bring each blob into `store` before it is read. Used for sources whose blobs come
/// from elsewhere (a registry); every blob is still size- and digest-checked here.
pub fn load_from_descriptor(
    source: &ImageSource,
    store: &BlobStore,
    root: Descriptor,
    platform: &Platform,
    fetch: &Fetch,
) -> Result<LoadedImage> {
    resolve_descriptor(source, store, root, platform, fetch)
}

fn invalid_image(image: &str, why: String) -> Error {
    Error::InvalidImage {
        image: image.to_owned(),
        why,
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        path: what.to_owned(),
        source,
    })
}

/// Makes sure the blob `d` is in the store, importing it from wherever the image comes from.
pub type Fetch<'a> = dyn Fn(&Descriptor) -> Result<()> + 'a;

/// Streams the outer tar of an OCI archive: blobs into the store, `index.json` into memory.
fn import_oci_archive(archive: &Path, store: &BlobStore) -> Result<ImageIndex> {
    let image = archive.display().to_string();
    let mut index_json = None;
    for_each_file(archive, None, |path, _size, entry| {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let digest = Digest::parse(&format!("sha256:{hex}")).map_err(|_| {
                invalid_image(
                    &image,
                    format!("entry {path:?} is not named by a sha256 digest"),
                )
            })?;
            // An intact stored copy makes the archive's copy unnecessary; a damaged one is
            // dropped and replaced from here.
            if !store.contains_intact(&digest)? {
                store
                    .put_reader(entry, Some(&digest))
                    .map_err(|e| invalid_image(&image, format!("entry {path:?}: {e}")))?;
            }
        } else if path == "index.json" {
            if index_json.is_some() {
                return Err(invalid_image(
                    &image,
                    "more than one index.json entry".to_owned(),
                ));
            }
            let what = format!("{image}: index.json");
            index_json =
                Some(read_capped(entry, MAX_JSON_SIZE, &what).ctx(|| format!("reading {what}"))?);
        }
        Ok(())
    })?;
    let bytes = index_json.ok_or_else(|| {
        invalid_image(
            &image,
            "no index.json entry: not an OCI image archive".to_owned(),
        )
    })?;
    parse_json(&bytes, &format!("{image}: index.json"))
}

/// Calls `visit` with the normalized path, size and content of every regular file of the tar at
/// `archive`, in archive order, after rejecting unsafe entries (see [`check_entry`]).
///
/// Link entries are rejected unless `links` is given: then each one is recorded there as an alias
/// (normalized link path → normalized target path inside the archive). Nothing is ever extracted,
/// so an alias is only a second name to look a file up by; targets leaving the archive root are
/// still rejected.
fn for_each_file(
    archive: &Path,
    mut links: Option<&mut HashMap<String, String>>,
    mut visit: impl FnMut(&str, u64, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let ctx = || format!("reading archive {}", archive.display());
    let file = File::open(archive).ctx(ctx)?;
    // A complete tar ends with zero blocks, so its file never runs dry while an entry or header is
    // still being read: when it has, a failure is the archive being cut short (the tar crate's
    // own message would be "failed to read entire block" or "unexpected EOF during skip").
    let ran_dry = Cell::new(false);
    let read_error = |e: io::Error| {
        if ran_dry.get() {
            truncated(archive, &format!("it ends inside an entry ({e})"))
        } else {
            Error::io(ctx(), e)
        }
    };
    let mut tar = tar::Archive::new(BufReader::new(DryWatch {
        inner: file,
        ran_dry: &ran_dry,
    }));
    for entry in tar.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if let (Some(links), tar::EntryType::Symlink | tar::EntryType::Link) = (&mut links, kind) {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            let (path, target) = check_link(archive, &raw, &target, kind)?;
            links.insert(path, target);
        } else if let Some(path) = check_entry(archive, &raw, kind)? {
            let size = entry.size();
            let mut content = ExactReader::new(&mut entry, size, format!("entry {path:?}"));
            let visited = visit(&path, size, &mut content);
            // Cut short, the content would otherwise surface as a digest mismatch ("corrupt").
            if ran_dry.get() && (visited.is_err() || content.remaining() > 0) {
                return Err(truncated(
                    archive,
                    &format!(
                        "entry {path:?} ends after {} of its {size} bytes",
                        size - content.remaining()
                    ),
                ));
            }
            visited?;
        }
    }
    Ok(())
}

fn truncated(archive: &Path, why: &str) -> Error {
    invalid_image(
        &archive.display().to_string(),
        format!("the archive is truncated: {why}"),
    )
}

/// A reader noting whether it reached its end.
struct DryWatch<'a, R> {
    inner: R,
    ran_dry: &'a Cell<bool>,
}

impl<R: Read> Read for DryWatch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ran_dry.set(true);
        }
        Ok(n)
    }
}

/// Rejects entries that could escape the archive root or that a reader must not follow (absolute
/// paths, `..`, links, devices, fifos). Returns the normalized path of a regular file (no `./`,
/// no empty components), `None` for entries carrying nothing to read (directories, global PAX
/// headers).
fn check_entry(archive: &Path, raw: &str, kind: tar::EntryType) -> Result<Option<String>> {
    use tar::EntryType::*;
    let unsafe_entry = |why: &'static str| Error::UnsafePath {
        archive: archive.to_owned(),
        entry: raw.to_owned(),
        why,
    };
    check_entry_path(archive, raw)?;
    match kind {
        Regular | Continuous => {}
        Directory | XGlobalHeader => return Ok(None),
        Symlink => return Err(unsafe_entry("symbolic link entries are not allowed")),
        Link => return Err(unsafe_entry("hard link entries are not allowed")),
        Char | Block => return Err(unsafe_entry("device entries are not allowed")),
        Fifo => return Err(unsafe_entry("fifo entries are not allowed")),
        _ => return Err(unsafe_entry("unsupported entry type")),
    }
    let path = normalize_archive_path(raw);
    if path.is_empty() {
        return Err(unsafe_entry("file entry with an empty path"));
    }
    Ok(Some(path))
}

fn check_entry_path(archive: &Path, raw: &str) -> Result<()> {
    let unsafe_entry = |why: &'static str| Error::UnsafePath {
        archive: archive.to_owned(),
        entry: raw.to_owned(),
        why,
    };
    if raw.starts_with('/') {
        return Err(unsafe_entry("absolute path"));
    }
    if raw.split('/').any(|c| c == "..") {
        return Err(unsafe_entry("'..' path component"));
    }
    Ok(())
}

/// A link entry as (path, target), both normalized archive paths. Symlink targets are relative to
/// the link's directory, hardlink targets to the archive root; either must stay inside the root.
fn check_link(
    archive: &Path,
    raw: &str,
    target: &str,
    kind: tar::EntryType,
) -> Result<(String, String)> {
    let unsafe_entry = |why: &'static str| Error::UnsafePath {
        archive: archive.to_owned(),
        entry: raw.to_owned(),
        why,
    };
    check_entry_path(archive, raw)?;
    if target.starts_with('/') {
        return Err(unsafe_entry("link target is an absolute path"));
    }
    let path = normalize_archive_path(raw);
    let mut resolved: Vec<&str> = Vec::new();
    if kind == tar::EntryType::Symlink {
        resolved.extend(path.split('/'));
        resolved.pop();
    }
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if resolved.pop().is_none() {
                    return Err(unsafe_entry("link target leaves the archive root"));
                }
            }
            name => resolved.push(name),
        }
    }
    if path.is_empty() || resolved.is_empty() {
        return Err(unsafe_entry("link with an empty path or target"));
    }
    let resolved = resolved.join("/");
    Ok((path, resolved))
}

/// The check base-image archives get, for other archives Kiln turns into layer entries (a
/// `.deb`'s `data.tar`): `raw` must not be absolute or contain `..`; returns it normalized
/// (`./usr//bin` → `usr/bin`, empty for the root itself).
pub fn checked_entry_path(archive: &Path, raw: &str) -> Result<String> {
    check_entry_path(archive, raw)?;
    Ok(normalize_archive_path(raw))
}

/// [`checked_entry_path`] for a hardlink entry: `(path, target)`, the target (relative to the
/// archive root) resolved and required to stay inside it.
pub fn checked_hardlink(archive: &Path, raw: &str, target: &str) -> Result<(String, String)> {
    check_link(archive, raw, target, tar::EntryType::Link)
}

/// `./a//b` → `a/b`: how archive entries and the paths inside manifest.json are compared.
fn normalize_archive_path(raw: &str) -> String {
    raw.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Imports blob `digest` from the layout directory `dir` into the store, verifying it.
fn copy_from_dir(image: &str, dir: &Path, store: &BlobStore, digest: &Digest) -> Result<()> {
    if store.contains_intact(digest)? {
        return Ok(());
    }
    let src = dir.join("blobs/sha256").join(digest.hex());
    let file = match File::open(&src) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(invalid_image(
                image,
                format!(
                    "references blob {digest}, but {} does not exist",
                    src.display()
                ),
            ))
        }
        Err(e) => return Err(Error::io(format!("opening {}", src.display()), e)),
    };
    store
        .put_reader(BufReader::new(file), Some(digest))
        .map_err(|e| invalid_image(image, format!("{}: {e}", src.display())))?;
    Ok(())
}

/// Reads a manifest/index/config blob (bounded size) after fetching it, checking its size.
fn read_json_blob(
    image: &str,
    store: &BlobStore,
    desc: &Descriptor,
    fetch: &Fetch,
) -> Result<Vec<u8>> {
    if desc.size > MAX_JSON_SIZE {
        return Err(invalid_image(
            image,
            format!(
                "blob {} claims {} bytes, too large for JSON metadata",
                desc.digest, desc.size
            ),
        ));
    }
    fetch(desc)?;
    let bytes = store.read_verified(&desc.digest)?;
    if bytes.len() as u64 != desc.size {
        return Err(invalid_image(
            image,
            format!(
                "blob {} has {} bytes but its descriptor says {}",
                desc.digest,
                bytes.len(),
                desc.size
            ),
        ));
    }
    Ok(bytes)
}

/// The media type of a manifest or index: the descriptor's, else the document's own `mediaType`,
/// else guessed from its shape (both fields are optional in some older writers).
fn document_media_type(desc: &Descriptor, bytes: &[u8], what: &str) -> Result<String> {
    if !desc.media_type.is_empty() {
        return Ok(desc.media_type.clone());
    }
    let doc: serde_json::Value = parse_json(bytes, what)?;
    let declared = doc
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    Ok(if !declared.is_empty() {
        declared.to_owned()
    } else if doc.get("manifests").is_some() {
        MEDIA_TYPE_INDEX.to_owned()
    } else {
        MEDIA_TYPE_MANIFEST.to_owned()
    })
}

/// From an `index.json`: picks the image by reference, follows indexes to the host platform and
/// loads the manifest, config and layers.
fn resolve(
    source: &ImageSource,
    store: &BlobStore,
    index: &ImageIndex,
    reference: Option<&str>,
    fetch: &Fetch,
) -> Result<LoadedImage> {
    let image = source.to_string();
    let desc = select_by_reference(&image, &index.manifests, reference)?.clone();
    let ref_name = [ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME]
        .into_iter()
        .find_map(|key| desc.annotations.get(key).cloned());
    Ok(LoadedImage {
        ref_name,
        ..resolve_descriptor(source, store, desc, &Platform::host(), fetch)?
    })
}

/// Follows `desc` through indexes (choosing `platform`) to a manifest and loads it.
fn resolve_descriptor(
    source: &ImageSource,
    store: &BlobStore,
    mut desc: Descriptor,
    platform: &Platform,
    fetch: &Fetch,
) -> Result<LoadedImage> {
    let image = source.to_string();
    for _ in 0..MAX_INDEX_DEPTH {
        let bytes = read_json_blob(&image, store, &desc, fetch)?;
        let what = format!("{image}: blob {}", desc.digest);
        match document_media_type(&desc, &bytes, &what)?.as_str() {
            MEDIA_TYPE_INDEX | DOCKER_MEDIA_TYPE_MANIFEST_LIST => {
                let nested: ImageIndex = parse_json(&bytes, &what)?;
                desc = select_platform(&image, &nested.manifests, platform)?.clone();
            }
            MEDIA_TYPE_MANIFEST | DOCKER_MEDIA_TYPE_MANIFEST => {
                let manifest: ImageManifest = parse_json(&bytes, &what)?;
                return load_manifest(source, store, desc.digest, manifest, fetch);
            }
            other => {
                return Err(invalid_image(
                    &image,
                    format!("{} has unsupported media type {other:?}", desc.digest),
                ))
            }
        }
    }
    Err(invalid_image(
        &image,
        format!("image indexes nest more than {MAX_INDEX_DEPTH} deep"),
    ))
}

fn load_manifest(
    source: &ImageSource,
    store: &BlobStore,
    manifest_digest: Digest,
    manifest: ImageManifest,
    fetch: &Fetch,
) -> Result<LoadedImage> {
    let image = source.to_string();
    let config_type = manifest.config.media_type.as_str();
    if config_type != MEDIA_TYPE_CONFIG && config_type != DOCKER_MEDIA_TYPE_CONFIG {
        return Err(invalid_image(
            &image,
            format!(
                "manifest {manifest_digest} is not a container image (config media type \
                 {config_type:?})"
            ),
        ));
    }
    let config_bytes = read_json_blob(&image, store, &manifest.config, fetch)?;
    let config: ImageConfig = parse_json(
        &config_bytes,
        &format!("{image}: config {}", manifest.config.digest),
    )?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(invalid_image(
            &image,
            format!(
                "manifest {manifest_digest} lists {} layers but its config has {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
        fetch(layer)?;
        let path = store.path(&layer.digest);
        let stored_size = std::fs::metadata(&path)
            .ctx(|| format!("reading metadata of {}", path.display()))?
            .len();
        if stored_size != layer.size {
            return Err(invalid_image(
                &image,
                format!(
                    "layer {} has {stored_size} bytes but the manifest says {}",
                    layer.digest, layer.size
                ),
            ));
        }
        layers.push(LayerRecord {
            descriptor: layer.clone(),
            diff_id: diff_id.clone(),
        });
    }
    Ok(LoadedImage {
        source: source.clone(),
        manifest_digest: Some(manifest_digest),
        config,
        layers,
        annotations: manifest.annotations,
        ref_name: None,
    })
}

/// The names a descriptor of `index.json` is known by.
fn descriptor_names(desc: &Descriptor) -> impl Iterator<Item = &str> {
    [ANNOTATION_REF_NAME, ANNOTATION_CONTAINERD_NAME]
        .into_iter()
        .filter_map(|key| desc.annotations.get(key).map(String::as_str))
}

/// Whether `reference` names `desc`: equal to either name annotation, equal to the tag of one,
/// or the same image once both are normalized (`app:1` vs `docker.io/library/app:1`).
fn matches_reference(desc: &Descriptor, reference: &str) -> bool {
    let wanted = Reference::parse(reference).ok();
    descriptor_names(desc).any(|name| {
        if name == reference {
            return true;
        }
        let Ok(parsed) = Reference::parse(name) else {
            return false;
        };
        parsed.tag.as_deref() == Some(reference)
            || wanted
                .as_ref()
                .is_some_and(|w| w.full_name() == parsed.full_name())
    })
}

fn available_names(manifests: &[Descriptor]) -> String {
    let names: Vec<String> = manifests
        .iter()
        .map(|d| {
            let names: Vec<&str> = descriptor_names(d).collect();
            if names.is_empty() {
                format!("(unnamed {})", d.digest)
            } else {
                names.join(" / ")
            }
        })
        .collect();
    names.join(", ")
}

fn select_by_reference<'a>(
    image: &str,
    manifests: &'a [Descriptor],
    reference: Option<&str>,
) -> Result<&'a Descriptor> {
    let Some(reference) = reference else {
        return match manifests {
            [only] => Ok(only),
            // One image under several names (`docker save`, `kiln build --tag A --tag B`).
            [first, rest @ ..] if rest.iter().all(|d| d.digest == first.digest) => Ok(first),
            [] => Err(invalid_image(
                image,
                "index.json lists no images".to_owned(),
            )),
            many => Err(invalid_image(
                image,
                format!(
                    "index.json lists {} images; name one with :REF (available: {})",
                    many.len(),
                    available_names(many)
                ),
            )),
        };
    };
    let mut matching = manifests.iter().filter(|d| matches_reference(d, reference));
    let Some(first) = matching.next() else {
        return Err(invalid_image(
            image,
            format!(
                "no image named {reference:?} (available: {})",
                available_names(manifests)
            ),
        ));
    };
    if matching.any(|d| d.digest != first.digest) {
        return Err(invalid_image(
            image,
            format!("{reference:?} names more than one image; use the full name"),
        ));
    }
    Ok(first)
}

/// The entry for `host`'s os/architecture, preferring an exact variant match.
pub fn select_platform<'a>(
    image: &str,
    manifests: &'a [Descriptor],
    host: &Platform,
) -> Result<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == host.os && p.architecture == host.architecture)
        })
        .collect();
    let exact = candidates.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.variant == host.variant)
    });
    match exact.or(candidates.first()) {
        Some(desc) => Ok(desc),
        None => {
            let available: Vec<String> = manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            Err(invalid_image(
                image,
                format!(
                    "no image for {}/{} in the index (available: {})",
                    host.os,
                    host.architecture,
                    available.join(", ")
                ),
            ))
        }
    }
}

/// One image of Docker's `manifest.json`.
#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A `docker save` archive: `manifest.json` names the config and layer files by path, and may come
/// after them, so every file is spooled into the store (by content digest) on the way through.
fn load_docker_archive(
    source: &ImageSource,
    archive: &Path,
    store: &BlobStore,
) -> Result<LoadedImage> {
    let image = source.to_string();
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut manifest_json = None;
    // docker save and skopeo write a layer shared by several images once and link to it.
    let mut links = HashMap::new();
    for_each_file(archive, Some(&mut links), |path, size, entry| {
        if path == "manifest.json" {
            if manifest_json.is_some() {
                return Err(invalid_image(
                    &image,
                    "more than one manifest.json entry".to_owned(),
                ));
            }
            let what = format!("{image}: manifest.json");
            manifest_json =
                Some(read_capped(entry, MAX_JSON_SIZE, &what).ctx(|| format!("reading {what}"))?);
            return Ok(());
        }
        // Hybrid (Docker ≥ 25) archives name blobs by digest: verify them on the way in.
        let expected = path
            .strip_prefix("blobs/sha256/")
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok());
        let stored = match expected {
            Some(digest) if store.contains_intact(&digest)? => (digest, size),
            _ => store
                .put_reader(entry, expected.as_ref())
                .map_err(|e| invalid_image(&image, format!("entry {path:?}: {e}")))?,
        };
        files.insert(path.to_owned(), stored);
        Ok(())
    })?;
    let bytes = manifest_json.ok_or_else(|| {
        invalid_image(
            &image,
            "no manifest.json entry: not a docker archive".to_owned(),
        )
    })?;
    let entries: Vec<DockerManifestEntry> = parse_json(&bytes, &format!("{image}: manifest.json"))?;
    let entry = match entries.as_slice() {
        [only] => only,
        [] => {
            return Err(invalid_image(
                &image,
                "manifest.json lists no images".to_owned(),
            ))
        }
        many => {
            let tags: Vec<String> = many
                .iter()
                .map(|e| e.repo_tags.clone().unwrap_or_default().join(" "))
                .collect();
            return Err(invalid_image(
                &image,
                format!(
                    "manifest.json lists {} images ({}); only single-image archives can be loaded",
                    many.len(),
                    tags.join(", ")
                ),
            ));
        }
    };
    let lookup = |path: &str| {
        let mut name = normalize_archive_path(path);
        // Links may chain; a bound keeps a cycle from looping forever.
        for _ in 0..MAX_LINK_HOPS {
            if let Some(found) = files.get(&name) {
                return Ok(found);
            }
            match links.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        Err(invalid_image(
            &image,
            format!("manifest.json references {path:?}, which the archive does not contain"),
        ))
    };
    let (config_digest, config_size) = lookup(&entry.config)?;
    if *config_size > MAX_JSON_SIZE {
        return Err(invalid_image(
            &image,
            format!("config {:?} is too large", entry.config),
        ));
    }
    let config_bytes = store.read_verified(config_digest)?;
    let config: ImageConfig = parse_json(&config_bytes, &format!("{image}: {}", entry.config))?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != entry.layers.len() {
        return Err(invalid_image(
            &image,
            format!(
                "manifest.json lists {} layers but the config has {} diff_ids",
                entry.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(entry.layers.len());
    for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
        let (digest, size) = lookup(path)?;
        let media_type = sniff_layer_media_type(store, digest)?;
        if media_type == MEDIA_TYPE_LAYER_TAR && digest != diff_id {
            return Err(invalid_image(
                &image,
                format!(
                    "layer {path:?} is an uncompressed tar hashing to {digest}, but the config's \
                     diff_id for it is {diff_id}"
                ),
            ));
        }
        layers.push(LayerRecord {
            descriptor: Descriptor {
                media_type: media_type.to_owned(),
                digest: digest.clone(),
                size: *size,
                annotations: Default::default(),
                platform: None,
                artifact_type: None,
            },
            diff_id: diff_id.clone(),
        });
    }
    Ok(LoadedImage {
        source: source.clone(),
        manifest_digest: None,
        config,
        layers,
        annotations: Default::default(),
        ref_name: None,
    })
}

/// Docker archives do not record layer media types: tell gzip and zstd from plain tar by magic.
fn sniff_layer_media_type(store: &BlobStore, digest: &Digest) -> Result<&'static str> {
    let mut magic = Vec::with_capacity(4);
    store
        .open_blob(digest)?
        .take(4)
        .read_to_end(&mut magic)
        .ctx(|| format!("reading {}", store.path(digest).display()))?;
    Ok(match magic.as_slice() {
        [0x1f, 0x8b, ..] => MEDIA_TYPE_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => MEDIA_TYPE_LAYER_ZSTD,
        _ => MEDIA_TYPE_LAYER_TAR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs;
    use std::io::Read;

    use crate::archive::{write_oci_archive, write_oci_dir};
    use crate::image::Image;
    use crate::json::to_canonical_vec;
    use crate::layer::{normalize, write_layer, Compression, Entry, EntryKind, LayerOptions};
    use crate::test_util::{file, raw_tar, small_image, RawEntry};

    fn archive_source(path: &Path, reference: Option<&str>) -> ImageSource {
        ImageSource::OciArchive {
            path: path.to_owned(),
            reference: reference.map(str::to_owned),
        }
    }

    fn assert_same_image(loaded: &LoadedImage, image: &Image) {
        assert_eq!(
            loaded.manifest_digest.as_ref(),
            Some(&image.manifest_digest)
        );
        assert_eq!(loaded.config, image.config);
        let descriptors: Vec<&Descriptor> = loaded.layers.iter().map(|l| &l.descriptor).collect();
        assert_eq!(
            descriptors,
            image.manifest.layers.iter().collect::<Vec<_>>()
        );
        let diff_ids: Vec<&Digest> = loaded.layers.iter().map(|l| &l.diff_id).collect();
        assert_eq!(
            diff_ids,
            image.config.rootfs.diff_ids.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn sources_parse_and_display() {
        let cases = [
            ("scratch", ImageSource::Scratch),
            (
                "oci-archive:/tmp/run.tar",
                archive_source(Path::new("/tmp/run.tar"), None),
            ),
            (
                "oci-archive:run.tar:docker.io/library/run:1",
                archive_source(Path::new("run.tar"), Some("docker.io/library/run:1")),
            ),
            (
                "oci:/layouts/run:latest",
                ImageSource::OciDir {
                    path: "/layouts/run".into(),
                    reference: Some("latest".into()),
                },
            ),
            (
                "docker-archive:/tmp/x.tar",
                ImageSource::DockerArchive {
                    path: "/tmp/x.tar".into(),
                },
            ),
        ];
        for (text, source) in cases {
            assert_eq!(text.parse::<ImageSource>().unwrap(), source, "{text}");
            assert_eq!(source.to_string(), text);
        }
        // Registry references, bare or with docker://, print as docker:// plus the full name.
        for (text, canonical) in [
            ("ubuntu:22.04", "docker://docker.io/library/ubuntu:22.04"),
            (
                "docker://ubuntu",
                "docker://docker.io/library/ubuntu:latest",
            ),
            ("localhost:5000/a/b:1", "docker://localhost:5000/a/b:1"),
            (
                "docker://127.0.0.1:5000/app:x",
                "docker://127.0.0.1:5000/app:x",
            ),
        ] {
            let source = text.parse::<ImageSource>().unwrap();
            assert!(matches!(source, ImageSource::Registry(_)), "{text}");
            assert_eq!(source.to_string(), canonical);
            assert_eq!(canonical.parse::<ImageSource>().unwrap(), source);
        }
        for bad in [
            "Ubuntu:22.04",
            "oci-archive:",
            "oci:",
            "oci:dir:",
            "docker-archive:x.tar:ref",
            "Scratch",
            "app:",
        ] {
            let err = bad.parse::<ImageSource>().unwrap_err().to_string();
            assert!(err.contains(ACCEPTED_FORMS), "{bad}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn scratch_is_empty_for_the_host_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let loaded = load_image(&ImageSource::Scratch, &store).unwrap();
        let host = Platform::host();
        assert_eq!(
            (
                loaded.config.architecture,
                loaded.config.os,
                loaded.config.variant
            ),
            (host.architecture, host.os, host.variant)
        );
        assert_eq!(loaded.config.rootfs.kind, "layers");
        assert!(loaded.config.rootfs.diff_ids.is_empty() && loaded.layers.is_empty());
        assert_eq!(loaded.manifest_digest, None);
    }

    #[test]
    fn oci_archive_round_trip_by_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let image = small_image(&store, &dir.path().join("src"));
        let out = dir.path().join("image.tar");
        let tag = Reference::parse("kiln-test/interop:1").unwrap();
        write_oci_archive(&store, &image, Some(&tag), &out).unwrap();

        for reference in [
            None,
            Some("1"),
            Some("kiln-test/interop:1"),
            Some("docker.io/kiln-test/interop:1"),
        ] {
            // A fresh store each time: everything must come from the archive.
            let fresh = BlobStore::open(dir.path().join(format!("fresh-{reference:?}"))).unwrap();
            let source = archive_source(&out, reference);
            let loaded = load_image(&source, &fresh).unwrap();
            assert_same_image(&loaded, &image);
            assert_eq!(loaded.source, source);
            // Its own full name, whatever it was selected by: never the archive's path.
            assert_eq!(
                loaded.ref_name.as_deref(),
                Some("docker.io/kiln-test/interop:1")
            );
            for layer in &loaded.layers {
                assert!(fresh.contains(&layer.descriptor.digest));
            }
        }
        let err = load_image(&archive_source(&out, Some("2")), &store)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no image named \"2\"") && err.contains("docker.io/kiln-test/interop:1"),
            "{err}"
        );
    }

    #[test]
    fn oci_dir_round_trip_and_missing_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let image = small_image(&store, &dir.path().join("src"));
        let layout = dir.path().join("layout");
        write_oci_dir(&store, &image, None, &layout).unwrap();
        let source = ImageSource::OciDir {
            path: layout.clone(),
            reference: None,
        };
        let fresh = BlobStore::open(dir.path().join("fresh")).unwrap();
        let loaded = load_image(&source, &fresh).unwrap();
        assert_same_image(&loaded, &image);
        assert_eq!(loaded.ref_name, None, "an unnamed entry has no name");

        let layer = &image.manifest.layers[0].digest;
        fs::remove_file(layout.join("blobs/sha256").join(layer.hex())).unwrap();
        let empty = BlobStore::open(dir.path().join("empty")).unwrap();
        let err = load_image(&source, &empty).unwrap_err().to_string();
        assert!(
            err.contains(layer.as_str()) && err.contains("does not exist"),
            "{err}"
        );

        // A blob whose content does not match its name is refused.
        fs::write(layout.join("blobs/sha256").join(layer.hex()), b"garbage").unwrap();
        let err = load_image(&source, &empty).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert!(!empty.contains(layer));
    }

    #[test]
    fn multi_platform_index_selects_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let image = small_image(&store, &dir.path().join("src"));
        let host = Platform::host();
        let other = Platform {
            architecture: if host.architecture == "s390x" {
                "amd64"
            } else {
                "s390x"
            }
            .into(),
            os: "linux".into(),
            variant: None,
        };
        let manifest_desc = |platform: Platform| Descriptor {
            media_type: MEDIA_TYPE_MANIFEST.into(),
            digest: image.manifest_digest.clone(),
            size: image.manifest_size,
            annotations: BTreeMap::new(),
            platform: Some(platform),
            artifact_type: None,
        };
        // The other platform points at a manifest that does not exist: selecting it would fail.
        let mut decoy = manifest_desc(other);
        decoy.digest = Digest::of(b"no such manifest");
        let nested = ImageIndex {
            schema_version: 2,
            media_type: MEDIA_TYPE_INDEX.into(),
            manifests: vec![decoy, manifest_desc(host)],
            annotations: BTreeMap::new(),
        };
        let nested_bytes = to_canonical_vec(&nested);
        let nested_digest = store.put_bytes(&nested_bytes).unwrap();
        let top = ImageIndex {
            schema_version: 2,
            media_type: MEDIA_TYPE_INDEX.into(),
            manifests: vec![Descriptor {
                media_type: MEDIA_TYPE_INDEX.into(),
                digest: nested_digest,
                size: nested_bytes.len() as u64,
                annotations: BTreeMap::new(),
                platform: None,
                artifact_type: None,
            }],
            annotations: BTreeMap::new(),
        };
        // The store itself is a valid layout once it has oci-layout and index.json.
        fs::write(
            store.root().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        fs::write(store.root().join("index.json"), to_canonical_vec(&top)).unwrap();
        let source = ImageSource::OciDir {
            path: store.root().to_owned(),
            reference: None,
        };
        assert_same_image(&load_image(&source, &store).unwrap(), &image);
    }

    fn expect_unsafe(entries: &[RawEntry], entry_name: &str) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("evil.tar");
        fs::write(&archive, raw_tar(entries)).unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        for source in [
            archive_source(&archive, None),
            ImageSource::DockerArchive {
                path: archive.clone(),
            },
        ] {
            let err = load_image(&source, &store).unwrap_err();
            assert!(
                matches!(&err, Error::UnsafePath { entry, .. } if entry == entry_name),
                "{err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(entry_name) && msg.contains("evil.tar"),
                "{msg}"
            );
        }
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn unsafe_archive_entries_are_rejected() {
        expect_unsafe(
            &[file("oci-layout", b"{}"), file("../evil", b"x")],
            "../evil",
        );
        expect_unsafe(&[file("/abs", b"x")], "/abs");
        expect_unsafe(&[file("blobs/../../x", b"x")], "blobs/../../x");
        let link = |name, kind| RawEntry {
            name,
            kind,
            content: b"",
            link: Some("/etc/passwd"),
        };
        expect_unsafe(&[link("index.json", tar::EntryType::Symlink)], "index.json");
        expect_unsafe(&[link("blobs/hard", tar::EntryType::Link)], "blobs/hard");
        let special = |name, kind| RawEntry {
            name,
            kind,
            content: b"",
            link: None,
        };
        expect_unsafe(&[special("dev", tar::EntryType::Char)], "dev");
        expect_unsafe(&[special("pipe", tar::EntryType::Fifo)], "pipe");
    }

    #[test]
    fn archive_blob_not_matching_its_name_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("bad.tar");
        let name = format!("blobs/sha256/{}", Digest::of(b"expected").hex());
        fs::write(&archive, raw_tar(&[file(&name, b"actual")])).unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let err = load_image(&archive_source(&archive, None), &store)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&name) && err.contains("corrupt"), "{err}");
        assert!(!store.contains(&Digest::of(b"actual")));
    }

    #[test]
    fn damaged_stored_blobs_are_replaced_from_any_local_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let image = small_image(&store, &dir.path().join("src"));
        let archive = dir.path().join("image.tar");
        write_oci_archive(&store, &image, None, &archive).unwrap();
        let layout = dir.path().join("layout");
        write_oci_dir(&store, &image, None, &layout).unwrap();
        let sources = [
            archive_source(&archive, None),
            ImageSource::OciDir {
                path: layout,
                reference: None,
            },
            ImageSource::DockerArchive { path: archive },
        ];
        let cache = BlobStore::open(dir.path().join("cache")).unwrap();
        let layer = &image.manifest.layers[0].digest;
        let damaged = [&image.config_digest, layer];
        for source in &sources {
            load_image(source, &cache).unwrap();
            for digest in damaged {
                let mut bytes = fs::read(cache.path(digest)).unwrap();
                bytes[0] ^= 0x80;
                fs::write(cache.path(digest), bytes).unwrap();
            }
            let loaded = load_image(source, &cache).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(loaded.config, image.config, "{source}");
            for digest in damaged {
                assert!(cache.contains_intact(digest).unwrap(), "{source}: {digest}");
            }
        }
    }

    #[test]
    fn truncated_archives_are_reported_as_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let image = small_image(&store, &dir.path().join("src"));
        let whole = dir.path().join("image.tar");
        write_oci_archive(&store, &image, None, &whole).unwrap();
        let bytes = fs::read(&whole).unwrap();
        // Where the layer blob's content starts, and its size.
        let layer = &image.manifest.layers[0];
        let mut tar = tar::Archive::new(&bytes[..]);
        let start = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with(layer.digest.hex()))
            .map(|e| e.raw_file_position())
            .unwrap() as usize;
        let cut = dir.path().join("cut.tar");
        for (at, stored_already) in [
            (start + layer.size as usize / 2, false), // inside a blob being imported
            (start + layer.size as usize / 2, true),  // inside a blob skipped as stored
            (start - 512 + 100, false),               // inside the blob's header
        ] {
            fs::write(&cut, &bytes[..at]).unwrap();
            for source in [
                archive_source(&cut, None),
                ImageSource::DockerArchive { path: cut.clone() },
            ] {
                let target = if stored_already {
                    &store
                } else {
                    &BlobStore::open(dir.path().join(format!("fresh-{at}"))).unwrap()
                };
                let err = load_image(&source, target).unwrap_err().to_string();
                assert!(
                    err.contains("truncated") && !err.contains("corrupt"),
                    "{source} cut at {at}: {err}"
                );
                assert!(err.contains(&cut.display().to_string()), "{err}");
            }
        }
    }

    /// A classic `docker save` archive: `<id>/layer.tar`, `<id>.json` config, manifest.json last.
    fn docker_archive(
        dir: &Path,
        compression: Compression,
        diff_id_override: Option<Digest>,
    ) -> (PathBuf, LayerRecord) {
        let store = BlobStore::open(dir.join("build-store")).unwrap();
        let entries = normalize(vec![Entry {
            path: "etc/motd".into(),
            kind: EntryKind::Symlink {
                target: "/dev/null".into(),
            },
            mode: 0o777,
        }])
        .unwrap();
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let layer = write_layer(&store, &entries, &opts).unwrap();
        let layer_bytes = fs::read(store.path(&layer.descriptor.digest)).unwrap();
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            rootfs: crate::spec::RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id_override.unwrap_or_else(|| layer.diff_id.clone())],
            },
            ..Default::default()
        };
        let config_bytes = to_canonical_vec(&config);
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": "abc123.json",
            "RepoTags": ["app:latest"],
            "Layers": ["./layerid/layer.tar"],
        }]))
        .unwrap();
        let path = dir.join("docker.tar");
        fs::write(
            &path,
            raw_tar(&[
                file("abc123.json", &config_bytes),
                RawEntry {
                    name: "layerid/",
                    kind: tar::EntryType::Directory,
                    content: b"",
                    link: None,
                },
                file("layerid/layer.tar", &layer_bytes),
                file("manifest.json", &manifest),
                file("repositories", b"{}"),
            ]),
        )
        .unwrap();
        (path, layer)
    }

    #[test]
    fn docker_archive_with_uncompressed_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (path, built) = docker_archive(dir.path(), Compression::None, None);
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let source = ImageSource::DockerArchive { path };
        let loaded = load_image(&source, &store).unwrap();
        assert_eq!(loaded.manifest_digest, None);
        assert_eq!(loaded.layers.len(), 1);
        let layer = &loaded.layers[0];
        assert_eq!(layer.descriptor.media_type, MEDIA_TYPE_LAYER_TAR);
        assert_eq!(layer.descriptor.digest, layer.diff_id);
        assert_eq!(layer, &built);
        assert!(store.contains(&layer.diff_id));
        assert_eq!(loaded.config.rootfs.diff_ids, vec![built.diff_id]);
    }

    #[test]
    fn docker_archive_with_gzip_layer_is_sniffed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, built) = docker_archive(dir.path(), Compression::DEFAULT, None);
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let loaded = load_image(&ImageSource::DockerArchive { path }, &store).unwrap();
        assert_eq!(loaded.layers[0], built);
        assert_eq!(
            loaded.layers[0].descriptor.media_type,
            MEDIA_TYPE_LAYER_GZIP
        );
    }

    #[test]
    fn docker_archive_layer_must_match_its_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let wrong = Digest::of(b"wrong");
        let (path, _) = docker_archive(dir.path(), Compression::None, Some(wrong.clone()));
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let err = load_image(&ImageSource::DockerArchive { path }, &store)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("layerid/layer.tar") && err.contains(wrong.as_str()),
            "{err}"
        );
    }

    #[test]
    fn docker_archive_links_are_names_inside_the_archive_only() {
        let dir = tempfile::tempdir().unwrap();
        let (path, built) = docker_archive(dir.path(), Compression::None, None);
        let layer_bytes = fs::read(
            BlobStore::open(dir.path().join("build-store"))
                .unwrap()
                .path(&built.diff_id),
        )
        .unwrap();
        // Rebuild the archive the way skopeo writes it: the layer stored once, linked from
        // `<id>/layer.tar` (itself reached through a second, hardlink, name).
        let mut entries = vec![];
        let original = tar::Archive::new(fs::read(&path).unwrap().as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    content,
                )
            })
            .collect::<Vec<_>>();
        for (name, content) in &original {
            if name != "layerid/layer.tar" && name != "layerid/" {
                entries.push(file(name, content));
            }
        }
        entries.push(file("shared.tar", &layer_bytes));
        entries.push(RawEntry {
            name: "alias.tar",
            kind: tar::EntryType::Link,
            content: b"",
            link: Some("shared.tar"),
        });
        entries.push(RawEntry {
            name: "layerid/layer.tar",
            kind: tar::EntryType::Symlink,
            content: b"",
            link: Some("../alias.tar"),
        });
        let linked = dir.path().join("linked.tar");
        fs::write(&linked, raw_tar(&entries)).unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let loaded = load_image(&ImageSource::DockerArchive { path: linked }, &store).unwrap();
        assert_eq!(loaded.layers, vec![built]);

        // A link leaving the archive root is refused, naming the entry.
        let escape = RawEntry {
            name: "layerid/layer.tar",
            kind: tar::EntryType::Symlink,
            content: b"",
            link: Some("../../etc/passwd"),
        };
        expect_unsafe(&[escape], "layerid/layer.tar");
    }

    #[test]
    fn kiln_archives_load_as_docker_archives() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let image = small_image(&store, &dir.path().join("src"));
        let out = dir.path().join("image.tar");
        write_oci_archive(&store, &image, None, &out).unwrap();
        let fresh = BlobStore::open(dir.path().join("fresh")).unwrap();
        let loaded = load_image(&ImageSource::DockerArchive { path: out }, &fresh).unwrap();
        assert_eq!(loaded.config, image.config);
        let layers: Vec<&Descriptor> = loaded.layers.iter().map(|l| &l.descriptor).collect();
        assert_eq!(layers, image.manifest.layers.iter().collect::<Vec<_>>());
    }
}
