//! The `buildpack.toml` schema as typed data (no behaviour). See `docs/buildpack-toml.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildpackToml {
    pub buildpack: BuildpackInfo,
    #[serde(default)]
    pub detect: DetectRules,
    #[serde(default)]
    pub build: BuildSpec,
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
    #[serde(default)]
    pub processes: Vec<ProcessSpec>,
    /// Processes read from a file in the source tree (e.g. a `Procfile`).
    #[serde(default)]
    pub processes_from: Option<ProcessesFrom>,
    #[serde(default)]
    pub launch: LaunchSpec,
    /// Where the language/runtime version requirement is read from, first hit wins (after the
    /// buildpack's analyzer, `kiln.toml` and `KILN_*` overrides).
    #[serde(default)]
    pub versions: Vec<VersionSource>,
    /// Frameworks recognised by a file's content; the first match sets the `framework` fact.
    #[serde(default)]
    pub frameworks: Vec<FrameworkRule>,
    /// Named facts set from the tree, for `when` and `${fact:NAME}`.
    #[serde(default)]
    pub facts: Vec<FactRule>,
    /// The language runtime this buildpack needs in its build and in the image, provisioned by
    /// the engine for the buildpack's version requirement: `[runtime]`, or `[[runtime]]`
    /// entries with `when` of which the first that holds is planned.
    #[serde(default, deserialize_with = "one_or_many")]
    pub runtime: Vec<RuntimeSpec>,
    /// Debian packages this buildpack needs in the build root and in the run image.
    #[serde(default)]
    pub packages: Vec<PackagesSpec>,
    /// Files the engine writes into this buildpack's layers before the steps run.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// What the build needs and the image does not, when a rule's `when` holds (the first that
    /// does): a static site built with Node ships without Node.
    #[serde(default)]
    pub build_only: Vec<BuildOnlySpec>,
}

/// `[[build_only]] when = {…}, runtime = true, layers = ["modules"], ship = ["${fact:…}"], why =
/// "…"`: the runtime and the named launch layers serve the steps only and stay out of the image;
/// with `ship`, the app layer holds only those app paths (templates). `why` (a template) is
/// the plan's note saying so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildOnlySpec {
    #[serde(default)]
    pub runtime: bool,
    #[serde(default)]
    pub layers: Vec<String>,
    #[serde(default)]
    pub ship: Vec<String>,
    pub why: String,
    #[serde(default)]
    pub when: When,
}

/// `[[files]] layer = "web", path = "Caddyfile", content = "…"`: a file of a (non-cache) layer,
/// written by the engine, so a configuration file needs no step. `content` is a template
/// (`${fact:…}`, `${app}` and `${layer:…}` as image paths).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub layer: String,
    /// Relative to the layer.
    pub path: String,
    pub content: String,
    /// Planned only when these facts hold (the first of several for one path wins).
    #[serde(default)]
    pub when: When,
}

/// `[[packages]] build = ["ruby-dev"], run = ["ruby"], when = { … }`: Debian packages (names
/// or relations such as `libssl3t64 | libssl3`) of the stack's distro. `build` ones join the
/// build root the steps run in; `run` ones join the run image (the `packages` stack layer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesSpec {
    #[serde(default)]
    pub build: Vec<String>,
    #[serde(default)]
    pub run: Vec<String>,
    /// Planned only when these facts hold.
    #[serde(default)]
    pub when: When,
}

/// `[runtime] name = "node", default = "lts"`: the engine provides runtime `name` (downloaded
/// from a mirror, taken from the npm registry or the build host) satisfying the buildpack's
/// version requirement, or `default` when none was found, as a launch layer
/// `/layers/<id>/runtime`. With several (`[[runtime]]`), the first whose `when` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub name: String,
    #[serde(default)]
    pub default: Option<String>,
    /// Planned only when these facts hold (`{ runtime = "bun" }`).
    #[serde(default)]
    pub when: When,
}

/// A table (`[runtime]`) or an array of tables (`[[runtime]]`).
fn one_or_many<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "expected a table or an array of tables")]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(de)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// Sets fact `name` to `value` when `file` exists (and, if given, contains `contains`). The first
/// rule that holds for a name wins; an analyzer's own value for the name wins over all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactRule {
    pub name: String,
    #[serde(default = "fact_true")]
    pub value: String,
    pub file: String,
    #[serde(default)]
    pub contains: Option<String>,
}

fn fact_true() -> String {
    "true".to_owned()
}

