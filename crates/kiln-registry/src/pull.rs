//! Pulling: resolve a tag to a manifest (or an index, then the platform's manifest), then fetch
//! the config and layers into the local [`BlobStore`], each streamed to disk and verified against
//! its digest. Blobs already in the store are never downloaded again; a manifest whose digest the
//! registry reports on `HEAD` and that is already stored is not downloaded either, so pulling an
//! unchanged base a second time transfers no blob at all. A stored blob is re-hashed before it
//! is trusted, so a damaged copy is downloaded again. Transfers run within the client's
//! low-speed limits; the progress of long ones goes to the caller's [`Progress`] callback.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_oci::digest::Digest;
use kiln_oci::reference::Reference;
use kiln_oci::source::{load_from_descriptor, select_platform, ImageSource, LoadedImage};
use kiln_oci::spec::{
    Descriptor, ImageIndex, ImageManifest, Platform, DOCKER_MEDIA_TYPE_MANIFEST,
    DOCKER_MEDIA_TYPE_MANIFEST_LIST, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use kiln_oci::store::BlobStore;
use serde::Serialize;

use crate::client::{Client, Repo, Req};
use crate::error::{Error, Result};
use crate::watch::{self, Progress, Report};

/// How deep indexes may nest before prefetching gives up (the load then reports it).
const MAX_INDEX_DEPTH: usize = 4;
/// Manifests and indexes are small; the cap stops a hostile registry from filling memory.
const MAX_MANIFEST_SIZE: u64 = 4 << 20;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// What a pull transferred.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullStats {
    pub blobs_downloaded: u64,
    pub bytes_downloaded: u64,
    /// Blobs (and manifests) found in the local store, not downloaded.
    pub blobs_cached: u64,
}

/// Pulls `reference` into `store` (for `client`'s platform when it names an index); the
/// progress of long transfers goes to `progress`.
pub fn pull(
    client: &Client,
    reference: &Reference,
    store: &BlobStore,
    progress: Progress<'_>,
) -> Result<(LoadedImage, PullStats)> {
    let repo = client.repo(reference, "pull", &[]);
    let stats = Mutex::new(PullStats::default());
    let root = fetch_root(&repo, reference, store, &stats)?;
    prefetch(&repo, store, &root, &client.opts.platform, &stats, progress)?;
    // Whatever prefetching brought in was checked and counted there.
    let fetch = |d: &Descriptor| -> kiln_oci::Result<()> {
        if store.contains(&d.digest) {
            return Ok(());
        }
        fetch_all(&repo, store, &[d], &stats, progress).map_err(|e| kiln_oci::Error::InvalidImage {
            image: reference.to_string(),
            why: e.to_string(),
        })
    };
    let source = ImageSource::Registry(reference.clone());
    // Fetch errors travel through kiln-oci as `InvalidImage` naming the image, with the
    // registry error (registry, repository, status) as the reason.
    let image = load_from_descriptor(&source, store, root, &client.opts.platform, &fetch)?;
    Ok((image, stats.into_inner().unwrap_or_else(|e| e.into_inner())))
}

/// The manifest or index `reference` names, stored, as a descriptor.
fn fetch_root(
    repo: &Repo<'_>,
    reference: &Reference,
    store: &BlobStore,
    stats: &Mutex<PullStats>,
) -> Result<Descriptor> {
    let name = match (&reference.digest, &reference.tag) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => "latest".to_owned(),
    };
    let what = format!("resolving manifest {name}");
    // HEAD tells the digest without the body; a cached manifest then needs no download. Any
    // HEAD failure but an unreachable registry falls through to GET, whose error body says more.
    let head = repo.send(
        &Req::new("HEAD", repo.url(&format!("manifests/{name}"))).header("Accept", ACCEPT),
        &what,
    );
    match head {
        // A registry that cannot be reached or stalls would do the same to the GET.
        Err(e @ (Error::Unreachable { .. } | Error::Transfer { .. })) => return Err(e),
        Ok(head) => {
            let media_type = head.content_type().to_owned();
            let known = head
                .header("docker-content-digest")
                .and_then(|d| Digest::parse(d).ok())
                .or_else(|| reference.digest.clone());
            // A damaged stored copy is dropped here and downloaded again below.
            if let Some(digest) = known {
                if store.contains_intact(&digest)? {
                    if let Some(desc) = stored_manifest(store, &digest, &media_type)? {
                        bump(stats, |s| s.blobs_cached += 1);
                        return Ok(desc);
                    }
                }
            }
        }
        Err(_) => {}
    }
    let (bytes, media_type) = get_manifest(repo, &name, &what)?;
    let digest = Digest::of(&bytes);
    if let Some(expected) = &reference.digest {
        if expected != &digest {
            return Err(repo.error(format!(
                "manifest {expected} arrived with content hashing to {digest}"
            )));
        }
    }
    store.put_bytes(&bytes)?;
    bump(stats, |s| {
        s.blobs_downloaded += 1;
        s.bytes_downloaded += bytes.len() as u64;
    });
    Ok(Descriptor {
        media_type,
        digest,
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    })
}

