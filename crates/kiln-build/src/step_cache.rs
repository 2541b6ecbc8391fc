//! Skipping build steps whose declared inputs are unchanged.
//!
//! A step that declares `inputs` (source globs) and `outputs` (its `cache = true` layers) is keyed
//! by its buildpack id and version, name, command, args, workdir, environment (the caller's step
//! environment and the step's own, unexpanded, so per-build scratch paths never count) and the
//! content of every input file. When the key equals the one recorded by the last *successful*
//! build and every output layer was restored from the cache, the step is skipped: its outputs are
//! already in place. Records are written only after the whole build succeeded.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use walkdir::WalkDir;

use kiln_buildpack::plan::{PlannedBuildpack, Step};
use kiln_oci::digest::Digest;

use crate::cache::write_atomic;
use crate::error::{Error, IoContext, Result};
use crate::ignore::ExcludeRules;

/// Bump when the key's description changes.
const STEP_KEY_VERSION: &str = "kiln-step-key/v1";

/// What a step's last successful run saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub key: Digest,
    /// Input path (relative to the app) → sha256 of its content.
    pub inputs: BTreeMap<String, String>,
}

/// Whether a step runs, and why: reported per step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepDecision {
    /// Inputs, command and environment as recorded; outputs restored.
    Skip {
        inputs: Vec<String>,
    },
    /// The step declares no inputs, so it always runs.
    Always,
    NoCacheRequested,
    NeverRan,
    InputsChanged(Vec<String>),
    /// Same inputs, but the command, args or environment differ.
    DefinitionChanged,
    OutputNotCached(String),
}

impl StepDecision {
    pub fn skipped(&self) -> bool {
        matches!(self, StepDecision::Skip { .. })
    }
}

impl fmt::Display for StepDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepDecision::Skip { inputs } => {
                write!(f, "inputs unchanged ({})", list(inputs))
            }
            StepDecision::Always => f.write_str("declares no inputs"),
            StepDecision::NoCacheRequested => f.write_str("--no-cache"),
            StepDecision::NeverRan => f.write_str("no cache"),
            StepDecision::InputsChanged(paths) => write!(f, "inputs changed: {}", list(paths)),
            StepDecision::DefinitionChanged => f.write_str("command or environment changed"),
            StepDecision::OutputNotCached(layer) => {
                write!(f, "output layer {layer} is not in the cache")
            }
        }
    }
}

fn list(paths: &[String]) -> String {
    match paths.len() {
        0 => "none present".to_owned(),
        1..=3 => paths.join(", "),
        n => format!("{}, … {} more", paths[..3].join(", "), n - 3),
    }
}

/// `steps_dir` is the project's (`BuildCache::steps_dir`): one app's records never decide
/// another app's steps.
fn record_path(steps_dir: &Path, buildpack: &str, step: &str) -> PathBuf {
    steps_dir.join(buildpack).join(format!("{step}.json"))
}

/// Computes the step's record (key and input hashes) as things stand in `app_dir`. `excluded`
/// is given when `app_dir` is the source tree itself, so inputs are read exactly as the working
/// copy would hold them.
pub fn current(
    bp: &PlannedBuildpack,
    step: &Step,
    caller_env: &BTreeMap<String, String>,
    app_dir: &Path,
    excluded: Option<&ExcludeRules>,
) -> Result<StepRecord> {
    let inputs = hash_inputs(&step.inputs, app_dir, excluded)?;
    let mut key = Sha256::new();
    let description = serde_json::json!({
        "version": STEP_KEY_VERSION,
        "buildpack": [&bp.id, &bp.version],
        "step": [&step.name, &step.command, &step.args, &step.workdir],
        "env": [caller_env, &step.env],
        "inputs": &inputs,
    });
    key.update(kiln_oci::json::to_canonical_vec(&description));
    Ok(StepRecord {
        key: Digest::from_sha256(key.finalize().into()),
        inputs,
    })
}

