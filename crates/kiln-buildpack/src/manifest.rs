//! Reading TOML manifests with line numbers in errors, and the checks a `buildpack.toml` must pass
//! beyond its schema (names, duplicates, paths, template variables).

use std::collections::BTreeSet;
use std::path::{Component, Path};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::spec::{BuildpackToml, CommandSpec, VersionFormat};
use crate::template::{self, Var};

/// Deserializes `text`; a syntax or schema error becomes [`Error::Manifest`] with the 1-based line
/// and column the parser points at and its message alone (its rendered snippet would repeat the
/// file).
pub(crate) fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let location = e.span().map(|span| error_location(text, span.start));
        Error::Manifest {
            path: path.to_path_buf(),
            line: location.map(|(line, _)| line),
            column: location.map(|(_, column)| column),
            message: one_line(e.message()),
        }
    })
}

/// The line to report for a parse error at byte `offset`. Something left open at the end of the
/// file (`any = ["x"` on the last line) is reported at end of input, which may be an empty line
/// after the final newline; the last line with content is where the fix goes.
pub(crate) fn error_line(text: &str, offset: usize) -> usize {
    error_location(text, offset).0
}

/// `(line, column)`, both 1-based (the column in characters), of a parse error at byte
/// `offset`, moved back to the last content of the file like [`error_line`].
pub(crate) fn error_location(text: &str, offset: usize) -> (usize, usize) {
    let content_end = text.trim_end().len();
    let mut offset = offset.min(content_end.saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |at| at + 1);
    (
        line_of(text, offset),
        text[line_start..offset].chars().count() + 1,
    )
}

/// The parser's message on one line: it puts details (`expected `]``) on lines of their own.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// `text` as quoted in an error message: at most [`EXCERPT_CHARS`] characters, then `…`. Input
/// lines can be megabytes long; a message must stay readable.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

pub(crate) const EXCERPT_CHARS: usize = 80;

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A manifest that parsed but means something invalid (no line: the typed data has none).
/// The text of project file `name` at the source root `src`, `None` when there is none. A
/// symlink is refused: following it could read a file from outside the source tree.
pub(crate) fn read_project_file(src: &Path, name: &str) -> Result<Option<String>> {
    let path = src.join(name);
    match crate::source::entry(src, name)? {
        crate::source::Entry::Missing => return Ok(None),
        crate::source::Entry::File => {}
        crate::source::Entry::Symlink => {
            return Err(invalid(&path, "is a symlink; it must be a regular file"))
        }
        crate::source::Entry::Dir | crate::source::Entry::Other => {
            return Err(invalid(&path, "is not a regular file"))
        }
    }
    std::fs::read_to_string(&path)
        .map(Some)
        .map_err(|source| Error::Io {
            context: format!("reading {}", path.display()),
            source,
        })
}

pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::Manifest {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: message.into(),
    }
}

/// `[a-z0-9-]+`: buildpack ids and layer names, which become directory names.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `[A-Za-z0-9_-]+`: process types (Procfile's own rule).
pub(crate) fn is_process_type(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A path inside the source tree or app: relative, without `..`, naming something (not `.`).
/// Returns why not.
pub(crate) fn check_relative(path: &str) -> std::result::Result<(), &'static str> {
    match check_within(path)? {
        true => Ok(()),
        false => Err("must name a file or directory"),
    }
}

/// A relative path without `..` (`.` allowed): whether it names something below the root.
fn check_within(path: &str) -> std::result::Result<bool, &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err("must be relative");
    }
    let mut named = false;
    for component in p.components() {
        match component {
            Component::Normal(_) => named = true,
            Component::CurDir => {}
            Component::ParentDir => return Err("may not contain `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("must be relative"),
        }
    }
    Ok(named)
}

/// An environment variable name as POSIX defines a portable one (letters, digits and `_`, not
/// starting with a digit): what shells and tools can set and read. Used for `kiln.toml`,
/// `buildpack.toml` and `kiln build --env` alike.
pub fn check_env_name(name: &str) -> std::result::Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Err("is empty"),
        Some(first)
            if (first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(())
        }
        Some(_) => Err("must be letters, digits and `_`, not starting with a digit"),
    }
}