/// One place a version requirement can be written down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSource {
    pub file: String,
    /// `text` (default): the first non-empty line, without a leading `v`. `tool-versions`: the
    /// `tool` entry of an asdf `.tool-versions`. `key`: the dotted `key` of a JSON/TOML file.
    /// `pattern`: the text matched by `{}` in `pattern` (`ruby "{}"`), first occurrence.
    #[serde(default)]
    pub format: VersionFormat,
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub pattern: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionFormat {
    #[default]
    Text,
    ToolVersions,
    Key,
    Pattern,
}

/// `name` applies when `file` exists and contains `contains`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkRule {
    pub name: String,
    pub file: String,
    pub contains: String,
}

/// A declarative condition on facts: every named fact must equal the value (or one of the
/// values); `"*"` only asks for the fact to be present, `"!"` for it to be absent.
pub type When = BTreeMap<String, WhenValue>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a string or an array of strings")]
pub enum WhenValue {
    One(String),
    AnyOf(Vec<String>),
}

impl WhenValue {
    /// Whether a fact whose value is `value` (`None`: the fact is absent) satisfies this.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let one = |want: &str| match value {
            Some(have) => want == "*" || (want == have && want != "!"),
            None => want == "!",
        };
        match self {
            WhenValue::One(v) => one(v),
            WhenValue::AnyOf(vs) => vs.iter().any(|v| one(v)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildpackInfo {
    /// Lowercase `[a-z0-9-]+`; the directory name under `buildpacks/`.
    pub id: String,
    pub version: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// All given rules must hold for the buildpack to pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectRules {
    /// At least one of these paths (relative to the source root) must exist.
    #[serde(default)]
    pub any: Vec<String>,
    /// Every one of these paths must exist.
    #[serde(default)]
    pub all: Vec<String>,
    /// None of these paths may exist.
    #[serde(default)]
    pub none: Vec<String>,
    /// Content matches; all must hold.
    #[serde(default, rename = "match")]
    pub matches: Vec<ContentMatch>,
    /// Content alternatives to `any`: the `any` rule also passes when one of these holds (a Deno
    /// app with no `deno.json` but `deno.land/` imports in `main.ts`).
    #[serde(default)]
    pub any_match: Vec<ContentMatch>,
    /// Ecosystem logic in Rust (`crate::analyze`) that turns the tree into facts (version with
    /// its source, package manager, framework, start command, …). Runs once the rules above pass.
    #[serde(default)]
    pub analyzer: Option<String>,
}

/// A content rule on one file: `key` (a dotted path into a JSON or TOML document, chosen by the
/// file extension) must exist, and/or the file must `contain` a substring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentMatch {
    pub file: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Environment for every step of this buildpack (step `env` wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Relative to the app working copy; default `.`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Source files (relative to the app, `*`/`**` globs allowed) whose content decides whether
    /// the step must run again, e.g. `["package-lock.json"]`. With `outputs`, a step whose inputs,
    /// command, args and env are unchanged since it last ran is skipped and its output layers are
    /// taken from the cache.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The `cache = true` layers this step writes (required for skipping; see `inputs`).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Planned only when these facts hold.
    #[serde(default)]
    pub when: When,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// `[a-z0-9-]+`; the layer lands at `/layers/<buildpack id>/<name>` in the image.
    pub name: String,
    /// In the final image.
    #[serde(default)]
    pub launch: bool,
    /// Visible to later buildpacks' steps.
    #[serde(default)]
    pub build: bool,
    /// Kept in the build cache between builds (restored before the steps run).
    #[serde(default)]
    pub cache: bool,
    /// With `cache`: one copy per cache directory, shared by every app built with it, instead of
    /// one per app. Only for caches that speed a tool up and never reach the image (npm's or
    /// pip's download cache): a shared layer cannot be `launch`, capture paths or be a step
    /// output.
    #[serde(default)]
    pub shared: bool,
    /// Paths of the app working copy (relative) that this layer takes over: after the steps they
    /// are packed into this layer at `/workspace/<path>` and left out of the app layer.
    #[serde(default)]
    pub capture: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub command: CommandSpec,
    #[serde(default)]
    pub default: bool,
    /// Planned only when these facts hold.
    #[serde(default)]
    pub when: When,
}

/// An argv array (executed directly) or a string (run by `/bin/sh -c` unless it is a plain argv
/// with no shell syntax, which is then split and executed directly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a command string or an array of strings (argv)"
)]
pub enum CommandSpec {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessesFrom {
    pub file: String,
    pub format: ProcessFileFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessFileFormat {
    Procfile,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// Set in the image config `Env` (values may use `${layer:NAME}`, expanded to image paths).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}
