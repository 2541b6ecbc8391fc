//! `kiln-debian`: Debian packages in, deterministic layer entries out.
//!
//! One job: turn a set of Debian package names into [`kiln_oci::layer::Entry`] lists that Kiln
//! writes as image layers, with every downloaded byte verified and nothing ever unpacked onto
//! the host root. It knows nothing about buildpacks or builds.
//!
//! Chain of trust and data flow:
//! 1. [`mirror`]: which mirror (caller-given, else the host's apt sources; no built-in host).
//! 2. [`release`]: `dists/SUITE/InRelease`, its OpenPGP signature verified against the Debian
//!    archive keys embedded in the crate (or a keyring file); expired releases are refused.
//! 3. [`index`]: `main/binary-ARCH/Packages.xz`, checked against the Release's size and sha256
//!    before it is decompressed, parsed into typed [`index::Package`]s.
//! 4. [`resolve`]: the closure over `Pre-Depends`/`Depends` ([`relation`], [`version`]).
//! 5. [`fetch`]: each `.deb`, checked against the Packages size and sha256 before use; indexes
//!    and packages live in a content-addressed [`kiln_oci::store::BlobStore`], so a warm
//!    rebuild needs no network.
//! 6. [`deb`]: a `.deb`'s `data.tar` as layer entries (file bytes in the blob store), paths
//!    checked as base-image archives are.
//! 7. [`stack`]: a root from packages — merged-`/usr`, what maintainer scripts would have made
//!    (CA bundle, `/etc/passwd`, alternatives links), `/var/lib/dpkg/status.d` for scanners —
//!    as ordered layers; [`lock`] pins it (`kiln.lock`).

pub mod build_root;
pub mod control;
pub mod deb;
pub mod error;
pub mod fetch;
pub mod generate;
mod http;
pub mod index;
pub mod lock;
pub mod mirror;
pub mod relation;
pub mod release;
pub mod resolve;
pub mod root;
pub mod stack;
pub mod version;

pub use error::{Error, Result};
