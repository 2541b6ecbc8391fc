//! What the user pins over detection: `kiln.toml` and `KILN_*` environment variables, merged
//! with their precedence (environment > `kiln.toml` > detected).
//!
//! | Variable | Meaning |
//! |----------|---------|
//! | `KILN_BUILDPACKS=go,procfile` | run exactly these buildpacks, in this order |
//! | `KILN_<ID>_VERSION` (`KILN_NODEJS_VERSION`, `KILN_PYTHON_VERSION`, …) | version requirement |
//! | `KILN_NODE_VERSION` | alias of `KILN_NODEJS_VERSION` |
//! | `KILN_START_CMD` (or `KILN_START_COMMAND`) | the `web` process command line |
//! | `KILN_INSTALL_CMD`, `KILN_BUILD_CMD` | the main buildpack's `install` / `build` step |
//! | `KILN_APP=apps/web` | the monorepo app (workspace member) to build and start |
//! | `KILN_LINK=static\|glibc` | how the rust buildpack links the binary |
//!
//! The environment is an explicit input ([`Settings::resolve`] takes a map), so tests never touch
//! the process environment; [`kiln_env`] reads it for callers that want the real one.

use std::collections::BTreeMap;

use crate::analyze::Sourced;
use crate::project::ProjectConfig;

/// The `KILN_*` variables of `env` (a caller's environment).
pub fn kiln_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| k.starts_with("KILN_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Pins over detection, each with where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Buildpack ids to run instead of detecting, and the source of the pin.
    pub buildpacks: Option<(Vec<String>, String)>,
    /// Version requirement by buildpack id.
    pub versions: BTreeMap<String, Sourced>,
    /// Process command line by type, with its source.
    pub processes: BTreeMap<String, (String, String)>,
    /// Shell command lines replacing the main buildpack's step of that name (`install`,
    /// `build`), with their source.
    pub steps: BTreeMap<String, (String, String)>,
    /// The monorepo app (a workspace member's directory, `apps/web`), with its source.
    pub app: Option<(String, String)>,
    /// How compiled binaries link (`static` or `glibc`, read by the rust analyzer), with its
    /// source.
    pub link: Option<(String, String)>,
}

impl Settings {
    pub fn resolve(project: &ProjectConfig, env: &BTreeMap<String, String>) -> Settings {
        let mut settings = Settings::default();
        if let Some(app) = &project.app {
            settings.app = Some((normalize_dir(app), "kiln.toml app".to_owned()));
        }
        if let Some(app) = env.get("KILN_APP").filter(|v| !v.trim().is_empty()) {
            settings.app = Some((normalize_dir(app), "KILN_APP".to_owned()));
        }
        if let Some(link) = &project.build.link {
            settings.link = Some((link.trim().to_owned(), "kiln.toml build.link".to_owned()));
        }
        if let Some(link) = env.get("KILN_LINK").filter(|v| !v.trim().is_empty()) {
            settings.link = Some((link.trim().to_owned(), "KILN_LINK".to_owned()));
        }
        if let Some(ids) = &project.buildpacks {
            settings.buildpacks = Some((ids.clone(), project.source_of("buildpacks")));
        }
        if let Some(list) = env.get("KILN_BUILDPACKS").filter(|v| !v.trim().is_empty()) {
            let ids = list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
            settings.buildpacks = Some((ids.collect(), "KILN_BUILDPACKS".to_owned()));
        }
        for (id, version) in &project.versions {
            settings.versions.insert(
                id.clone(),
                Sourced {
                    version: version.clone(),
                    from: project.source_of(&format!("versions.{id}")),
                },
            );
        }
        for (key, value) in env {
            let Some(name) = key
                .strip_prefix("KILN_")
                .and_then(|k| k.strip_suffix("_VERSION"))
            else {
                continue;
            };
            let id = match name {
                "NODE" => "nodejs".to_owned(),
                other => other.to_ascii_lowercase().replace('_', "-"),
            };
            settings.versions.insert(
                id,
                Sourced {
                    version: value.clone(),
                    from: key.clone(),
                },
            );
        }
        if let Some(start) = &project.build.start {
            settings.processes.insert(
                "web".to_owned(),
                (start.clone(), project.source_of("build.start")),
            );
        }
        for (step, command) in [
            ("install", &project.build.install),
            ("build", &project.build.build),
        ] {
            if let Some(command) = command {
                settings.steps.insert(
                    step.to_owned(),
                    (command.clone(), project.source_of(&format!("build.{step}"))),
                );
            }
        }
        for (step, key) in [("install", "KILN_INSTALL_CMD"), ("build", "KILN_BUILD_CMD")] {
            if let Some(command) = env.get(key).filter(|c| !c.trim().is_empty()) {
                settings
                    .steps
                    .insert(step.to_owned(), (command.clone(), key.to_owned()));
            }
        }
        for (kind, command) in &project.processes {
            settings.processes.insert(
                kind.clone(),
                (command.clone(), format!("kiln.toml processes.{kind}")),
            );
        }
        for key in ["KILN_START_COMMAND", "KILN_START_CMD"] {
            if let Some(command) = env.get(key).filter(|c| !c.trim().is_empty()) {
                settings
                    .processes
                    .insert("web".to_owned(), (command.clone(), key.to_owned()));
            }
        }
        settings
    }
}

/// `./apps/web/` → `apps/web`: the form workspace members are named in.
fn normalize_dir(dir: &str) -> String {
    let dir = dir.trim();
    let dir = dir.strip_prefix("./").unwrap_or(dir);
    dir.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_beats_kiln_toml() {
        let project: ProjectConfig = toml::from_str(
            "app = \"apps/admin\"\nbuildpacks = [\"nodejs\"]\n[versions]\nnodejs = \"20\"\npython = \"3.12\"\n[processes]\nweb = \"a\"\n",
        )
        .unwrap();
        let env = BTreeMap::from([
            ("KILN_BUILDPACKS".to_owned(), "go, procfile".to_owned()),
            ("KILN_NODE_VERSION".to_owned(), "22".to_owned()),
            ("KILN_START_COMMAND".to_owned(), "b".to_owned()),
            ("KILN_APP".to_owned(), "./apps/web/".to_owned()),
        ]);
        let s = Settings::resolve(&project, &env);
        assert_eq!(s.buildpacks.unwrap().0, ["go", "procfile"]);
        assert_eq!(s.versions["nodejs"].version, "22");
        assert_eq!(s.versions["nodejs"].from, "KILN_NODE_VERSION");
        assert_eq!(s.versions["python"].from, "kiln.toml versions.python");
        assert_eq!(s.processes["web"].0, "b");
        assert_eq!(s.app, Some(("apps/web".to_owned(), "KILN_APP".to_owned())));
        let s = Settings::resolve(&project, &BTreeMap::new());
        assert_eq!(s.app.unwrap().1, "kiln.toml app");
    }
}
