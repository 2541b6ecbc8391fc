//! What Kiln records about an image it built, in the config label [`LABEL`]: which buildpack and
//! layer made each layer, the processes, and the base image (with its top layer, so a later rebase
//! knows where the base ends). `kiln inspect` reads it back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use kiln_oci::digest::Digest;

pub const LABEL: &str = "dev.kiln.metadata";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetadata {
    /// Bumped on incompatible changes.
    pub version: u32,
    pub base: Option<BaseMetadata>,
    pub buildpacks: Vec<BuildpackRef>,
    /// Kiln's layers, bottom to top (base layers are not listed).
    pub layers: Vec<LayerMetadata>,
    pub processes: Vec<ProcessMetadata>,
    /// Env the buildpacks set for launch, so a rebase can re-apply it over a new base's env.
    /// `None` in images built before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_env: Option<BTreeMap<String, String>>,
    /// The config labels the build set (`--label`, `kiln.toml` `[labels]`, git-derived), so a
    /// rebase re-applies them over a new base's labels. `None` in images built before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// The config `User` the build set (`65532:65532` on Kiln's stacks), so a rebase keeps it.
    /// `None` when the run image's own was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMetadata {
    #[serde(rename = "type")]
    pub kind: String,
    pub command: Vec<String>,
    pub default: bool,
    pub buildpack: String,
}

impl From<&kiln_buildpack::plan::Process> for ProcessMetadata {
    fn from(p: &kiln_buildpack::plan::Process) -> Self {
        ProcessMetadata {
            kind: p.kind.clone(),
            command: p.command.clone(),
            default: p.default,
            buildpack: p.buildpack.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseMetadata {
    /// A registry reference, or the name a local base's index gives it; never a host path.
    /// `None` for an unnamed local base (older images recorded `oci-archive:/path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub digest: Option<Digest>,
    /// diff_id of the base's topmost layer (`None` for an empty base).
    pub top_layer: Option<Digest>,
    pub layer_count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackRef {
    pub id: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMetadata {
    /// `go/bin`, or `app` for the application layer.
    pub name: String,
    pub diff_id: Digest,
}

pub const METADATA_VERSION: u32 = 1;
