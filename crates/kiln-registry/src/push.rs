//! Pushing: every blob first (skipped when the registry has it, mounted when another repository
//! of the same registry has it, else uploaded in one request or in chunks), the manifest last, so
//! a failed push never leaves a tag pointing at missing blobs. Blobs go up a few at a time
//! ([`ClientOptions::max_concurrency`](crate::ClientOptions)); a failed blob upload is retried
//! from a fresh upload session, a bounded number of times.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_oci::digest::Digest;
use kiln_oci::reference::Reference;
use kiln_oci::spec::Descriptor;
use kiln_oci::store::BlobStore;
use serde::Serialize;

use crate::client::{Body, Client, Repo, Req};
use crate::error::{Error, Result};

/// What a push did, per blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushStats {
    pub blobs_uploaded: u64,
    pub blobs_skipped: u64,
    pub blobs_mounted: u64,
    pub bytes_uploaded: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    /// The full reference pushed to.
    pub reference: String,
    pub manifest_digest: Digest,
    #[serde(flatten)]
    pub stats: PushStats,
}

enum Outcome {
    Skipped,
    Mounted,
    Uploaded(u64),
}

/// Pushes the manifest `manifest` (of type `media_type`, stored in `store` together with every
/// blob in `blobs`) to `target` (its tag, or its digest when it has none). `mount_from` names a
/// repository of the same registry that may already hold some blobs (the base image's).
pub fn push_manifest(
    client: &Client,
    store: &BlobStore,
    target: &Reference,
    manifest: &[u8],
    media_type: &str,
    blobs: &[Descriptor],
    mount_from: Option<&str>,
) -> Result<PushReport> {
    push_answered(
        client, store, target, manifest, media_type, blobs, mount_from,
    )
    .map(|(report, _)| report)
}

/// [`push_manifest`], also giving the registry's `OCI-Subject` answer: the subject digest a
/// registry with the referrers API indexed the manifest under.
pub(crate) fn push_answered(
    client: &Client,
    store: &BlobStore,
    target: &Reference,
    manifest: &[u8],
    media_type: &str,
    blobs: &[Descriptor],
    mount_from: Option<&str>,
) -> Result<(PushReport, Option<String>)> {
    let also_pull: Vec<&str> = mount_from.into_iter().collect();
    let repo = client.repo(target, "pull,push", &also_pull);
    let manifest_digest = Digest::of(manifest);
    if let Some(expected) = &target.digest {
        if expected != &manifest_digest {
            return Err(repo.error(format!(
                "cannot push to {target}: the manifest's digest is {manifest_digest}"
            )));
        }
    }
    let mut seen = BTreeSet::new();
    let unique: Vec<&Descriptor> = blobs
        .iter()
        .filter(|d| seen.insert(d.digest.clone()))
        .collect();
    for d in &unique {
        if !store.contains(&d.digest) {
            return Err(repo.error(format!(
                "blob {} is not in the local store {}",
                d.digest,
                store.root().display()
            )));
        }
    }
    let stats = Mutex::new(PushStats::default());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let workers = client.opts.max_concurrency.clamp(1, unique.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = unique.get(i) else { break };
                if lock(&first_error).is_some() {
                    break;
                }
                match push_blob(&repo, store, d, mount_from) {
                    Ok(outcome) => {
                        let mut s = lock(&stats);
                        match outcome {
                            Outcome::Skipped => s.blobs_skipped += 1,
                            Outcome::Mounted => s.blobs_mounted += 1,
                            Outcome::Uploaded(bytes) => {
                                s.blobs_uploaded += 1;
                                s.bytes_uploaded += bytes;
                            }
                        }
                    }
                    Err(e) => {
                        lock(&first_error).get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    // Only now that every blob is there does the tag move.
    let name = match (&target.tag, &target.digest) {
        (Some(tag), _) => tag.clone(),
        (None, Some(digest)) => digest.to_string(),
        (None, None) => "latest".to_owned(),
    };
    let response = repo.send(
        &Req::new("PUT", repo.url(&format!("manifests/{name}")))
            .header("Content-Type", media_type)
            .body(Body::Bytes(manifest)),
        &format!("pushing manifest {name}"),
    )?;
    if let Some(answered) = response.header("docker-content-digest") {
        if answered != manifest_digest.as_str() {
            return Err(repo.error(format!(
                "registry stored manifest {name} as {answered}, expected {manifest_digest}"
            )));
        }
    }
    let subject = response.header("oci-subject").map(str::to_owned);
    let stats = stats.into_inner().unwrap_or_else(|e| e.into_inner());
    let report = PushReport {
        reference: target.to_string(),
        manifest_digest,
        stats,
    };
    Ok((report, subject))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes sure the registry has blob `d`, retrying the whole upload on a retryable failure.
fn push_blob(
    repo: &Repo<'_>,
    store: &BlobStore,
    d: &Descriptor,
    mount_from: Option<&str>,
) -> Result<Outcome> {
    let what = format!("checking blob {}", d.digest);
    match repo.send(
        &Req::new("HEAD", repo.url(&format!("blobs/{}", d.digest))),
        &what,
    ) {
        Ok(_) => return Ok(Outcome::Skipped),
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(e),
    }
    let mut attempt = 0;
    loop {
        match upload_blob(repo, store, d, mount_from) {
            Err(e) if retryable(&e) && attempt < repo.opts().retries => {
                std::thread::sleep(repo.opts().backoff * 2u32.saturating_pow(attempt));
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn retryable(e: &Error) -> bool {
    matches!(e, Error::Unreachable { .. }) || e.status().is_some_and(|s| s >= 500)
}

fn upload_blob(
    repo: &Repo<'_>,
    store: &BlobStore,
    d: &Descriptor,
    mount_from: Option<&str>,
) -> Result<Outcome> {
    let what = format!("uploading blob {}", d.digest);
    let mut start = repo.url("blobs/uploads/");
    if let Some(from) = mount_from.filter(|f| *f != repo.repository) {
        start.push_str(&format!("?mount={}&from={from}", d.digest));
    }
    let response = repo.send(&Req::new("POST", start).no_retry(), &what)?;
    // 201: the registry mounted the blob from `from`; 202: an upload session to fill.
    if response.status() == 201 {
        return Ok(Outcome::Mounted);
    }
    let mut location = location(repo, &response, &what)?;
    let path = store.path(&d.digest);
    let chunk = repo.opts().chunk_size.max(1);
    if d.size > chunk {
        let mut offset = 0;
        while offset < d.size {
            let len = chunk.min(d.size - offset);
            let response = repo.send(
                &Req::new("PATCH", location.clone())
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", format!("{offset}-{}", offset + len - 1))
                    .body(Body::File {
                        path: &path,
                        offset,
                        len,
                    })
                    .no_retry(),
                &what,
            )?;
            location = self::location(repo, &response, &what)?;
            offset += len;
        }
        repo.send(
            &Req::new("PUT", with_digest(&location, &d.digest)).no_retry(),
            &what,
        )?;
    } else {
        repo.send(
            &Req::new("PUT", with_digest(&location, &d.digest))
                .header("Content-Type", "application/octet-stream")
                .body(Body::File {
                    path: &path,
                    offset: 0,
                    len: d.size,
                })
                .no_retry(),
            &what,
        )?;
    }
    Ok(Outcome::Uploaded(d.size))
}

fn location(repo: &Repo<'_>, response: &ureq::Response, what: &str) -> Result<String> {
    response
        .header("location")
        .map(|l| repo.resolve(l))
        .ok_or_else(|| repo.error(format!("{what}: the registry sent no upload Location")))
}

fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}