/// A descriptor for a manifest already in the store, when its media type is known.
fn stored_manifest(
    store: &BlobStore,
    digest: &Digest,
    media_type: &str,
) -> Result<Option<Descriptor>> {
    if !is_manifest_type(media_type) {
        return Ok(None);
    }
    let bytes = store.read_verified(digest)?;
    Ok(Some(Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.clone(),
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    }))
}

fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        MEDIA_TYPE_INDEX
            | MEDIA_TYPE_MANIFEST
            | DOCKER_MEDIA_TYPE_MANIFEST
            | DOCKER_MEDIA_TYPE_MANIFEST_LIST
    )
}

/// GETs a manifest (by tag or digest): its bytes and media type.
pub(crate) fn get_manifest(repo: &Repo<'_>, name: &str, what: &str) -> Result<(Vec<u8>, String)> {
    get_document(repo, &format!("manifests/{name}"), ACCEPT, what)
}

/// GETs a small JSON document under the repository (`manifests/…`, `referrers/…`): its bytes,
/// at most [`MAX_MANIFEST_SIZE`], and media type.
pub(crate) fn get_document(
    repo: &Repo<'_>,
    rest: &str,
    accept: &str,
    what: &str,
) -> Result<(Vec<u8>, String)> {
    let response = repo.send(
        &Req::new("GET", repo.url(rest)).header("Accept", accept),
        what,
    )?;
    let media_type = response.content_type().to_owned();
    let mut bytes = Vec::new();
    let reader = response.into_reader().take(MAX_MANIFEST_SIZE + 1);
    let mut body = repo.watch(reader, what, None, &watch::silent);
    if let Err(e) = body.read_to_end(&mut bytes) {
        let why = body.failure().map_or_else(|| e.to_string(), str::to_owned);
        return Err(repo.transfer_error(what, &why));
    }
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(repo.error(format!(
            "{what}: manifest larger than {MAX_MANIFEST_SIZE} bytes"
        )));
    }
    Ok((bytes, media_type))
}

/// Brings blob `d` into the store unless an intact copy is there: manifests through the
/// manifests endpoint, everything else through blobs, streamed and verified (at most `d.size`
/// bytes are read).
fn fetch_blob(
    repo: &Repo<'_>,
    store: &BlobStore,
    d: &Descriptor,
    stats: &Mutex<PullStats>,
    report: Report<'_>,
) -> Result<()> {
    if store.contains_intact(&d.digest)? {
        bump(stats, |s| s.blobs_cached += 1);
        return Ok(());
    }
    if is_manifest_type(&d.media_type) {
        let what = format!("pulling manifest {}", d.digest);
        let (bytes, _) = get_manifest(repo, d.digest.as_str(), &what)?;
        if Digest::of(&bytes) != d.digest {
            return Err(repo.error(format!("{what}: content does not match the digest")));
        }
        store.put_bytes(&bytes)?;
        bump(stats, |s| {
            s.blobs_downloaded += 1;
            s.bytes_downloaded += bytes.len() as u64;
        });
        return Ok(());
    }
    let what = format!("pulling blob {}", d.digest);
    let response = repo.send(
        &Req::new("GET", repo.url(&format!("blobs/{}", d.digest))),
        &what,
    )?;
    let label = format!(
        "registry {}, repository {}: {what}",
        repo.registry, repo.repository
    );
    let reader = response.into_reader().take(d.size);
    let mut body = repo.watch(reader, &label, Some(d.size), report);
    let (_, size) = match store.put_reader(&mut body, Some(&d.digest)) {
        Ok(stored) => stored,
        // A broken transfer names the registry and blob; anything else is the store's.
        Err(e) => match body.failure() {
            Some(why) => return Err(repo.transfer_error(&what, why)),
            None => return Err(e.into()),
        },
    };
    bump(stats, |s| {
        s.blobs_downloaded += 1;
        s.bytes_downloaded += size;
    });
    Ok(())
}

