//! Other tools' project files, mapped onto `kiln.toml`: Cloud Native Buildpacks' `project.toml`,
//! Railpack's `railpack.json` and Nixpacks' `nixpacks.toml`. Each becomes a partial
//! [`ProjectConfig`] whose fields carry their source (`railpack.json deploy.startCommand`);
//! `kiln.toml` wins field by field, then the files in that order. A key with no Kiln equivalent
//! is a warning naming it, never silently dropped; a key of the wrong type is an error naming
//! the file and key.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::manifest::{self, invalid};
use crate::project::ProjectConfig;

/// The files read, in precedence order after `kiln.toml`.
pub const FILES: [&str; 3] = ["project.toml", "railpack.json", "nixpacks.toml"];

/// What one foreign file says, in Kiln's terms.
#[derive(Debug, Default)]
pub(crate) struct Mapped {
    pub config: ProjectConfig,
    /// Settings key (`build.start`, `versions.nodejs`, `buildpacks`) → where it came from.
    pub sources: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

/// Reads the foreign project files present at `src`, in precedence order.
pub(crate) fn read_all(src: &Path) -> Result<Vec<Mapped>> {
    let mut mapped = Vec::new();
    for name in FILES {
        let Some(text) = manifest::read_project_file(src, name)? else {
            continue;
        };
        let path = src.join(name);
        mapped.push(match name {
            "project.toml" => project_toml(&manifest::parse_toml(&text, &path)?, &path)?,
            "railpack.json" => railpack(&parse_json(&text, &path)?, &path)?,
            _ => nixpacks(&manifest::parse_toml(&text, &path)?, &path)?,
        });
    }
    Ok(mapped)
}

fn parse_json(text: &str, path: &Path) -> Result<Json> {
    serde_json::from_str(text).map_err(|e| Error::Manifest {
        path: path.to_path_buf(),
        line: Some(e.line()),
        column: Some(e.column()),
        message: e.to_string(),
    })
}

/// Kiln buildpacks another tool names the same way (a unit test keeps it to built-in ids).
const SAME_NAME: [&str; 23] = [
    "nodejs", "python", "go", "ruby", "php", "java", "dotnet", "rust", "elixir", "deno",
    "procfile", "static", "shell", "clojure", "crystal", "dart", "gleam", "haskell", "scala",
    "swift", "zig", "cobol", "cpp",
];

/// A Kiln buildpack id for another tool's buildpack or provider name (`paketo-buildpacks/nodejs`,
/// `heroku/python`, `node`).
fn kiln_buildpack(name: &str) -> Option<&'static str> {
    match name.rsplit('/').next().unwrap_or(name) {
        "node" | "bun" => Some("nodejs"),
        "golang" => Some("go"),
        "java-maven" | "maven" | "gradle" => Some("java"),
        "dotnet-core" | "csharp" | "fsharp" => Some("dotnet"),
        "staticfile" => Some("static"),
        other => SAME_NAME.into_iter().find(|id| *id == other),
    }
}

/// The buildpack id whose version a tool-version key (`node`, `python`) pins.
fn versioned_buildpack(tool: &str) -> Option<&'static str> {
    match tool {
        "bun" | "pnpm" | "yarn" | "npm" | "uv" | "poetry" => None,
        tool => kiln_buildpack(tool),
    }
}

/// Builds the mapping of one file: typed accessors that name the key in errors, and a warning
/// for every key it does not map.
struct Mapper<'a> {
    path: &'a Path,
    file: &'static str,
    out: Mapped,
}

impl<'a> Mapper<'a> {
    fn new(path: &'a Path, file: &'static str) -> Self {
        Mapper {
            path,
            file,
            out: Mapped::default(),
        }
    }

    fn unmapped(&mut self, key: &str, why: &str) {
        self.out
            .warnings
            .push(format!("{}: {key} {why}; ignored", self.file));
    }

    fn source(&mut self, setting: &str, key: &str) {
        self.out
            .sources
            .insert(setting.to_owned(), format!("{} {key}", self.file));
    }

    fn wrong_type(&self, key: &str, want: &str) -> Error {
        invalid(self.path, format!("{key} must be {want}"))
    }

