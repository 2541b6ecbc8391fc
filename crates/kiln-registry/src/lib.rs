//! `kiln-registry`: Kiln's one way of speaking the OCI distribution protocol. It pulls images
//! into a [`kiln_oci::store::BlobStore`] (producing the same [`kiln_oci::source::LoadedImage`] a
//! local archive gives) and pushes manifests with their blobs from one; it knows nothing about
//! builds.
//!
//! - [`client`]: HTTP (blocking `ureq` with rustls), TLS policy, retries, auth challenges.
//! - `watch`: low-speed limits and progress lines for transfers.
//! - [`auth`]: credentials (environment, Docker `config.json`, credential helpers), challenges.
//! - [`pull`](pull()) and [`push_manifest`]: the two directions.
//! - [`referrers`]: artifacts (SBOMs) attached to an image, through the referrers API or its
//!   fallback tag.

pub mod auth;
pub mod client;
pub mod error;
mod pull;
mod push;
pub mod referrers;
mod watch;

pub use client::{Client, ClientOptions, RegistryHost};
pub use error::{Error, Result};
pub use pull::{pull, pull_artifact_manifest, pull_blobs, PullStats};
pub use push::{push_manifest, PushReport, PushStats};
pub use referrers::{attach, referrers, AttachReport, Listed};
pub use watch::{silent, Progress, Transfer};
