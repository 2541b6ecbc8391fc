//! OCI referrers (distribution-spec 1.1): attaching an artifact — an SBOM — to the image it is
//! about, and listing what is attached to an image.
//!
//! An artifact is a manifest whose `subject` is the image's manifest descriptor. A registry with
//! the referrers API indexes it itself, and says so by answering the manifest push with an
//! `OCI-Subject` header. For the others (distribution 2.x, most self-hosted registries) the
//! client keeps the list, as the spec's referrers tag schema says: an image index tagged
//! `sha256-<hex of the subject digest>` whose entries are the artifacts' descriptors (with their
//! `artifactType` and annotations). Updating that index is read-modify-write: two clients
//! attaching to the same image at the same moment can lose one entry (the spec accepts this for
//! the fallback; the artifact itself is still pushed and reachable by digest).

use serde::Serialize;

use kiln_oci::digest::Digest;
use kiln_oci::json;
use kiln_oci::reference::Reference;
use kiln_oci::spec::{
    Descriptor, ImageIndex, ImageManifest, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use kiln_oci::store::BlobStore;

use crate::client::{Body, Client, Repo, Req};
use crate::error::Result;
use crate::pull::get_document;
use crate::push::push_answered;

/// How an attached artifact can be found from its subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "via")]
pub enum Listed {
    /// The registry indexed the artifact itself (it answered the push with `OCI-Subject`).
    ReferrersApi,
    /// The registry has no referrers API: the artifact is listed in the index at this tag.
    FallbackTag { tag: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachReport {
    /// `registry/repository@digest` of the artifact manifest.
    pub reference: String,
    pub manifest_digest: Digest,
    pub artifact_type: String,
    /// The image the artifact refers to.
    pub subject: Digest,
    #[serde(flatten)]
    pub listed: Listed,
}

/// Pushes the artifact manifest `manifest` (serialized as `bytes`; its config and layers in
/// `store`) to `repository`'s repository and makes it findable from its `subject`.
pub fn attach(
    client: &Client,
    store: &BlobStore,
    repository: &Reference,
    manifest: &ImageManifest,
    bytes: &[u8],
) -> Result<AttachReport> {
    let repo = client.repo(repository, "pull,push", &[]);
    let (Some(subject), Some(artifact_type)) = (&manifest.subject, &manifest.artifact_type) else {
        return Err(repo.error("an artifact to attach needs a subject and an artifactType"));
    };
    let digest = Digest::of(bytes);
    let target = Reference {
        tag: None,
        digest: Some(digest.clone()),
        ..repository.clone()
    };
    let blobs: Vec<Descriptor> = std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect();
    let (_, answered) = push_answered(
        client,
        store,
        &target,
        bytes,
        MEDIA_TYPE_MANIFEST,
        &blobs,
        None,
    )?;
    let listed = if answered.as_deref() == Some(subject.digest.as_str()) {
        Listed::ReferrersApi
    } else {
        let entry = Descriptor {
            media_type: MEDIA_TYPE_MANIFEST.to_owned(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            annotations: manifest.annotations.clone(),
            platform: None,
            artifact_type: Some(artifact_type.clone()),
        };
        let tag = fallback_tag(&subject.digest);
        add_to_fallback_index(&repo, &tag, entry)?;
        Listed::FallbackTag { tag }
    };
    Ok(AttachReport {
        reference: target.to_string(),
        manifest_digest: digest,
        artifact_type: artifact_type.clone(),
        subject: subject.digest.clone(),
        listed,
    })
}

/// The artifacts attached to `subject` in `repository`'s repository (of `artifact_type` only,
/// when given), through the referrers API where the registry has it, else the fallback tag.
pub fn referrers(
    client: &Client,
    repository: &Reference,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<Descriptor>> {
    let repo = client.repo(repository, "pull", &[]);
    let what = format!("listing the referrers of {subject}");
    let index = match get_document(
        &repo,
        &format!("referrers/{subject}"),
        MEDIA_TYPE_INDEX,
        &what,
    ) {
        Ok((bytes, _)) => parse_index(&repo, &bytes, &what)?,
        // No referrers API here (distribution answers 404 for the unknown route).
        Err(e) if e.status() == Some(404) => {
            fallback_index(&repo, &fallback_tag(subject))?.unwrap_or_else(empty_index)
        }
        Err(e) => return Err(e),
    };
    // A registry may ignore the filter (it says so in `OCI-Filters-Applied`): filter here too.
    Ok(index
        .manifests
        .into_iter()
        .filter(|d| artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)))
        .collect())
}

/// `sha256-<hex>`: the referrers tag schema's tag for `subject`.
pub fn fallback_tag(subject: &Digest) -> String {
    subject.as_str().replacen(':', "-", 1)
}

fn add_to_fallback_index(repo: &Repo<'_>, tag: &str, entry: Descriptor) -> Result<()> {
    let mut index = fallback_index(repo, tag)?.unwrap_or_else(empty_index);
    if index.manifests.iter().any(|d| d.digest == entry.digest) {
        return Ok(());
    }
    index.manifests.push(entry);
    let bytes = json::to_canonical_vec(&index);
    repo.send(
        &Req::new("PUT", repo.url(&format!("manifests/{tag}")))
            .header("Content-Type", MEDIA_TYPE_INDEX)
            .body(Body::Bytes(&bytes)),
        &format!("updating the referrers index {tag}"),
    )?;
    Ok(())
}

/// The index at the fallback tag; `None` when there is none yet.
fn fallback_index(repo: &Repo<'_>, tag: &str) -> Result<Option<ImageIndex>> {
    let what = format!("reading the referrers index {tag}");
    match get_document(repo, &format!("manifests/{tag}"), MEDIA_TYPE_INDEX, &what) {
        Ok((bytes, _)) => parse_index(repo, &bytes, &what).map(Some),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse_index(repo: &Repo<'_>, bytes: &[u8], what: &str) -> Result<ImageIndex> {
    serde_json::from_slice(bytes)
        .map_err(|e| repo.error(format!("{what}: not an image index: {e}")))
}

fn empty_index() -> ImageIndex {
    ImageIndex {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX.to_owned(),
        manifests: Vec::new(),
        annotations: Default::default(),
    }
}
