//! Writing images out: an OCI layout directory, or an OCI layout packed in a tar that also carries
//! Docker's `manifest.json` pointing into `blobs/sha256/` (the hybrid Docker ≥ 25 writes), so one
//! file loads with `docker load`, `podman load`, `skopeo copy oci-archive:` and `docker-archive:`.
//!
//! Outputs are written to a temporary sibling path and renamed into place only when complete. The
//! archive's own tar is deterministic (sorted entries, fixed mtime), so the same image gives the
//! same archive bytes.

use std::path::Path;

use crate::error::Result;
use crate::image::Image;
use crate::reference::Reference;
use crate::store::BlobStore;

/// Writes `image` as an `oci-archive` tarball at `out`. With `tag`, the index entry carries
/// `io.containerd.image.name` (full name) and `org.opencontainers.image.ref.name` (the tag, as
/// Docker ≥ 25 writes it) and `manifest.json` gets `RepoTags: [familiar name]`.
pub fn write_oci_archive(
    store: &BlobStore,
    image: &Image,
    tag: Option<&Reference>,
    out: &Path,
) -> Result<()> {
    let _ = (store, image, tag, out);
    todo!()
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
    let _ = (store, image, tag, out);
    todo!()
}