pub(crate) fn check_env_names<'a>(
    names: impl IntoIterator<Item = &'a String>,
    table: &str,
    path: &Path,
) -> Result<()> {
    for name in names {
        check_env_name(name)
            .map_err(|why| invalid(path, format!("{table}: variable name {name:?} {why}")))?;
    }
    Ok(())
}

/// Everything the schema cannot say about a `buildpack.toml`.
pub(crate) fn validate_buildpack(spec: &BuildpackToml, path: &Path) -> Result<()> {
    let id = &spec.buildpack.id;
    if !is_name(id) {
        return Err(invalid(
            path,
            format!("buildpack.id {id:?} must match [a-z0-9-]+"),
        ));
    }
    if spec.buildpack.version.trim().is_empty() {
        return Err(invalid(path, "buildpack.version is empty"));
    }

    let detect = &spec.detect;
    for (rule, paths) in [
        ("any", &detect.any),
        ("all", &detect.all),
        ("none", &detect.none),
    ] {
        for p in paths {
            check_relative(p)
                .map_err(|why| invalid(path, format!("detect.{rule}: path {p:?} {why}")))?;
        }
    }
    for m in detect.matches.iter().chain(&detect.any_match) {
        check_relative(&m.file)
            .map_err(|why| invalid(path, format!("detect.match: file {:?} {why}", m.file)))?;
        if m.key.is_none() && m.contains.is_none() {
            return Err(invalid(
                path,
                format!("detect.match on {:?} needs `key` or `contains`", m.file),
            ));
        }
        if let Some(key) = &m.key {
            if !(m.file.ends_with(".json") || m.file.ends_with(".toml")) {
                return Err(invalid(
                    path,
                    format!(
                        "detect.match: `key` needs a .json or .toml file, not {:?}",
                        m.file
                    ),
                ));
            }
            check_key(key).map_err(|why| invalid(path, format!("detect.match: key {why}")))?;
        }
    }

    if let Some(name) = &detect.analyzer {
        if !crate::analyze::ANALYZERS.contains(&name.as_str()) {
            return Err(invalid(
                path,
                format!(
                    "detect.analyzer {name:?} is not one of {}",
                    crate::analyze::ANALYZERS.join(", ")
                ),
            ));
        }
    }
    for v in &spec.versions {
        check_relative(&v.file)
            .map_err(|why| invalid(path, format!("versions: file {:?} {why}", v.file)))?;
        let needed = match v.format {
            VersionFormat::Text => None,
            VersionFormat::ToolVersions => v.tool.is_none().then_some("tool"),
            VersionFormat::Key => v.key.is_none().then_some("key"),
            VersionFormat::Pattern => (!v.pattern.as_deref().is_some_and(|p| p.contains("{}")))
                .then_some("pattern containing {}"),
        };
        if let Some(field) = needed {
            return Err(invalid(
                path,
                format!("versions: {:?} needs `{field}` for its format", v.file),
            ));
        }
    }
    for f in &spec.frameworks {
        check_relative(&f.file)
            .map_err(|why| invalid(path, format!("frameworks: file {:?} {why}", f.file)))?;
    }
    for f in &spec.facts {
        check_relative(&f.file)
            .map_err(|why| invalid(path, format!("facts: file {:?} {why}", f.file)))?;
        if f.name.is_empty() {
            return Err(invalid(path, "facts: a rule has an empty name"));
        }
    }

    let mut layers = BTreeSet::new();
    for layer in &spec.layers {
        if !is_name(&layer.name) {
            return Err(invalid(
                path,
                format!("layer name {:?} must match [a-z0-9-]+", layer.name),
            ));
        }
        if !layers.insert(layer.name.as_str()) {
            return Err(invalid(
                path,
                format!("layer {:?} declared twice", layer.name),
            ));
        }
        if layer.shared && (!layer.cache || layer.launch || !layer.capture.is_empty()) {
            return Err(invalid(
                path,
                format!(
                    "layer {:?}: `shared` needs `cache = true` and neither `launch` nor `capture` \
                     (a shared cache must never reach an image)",
                    layer.name
                ),
            ));
        }
        for p in &layer.capture {
            check_relative(p).map_err(|why| {
                invalid(
                    path,
                    format!("layer {:?}: capture path {p:?} {why}", layer.name),
                )
            })?;
        }
    }

    for file in &spec.files {
        let declared = spec.layers.iter().find(|l| l.name == file.layer);
        match declared {
            None => {
                return Err(invalid(
                    path,
                    format!(
                        "files: {:?} is in layer {:?}, which is not declared in [[layers]]",
                        file.path, file.layer
                    ),
                ))
            }
            Some(layer) if layer.cache => {
                return Err(invalid(
                    path,
                    format!(
                        "files: layer {:?} is a cache layer; written files belong in a fresh one",
                        file.layer
                    ),
                ))
            }
            Some(_) => {}
        }
        check_relative(&file.path)
            .map_err(|why| invalid(path, format!("files: path {:?} {why}", file.path)))?;
    }

    for rule in &spec.build_only {
        if let Some(layer) = rule
            .layers
            .iter()
            .find(|l| !spec.layers.iter().any(|d| d.name == **l))
        {
            return Err(invalid(
                path,
                format!("build_only: layer {layer:?} is not declared in [[layers]]"),
            ));
        }
    }

    let mut steps = BTreeSet::new();
    for step in &spec.build.steps {
        if step.name.trim().is_empty() {
            return Err(invalid(path, "a build step has an empty name"));
        }
        // Variants of one step (npm/yarn/pnpm installs) share a name under different `when`s; the
        // first whose `when` holds is planned, so a variant after an unconditional one is dead.
        if !steps.insert((step.name.as_str(), step.when.is_empty())) && step.when.is_empty()
            || steps.contains(&(step.name.as_str(), true)) && !step.when.is_empty()
        {
            return Err(invalid(
                path,
                format!("build step {:?} declared twice", step.name),
            ));
        }
        if step.command.trim().is_empty() {
            return Err(invalid(
                path,
                format!("build step {:?} has an empty command", step.name),
            ));
        }
        if let Some(workdir) = &step.workdir {
            // Plain paths only: a template could point the step outside the app.
            let ok = check_within(workdir).and_then(|_| {
                if workdir.contains('$') {
                    Err("may not use templates")
                } else {
                    Ok(())
                }
            });
            ok.map_err(|why| {
                invalid(
                    path,
                    format!("build step {:?}: workdir {workdir:?} {why}", step.name),
                )
            })?;
        }
        check_env_names(
            step.env.keys(),
            &format!("build step {:?} env", step.name),
            path,
        )?;
        for input in &step.inputs {
            check_within(input).map_err(|why| {
                invalid(
                    path,
                    format!("build step {:?}: input {input:?} {why}", step.name),
                )
            })?;
        }
        for output in &step.outputs {
            let cached = spec
                .layers
                .iter()
                .any(|l| &l.name == output && l.cache && !l.shared);
            if !cached {
                return Err(invalid(
                    path,
                    format!(
                        "build step {:?}: output {output:?} is not a declared `cache = true`, unshared layer",
                        step.name
                    ),
                ));
            }
        }
        if step.inputs.is_empty() != step.outputs.is_empty() {
            return Err(invalid(
                path,
                format!(
                    "build step {:?}: `inputs` and `outputs` go together (a skipped step must say what it would have written)",
                    step.name
                ),
            ));
        }
    }
    check_env_names(spec.build.env.keys(), "[build.env]", path)?;
    check_env_names(spec.launch.env.keys(), "[launch.env]", path)?;

    let mut types = BTreeSet::new();
    let mut defaults = Vec::new();
    for process in &spec.processes {
        let kind = &process.kind;
        if !is_process_type(kind) {
            return Err(invalid(
                path,
                format!("process type {kind:?} must match [A-Za-z0-9_-]+"),
            ));
        }
        // As for steps: variants under different `when`s, the first that holds is planned.
        if !types.insert((kind.as_str(), process.when.is_empty())) && process.when.is_empty()
            || types.contains(&(kind.as_str(), true)) && !process.when.is_empty()
        {
            return Err(invalid(
                path,
                format!("process type {kind:?} declared twice"),
            ));
        }
        if process.default && !defaults.contains(&kind.as_str()) {
            defaults.push(kind.as_str());
        }
        let empty = match &process.command {
            CommandSpec::Exec(argv) => argv.first().is_none_or(|a| a.trim().is_empty()),
            CommandSpec::Shell(line) => line.trim().is_empty(),
        };
        if empty {
            return Err(invalid(
                path,
                format!("process {kind:?} has an empty command"),
            ));
        }
    }
    if defaults.len() > 1 {
        return Err(invalid(
            path,
            format!(
                "more than one default process: {} (at most one may set default = true)",
                defaults.join(", ")
            ),
        ));
    }
    if let Some(from) = &spec.processes_from {
        check_relative(&from.file)
            .map_err(|why| invalid(path, format!("processes_from: file {:?} {why}", from.file)))?;
    }

    for text in templates(spec) {
        check_template(text, &layers, path)?;
    }
    Ok(())
}

