//! `kiln-oci`: the OCI image model and its I/O — deterministic layer tars, a content-addressed blob
//! store, canonical JSON for configs/manifests/indexes, reading base images and writing OCI archives
//! and layout directories. It knows nothing about buildpacks or builds.
//!
//! Data flows: host files → [`layer::Entry`] list → [`layer::write_layer`] (one streaming pass:
//! tar → sha256 (diff_id) → gzip → sha256 (digest) → blob in the [`store::BlobStore`]) →
//! [`image::assemble`] (config + manifest blobs) → [`archive::write_oci_archive`] /
//! [`archive::write_oci_dir`]. Base images come in through [`source::load_image`].

pub mod archive;
pub mod compress;
pub mod digest;
pub mod error;
pub mod image;
mod io_util;
pub mod json;
pub mod layer;
pub mod reference;
pub mod source;
pub mod spec;
pub mod store;
#[cfg(test)]
mod test_util;

pub use digest::Digest;
pub use error::{Error, Result};
