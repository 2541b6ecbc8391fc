//! The build plan: for each passing buildpack, its resolved steps, layers and processes, plus the
//! image's processes with the default first. Source-file templates (`${toml:…}`, `${json:…}`) are
//! resolved here; `${app}` and `${layer:…}` in steps stay for the engine (host paths), and are
//! expanded to image paths (`/workspace`, `/layers/<id>/<name>`) in processes and launch env.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::analyze::{self, Facts, Sourced};
use crate::detect::Detection;
use crate::error::{Error, Result};
use crate::procfile;
use crate::project::ProjectConfig;
use crate::set::BuildpackSet;
use crate::settings::Settings;
use crate::source::{self, Document, Found};
use crate::spec::{
    BuildpackToml, CommandSpec, LayerSpec, ProcessFileFormat, VersionFormat, VersionSource, When,
    WhenValue,
};
use crate::template::{self, SourceFormat, Var};

/// Where the app lives in the image.
pub const APP_DIR: &str = "/workspace";
/// Root of buildpack layers in the image: `/layers/<buildpack>/<layer>`.
pub const LAYERS_DIR: &str = "/layers";

/// The plan's JSON schema version (`docs/plan-schema.md`); bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub schema_version: u32,
    /// The app's folder relative to the source root, when it is not the root (see
    /// [`Detection::app_root`]): the engine builds `SRC/<app_root>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_root: Option<String>,
    /// Each buildpack's version requirement with its source, by buildpack id.
    pub versions: BTreeMap<String, Sourced>,
    pub buildpacks: Vec<PlannedBuildpack>,
    /// Default process first, then the others by type.
    pub processes: Vec<Process>,
    /// Image `Env` additions from all buildpacks' `[launch.env]`, expanded.
    pub launch_env: BTreeMap<String, String>,
    /// Set when no buildpack planned a process: what each looked for, and how to set one. The
    /// plan is still shown (`kiln plan`); a build refuses it ([`Plan::default_process`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_default_process: Option<NoDefaultProcess>,
    /// Keys of other tools' project files (`railpack.json`, …) that have no Kiln equivalent,
    /// each naming its file and key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why a plan has nothing to run: the image would have no entrypoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoDefaultProcess {
    /// One line per passing buildpack: the process it declares and the fact it lacked (`rust: a
    /// `web` process (needs fact `bin`); virtual workspace: …`), or the file it reads processes
    /// from.
    pub looked_for: Vec<String>,
    /// The ways to set a start command that this buildpack set supports.
    pub fix: String,
}

impl std::fmt::Display for NoDefaultProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no default process: nothing says what the image runs; looked for:"
        )?;
        for line in &self.looked_for {
            write!(f, "\n  {line}")?;
        }
        write!(f, "\n{}", self.fix)
    }
}

impl NoDefaultProcess {
    /// `procfile`: the file a buildpack of the set reads processes from, if any.
    fn fix(procfile: Option<&str>) -> String {
        let procfile = procfile
            .map(|file| format!(", a `web: COMMAND` line in a {file},"))
            .unwrap_or_default();
        format!(
            "set a start command: `web = \"COMMAND\"` under [processes] in kiln.toml{procfile} \
             or KILN_START_COMMAND=COMMAND"
        )
    }
}

impl Plan {
    /// Whether the image holds app path `rel` (relative to the app: `dist/index.html`): every
    /// path, unless a buildpack ships only some (`[[build_only]] ship`); then those, what is
    /// under them and the directories leading to them.
    pub fn ships(&self, rel: &str) -> bool {
        let rel = rel.trim_matches('/');
        let mut only = self
            .buildpacks
            .iter()
            .flat_map(|bp| &bp.ship)
            .map(|p| p.trim_start_matches("./").trim_matches('/'))
            .peekable();
        only.peek().is_none()
            || rel.is_empty()
            || only.any(|p| {
                let under =
                    |a: &str, b: &str| a.strip_prefix(b).is_some_and(|r| r.starts_with('/'));
                rel == p || under(rel, p) || under(p, rel)
            })
    }

    /// Whether the image holds the runtime of buildpack `id` (not when only its steps need it).
    pub fn ships_runtime(&self, id: &str) -> bool {
        self.buildpacks
            .iter()
            .filter(|bp| bp.id == id)
            .all(|bp| bp.runtime.as_ref().is_none_or(|rt| !rt.build_only))
    }