/// Every string of a buildpack that is a template.
fn templates(spec: &BuildpackToml) -> impl Iterator<Item = &String> {
    let steps = spec.build.steps.iter().flat_map(|s| {
        std::iter::once(&s.command)
            .chain(&s.args)
            .chain(s.env.values())
    });
    let processes = spec.processes.iter().flat_map(|p| match &p.command {
        CommandSpec::Exec(argv) => argv.iter().collect::<Vec<_>>(),
        CommandSpec::Shell(line) => vec![line],
    });
    spec.build
        .env
        .values()
        .chain(steps)
        .chain(processes)
        .chain(spec.launch.env.values())
}

fn check_template(text: &str, layers: &BTreeSet<&str>, path: &Path) -> Result<()> {
    let vars = template::variables(text).map_err(|e| invalid(path, e.to_string()))?;
    for var in vars {
        match template::parse_var(var) {
            None => {
                return Err(invalid(
                    path,
                    format!(
                        "unknown variable `${{{var}}}` in {text:?} (known: ${{app}}, \
                         ${{layer:NAME}}, ${{fact:NAME}}, ${{toml:FILE:KEY}}, ${{json:FILE:KEY}})"
                    ),
                ))
            }
            Some(Var::App) => {}
            Some(Var::Fact(name)) => {
                if name.is_empty() {
                    return Err(invalid(path, format!("`${{{var}}}` names no fact")));
                }
            }
            Some(Var::Layer(name)) => {
                if !layers.contains(name) {
                    return Err(invalid(
                        path,
                        format!(
                            "`${{{var}}}` refers to layer {name:?}, which is not declared in \
                             [[layers]]"
                        ),
                    ));
                }
            }
            Some(Var::Source { file, key, .. }) => {
                check_relative(file)
                    .map_err(|why| invalid(path, format!("`${{{var}}}`: file {file:?} {why}")))?;
                check_key(key).map_err(|why| invalid(path, format!("`${{{var}}}`: key {why}")))?;
            }
        }
    }
    Ok(())
}