/// Decides whether `step` must run, given its current record and which of its buildpack's cache
/// layers were restored.
pub fn decide(
    steps_dir: &Path,
    bp: &PlannedBuildpack,
    step: &Step,
    current: &StepRecord,
    restored: &dyn Fn(&str) -> bool,
    no_cache: bool,
) -> StepDecision {
    if step.inputs.is_empty() {
        return StepDecision::Always;
    }
    if no_cache {
        return StepDecision::NoCacheRequested;
    }
    let previous: Option<StepRecord> = fs::read(record_path(steps_dir, &bp.id, &step.name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(previous) = previous else {
        return StepDecision::NeverRan;
    };
    if previous.inputs != current.inputs {
        let mut changed: Vec<String> = current
            .inputs
            .iter()
            .filter(|(path, hash)| previous.inputs.get(*path) != Some(hash))
            .map(|(path, _)| path.clone())
            .chain(
                previous
                    .inputs
                    .keys()
                    .filter(|p| !current.inputs.contains_key(*p))
                    .cloned(),
            )
            .collect();
        changed.sort();
        return StepDecision::InputsChanged(changed);
    }
    if previous.key != current.key {
        return StepDecision::DefinitionChanged;
    }
    if let Some(missing) = step.outputs.iter().find(|layer| !restored(layer)) {
        return StepDecision::OutputNotCached(missing.clone());
    }
    StepDecision::Skip {
        inputs: current.inputs.keys().cloned().collect(),
    }
}

/// Records a step's run; called only once the whole build has succeeded.
pub fn save(steps_dir: &Path, buildpack: &str, step: &str, record: &StepRecord) -> Result<()> {
    let path = record_path(steps_dir, buildpack, step);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    let bytes = serde_json::to_vec(record).expect("step records serialize");
    write_atomic(&path, &bytes)
}

/// sha256 of every regular file matching `patterns` under `app_dir` (symlinks are not followed).
fn hash_inputs(
    patterns: &[String],
    app_dir: &Path,
    excluded: Option<&ExcludeRules>,
) -> Result<BTreeMap<String, String>> {
    let is_excluded = |rel: &str| excluded.is_some_and(|rules| rules.is_excluded(rel));
    let mut out = BTreeMap::new();
    if patterns.is_empty() {
        return Ok(out);
    }
    let is_glob = |p: &str| p.contains(['*', '?', '[', '{']);
    let mut globs = GlobSetBuilder::new();
    let mut has_globs = false;
    for pattern in patterns {
        if is_glob(pattern) {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Source {
                    path: app_dir.to_path_buf(),
                    why: format!("step input pattern {pattern:?} is invalid: {e}"),
                })?;
            globs.add(glob);
            has_globs = true;
        } else if !is_excluded(pattern) {
            hash_into(&mut out, app_dir, pattern)?;
        }
    }
    if has_globs {
        let set = globs.build().map_err(|e| Error::Source {
            path: app_dir.to_path_buf(),
            why: format!("step input patterns are invalid: {e}"),
        })?;
        for entry in WalkDir::new(app_dir)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| Error::Source {
                path: app_dir.to_path_buf(),
                why: format!("reading step inputs: {e}"),
            })?;
            let Ok(rel) = entry.path().strip_prefix(app_dir) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            if entry.file_type().is_file() && set.is_match(rel) {
                hash_into(&mut out, app_dir, rel)?;
            }
        }
    }
    Ok(out)
}

fn hash_into(out: &mut BTreeMap<String, String>, app_dir: &Path, rel: &str) -> Result<()> {
    let path = app_dir.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => {
            let mut hasher = Sha256::new();
            let mut file = fs::File::open(&path).ctx(|| format!("reading {}", path.display()))?;
            std::io::copy(&mut file, &mut hasher).ctx(|| format!("reading {}", path.display()))?;
            let digest = Digest::from_sha256(hasher.finalize().into());
            out.insert(rel.to_owned(), digest.hex().to_owned());
        }
        // Absent inputs are part of the key too: creating one later must re-run the step.
        _ => {
            out.insert(rel.to_owned(), "absent".to_owned());
        }
    }
    Ok(())
}