    fn string(&self, value: &Json, key: &str) -> Result<String> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.wrong_type(key, "a string"))
    }

    fn strings(&self, value: &Json, key: &str) -> Result<Vec<String>> {
        let list = value
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "an array of strings"))?;
        list.iter()
            .map(|v| self.string(v, key))
            .collect::<Result<_>>()
    }

    fn table<'v>(&self, value: &'v Json, key: &str) -> Result<&'v serde_json::Map<String, Json>> {
        value
            .as_object()
            .ok_or_else(|| self.wrong_type(key, "a table"))
    }

    /// `KEY = "value"` pairs (env variables), names checked like `kiln.toml`'s.
    fn env(&self, value: &Json, key: &str) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for (name, v) in self.table(value, key)? {
            let v = match v {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                Json::Bool(b) => b.to_string(),
                _ => return Err(self.wrong_type(&format!("{key}.{name}"), "a string")),
            };
            env.insert(name.clone(), v);
        }
        manifest::check_env_names(env.keys(), key, self.path)?;
        Ok(env)
    }

    /// Shell command lines joined into one (`a && b`); `"..."` (the tool's own commands
    /// around the listed ones) has no Kiln equivalent: the listed ones replace Kiln's step.
    fn commands(&mut self, lines: Vec<String>, key: &str) -> Option<String> {
        let (listed, detected): (Vec<String>, Vec<String>) =
            lines.into_iter().partition(|l| l != "...");
        if !listed.is_empty() && !detected.is_empty() {
            self.out.warnings.push(format!(
                "{}: {key} \"...\" (the detected commands around these) has no Kiln equivalent: \
                 the listed commands replace the planned step",
                self.file
            ));
        }
        (!listed.is_empty()).then(|| listed.join(" && "))
    }

    /// Buildpack names (an order, or a provider list) as Kiln's `buildpacks` pin: only when
    /// every one maps, since a partial order would run something else than the file says.
    fn buildpacks(&mut self, names: &[String], key: &str) {
        let ids: Vec<Option<&str>> = names.iter().map(|n| kiln_buildpack(n)).collect();
        match names.iter().zip(&ids).find(|(_, id)| id.is_none()) {
            Some((name, _)) => self.unmapped(
                key,
                &format!("names {name:?}, which has no Kiln buildpack, so detection decides"),
            ),
            None if !ids.is_empty() => {
                let mut pinned: Vec<String> = Vec::new();
                for id in ids.into_iter().flatten() {
                    if !pinned.iter().any(|p| p == id) {
                        pinned.push(id.to_owned());
                    }
                }
                self.out.config.buildpacks = Some(pinned);
                self.source("buildpacks", key);
            }
            None => {}
        }
    }

    fn version(&mut self, tool: &str, version: String, key: &str) {
        match versioned_buildpack(tool) {
            Some(id) => {
                self.out.config.versions.insert(id.to_owned(), version);
                self.source(&format!("versions.{id}"), key);
            }
            None => self.unmapped(
                key,
                "pins a tool Kiln versions from the project's own files",
            ),
        }
    }

    fn start(&mut self, command: String, key: &str) {
        self.out.config.build.start = Some(command);
        self.source("build.start", key);
    }

    fn step(&mut self, step: &str, command: Option<String>, key: &str) {
        if let Some(command) = command {
            match step {
                "install" => self.out.config.build.install = Some(command),
                _ => self.out.config.build.build = Some(command),
            }
            self.source(&format!("build.{step}"), key);
        }
    }
}

fn toml_to_json(table: &toml::Table) -> Json {
    serde_json::to_value(table).unwrap_or(Json::Null)
}

/// CNB `project.toml`, schema 0.2 (`[_]`, `[io.buildpacks]`) and 0.1 (`[project]`, `[build]`).
fn project_toml(table: &toml::Table, path: &Path) -> Result<Mapped> {
    let doc = toml_to_json(table);
    let mut m = Mapper::new(path, "project.toml");
    let (build, build_key) = match doc.get("io") {
        Some(io) => (io.get("buildpacks"), "io.buildpacks"),
        None => (doc.get("build"), "build"),
    };
    for (key, _) in m.table(&doc, "project.toml")?.clone() {
        match key.as_str() {
            "_" | "project" | "io" | "build" => {}
            "metadata" => {}
            other => m.unmapped(other, "has no Kiln equivalent"),
        }
    }
    let meta = doc.get("_").or_else(|| doc.get("project"));
    if let Some(name) = meta.and_then(|p| p.get("name")) {
        let key = if doc.get("_").is_some() {
            "_.name"
        } else {
            "project.name"
        };
        m.out.config.project.name = Some(m.string(name, key)?);
    }
    let Some(build) = build else {
        return Ok(m.out);
    };
    for (key, value) in m.table(build, build_key)?.clone() {
        let full = format!("{build_key}.{key}");
        match key.as_str() {
            "include" => m.out.config.build.include = m.strings(&value, &full)?,
            "exclude" => m.out.config.build.exclude = m.strings(&value, &full)?,
            "group" | "buildpacks" => {
                let groups = value
                    .as_array()
                    .ok_or_else(|| m.wrong_type(&full, "an array of tables"))?;
                let mut ids = Vec::new();
                for group in groups {
                    match group.get("id") {
                        Some(id) => ids.push(m.string(id, &format!("{full}.id"))?),
                        None => m.unmapped(
                            &format!("{full} (a uri without an id)"),
                            "has no Kiln equivalent",
                        ),
                    }
                }
                m.buildpacks(&ids, &full);
            }
            // Schema 0.1: `[[build.env]]`.
            "env" => m.out.config.build.env = cnb_env(&m, &value, &full)?,
            // Schema 0.2 nests the build env: `[[io.buildpacks.build.env]]`.
            "build" if build_key == "io.buildpacks" => {
                for (field, value) in m.table(&value, &full)?.clone() {
                    let key = format!("{full}.{field}");
                    match field.as_str() {
                        "env" => m.out.config.build.env = cnb_env(&m, &value, &key)?,
                        _ => m.unmapped(&key, "has no Kiln equivalent"),
                    }
                }
            }
            "builder" => m.unmapped(
                &full,
                "has no Kiln equivalent: Kiln assembles its own stack",
            ),
            _ => m.unmapped(&full, "has no Kiln equivalent"),
        }
    }
    Ok(m.out)
}