/// A dotted key: non-empty segments.
fn check_key(key: &str) -> std::result::Result<(), String> {
    if key.split('.').any(str::is_empty) {
        Err(format!(
            "{key:?} must be dotted non-empty names, e.g. package.name"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<()> {
        let path = Path::new("bp/buildpack.toml");
        let spec: BuildpackToml = parse_toml(text, path)?;
        validate_buildpack(&spec, path)
    }

    const HEAD: &str = "[buildpack]\nid = \"x\"\nversion = \"1\"\n";

    fn err(text: &str) -> String {
        check(&format!("{HEAD}{text}")).unwrap_err().to_string()
    }

    #[test]
    fn line_of_counts_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a\n", 99), 2);
    }

    #[test]
    fn unclosed_at_end_of_file_points_at_the_last_content_line() {
        let e = check("[buildpack]\nid = \"x\"\nversion = \"1\"\n[detect]\nany = [\"x\"\n\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "bp/buildpack.toml:5:10: invalid array: expected `]`");
    }

    #[test]
    fn syntax_error_has_line_and_plain_message() {
        let e = check("[buildpack]\nid = \"x\"\nversion = \n").unwrap_err();
        match e {
            Error::Manifest { line, message, .. } => {
                assert_eq!(line, Some(3));
                assert!(!message.contains('|'), "snippet leaked: {message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names() {
        assert!(is_name("go-cache1"));
        assert!(!is_name(""));
        assert!(!is_name("Go"));
        assert!(!is_name("a_b"));
        assert!(is_process_type("web_2-A"));
        assert!(!is_process_type("we b"));
    }

    #[test]
    fn relative_paths() {
        assert!(check_relative("a/b").is_ok());
        assert!(check_relative("./a").is_ok());
        assert_eq!(check_relative("/a"), Err("must be relative"));
        assert_eq!(check_relative("a/../b"), Err("may not contain `..`"));
        assert_eq!(check_relative("."), Err("must name a file or directory"));
        assert_eq!(check_relative(""), Err("is empty"));
        assert_eq!(check_within("./"), Ok(false));
        assert_eq!(check_within("a/.."), Err("may not contain `..`"));
    }

    #[test]
    fn valid_buildpack_passes() {
        check(&format!(
            "{HEAD}[build.env]\nX = \"${{layer:a}}\"\n[[build.steps]]\nname = \"s\"\n\
             command = \"${{app}}/run\"\nargs = [\"${{toml:Cargo.toml:package.name}}\"]\n\
             [[layers]]\nname = \"a\"\ncapture = [\"target\"]\n\
             [[processes]]\ntype = \"web\"\ncommand = \"${{layer:a}}/x\"\ndefault = true\n"
        ))
        .unwrap();
    }

    #[test]
    fn rejects_bad_ids_and_names() {
        assert!(check("[buildpack]\nid = \"\"\nversion = \"1\"\n")
            .unwrap_err()
            .to_string()
            .contains("buildpack.id \"\""));
        assert!(err("[[layers]]\nname = \"Bin\"\n").contains("layer name \"Bin\""));
    }

    #[test]
    fn rejects_duplicates() {
        assert!(err("[[layers]]\nname = \"a\"\n[[layers]]\nname = \"a\"\n")
            .contains("layer \"a\" declared twice"));
        assert!(err("[[build.steps]]\nname = \"s\"\ncommand = \"c\"\n\
             [[build.steps]]\nname = \"s\"\ncommand = \"c\"\n")
        .contains("build step \"s\" declared twice"));
        assert!(err("[[processes]]\ntype = \"web\"\ncommand = \"a\"\n\
             [[processes]]\ntype = \"web\"\ncommand = \"b\"\n")
        .contains("process type \"web\" declared twice"));
        assert!(err(
            "[[processes]]\ntype = \"web\"\ncommand = \"a\"\ndefault = true\n\
             [[processes]]\ntype = \"w\"\ncommand = \"b\"\ndefault = true\n"
        )
        .contains("more than one default process: web, w"));
    }

    #[test]
    fn shared_layers_are_download_caches_only() {
        check(&format!(
            "{HEAD}[[layers]]\nname = \"dl\"\ncache = true\nshared = true\n"
        ))
        .unwrap();
        for bad in [
            "[[layers]]\nname = \"dl\"\nshared = true\n",
            "[[layers]]\nname = \"dl\"\ncache = true\nshared = true\nlaunch = true\n",
            "[[layers]]\nname = \"dl\"\ncache = true\nshared = true\ncapture = [\"x\"]\n",
        ] {
            assert!(err(bad).contains("`shared` needs `cache = true`"), "{bad}");
        }
        assert!(err("[[layers]]\nname = \"dl\"\ncache = true\nshared = true\n\
             [[build.steps]]\nname = \"s\"\ncommand = \"c\"\ninputs = [\"a\"]\noutputs = [\"dl\"]\n")
        .contains("is not a declared `cache = true`, unshared layer"));
    }

    #[test]
    fn workdir_may_be_the_app_root() {
        check(&format!(
            "{HEAD}[[build.steps]]\nname = \"s\"\ncommand = \"c\"\nworkdir = \".\"\n"
        ))
        .unwrap();
        assert!(
            err("[[build.steps]]\nname = \"s\"\ncommand = \"c\"\nworkdir = \"../x\"\n")
                .contains("workdir \"../x\" may not contain `..`")
        );
    }

    #[test]
    fn rejects_escaping_capture_and_workdir() {
        assert!(err("[[layers]]\nname = \"a\"\ncapture = [\"../x\"]\n")
            .contains("capture path \"../x\" may not contain `..`"));
        assert!(err("[[layers]]\nname = \"a\"\ncapture = [\"/x\"]\n").contains("must be relative"));
        assert!(
            err("[[build.steps]]\nname = \"s\"\ncommand = \"c\"\nworkdir = \"${app}\"\n")
                .contains("may not use templates")
        );
    }

    #[test]
    fn files_need_a_fresh_declared_layer_and_a_relative_path() {
        let file = |layer: &str, path: &str| {
            format!("[[files]]\nlayer = \"{layer}\"\npath = \"{path}\"\ncontent = \"x\"\n")
        };
        assert!(err(&file("web", "Caddyfile")).contains("not declared in [[layers]]"));
        let cached = format!(
            "[[layers]]\nname = \"web\"\ncache = true\n{}",
            file("web", "f")
        );
        assert!(err(&cached).contains("is a cache layer"));
        let escaping = format!("[[layers]]\nname = \"web\"\n{}", file("web", "../f"));
        assert!(err(&escaping).contains("may not contain `..`"));
        let fine = format!("[[layers]]\nname = \"web\"\n{}", file("web", "etc/f"));
        assert!(check(&format!("{HEAD}{fine}")).is_ok());
    }

    #[test]
    fn rejects_undeclared_layer_and_unknown_variables() {
        let e = err("[launch.env]\nP = \"${layer:x}/bin\"\n");
        assert!(e.contains("bp/buildpack.toml"), "{e}");
        assert!(e.contains("${layer:x}"), "{e}");
        let e = err("[[processes]]\ntype = \"web\"\ncommand = [\"${home}\"]\n");
        assert!(e.contains("unknown variable `${home}`"), "{e}");
        let e = err("[build.env]\nA = \"${app\"\n");
        assert!(e.contains("unterminated"), "{e}");
        let e = err("[build.env]\nA = \"${toml:../x.toml:a}\"\n");
        assert!(e.contains("may not contain `..`"), "{e}");
    }

    #[test]
    fn rejects_meaningless_detect_rules() {
        assert!(err("[[detect.match]]\nfile = \"a.json\"\n").contains("needs `key` or `contains`"));
        assert!(err("[[detect.match]]\nfile = \"a.yaml\"\nkey = \"x\"\n")
            .contains("needs a .json or .toml file"));
        assert!(err("[detect]\nany = [\"/etc/passwd\"]\n").contains("must be relative"));
    }

    #[test]
    fn wrong_command_type_says_what_is_expected() {
        let e = err("[[processes]]\ntype = \"web\"\ncommand = 5\n");
        assert_eq!(
            e,
            "bp/buildpack.toml:6:11: expected a command string or an array of strings (argv)"
        );
    }

    #[test]
    fn rejects_empty_commands_and_env_names() {
        assert!(err("[[processes]]\ntype = \"web\"\ncommand = []\n").contains("empty command"));
        for name in ["A=B", "A B", "1A", "A-B"] {
            let e = err(&format!("[launch.env]\n\"{name}\" = \"x\"\n"));
            assert!(
                e.contains(&format!(
                    "variable name {name:?} must be letters, digits and `_`"
                )),
                "{e}"
            );
        }
        assert_eq!(check_env_name("_PATH_2"), Ok(()));
    }
}
