//! The build plan: for each passing buildpack, its resolved steps, layers and processes, plus the
//! image's processes with the default first. Source-file templates (`${toml:…}`, `${json:…}`) are
//! resolved here; `${app}` and `${layer:…}` in steps stay for the engine (host paths), and are
//! expanded to image paths (`/workspace`, `/layers/<id>/<name>`) in processes and launch env.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::detect::Detection;
use crate::error::Result;
use crate::project::ProjectConfig;
use crate::set::BuildpackSet;
use crate::spec::LayerSpec;

/// Where the app lives in the image.
pub const APP_DIR: &str = "/workspace";
/// Root of buildpack layers in the image: `/layers/<buildpack>/<layer>`.
pub const LAYERS_DIR: &str = "/layers";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub buildpacks: Vec<PlannedBuildpack>,
    /// Default process first, then the others by type.
    pub processes: Vec<Process>,
    /// Image `Env` additions from all buildpacks' `[launch.env]`, expanded.
    pub launch_env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedBuildpack {
    pub id: String,
    pub version: String,
    /// Why it passed detection.
    pub reason: String,
    pub steps: Vec<Step>,
    pub layers: Vec<LayerSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    /// Buildpack `[build.env]`, then project `kiln.toml` `[build.env]`, then step `env` (last wins).
    pub env: BTreeMap<String, String>,
    pub workdir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    #[serde(rename = "type")]
    pub kind: String,
    /// The argv the container runs (shell commands already wrapped in `/bin/sh -c`).
    pub command: Vec<String>,
    pub default: bool,
    /// The buildpack that declared it (later buildpacks override earlier ones by type).
    pub buildpack: String,
}

/// Builds the plan for the passing buildpacks of `detection`.
pub fn plan(
    set: &BuildpackSet,
    detection: &Detection,
    project: &ProjectConfig,
    src: &Path,
) -> Result<Plan> {
    let _ = (set, detection, project, src);
    todo!()
}