/// `[[…env]] name = "X", value = "Y"` entries as variables.
fn cnb_env(m: &Mapper<'_>, value: &Json, key: &str) -> Result<BTreeMap<String, String>> {
    let entries = value
        .as_array()
        .ok_or_else(|| m.wrong_type(key, "an array of tables"))?;
    let mut env = serde_json::Map::new();
    for entry in entries {
        let name = entry
            .get("name")
            .ok_or_else(|| m.wrong_type(key, "tables with name and value"))?;
        let value = entry.get("value").cloned().unwrap_or_default();
        env.insert(m.string(name, &format!("{key}.name"))?, value);
    }
    m.env(&Json::Object(env), key)
}

/// Railpack's `railpack.json`.
fn railpack(doc: &Json, path: &Path) -> Result<Mapped> {
    let mut m = Mapper::new(path, "railpack.json");
    for (key, value) in m.table(doc, "railpack.json")?.clone() {
        match key.as_str() {
            "$schema" => {}
            "provider" => {
                let provider = m.string(&value, "provider")?;
                m.buildpacks(&[provider], "provider");
            }
            "packages" => {
                for (tool, version) in m.table(&value, "packages")?.clone() {
                    let key = format!("packages.{tool}");
                    let version = m.string(&version, &key)?;
                    m.version(&tool, version, &key);
                }
            }
            "buildAptPackages" => {
                m.out.config.packages.build = m.strings(&value, "buildAptPackages")?;
            }
            "steps" => {
                for (step, spec) in m.table(&value, "steps")?.clone() {
                    railpack_step(&mut m, &step, &spec)?;
                }
            }
            "deploy" => {
                for (field, value) in m.table(&value, "deploy")?.clone() {
                    let key = format!("deploy.{field}");
                    match field.as_str() {
                        "startCommand" => {
                            let command = m.string(&value, &key)?;
                            m.start(command, &key);
                        }
                        "aptPackages" => m.out.config.packages.run = m.strings(&value, &key)?,
                        "variables" => m.out.config.env = m.env(&value, &key)?,
                        _ => m.unmapped(&key, "has no Kiln equivalent"),
                    }
                }
            }
            other => m.unmapped(other, "has no Kiln equivalent"),
        }
    }
    Ok(m.out)
}

fn railpack_step(m: &mut Mapper<'_>, step: &str, spec: &Json) -> Result<()> {
    let prefix = format!("steps.{step}");
    if step != "install" && step != "build" {
        m.unmapped(&prefix, "is not a step Kiln plans (install, build)");
        return Ok(());
    }
    for (field, value) in m.table(spec, &prefix)?.clone() {
        let key = format!("{prefix}.{field}");
        if field != "commands" {
            m.unmapped(&key, "has no Kiln equivalent");
            continue;
        }
        let list = value
            .as_array()
            .ok_or_else(|| m.wrong_type(&key, "an array"))?;
        let mut lines = Vec::new();
        for command in list {
            match command {
                Json::String(line) => lines.push(line.clone()),
                Json::Object(obj) if obj.contains_key("cmd") => {
                    lines.push(m.string(&obj["cmd"], &format!("{key}.cmd"))?)
                }
                _ => m.unmapped(
                    &format!("{key} (a path, copy or variable command)"),
                    "has no Kiln equivalent",
                ),
            }
        }
        let command = m.commands(lines, &key);
        m.step(step, command, &key);
    }
    Ok(())
}

