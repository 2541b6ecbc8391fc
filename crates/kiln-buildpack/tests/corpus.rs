//! The detection corpus: every case under `fixtures/detect/<case>/` is detected and planned with
//! the built-in buildpacks, and the result (or the error) is compared with the committed snapshot
//! `fixtures/detect-snapshots/<case>.json`.
//!
//! `KILN_UPDATE_SNAPSHOTS=1 cargo test -p kiln-buildpack --test corpus` rewrites the snapshots;
//! without it a missing or different snapshot fails (so CI never accepts a new one silently).
//! A case's `KILN_*` variables come from its `.kiln-test-env` file (`KEY=VALUE` lines), never
//! from the process environment.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_buildpack::detect::detect_with;
use kiln_buildpack::plan::plan_with;
use kiln_buildpack::project::ProjectConfig;
use kiln_buildpack::BuildpackSet;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn case_env(dir: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(dir.join(".kiln-test-env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Detection and plan of one case as JSON, with the case's absolute path replaced by `<src>`.
fn run_case(set: &BuildpackSet, dir: &Path) -> Value {
    let env = case_env(dir);
    let result = (|| -> kiln_buildpack::Result<Value> {
        let detection = detect_with(set, dir, &env)?;
        if !detection.detected {
            return Ok(json!({ "detect": detection }));
        }
        let project = ProjectConfig::load(dir)?;
        let plan = plan_with(set, &detection, &project, dir, &env)?;
        Ok(json!({ "detect": detection, "plan": plan }))
    })();
    let value = result.unwrap_or_else(|e| json!({ "error": e.to_string() }));
    let text = serde_json::to_string(&value)
        .unwrap()
        .replace(&dir.display().to_string(), "<src>");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn corpus_matches_snapshots() {
    let set = BuildpackSet::builtin().unwrap();
    let cases_dir = repo().join("fixtures/detect");
    let snapshots = repo().join("fixtures/detect-snapshots");
    let update = std::env::var_os("KILN_UPDATE_SNAPSHOTS").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(&cases_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let actual = serde_json::to_string_pretty(&run_case(&set, dir)).unwrap() + "\n";
        let snapshot = snapshots.join(format!("{name}.json"));
        if update {
            fs::create_dir_all(&snapshots).unwrap();
            fs::write(&snapshot, &actual).unwrap();
            continue;
        }
        match fs::read_to_string(&snapshot) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: differs\n--- expected\n{expected}\n--- actual\n{actual}"
            )),
            Err(_) => failures.push(format!(
                "{name}: no snapshot {} (run with KILN_UPDATE_SNAPSHOTS=1)",
                snapshot.display()
            )),
        }
    }
    // Snapshots of removed cases would silently rot.
    if !update {
        for entry in fs::read_dir(&snapshots).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !cases_dir.join(&stem).is_dir() {
                failures.push(format!("{stem}: snapshot without a case"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