    /// The process the image runs, or [`Error::NoDefaultProcess`] saying what was looked for:
    /// an image without an entrypoint is not a successful build.
    pub fn default_process(&self) -> Result<&Process> {
        match self.processes.first().filter(|p| p.default) {
            Some(process) => Ok(process),
            None => Err(Error::NoDefaultProcess(
                self.no_default_process
                    .clone()
                    .unwrap_or_else(|| NoDefaultProcess {
                        looked_for: Vec::new(),
                        fix: NoDefaultProcess::fix(None),
                    }),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedBuildpack {
    pub id: String,
    pub version: String,
    /// Why it passed detection.
    pub reason: String,
    /// What its analyzer and declarative rules found (version, package manager, …).
    pub facts: Facts,
    pub steps: Vec<Step>,
    pub layers: Vec<LayerSpec>,
    /// The runtime the engine must provide, and the requirement it must satisfy.
    pub runtime: Option<PlannedRuntime>,
    /// Debian packages for the build root and the run image (its `[[packages]]` that hold).
    #[serde(skip_serializing_if = "Packages::is_empty")]
    pub packages: Packages,
    /// The only app paths the image holds (its `[[build_only]]` `ship`); empty: the whole app.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ship: Vec<String>,
    /// Files the engine writes into its layers (its `[[files]]` that hold), contents expanded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PlannedFile>,
}

/// A file of a layer, written before the steps run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    pub layer: String,
    pub path: String,
    pub content: String,
}

/// Debian packages a buildpack asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Packages {
    pub build: Vec<String>,
    pub run: Vec<String>,
}

impl Packages {
    pub fn is_empty(&self) -> bool {
        self.build.is_empty() && self.run.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRuntime {
    /// `node`, `python`.
    pub name: String,
    /// `>=20 <21`, `lts`, `3.11`, …
    pub requirement: String,
    /// Where the requirement came from (`package.json engines.node`, `buildpack default`).
    pub from: String,
    /// Only the steps use it: it is not in the image (`[[build_only]] runtime`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub build_only: bool,
}

/// A build step. `command`, `args`, `env` values and `workdir` are templates that may still hold
/// `${app}` and `${layer:NAME}` (and `$$` for a literal `$`): expand each with
/// [`template::expand`] or [`template::expand_paths`] using host paths before running.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    /// Buildpack `[build.env]`, then project `kiln.toml` `[build.env]`, then step `env` (last wins).
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    /// Source globs whose content keys the step (see `StepSpec::inputs`).
    pub inputs: Vec<String>,
    /// The cache layers it writes.
    pub outputs: Vec<String>,
    /// Set when the user's command replaced the buildpack's (`kiln.toml build.install`,
    /// `KILN_BUILD_CMD`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    #[serde(rename = "type")]
    pub kind: String,
    /// The argv the container runs (shell commands already wrapped in `/bin/sh -c`).
    pub command: Vec<String>,
    pub default: bool,
    /// The buildpack that declared it (later buildpacks override earlier ones by type), or
    /// `kiln.toml` / `KILN_START_COMMAND` for a user override.
    pub buildpack: String,
}

/// A buildpack's `[[build_only]]` rule that holds, its templates expanded.
struct BuildOnly {
    /// Index of the buildpack in the plan.
    buildpack: usize,
    runtime: bool,
    layers: Vec<String>,
    ship: Vec<String>,
    why: String,
}

impl BuildOnly {
    /// Keeps what only the build needs out of the image, unless a process of another buildpack
    /// or the user's (a `Procfile` `web: npm start`) could need it: then the note says why all
    /// of it ships.
    fn apply(self, bp: &mut PlannedBuildpack, processes: &[Process]) {
        if let Some(other) = processes.iter().find(|p| p.buildpack != bp.id) {
            bp.facts.notes.push(format!(
                "the build's runtime and layers ship: process {:?} comes from {}, which may need them",
                other.kind, other.buildpack
            ));
            return;
        }
        if let Some(runtime) = bp.runtime.as_mut() {
            runtime.build_only = self.runtime;
        }
        for layer in bp
            .layers
            .iter_mut()
            .filter(|l| self.layers.contains(&l.name))
        {
            layer.launch = false;
        }
        bp.ship = self.ship;
        bp.facts.notes.push(self.why);
    }
}

/// Builds the plan for the passing buildpacks of `detection`, without `KILN_*` overrides. See
/// [`plan_with`].
pub fn plan(
    set: &BuildpackSet,
    detection: &Detection,
    project: &ProjectConfig,
    src: &Path,
) -> Result<Plan> {
    plan_with(set, detection, project, src, &BTreeMap::new())
}

/// Builds the plan for the passing buildpacks of `detection`; `env` holds `KILN_*` variables.
///
/// Each buildpack's facts come from its analyzer, then its `[[versions]]`/`[[frameworks]]` for
/// what the analyzer left open, then version pins (`KILN_<ID>_VERSION` over `kiln.toml`
/// `[versions]`). Steps and processes whose `when` does not hold are left out; of several with
/// the same name/type, the first that holds is planned.
///
/// Processes: a later buildpack replaces an earlier one's process of the same type, and within a
/// buildpack `processes_from` replaces `[[processes]]`; `kiln.toml` `[processes]` and
/// `KILN_START_COMMAND` (for `web`) replace them all. The default process is `web` if there is
/// one; otherwise the type marked `default = true` by the last buildpack that marks one;
/// otherwise the first type alphabetically.
pub fn plan_with(
    set: &BuildpackSet,
    detection: &Detection,
    project: &ProjectConfig,
    src: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Plan> {
    let settings = Settings::resolve(project, env);
    let app = match &detection.app_root {
        Some(dir) => src.join(dir),
        None => src.to_path_buf(),
    };
    let prefix = detection
        .app_root
        .as_ref()
        .map(|d| format!("{d}/"))
        .unwrap_or_default();
    let src = app.as_path();
    let mut buildpacks = Vec::with_capacity(detection.buildpacks.len());
    let mut processes: BTreeMap<String, Process> = BTreeMap::new();
    let mut marked_default: Option<String> = None;
    let mut launch_env = BTreeMap::new();
    let mut versions = BTreeMap::new();
    let mut looked_for = Vec::new();
    let mut build_only = Vec::new();

    for verdict in &detection.buildpacks {
        let buildpack = set.get(&verdict.id).ok_or_else(|| {
            Error::Template(format!(
                "detection passed buildpack {:?}, which is not in the buildpack set",
                verdict.id
            ))
        })?;
        let spec = &buildpack.spec;
        let id = &spec.buildpack.id;
        let facts = facts_of(spec, src, &prefix, &settings)?;
        if let Some(version) = &facts.version {
            versions.insert(id.clone(), version.clone());
        }
        let sources = Sources {
            src,
            buildpack: id,
            facts: &facts,
        };
        let layers_root = format!("{LAYERS_DIR}/{id}");

        // The environment every step of this buildpack starts from: its [build.env], then
        // kiln.toml's. kiln.toml values are plain strings, not templates: escaped so the engine's
        // expansion gives them back unchanged.
        let mut base_env = BTreeMap::new();
        for (key, value) in &spec.build.env {
            base_env.insert(key.clone(), sources.for_step(value)?);
        }
        for (key, value) in &project.build.env {
            base_env.insert(key.clone(), template::escape(value));
        }
        let mut steps: Vec<Step> = Vec::with_capacity(spec.build.steps.len());
        for step in &spec.build.steps {
            if !holds(&step.when, &facts) || steps.iter().any(|s| s.name == step.name) {
                continue;
            }
            let mut env = base_env.clone();
            for (key, value) in &step.env {
                env.insert(key.clone(), sources.for_step(value)?);
            }
            steps.push(Step {
                name: step.name.clone(),
                command: sources.for_step(&step.command)?,
                args: step
                    .args
                    .iter()
                    .map(|a| sources.for_step(a))
                    .collect::<Result<_>>()?,
                env,
                workdir: step.workdir.clone().unwrap_or_else(|| ".".to_owned()),
                inputs: step.inputs.clone(),
                outputs: step.outputs.clone(),
                from: None,
            });
        }

        let mut own: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for process in &spec.processes {
            if !holds(&process.when, &facts) || own.contains_key(&process.kind) {
                continue;
            }
            let command = match &process.command {
                CommandSpec::Exec(argv) => argv
                    .iter()
                    .map(|a| sources.for_image(a, &layers_root))
                    .collect::<Result<_>>()?,
                CommandSpec::Shell(line) => argv_of(&sources.for_image(line, &layers_root)?),
            };
            own.insert(process.kind.clone(), command);
            if process.default {
                marked_default = Some(process.kind.clone());
            }
        }
        if let Some(from) = &spec.processes_from {
            match from.format {
                // Procfile commands are the user's shell lines, not templates: `${PORT}` is the
                // shell's, so they are taken as written.
                ProcessFileFormat::Procfile => {
                    for (kind, line) in read_procfile(src, &from.file, id)? {
                        own.insert(kind, argv_of(&line));
                    }
                }
            }
        }
        if own.is_empty() {
            looked_for.push(format!("{id}: {}", why_no_process(spec, &facts)));
        }
        for (kind, command) in own {
            let process = Process {
                kind: kind.clone(),
                command,
                default: false,
                buildpack: id.clone(),
            };
            processes.insert(kind, process);
        }

        for (key, value) in &spec.launch.env {
            launch_env.insert(key.clone(), sources.for_image(value, &layers_root)?);
        }

        let runtime = spec
            .runtime
            .iter()
            .find(|rt| holds(&rt.when, &facts))
            .map(|rt| {
                let (requirement, from) = match (&facts.version, &rt.default) {
                    (Some(v), _) => (v.version.clone(), v.from.clone()),
                    (None, Some(default)) => (default.clone(), "buildpack default".to_owned()),
                    (None, None) => ("*".to_owned(), "any version".to_owned()),
                };
                PlannedRuntime {
                    name: rt.name.clone(),
                    requirement,
                    from,
                    build_only: false,
                }
            });
        // Applied once the image's processes are known: only when this buildpack starts them all.
        if let Some(rule) = spec.build_only.iter().find(|r| holds(&r.when, &facts)) {
            build_only.push(BuildOnly {
                buildpack: buildpacks.len(),
                runtime: rule.runtime,
                layers: rule.layers.clone(),
                ship: rule
                    .ship
                    .iter()
                    .map(|path| sources.for_step(path))
                    .collect::<Result<_>>()?,
                why: sources.for_step(&rule.why)?,
            });
        }
        let mut packages = Packages::default();
        for wanted in spec.packages.iter().filter(|p| holds(&p.when, &facts)) {
            for name in &wanted.build {
                packages.build.push(sources.for_step(name)?);
            }
            for name in &wanted.run {
                packages.run.push(sources.for_step(name)?);
            }
        }
        let mut files: Vec<PlannedFile> = Vec::new();
        for file in spec.files.iter().filter(|f| holds(&f.when, &facts)) {
            if files
                .iter()
                .any(|f| f.layer == file.layer && f.path == file.path)
            {
                continue;
            }
            files.push(PlannedFile {
                layer: file.layer.clone(),
                path: file.path.clone(),
                content: sources.for_image(&file.content, &layers_root)?,
            });
        }
        buildpacks.push(PlannedBuildpack {
            id: id.clone(),
            version: spec.buildpack.version.clone(),
            reason: verdict.reason.clone(),
            facts,
            steps,
            layers: spec.layers.clone(),
            runtime,
            packages,
            ship: Vec::new(),
            files,
        });
    }
    override_steps(&mut buildpacks, &processes, &settings.steps);
    // The user's own commands are shell lines like a Procfile's, not templates.
    for (kind, (command, from)) in &settings.processes {
        let from = from.split(' ').next().unwrap_or(from).to_owned();
        processes.insert(
            kind.clone(),
            Process {
                kind: kind.clone(),
                command: argv_of(command),
                default: false,
                buildpack: from,
            },
        );
    }

    let default = if processes.contains_key("web") {
        Some("web".to_owned())
    } else {
        // Processes are only ever replaced, never removed, so a marked type is still present.
        marked_default.or_else(|| processes.keys().next().cloned())
    };
    let mut ordered = Vec::with_capacity(processes.len());
    if let Some(mut first) = default.and_then(|kind| processes.remove(&kind)) {
        first.default = true;
        ordered.push(first);
    }
    ordered.extend(processes.into_values());
    for rule in build_only {
        let index = rule.buildpack;
        rule.apply(&mut buildpacks[index], &ordered);
    }
    let no_default_process = ordered.is_empty().then(|| {
        let procfile = set.buildpacks.iter().find_map(|b| {
            b.spec
                .processes_from
                .as_ref()
                .map(|from| from.file.as_str())
        });
        NoDefaultProcess {
            looked_for,
            fix: NoDefaultProcess::fix(procfile),
        }
    });

    // The project's own runtime settings win over every buildpack's launch env.
    launch_env.extend(project.env.clone());
    if let Some(port) = project.image.port {
        launch_env.insert("PORT".to_owned(), port.to_string());
    }

    Ok(Plan {
        schema_version: SCHEMA_VERSION,
        app_root: detection.app_root.clone(),
        versions,
        buildpacks,
        processes: ordered,
        launch_env,
        no_default_process,
        warnings: project.warnings.clone(),
    })
}

/// Puts the user's `install` / `build` command lines in place of the main buildpack's steps of
/// those names (or adds them: `install` first, `build` after `install`). The main buildpack is
/// the one whose process is the default (`web`, else the only one), else the last with steps:
/// in a mixed tree, the server's, not the one building its assets. Inputs and outputs of a
/// replaced step stay, so an unchanged lockfile still skips a custom install.
fn override_steps(
    buildpacks: &mut [PlannedBuildpack],
    processes: &BTreeMap<String, Process>,
    overrides: &BTreeMap<String, (String, String)>,
) {
    if overrides.is_empty() {
        return;
    }
    let owner = processes
        .get("web")
        .or_else(|| processes.values().next())
        .and_then(|p| buildpacks.iter().position(|b| b.id == p.buildpack));
    let Some(main) = owner.or_else(|| buildpacks.iter().rposition(|b| !b.steps.is_empty())) else {
        return;
    };
    let bp = &mut buildpacks[main];
    for name in ["install", "build"] {
        let Some((command, from)) = overrides.get(name) else {
            continue;
        };
        let args = vec!["-c".to_owned(), template::escape(command)];
        match bp.steps.iter_mut().find(|s| s.name == name) {
            Some(step) => {
                step.command = "sh".to_owned();
                step.args = args;
                step.from = Some(from.clone());
            }
            None => {
                let at = match name {
                    "install" => 0,
                    _ => bp
                        .steps
                        .iter()
                        .position(|s| s.name == "install")
                        .map_or(0, |i| i + 1),
                };
                let env = bp.steps.first().map(|s| s.env.clone()).unwrap_or_default();
                bp.steps.insert(
                    at,
                    Step {
                        name: name.to_owned(),
                        command: "sh".to_owned(),
                        args,
                        env,
                        workdir: ".".to_owned(),
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                        from: Some(from.clone()),
                    },
                );
            }
        }
    }
}

/// What a buildpack that planned no process would have needed: each process type it declares
/// with the facts its `when` lacked, the file it reads processes from, and its analyzer's notes.
fn why_no_process(spec: &BuildpackToml, facts: &Facts) -> String {
    let mut kinds: Vec<&str> = Vec::new();
    let mut wanted = Vec::new();
    for process in &spec.processes {
        if kinds.contains(&process.kind.as_str()) {
            continue;
        }
        kinds.push(&process.kind);
        // Every variant of this type failed its `when` (else one would be planned).
        let needs: Vec<String> = spec
            .processes
            .iter()
            .filter(|p| p.kind == process.kind)
            .map(|p| {
                p.when
                    .iter()
                    .filter(|(name, want)| !want.matches(facts.get(name).as_deref()))
                    .map(|(name, want)| describe_condition(name, want))
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .collect();
        wanted.push(format!(
            "a `{}` process (needs {})",
            process.kind,
            needs.join(", or ")
        ));
    }
    if let Some(from) = &spec.processes_from {
        wanted.push(format!("{} declares no process", from.file));
    }
    if wanted.is_empty() {
        wanted.push("declares no process".to_owned());
    }
    wanted.extend(facts.notes.iter().cloned());
    wanted.join("; ")
}

/// `fact `bin``, `fact `start_task` = "true"`, `fact `x` in ["a", "b"]`.
fn describe_condition(name: &str, want: &WhenValue) -> String {
    match want {
        WhenValue::One(v) if v == "*" => format!("fact `{name}`"),
        WhenValue::One(v) if v == "!" => format!("no fact `{name}`"),
        WhenValue::One(v) => format!("fact `{name}` = {v:?}"),
        WhenValue::AnyOf(vs) if vs.iter().any(|v| v == "*") => format!("fact `{name}`"),
        WhenValue::AnyOf(vs) => format!("fact `{name}` in {vs:?}"),
    }
}

/// Whether every fact named in `when` has (one of) the given value(s), or is absent as asked.
fn holds(when: &When, facts: &Facts) -> bool {
    when.iter()
        .all(|(name, want)| want.matches(facts.get(name).as_deref()))
}

/// The buildpack's facts: analyzer, then declarative version sources, framework and fact rules
/// for what it left open, then the user's version pin.
fn facts_of(spec: &BuildpackToml, src: &Path, prefix: &str, settings: &Settings) -> Result<Facts> {
    let mut facts = match &spec.detect.analyzer {
        // The user's app is relative to the source root: it applies when that is the app root.
        Some(name) => analyze::run(
            name,
            src,
            prefix,
            analyze::Pins {
                app: settings.app.as_ref().filter(|_| prefix.is_empty()),
                link: settings.link.as_ref(),
            },
        )?,
        None => Facts::default(),
    };
    let tree = analyze::Tree { src, prefix };
    if facts.version.is_none() {
        for source in &spec.versions {
            if let Some(version) = declared_version(&tree, source)? {
                let from = match (&source.tool, &source.key) {
                    (Some(tool), _) => format!("{} {tool}", source.file),
                    (_, Some(key)) => format!("{} {key}", source.file),
                    _ => source.file.clone(),
                };
                facts.version = Some(Sourced { version, from });
                break;
            }
        }
    }
    if facts.framework.is_none() {
        for rule in &spec.frameworks {
            if tree
                .text(&rule.file)?
                .is_some_and(|t| t.contains(&rule.contains))
            {
                facts.framework = Some(rule.name.clone());
                break;
            }
        }
    }
    for rule in &spec.facts {
        if facts.get(&rule.name).is_some() {
            continue;
        }
        let holds = match (tree.text(&rule.file)?, &rule.contains) {
            (Some(text), Some(needle)) => text.contains(needle.as_str()),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if holds {
            facts.set(&rule.name, rule.value.clone());
        }
    }
    if let Some(pin) = settings.versions.get(&spec.buildpack.id) {
        facts.version = Some(pin.clone());
    }
    Ok(facts)
}

fn declared_version(tree: &analyze::Tree, source: &VersionSource) -> Result<Option<String>> {
    Ok(match source.format {
        VersionFormat::Text => tree
            .text(&source.file)?
            .as_deref()
            .and_then(analyze::version_text),
        VersionFormat::ToolVersions => {
            let tool = source.tool.as_deref().unwrap_or("");
            tree.text(&source.file)?
                .and_then(|t| analyze::tool_version(&t, &[tool]))
        }
        VersionFormat::Key => {
            let key = source.key.as_deref().unwrap_or("");
            let found = match source::format_of(&source.file) {
                Some(format) => match tree.text(&source.file)? {
                    Some(text) => Document::parse(format, text.as_bytes())
                        .ok()
                        .map(|doc| doc.get(key)),
                    None => None,
                },
                None => None,
            };
            match found {
                Some(Found::Scalar(v)) => Some(v),
                _ => None,
            }
        }
        VersionFormat::Pattern => {
            let pattern = source.pattern.as_deref().unwrap_or("{}");
            let (before, after) = pattern.split_once("{}").unwrap_or((pattern, ""));
            tree.text(&source.file)?.and_then(|t| {
                // An empty `after` means "to the end of the line".
                analyze::between(&t, before, if after.is_empty() { "\n" } else { after })
            })
        }
    })
}

/// Resolves `${toml:…}`/`${json:…}` from the source tree for one buildpack's templates.
struct Sources<'a> {
    src: &'a Path,
    buildpack: &'a str,
    facts: &'a Facts,
}

impl Sources<'_> {
    /// A step template: source values filled in, `${app}`/`${layer:…}` left for the engine.
    fn for_step(&self, input: &str) -> Result<String> {
        template::expand_some(input, &mut |var| match template::parse_var(var) {
            Some(Var::Source { format, file, key }) => self.value(var, format, file, key).map(Some),
            Some(Var::Fact(name)) => self.facts.get(name).map(Some).ok_or_else(|| {
                self.error(
                    var,
                    format!("no fact {name:?} for this app (guard it with `when`)"),
                )
            }),
            _ => Ok(None),
        })
    }

    /// A process or launch env template, fully expanded with image paths.
    fn for_image(&self, input: &str, layers_root: &str) -> Result<String> {
        template::expand_paths(&self.for_step(input)?, APP_DIR, layers_root)
    }

    /// The value of a `${toml:FILE:KEY}` / `${json:FILE:KEY}` variable.
    fn value(&self, var: &str, format: SourceFormat, file: &str, key: &str) -> Result<String> {
        let bytes = source::read_regular(self.src, file)?.map_err(|entry| {
            self.error(
                var,
                format!("{file} {} in the source tree", entry.describe()),
            )
        })?;
        let doc = Document::parse(format, &bytes)
            .map_err(|e| self.error(var, format!("{file} is not valid {}: {e}", format.name())))?;
        match doc.get(key) {
            Found::Scalar(value) => Ok(value),
            Found::Absent => Err(self.error(var, format!("{file} has no key {key}"))),
            Found::Composite => Err(self.error(
                var,
                format!("{key} in {file} is not a string, number or boolean"),
            )),
        }
    }

    fn error(&self, var: &str, why: String) -> Error {
        Error::Template(format!("buildpack {}: `${{{var}}}`: {why}", self.buildpack))
    }
}

fn read_procfile(src: &Path, file: &str, buildpack: &str) -> Result<Vec<(String, String)>> {
    let path = src.join(file);
    let bytes = source::read_regular(src, file)?.map_err(|entry| Error::Manifest {
        path: path.clone(),
        line: None,
        column: None,
        message: format!(
            "{} (buildpack {buildpack} reads its processes from it)",
            entry.describe()
        ),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Manifest {
        path: path.clone(),
        line: None,
        column: None,
        message: format!("not valid UTF-8: {e}"),
    })?;
    procfile::parse(&text, &path)
}

/// Characters that make a command string need a shell.
const SHELL_SYNTAX: &[char] = &[
    '$', '`', '\\', '"', '\'', '|', '&', ';', '<', '>', '(', ')', '*', '?', '[', ']', '~', '{',
    '}', '#', '\n',
];

/// Shell keywords and builtins with no program of that name to exec.
const SHELL_WORDS: &[&str] = &[
    "!", ".", ":", "alias", "break", "case", "cd", "continue", "eval", "exec", "exit", "export",
    "for", "if", "readonly", "return", "set", "shift", "source", "trap", "ulimit", "umask",
    "unset", "until", "wait", "while",
];

/// Whether `command` is more than a plain program with arguments (see [`argv_of`]).
pub(crate) fn needs_shell(command: &str) -> bool {
    command.contains(SHELL_SYNTAX)
        || command
            .split_whitespace()
            .next()
            .is_none_or(|w| w.contains('=') || SHELL_WORDS.contains(&w))
}

/// The argv for a command string: split on whitespace and executed directly when it is a plain
/// program with arguments (so it runs on images without a shell, like scratch), else run by
/// `/bin/sh -c`. A first word with `=` is an environment assignment, which needs the shell too.
fn argv_of(command: &str) -> Vec<String> {
    if !needs_shell(command) {
        command.split_whitespace().map(str::to_owned).collect()
    } else {
        vec!["/bin/sh".to_owned(), "-c".to_owned(), command.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Verdict;
    use crate::set::Buildpack;
    use std::path::PathBuf;

    fn set(manifests: &[&str]) -> BuildpackSet {
        let buildpacks = manifests
            .iter()
            .enumerate()
            .map(|(i, text)| Buildpack::from_toml(text, PathBuf::from(format!("bp{i}"))).unwrap())
            .collect();
        BuildpackSet { buildpacks }
    }

    /// A detection where every buildpack of `set` passed.
    fn all_pass(set: &BuildpackSet) -> Detection {
        Detection {
            detected: true,
            buildpacks: set
                .buildpacks
                .iter()
                .map(|b| Verdict {
                    id: b.spec.buildpack.id.clone(),
                    reason: "test".into(),
                })
                .collect(),
            rejected: Vec::new(),
            app_root: None,
        }
    }

    fn plan_of(manifests: &[&str]) -> Result<Plan> {
        let dir = tempfile::tempdir().unwrap();
        let set = set(manifests);
        plan(&set, &all_pass(&set), &ProjectConfig::default(), dir.path())
    }

    fn with_processes(id: &str, processes: &str) -> String {
        format!("[buildpack]\nid = \"{id}\"\nversion = \"1\"\n{processes}")
    }

    fn types(plan: &Plan) -> Vec<(&str, bool)> {
        plan.processes
            .iter()
            .map(|p| (p.kind.as_str(), p.default))
            .collect()
    }

    #[test]
    fn install_build_and_start_overrides_replace_the_main_buildpacks_commands() {
        let assets = with_processes(
            "assets",
            "[[build.steps]]\nname = \"install\"\ncommand = \"npm\"\nargs = [\"ci\"]\n",
        );
        let server = with_processes(
            "server",
            "[[build.steps]]\nname = \"install\"\ncommand = \"pip\"\ninputs = [\"req.txt\"]\n\
             outputs = [\"deps\"]\n[[layers]]\nname = \"deps\"\ncache = true\n\
             [[processes]]\ntype = \"web\"\ncommand = \"serve\"\n",
        );
        let set = set(&[&assets, &server]);
        let dir = tempfile::tempdir().unwrap();
        let project = ProjectConfig {
            build: crate::project::ProjectBuild {
                install: Some("pip install -r req.txt --no-deps".into()),
                build: Some("make ${NOT_A_TEMPLATE}".into()),
                start: Some("serve --port $PORT".into()),
                ..Default::default()
            },
            ..ProjectConfig::default()
        };
        let env = BTreeMap::from([("KILN_INSTALL_CMD".to_owned(), "pip install .".to_owned())]);
        let plan = plan_with(&set, &all_pass(&set), &project, dir.path(), &env).unwrap();
        // The assets buildpack keeps its own install: the server's is the main one.
        assert_eq!(plan.buildpacks[0].steps[0].command, "npm");
        let steps = &plan.buildpacks[1].steps;
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["install", "build"]);
        assert_eq!(steps[0].args, ["-c", "pip install ."]);
        assert_eq!(steps[0].from.as_deref(), Some("KILN_INSTALL_CMD"));
        assert_eq!(steps[0].outputs, ["deps"]);
        assert_eq!(steps[1].args, ["-c", "make $${NOT_A_TEMPLATE}"]);
        assert_eq!(steps[1].from.as_deref(), Some("kiln.toml build.build"));
        assert_eq!(
            plan.processes[0].command,
            ["/bin/sh", "-c", "serve --port $PORT"]
        );
        assert_eq!(plan.processes[0].buildpack, "kiln.toml");
    }

    #[test]
    fn argv_of_splits_plain_commands_only() {
        assert_eq!(
            argv_of("./server --port 8080"),
            ["./server", "--port", "8080"]
        );
        assert_eq!(argv_of("  bin/app\t-v  "), ["bin/app", "-v"]);
        for shell in [
            "./server --port $PORT",
            "a && b",
            "echo 'hi'",
            "run > log",
            "ls *.txt",
            "cd app",
            "exec ./server",
            "PORT=80 ./server",
            "a # comment",
        ] {
            assert_eq!(argv_of(shell), ["/bin/sh", "-c", shell], "{shell}");
        }
    }

    #[test]
    fn web_is_the_default_even_when_another_is_marked() {
        let plan = plan_of(&[&with_processes(
            "a",
            "[[processes]]\ntype = \"worker\"\ncommand = \"w\"\ndefault = true\n\
             [[processes]]\ntype = \"web\"\ncommand = \"s\"\n\
             [[processes]]\ntype = \"cron\"\ncommand = \"c\"\n",
        )])
        .unwrap();
        assert_eq!(
            types(&plan),
            [("web", true), ("cron", false), ("worker", false)]
        );
    }

    #[test]
    fn without_web_the_last_marked_default_wins() {
        let plan = plan_of(&[
            &with_processes(
                "a",
                "[[processes]]\ntype = \"worker\"\ncommand = \"w\"\ndefault = true\n",
            ),
            &with_processes(
                "b",
                "[[processes]]\ntype = \"jobs\"\ncommand = \"j\"\ndefault = true\n\
                 [[processes]]\ntype = \"api\"\ncommand = \"a\"\n",
            ),
        ])
        .unwrap();
        assert_eq!(
            types(&plan),
            [("jobs", true), ("api", false), ("worker", false)]
        );
    }

    #[test]
    fn the_default_type_survives_an_override() {
        let plan = plan_of(&[
            &with_processes(
                "a",
                "[[processes]]\ntype = \"worker\"\ncommand = \"w\"\ndefault = true\n",
            ),
            &with_processes(
                "b",
                "[[processes]]\ntype = \"worker\"\ncommand = \"w2\"\n\
                 [[processes]]\ntype = \"api\"\ncommand = \"a\"\n",
            ),
        ])
        .unwrap();
        assert_eq!(types(&plan), [("worker", true), ("api", false)]);
        assert_eq!(plan.processes[0].command, ["w2"]);
        assert_eq!(plan.processes[0].buildpack, "b");
    }

    #[test]
    fn otherwise_the_first_type_alphabetically() {
        let plan = plan_of(&[&with_processes(
            "a",
            "[[processes]]\ntype = \"worker\"\ncommand = \"w\"\n\
             [[processes]]\ntype = \"api\"\ncommand = \"a\"\n",
        )])
        .unwrap();
        assert_eq!(types(&plan), [("api", true), ("worker", false)]);
        assert!(plan_of(&[&with_processes("a", "")])
            .unwrap()
            .processes
            .is_empty());
    }

    #[test]
    fn no_process_is_refused_saying_what_was_looked_for_and_how_to_set_one() {
        let plan = plan_of(&[
            &with_processes(
                "a",
                "[[processes]]\ntype = \"web\"\nwhen = { bin = \"*\" }\ncommand = \"x\"\n\
                 [[processes]]\ntype = \"web\"\nwhen = { kind = [\"p\", \"q\"] }\ncommand = \"y\"\n",
            ),
            &with_processes("b", ""),
        ])
        .unwrap();
        let err = plan.default_process().unwrap_err();
        assert!(matches!(err, Error::NoDefaultProcess(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "no default process: nothing says what the image runs; looked for:\n  \
             a: a `web` process (needs fact `bin`, or fact `kind` in [\"p\", \"q\"])\n  \
             b: declares no process\n\
             set a start command: `web = \"COMMAND\"` under [processes] in kiln.toml or \
             KILN_START_COMMAND=COMMAND"
        );

        let runnable = plan_of(&[&with_processes(
            "a",
            "[[processes]]\ntype = \"web\"\ncommand = \"x\"\n",
        )])
        .unwrap();
        assert_eq!(runnable.default_process().unwrap().command, ["x"]);
        assert_eq!(runnable.no_default_process, None);
    }

    #[test]
    fn project_env_and_port_win_over_buildpack_launch_env() {
        let set = set(&[&with_processes(
            "a",
            "[launch.env]\nPORT = \"5000\"\nMODE = \"bp\"\nKEEP = \"1\"\n",
        )]);
        let project = ProjectConfig {
            env: BTreeMap::from([("MODE".to_owned(), "project".to_owned())]),
            image: crate::project::ProjectImage {
                port: Some(3000),
                user: None,
            },
            ..ProjectConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(&set, &all_pass(&set), &project, dir.path()).unwrap();
        assert_eq!(plan.launch_env["PORT"], "3000");
        assert_eq!(plan.launch_env["MODE"], "project");
        assert_eq!(plan.launch_env["KEEP"], "1");
    }

    #[test]
    fn process_and_launch_templates_get_image_paths() {
        let plan = plan_of(&[&with_processes(
            "node",
            "[[layers]]\nname = \"modules\"\nlaunch = true\n\
             [launch.env]\nNODE_PATH = \"${layer:modules}/lib:${app}\"\nPRICE = \"$$5\"\n\
             [[processes]]\ntype = \"web\"\ncommand = [\"${layer:modules}/bin/node\", \"${app}/index.js\", \"$HOME\"]\n\
             [[processes]]\ntype = \"shell\"\ncommand = \"${layer:modules}/bin/x --a b\"\n",
        )])
        .unwrap();
        assert_eq!(
            plan.launch_env["NODE_PATH"],
            "/layers/node/modules/lib:/workspace"
        );
        assert_eq!(plan.launch_env["PRICE"], "$5");
        // An exec array is kept as is: `$HOME` is not split or handed to a shell.
        assert_eq!(
            plan.processes[0].command,
            [
                "/layers/node/modules/bin/node",
                "/workspace/index.js",
                "$HOME"
            ]
        );
        assert_eq!(
            plan.processes[1].command,
            ["/layers/node/modules/bin/x", "--a", "b"]
        );
    }

    #[test]
    fn build_only_keeps_the_runtime_and_layers_out_and_ships_only_named_app_paths() {
        let node = with_processes(
            "node",
            "[[layers]]\nname = \"modules\"\nlaunch = true\n\
             [[runtime]]\nname = \"node\"\n\
             [[build_only]]\nruntime = true\nlayers = [\"modules\"]\nship = [\"dist/site\"]\n\
             why = \"built with node\"\n\
             [[processes]]\ntype = \"web\"\ncommand = \"caddy run\"\n",
        );
        // Another buildpack's start command (a Procfile's `npm start`) may need all of it.
        let procfile = with_processes(
            "procfile",
            "[[processes]]\ntype = \"web\"\ncommand = \"npm start\"\n",
        );
        let overridden = plan_of(&[&node, &procfile]).unwrap();
        let bp = &overridden.buildpacks[0];
        assert!(!bp.runtime.as_ref().unwrap().build_only);
        assert!(bp.layers[0].launch);
        assert!(overridden.ships("package.json") && overridden.ships_runtime("node"));
        assert!(
            bp.facts
                .notes
                .iter()
                .any(|n| n.contains("comes from procfile")),
            "{:?}",
            bp.facts.notes
        );

        let plan = plan_of(&[&node]).unwrap();
        let bp = &plan.buildpacks[0];
        assert!(bp.runtime.as_ref().unwrap().build_only);
        assert!(!plan.ships_runtime("node"));
        assert!(!bp.layers[0].launch);
        assert!(bp.facts.notes.contains(&"built with node".to_owned()));
        for (path, shipped) in [
            ("", true),
            ("dist", true),
            ("dist/site", true),
            ("dist/site/index.html", true),
            ("dist/other.js", false),
            ("dist/sitemap.xml", false),
            ("node_modules/vite", false),
            ("package.json", false),
        ] {
            assert_eq!(plan.ships(path), shipped, "{path}");
        }
        // Without a rule that holds, everything ships.
        let plain = plan_of(&[&with_processes(
            "node",
            "[[runtime]]\nname = \"node\"\n[[processes]]\ntype = \"web\"\ncommand = \"node a.js\"\n",
        )])
        .unwrap();
        assert!(plain.ships("package.json") && plain.ships_runtime("node"));
    }

    #[test]
    fn steps_keep_engine_variables_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.json"), r#"{"name": "a$b", "v": 2}"#).unwrap();
        let set = set(&[&with_processes(
            "x",
            "[build.env]\nOUT = \"${layer:out}\"\nLIT = \"$${HOME}\"\n\
             [[build.steps]]\nname = \"s\"\ncommand = \"${app}/build.sh\"\n\
             args = [\"${json:app.json:name}-${json:app.json:v}\", \"${layer:out}\"]\n\
             workdir = \"sub\"\n\
             [[layers]]\nname = \"out\"\n",
        )]);
        let project = ProjectConfig {
            build: crate::project::ProjectBuild {
                env: BTreeMap::from([("RAW".to_owned(), "${not-a-template}".to_owned())]),
                ..Default::default()
            },
            ..ProjectConfig::default()
        };
        let plan = plan(&set, &all_pass(&set), &project, dir.path()).unwrap();
        let step = &plan.buildpacks[0].steps[0];
        assert_eq!(step.command, "${app}/build.sh");
        assert_eq!(step.args, ["a$$b-2", "${layer:out}"]);
        assert_eq!(step.workdir, "sub");
        assert_eq!(step.env["OUT"], "${layer:out}");
        assert_eq!(step.env["LIT"], "$${HOME}");
        assert_eq!(step.env["RAW"], "$${not-a-template}");
        // What the engine gets after expanding with its own paths:
        let expand = |s: &str| template::expand_paths(s, "/host/app", "/host/layers").unwrap();
        assert_eq!(expand(&step.args[0]), "a$b-2");
        assert_eq!(expand(&step.env["LIT"]), "${HOME}");
        assert_eq!(expand(&step.env["RAW"]), "${not-a-template}");
    }

    #[test]
    fn source_value_errors_name_file_and_key() {
        let manifest = with_processes(
            "x",
            "[[build.steps]]\nname = \"s\"\ncommand = \"c\"\nargs = [\"${toml:Cargo.toml:package.name}\"]\n",
        );
        let err = plan_of(&[&manifest]).unwrap_err().to_string();
        assert!(err.contains("${toml:Cargo.toml:package.name}"), "{err}");
        assert!(err.contains("Cargo.toml not found"), "{err}");
    }

    #[test]
    fn a_verdict_outside_the_set_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = BuildpackSet {
            buildpacks: Vec::new(),
        };
        let detection = Detection {
            detected: true,
            buildpacks: vec![Verdict {
                id: "ghost".into(),
                reason: "x".into(),
            }],
            rejected: Vec::new(),
            app_root: None,
        };
        let err = plan(&empty, &detection, &ProjectConfig::default(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("\"ghost\""), "{err}");
    }
}