/// Nixpacks' `nixpacks.toml`.
fn nixpacks(table: &toml::Table, path: &Path) -> Result<Mapped> {
    let doc = toml_to_json(table);
    let mut m = Mapper::new(path, "nixpacks.toml");
    for (key, value) in m.table(&doc, "nixpacks.toml")?.clone() {
        match key.as_str() {
            "providers" => {
                let names = m.strings(&value, "providers")?;
                let names: Vec<String> = names.into_iter().filter(|n| n != "...").collect();
                m.buildpacks(&names, "providers");
            }
            "variables" => {
                // Nixpacks' variables hold at build and at run time.
                let env = m.env(&value, "variables")?;
                m.out.config.build.env = env.clone();
                m.out.config.env = env;
            }
            "phases" => {
                for (phase, spec) in m.table(&value, "phases")?.clone() {
                    nixpacks_phase(&mut m, &phase, &spec)?;
                }
            }
            "start" => {
                for (field, value) in m.table(&value, "start")?.clone() {
                    let key = format!("start.{field}");
                    match field.as_str() {
                        "cmd" => {
                            let command = m.string(&value, &key)?;
                            m.start(command, &key);
                        }
                        _ => m.unmapped(&key, "has no Kiln equivalent"),
                    }
                }
            }
            other => m.unmapped(other, "has no Kiln equivalent"),
        }
    }
    Ok(m.out)
}

