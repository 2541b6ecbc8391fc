//! The image's config labels: what Kiln derives (the OCI `org.opencontainers.image.*`
//! annotations' label twins from the git checkout, the creation time and the app's declared
//! version), under `kiln.toml` `[labels]`, under `--label`. Kiln's own `dev.kiln.*` labels are
//! added at export and cannot be set here.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_buildpack::plan::Plan;
use kiln_buildpack::project::{check_label_key, ProjectConfig};

use crate::error::{Error, Result};
use crate::git;

pub const SOURCE: &str = "org.opencontainers.image.source";
pub const REVISION: &str = "org.opencontainers.image.revision";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const VERSION: &str = "org.opencontainers.image.version";

/// The labels for an image built from `src` (the source directory given, which may lie below
/// the checkout's root) with `plan`, created at `created` (RFC 3339). Precedence: `cli` (from
/// `--label`) over `project` (`kiln.toml` `[labels]`) over the derived ones.
pub fn image_labels(
    src: &Path,
    app_src: &Path,
    plan: &Plan,
    project: &ProjectConfig,
    cli: &BTreeMap<String, String>,
    created: &str,
) -> Result<BTreeMap<String, String>> {
    for key in cli.keys() {
        check_label_key(key)
            .map_err(|why| Error::Options(format!("--label {key:?}: key {why}")))?;
    }
    let mut labels = BTreeMap::from([(CREATED.to_owned(), created.to_owned())]);
    if let Some(info) = git::read(src) {
        if let Some(origin) = info.origin {
            labels.insert(SOURCE.to_owned(), origin);
        }
        if let Some(revision) = info.revision {
            labels.insert(REVISION.to_owned(), revision);
        }
    }
    if let Some(version) = app_version(app_src, plan)? {
        labels.insert(VERSION.to_owned(), version);
    }
    labels.extend(project.labels.clone());
    labels.extend(cli.clone());
    Ok(labels)
}

/// The version the app declares, read by the default process's buildpack's rules first, then
/// by the other buildpacks' in plan order.
fn app_version(app_src: &Path, plan: &Plan) -> Result<Option<String>> {
    let main = plan.processes.first().map(|p| p.buildpack.as_str());
    let ids = main
        .into_iter()
        .chain(plan.buildpacks.iter().map(|b| b.id.as_str()));
    for id in ids {
        if let Some(found) = kiln_buildpack::analyze::app_version(app_src, id)? {
            return Ok(Some(found.version));
        }
    }
    Ok(None)
}

/// `KEY=VALUE` as `--label` takes it (the value may be empty or hold `=`).
pub fn parse_label(pair: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("--label {pair:?}: expected KEY=VALUE"))?;
    check_label_key(key).map_err(|why| format!("--label {pair:?}: key {why}"))?;
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_arguments() {
        assert_eq!(
            parse_label("a.b=x=y").unwrap(),
            ("a.b".to_owned(), "x=y".to_owned())
        );
        assert_eq!(parse_label("k=").unwrap().1, "");
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
        assert!(parse_label("dev.kiln.metadata=x")
            .unwrap_err()
            .contains("reserved"));
    }

    #[test]
    fn cli_over_project_over_derived() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(&git).unwrap();
        std::fs::write(git.join("HEAD"), format!("{}\n", "a".repeat(40))).unwrap();
        std::fs::write(
            git.join("config"),
            "[remote \"origin\"]\n\turl = https://u:p@example.com/app.git\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("package.json"), r#"{"version":"3.1.0"}"#).unwrap();
        let plan = Plan {
            schema_version: 1,
            app_root: None,
            versions: BTreeMap::new(),
            buildpacks: Vec::new(),
            processes: vec![kiln_buildpack::plan::Process {
                kind: "web".into(),
                command: vec!["node".into(), "server.js".into()],
                default: true,
                buildpack: "nodejs".into(),
            }],
            launch_env: BTreeMap::new(),
            no_default_process: None,
            warnings: Vec::new(),
        };
        let mut project = ProjectConfig::default();
        project
            .labels
            .insert(REVISION.to_owned(), "from-kiln-toml".to_owned());
        project.labels.insert("team".to_owned(), "a".to_owned());
        let cli = BTreeMap::from([("team".to_owned(), "b".to_owned())]);
        let labels = image_labels(
            dir.path(),
            dir.path(),
            &plan,
            &project,
            &cli,
            "1980-01-01T00:00:01Z",
        )
        .unwrap();
        assert_eq!(labels[SOURCE], "https://example.com/app.git");
        assert_eq!(labels[REVISION], "from-kiln-toml");
        assert_eq!(labels[CREATED], "1980-01-01T00:00:01Z");
        assert_eq!(labels["team"], "b");
        // The default process is the nodejs buildpack's: package.json's version.
        assert_eq!(labels[VERSION], "3.1.0");
        // A label given as empty is kept empty (the user's choice, over the derived value).
        let cli = BTreeMap::from([(VERSION.to_owned(), String::new())]);
        let labels = image_labels(dir.path(), dir.path(), &plan, &project, &cli, "x").unwrap();
        assert_eq!(labels[VERSION], "");
    }
}
