//! Reading images: base ("run") images for builds and images to inspect.
//!
//! Accepted forms: `scratch`, `oci-archive:PATH[:REF]`, `oci:DIR[:REF]`, `docker-archive:PATH`
//! (as skopeo spells them; the path ends at the first `:`). Blobs are imported into a
//! [`BlobStore`] verbatim (never recompressed), each verified against its digest. Archives are read
//! defensively: an entry with an absolute path, a `..` component, or a link is rejected with an
//! error naming the archive and entry. Multi-platform indexes select the host platform.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::Result;
use crate::spec::{ImageConfig, LayerRecord};
use crate::store::BlobStore;

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
}

impl std::str::FromStr for ImageSource {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<ImageSource> {
        let _ = s;
        todo!()
    }
}

impl std::fmt::Display for ImageSource {
    /// The canonical spelling (`oci-archive:/abs/run.tar:latest`), recorded as the base name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}

/// An image whose layer blobs are in a [`BlobStore`].
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub source: ImageSource,
    /// `None` for `scratch`.
    pub manifest_digest: Option<Digest>,
    /// For `scratch`: an empty config for the host platform.
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
    /// Manifest annotations of the loaded image.
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Loads `source`, importing its blobs into `store`.
pub fn load_image(source: &ImageSource, store: &BlobStore) -> Result<LoadedImage> {
    let _ = (source, store);
    todo!()
}