fn nixpacks_phase(m: &mut Mapper<'_>, phase: &str, spec: &Json) -> Result<()> {
    let prefix = format!("phases.{phase}");
    for (field, value) in m.table(spec, &prefix)?.clone() {
        let key = format!("{prefix}.{field}");
        match (phase, field.as_str()) {
            ("install" | "build", "cmds") => {
                let lines = m.strings(&value, &key)?;
                let command = m.commands(lines, &key);
                m.step(phase, command, &key);
            }
            // Nixpacks installs them once, for the build and the app alike.
            ("setup", "aptPkgs") => {
                let packages: Vec<String> = m
                    .strings(&value, &key)?
                    .into_iter()
                    .filter(|p| p != "...")
                    .collect();
                m.out.config.packages.build = packages.clone();
                m.out.config.packages.run = packages;
            }
            ("setup", "nixPkgs" | "nixLibs" | "nixOverlays" | "nixpkgsArchive") => m.unmapped(
                &key,
                "has no Kiln equivalent: Kiln's packages are Debian's (aptPkgs)",
            ),
            _ => m.unmapped(&key, "has no Kiln equivalent"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::project::ProjectConfig;
    use std::fs;

    fn load(files: &[(&str, &str)]) -> crate::Result<ProjectConfig> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        ProjectConfig::load(dir.path())
    }

    #[test]
    fn railpack_maps_onto_the_project_config_with_sources() {
        let config = load(&[(
            "railpack.json",
            r#"{"provider": "node", "packages": {"node": "22"},
                "buildAptPackages": ["libpq-dev"],
                "steps": {"install": {"commands": ["npm ci", {"cmd": "npm run gen"}]}},
                "deploy": {"startCommand": "node a.js", "aptPackages": ["libpq5"],
                           "variables": {"LOG": "info", "WORKERS": 2}}}"#,
        )])
        .unwrap();
        assert_eq!(config.buildpacks, Some(vec!["nodejs".to_owned()]));
        assert_eq!(config.versions["nodejs"], "22");
        assert_eq!(
            config.build.install.as_deref(),
            Some("npm ci && npm run gen")
        );
        assert_eq!(config.build.start.as_deref(), Some("node a.js"));
        assert_eq!(config.packages.build, ["libpq-dev"]);
        assert_eq!(config.packages.run, ["libpq5"]);
        assert_eq!(config.env["WORKERS"], "2");
        assert_eq!(
            config.source_of("build.start"),
            "railpack.json deploy.startCommand"
        );
        assert_eq!(
            config.source_of("versions.nodejs"),
            "railpack.json packages.node"
        );
        assert_eq!(config.source_of("buildpacks"), "railpack.json provider");
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn kiln_toml_wins_field_by_field_and_files_keep_their_order() {
        let config = load(&[
            ("kiln.toml", "[build]\nstart = \"kiln-start\"\n[env]\nA = \"kiln\"\n"),
            (
                "railpack.json",
                r#"{"deploy": {"startCommand": "railpack-start", "variables": {"A": "r", "B": "r"}},
                    "steps": {"build": {"commands": ["railpack-build"]}}}"#,
            ),
            (
                "nixpacks.toml",
                "[phases.build]\ncmds = [\"nix-build\"]\n[phases.install]\ncmds = [\"nix-install\"]\n",
            ),
        ])
        .unwrap();
        assert_eq!(config.build.start.as_deref(), Some("kiln-start"));
        assert_eq!(config.source_of("build.start"), "kiln.toml build.start");
        assert_eq!(config.build.build.as_deref(), Some("railpack-build"));
        assert_eq!(config.build.install.as_deref(), Some("nix-install"));
        assert_eq!(
            config.source_of("build.install"),
            "nixpacks.toml phases.install.cmds"
        );
        assert_eq!(
            (config.env["A"].as_str(), config.env["B"].as_str()),
            ("kiln", "r")
        );
    }

    #[test]
    fn project_toml_0_1_and_an_unknown_buildpack_leave_detection_to_kiln() {
        let config = load(&[(
            "project.toml",
            "[project]\nname = \"api\"\n[build]\nexclude = [\"tmp/\"]\n\
             [[build.buildpacks]]\nid = \"heroku/python\"\n\
             [[build.buildpacks]]\nid = \"example/telemetry\"\n\
             [[build.env]]\nname = \"PIP_INDEX_URL\"\nvalue = \"http://pypi.internal/simple\"\n",
        )])
        .unwrap();
        assert_eq!(config.project.name.as_deref(), Some("api"));
        assert_eq!(config.build.exclude, ["tmp/"]);
        assert_eq!(
            config.build.env["PIP_INDEX_URL"],
            "http://pypi.internal/simple"
        );
        assert_eq!(config.buildpacks, None);
        assert_eq!(
            config.warnings,
            [
                "project.toml: build.buildpacks names \"example/telemetry\", which has no Kiln \
              buildpack, so detection decides; ignored"
            ]
        );
    }

    #[test]
    fn nixpacks_apt_packages_serve_build_and_run_and_nix_packages_are_named() {
        let config = load(&[(
            "nixpacks.toml",
            "providers = [\"...\", \"python\"]\n[variables]\nX = \"1\"\n\
             [phases.setup]\nnixPkgs = [\"ffmpeg\"]\naptPkgs = [\"...\", \"libpq5\"]\n\
             [phases.build]\ncmds = [\"...\", \"make\"]\ndependsOn = [\"install\"]\n\
             [start]\ncmd = \"gunicorn app:app\"\nrunImage = \"ubuntu\"\n",
        )])
        .unwrap();
        assert_eq!(config.buildpacks, Some(vec!["python".to_owned()]));
        assert_eq!(config.packages.build, ["libpq5"]);
        assert_eq!(config.packages.run, ["libpq5"]);
        assert_eq!(
            (config.build.env["X"].as_str(), config.env["X"].as_str()),
            ("1", "1")
        );
        assert_eq!(config.build.build.as_deref(), Some("make"));
        let warned: Vec<&str> = config
            .warnings
            .iter()
            .map(|w| w.split(' ').nth(1).unwrap_or(""))
            .collect();
        assert_eq!(
            warned,
            [
                "phases.build.cmds",
                "phases.build.dependsOn",
                "phases.setup.nixPkgs",
                "start.runImage"
            ]
        );
    }

    #[test]
    fn bad_files_name_the_file_and_the_key_or_line() {
        let err = load(&[("railpack.json", r#"{"deploy": {"startCommand": 3}}"#)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("railpack.json"), "{err}");
        assert!(
            err.contains("deploy.startCommand must be a string"),
            "{err}"
        );
        let err = load(&[("railpack.json", "{\n  \"deploy\": {,\n}")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("railpack.json") && err.contains(":2:"),
            "{err}"
        );
        let err = load(&[("nixpacks.toml", "[variables]\n\"BAD NAME\" = \"x\"\n")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nixpacks.toml") && err.contains("BAD NAME"),
            "{err}"
        );
    }

    #[test]
    fn names_kept_as_they_are_are_built_in_buildpacks() {
        let set = crate::BuildpackSet::builtin().unwrap();
        for id in super::SAME_NAME {
            assert!(set.get(id).is_some(), "{id} is no built-in buildpack");
        }
    }

    #[test]
    fn a_symlinked_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("n.toml"), "[start]\ncmd = \"x\"\n").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("n.toml"),
            dir.path().join("nixpacks.toml"),
        )
        .unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("nixpacks.toml") && err.contains("symlink"),
            "{err}"
        );
    }
}