fn bump(stats: &Mutex<PullStats>, f: impl FnOnce(&mut PullStats)) {
    f(&mut stats.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Fetches the config and layers of the image `root` leads to (through indexes, for
/// `platform`) a few at a time, so the checked, sequential load that follows finds them in the
/// store. Anything unexpected here is left for that load to report.
fn prefetch(
    repo: &Repo<'_>,
    store: &BlobStore,
    root: &Descriptor,
    platform: &Platform,
    stats: &Mutex<PullStats>,
    progress: Progress<'_>,
) -> Result<()> {
    let mut desc = root.clone();
    for _ in 0..MAX_INDEX_DEPTH {
        // The root is in the store already (just checked, and counted); nested manifests may
        // be missing or damaged.
        if desc.digest != root.digest {
            fetch_all(repo, store, &[&desc], stats, progress)?;
        }
        let bytes = store.read_verified(&desc.digest)?;
        if let Ok(index) = serde_json::from_slice::<ImageIndex>(&bytes) {
            match select_platform(&repo.repository, &index.manifests, platform) {
                Ok(next) => desc = next.clone(),
                Err(_) => return Ok(()),
            }
            continue;
        }
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
            return Ok(());
        };
        let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .collect();
        return fetch_all(repo, store, &blobs, stats, progress);
    }
    Ok(())
}

/// Fetches `blobs` (those the store lacks) a few at a time, each worker reporting its
/// progress to `progress`, so a long transfer is never silent.
fn fetch_all(
    repo: &Repo<'_>,
    store: &BlobStore,
    blobs: &[&Descriptor],
    stats: &Mutex<PullStats>,
    progress: Progress<'_>,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    let workers = repo.opts().max_concurrency.clamp(1, blobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (next, first_error) = (&next, &first_error);
            scope.spawn(move || {
                let failed = || first_error.lock().unwrap_or_else(|e| e.into_inner());
                while let Some(d) = blobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    // After one failure the pull fails: start nothing more.
                    if failed().is_some() {
                        break;
                    }
                    if let Err(e) = fetch_blob(repo, store, d, stats, progress) {
                        failed().get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The manifest `reference` names, read as plain data (for artifacts such as Kiln's cache image,
/// whose config is not an image config) and stored; `None` when the registry has no such
/// manifest or repository.
pub fn pull_artifact_manifest(
    client: &Client,
    reference: &Reference,
    store: &BlobStore,
) -> Result<Option<(Digest, ImageManifest)>> {
    let repo = client.repo(reference, "pull", &[]);
    let stats = Mutex::new(PullStats::default());
    let root = match fetch_root(&repo, reference, store, &stats) {
        Ok(root) => root,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bytes = store.read_verified(&root.digest)?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
        repo.error(format!(
            "manifest {} is not an image manifest: {e}",
            root.digest
        ))
    })?;
    Ok(Some((root.digest, manifest)))
}

/// Brings `blobs` of `reference`'s repository into `store` (those it lacks), verified; the
/// progress of long transfers goes to `progress`.
pub fn pull_blobs(
    client: &Client,
    reference: &Reference,
    store: &BlobStore,
    blobs: &[Descriptor],
    progress: Progress<'_>,
) -> Result<PullStats> {
    let repo = client.repo(reference, "pull", &[]);
    let stats = Mutex::new(PullStats::default());
    let blobs: Vec<&Descriptor> = blobs.iter().collect();
    fetch_all(&repo, store, &blobs, &stats, progress)?;
    Ok(stats.into_inner().unwrap_or_else(|e| e.into_inner()))
}
