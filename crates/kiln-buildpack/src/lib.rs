//! `kiln-buildpack`: what a buildpack *is* and what it decides — the `buildpack.toml` format
//! (typed data in [`spec`]), the project's `kiln.toml` ([`project`]), detection against a source
//! tree ([`detect`]), and the resulting build [`plan`]. It runs nothing: the engine (`kiln-build`)
//! executes plans.
//!
//! Flow: [`BuildpackSet`] (built-in or loaded from a directory, in detection order) →
//! [`detect::detect`] → [`plan::plan`] → [`plan::Plan`].

pub mod analyze;
pub mod detect;
pub mod error;
pub mod foreign;
mod manifest;
pub mod plan;
pub mod procfile;
pub mod project;
pub mod set;
pub mod settings;
mod source;
pub mod spec;
pub mod template;

pub use error::{Error, Result};
pub use manifest::check_env_name;
pub use set::{Buildpack, BuildpackSet};
