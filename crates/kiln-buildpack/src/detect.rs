//! Detection: which buildpacks apply to a source tree, and why (or why not).
//! Rules only look at regular files and directories inside the tree; symlinks are not followed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::analyze;
use crate::error::{Error, Result};
use crate::project::ProjectConfig;
use crate::set::BuildpackSet;
use crate::settings::Settings;
use crate::source::{self, Document, Entry, Found};
use crate::spec::{ContentMatch, DetectRules};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub id: String,
    /// Human-readable: "found go.mod", "none of go.mod, main.go found".
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub detected: bool,
    /// Passing buildpacks, in the order they will run.
    pub buildpacks: Vec<Verdict>,
    pub rejected: Vec<Verdict>,
    /// The app's folder relative to the source root when the root itself holds no app but exactly
    /// one top-level folder does (`app`); `None` when the app is the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_root: Option<String>,
}

/// Directories never searched for the app root: dependencies, build outputs, VCS.
const NOT_APP_ROOTS: &[&str] = &["node_modules", "vendor", "target", "dist", "build", "venv"];

/// A root with more top-level folders than this is not "one folder holding the app"; searching
/// them all would make detection cost grow with the tree.
const MAX_APP_ROOT_CANDIDATES: usize = 32;

/// Evaluates every buildpack of `set` against the tree at `src`, with `kiln.toml` read and no
/// `KILN_*` overrides. See [`detect_with`].
pub fn detect(set: &BuildpackSet, src: &Path) -> Result<Detection> {
    detect_with(set, src, &BTreeMap::new())
}

/// Evaluates every buildpack of `set` against the tree at `src`; `env` holds the `KILN_*`
/// variables (see [`crate::settings`]).
///
/// A buildpack passes when all of its rules hold; its reason then lists what each rule found,
/// joined by `; `. A failing buildpack's reason is the first rule that failed (`any`, `all`,
/// `none`, then each `match`). A passing buildpack with an analyzer then runs it, so a malformed
/// manifest (`package.json`, `pyproject.toml`, …) is an error naming the file and line, never a
/// silent rejection. When nothing passes at the root, each top-level folder (one level, skipping
/// `node_modules`, `vendor`, `target`, …) is tried; exactly one passing folder becomes the
/// [`Detection::app_root`]. `kiln.toml` `buildpacks` or `KILN_BUILDPACKS` replace detection.
pub fn detect_with(
    set: &BuildpackSet,
    src: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Detection> {
    // The root itself is the user's choice and may be a symlink; everything below it may not.
    let meta = std::fs::metadata(src).map_err(|source| Error::Io {
        context: format!("reading source directory {}", src.display()),
        source,
    })?;
    if !meta.is_dir() {
        return Err(Error::Io {
            context: format!("reading source directory {}", src.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        });
    }
    let project = ProjectConfig::load(src)?;
    let settings = Settings::resolve(&project, env);
    if let Some((ids, from)) = &settings.buildpacks {
        return pinned(set, src, ids, from, settings.app.as_ref());
    }
    let (buildpacks, rejected) = evaluate_all(set, src, "", settings.app.as_ref())?;
    let mut detection = Detection {
        detected: !buildpacks.is_empty(),
        buildpacks,
        rejected,
        app_root: None,
    };
    if !detection.detected {
        if let Some(found) = app_root(set, src)? {
            detection = found;
        }
    }
    Ok(detection)
}

/// The detection in the single top-level folder where something passes, if there is exactly one.
fn app_root(set: &BuildpackSet, src: &Path) -> Result<Option<Detection>> {
    let candidates: Vec<String> = list_dirs(src)?
        .into_iter()
        .filter(|d| !NOT_APP_ROOTS.contains(&d.as_str()))
        .collect();
    if candidates.len() > MAX_APP_ROOT_CANDIDATES {
        return Ok(None);
    }
    let mut found = Vec::new();
    for dir in candidates {
        let (passed, rejected) = evaluate_all(set, &src.join(&dir), &format!("{dir}/"), None)?;
        if !passed.is_empty() {
            found.push((dir, passed, rejected));
        }
    }
    if found.len() != 1 {
        return Ok(None);
    }
    let (dir, passed, rejected) = found.remove(0);
    let tag = |v: Verdict| Verdict {
        reason: format!("{} (in {dir}/)", v.reason),
        id: v.id,
    };
    Ok(Some(Detection {
        detected: true,
        buildpacks: passed.into_iter().map(tag).collect(),
        rejected: rejected.into_iter().map(tag).collect(),
        app_root: Some(dir),
    }))
}

/// `(passed, rejected)` for every buildpack of `set` on the app at `dir` (`prefix` names it
/// relative to the source root in errors).
fn evaluate_all(
    set: &BuildpackSet,
    dir: &Path,
    prefix: &str,
    app: Option<&(String, String)>,
) -> Result<(Vec<Verdict>, Vec<Verdict>)> {
    let (mut passed, mut rejected) = (Vec::new(), Vec::new());
    for buildpack in &set.buildpacks {
        let id = buildpack.spec.buildpack.id.clone();
        match evaluate(&buildpack.spec.detect, dir)? {
            Ok(reason) => {
                if let Some(name) = &buildpack.spec.detect.analyzer {
                    // Facts are recomputed when planning; here only its errors matter.
                    analyze::run(name, dir, prefix, analyze::Pins { app, link: None })?;
                }
                passed.push(Verdict { id, reason })
            }
            Err(reason) => rejected.push(Verdict { id, reason }),
        }
    }
    Ok((passed, rejected))
}

/// The detection for buildpacks pinned by `kiln.toml` or `KILN_BUILDPACKS`, in the pinned order.
fn pinned(
    set: &BuildpackSet,
    src: &Path,
    ids: &[String],
    from: &str,
    app: Option<&(String, String)>,
) -> Result<Detection> {
    let mut buildpacks = Vec::new();
    for id in ids {
        let buildpack = set.get(id).ok_or_else(|| {
            let known: Vec<&str> = set
                .buildpacks
                .iter()
                .map(|b| b.spec.buildpack.id.as_str())
                .collect();
            Error::Template(format!(
                "{from}: unknown buildpack {id:?} (known: {})",
                known.join(", ")
            ))
        })?;
        if let Some(name) = &buildpack.spec.detect.analyzer {
            analyze::run(name, src, "", analyze::Pins { app, link: None })?;
        }
        buildpacks.push(Verdict {
            id: id.clone(),
            reason: format!("pinned by {from}"),
        });
    }
    let rejected = set
        .buildpacks
        .iter()
        .filter(|b| !ids.contains(&b.spec.buildpack.id))
        .map(|b| Verdict {
            id: b.spec.buildpack.id.clone(),
            reason: format!("not pinned ({from})"),
        })
        .collect();
    Ok(Detection {
        detected: !buildpacks.is_empty(),
        buildpacks,
        rejected,
        app_root: None,
    })
}

/// The non-hidden directories directly in `src` (not following symlinks), sorted.
fn list_dirs(src: &Path) -> Result<Vec<String>> {
    analyze::Tree { src, prefix: "" }.list(".", true)
}

/// `Ok(pass reason)` or `Err(fail reason)`; the outer `Result` is for I/O failures only.
fn evaluate(rules: &DetectRules, src: &Path) -> Result<std::result::Result<String, String>> {
    let has_rules = !(rules.any.is_empty()
        && rules.any_match.is_empty()
        && rules.all.is_empty()
        && rules.none.is_empty()
        && rules.matches.is_empty());
    if !has_rules {
        // Passing on nothing would make a buildpack run on every tree.
        return Ok(Err("declares no detect rules".to_owned()));
    }
    let mut passed = Vec::new();

    if !rules.any.is_empty() || !rules.any_match.is_empty() {
        let mut found = first_present(&rules.any, src)?.map(|path| format!("found {path}"));
        for rule in &rules.any_match {
            if found.is_some() {
                break;
            }
            found = content_match(rule, src)?.ok();
        }
        let looked_for: Vec<String> = rules
            .any
            .iter()
            .cloned()
            .chain(rules.any_match.iter().map(describe_match))
            .collect();
        match found {
            Some(reason) => passed.push(reason),
            None if looked_for.len() == 1 => return Ok(Err(format!("missing {}", looked_for[0]))),
            None => return Ok(Err(format!("none of {} found", looked_for.join(", ")))),
        }
    }
    if !rules.all.is_empty() {
        let (_, missing) = partition(&rules.all, src)?;
        if !missing.is_empty() {
            return Ok(Err(format!("missing {}", missing.join(", "))));
        }
        passed.push(format!("found {}", rules.all.join(", ")));
    }
    if !rules.none.is_empty() {
        let (found, _) = partition(&rules.none, src)?;
        if let Some(first) = found.first() {
            return Ok(Err(format!("found {first} (excluded)")));
        }
        passed.push(format!("no {}", rules.none.join(", ")));
    }
    for rule in &rules.matches {
        match content_match(rule, src)? {
            Ok(reason) => passed.push(reason),
            Err(reason) => return Ok(Err(reason)),
        }
    }
    Ok(Ok(passed.join("; ")))
}

/// Whether `rel` is a regular file or directory reached without symlinks. A `*` in the last
/// component (`*.csproj`, `src/bin/*.rs`) matches by listing that one directory, never deeper.
fn present(rel: &str, src: &Path) -> Result<bool> {
    let (dir, name) = rel.rsplit_once('/').unwrap_or((".", rel));
    if name.contains('*') {
        if dir.contains('*') || !(dir == "." || source::entry(src, dir)? == Entry::Dir) {
            return Ok(false);
        }
        let tree = analyze::Tree { src, prefix: "" };
        let files = tree
            .list(dir, false)?
            .into_iter()
            .chain(tree.list(dir, true)?);
        return Ok(files.into_iter().any(|f| wildcard(name, &f)));
    }
    Ok(matches!(source::entry(src, rel)?, Entry::File | Entry::Dir))
}

/// `*` matches any run of characters (the name has no `/`).
fn wildcard(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn first_present<'a>(paths: &'a [String], src: &Path) -> Result<Option<&'a str>> {
    for p in paths {
        if present(p, src)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// `(present, absent)`, each in the given order.
fn partition<'a>(paths: &'a [String], src: &Path) -> Result<(Vec<&'a str>, Vec<&'a str>)> {
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for p in paths {
        if present(p, src)? {
            found.push(p.as_str());
        } else {
            missing.push(p.as_str());
        }
    }
    Ok((found, missing))
}

fn content_match(rule: &ContentMatch, src: &Path) -> Result<std::result::Result<String, String>> {
    let file = &rule.file;
    let bytes = match source::read_regular(src, file)? {
        Ok(bytes) => bytes,
        Err(Entry::Missing) => return Ok(Err(format!("missing {file}"))),
        Err(other) => return Ok(Err(format!("{file} {}", other.describe()))),
    };
    let mut found = Vec::new();
    if let Some(key) = &rule.key {
        // Validation only lets `key` through with a .json or .toml file.
        let Some(format) = source::format_of(file) else {
            return Ok(Err(format!("{file} is neither .json nor .toml")));
        };
        let doc = match Document::parse(format, &bytes) {
            Ok(doc) => doc,
            Err(e) => return Ok(Err(format!("{file} is not valid {}: {e}", format.name()))),
        };
        if doc.get(key) == Found::Absent {
            return Ok(Err(format!("{file} has no key {key}")));
        }
        found.push(format!("has key {key}"));
    }
    if let Some(needle) = &rule.contains {
        if !contains(&bytes, needle.as_bytes()) {
            return Ok(Err(format!("{file} does not contain {needle:?}")));
        }
        found.push(format!("contains {needle:?}"));
    }
    Ok(Ok(format!("{file} {}", found.join(" and "))))
}

/// A content rule as something looked for: `main.ts containing "deno.land/"`.
fn describe_match(rule: &ContentMatch) -> String {
    match (&rule.key, &rule.contains) {
        (Some(key), _) => format!("{} with key {key}", rule.file),
        (None, Some(needle)) => format!("{} containing {needle:?}", rule.file),
        (None, None) => rule.file.clone(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rules(text: &str) -> DetectRules {
        toml::from_str(text).unwrap()
    }

    fn eval(text: &str, src: &Path) -> std::result::Result<String, String> {
        evaluate(&rules(text), src).unwrap()
    }

    #[test]
    fn no_rules_never_pass() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(eval("", dir.path()), Err("declares no detect rules".into()));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.csproj", "App.csproj"));
        assert!(!wildcard("*.csproj", "App.csproj.user"));
        assert!(wildcard("a*b*c", "aXbYc"));
        assert!(!wildcard("a*b*c", "aXc"));
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Web.fsproj"), "").unwrap();
        assert_eq!(
            eval("any = [\"*.csproj\", \"*.fsproj\"]", dir.path()),
            Ok("found *.fsproj".into())
        );
    }

    #[test]
    fn any_all_none() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        fs::write(src.join("main.go"), "package main").unwrap();
        fs::create_dir(src.join("cmd")).unwrap();

        assert_eq!(
            eval("any = [\"go.mod\", \"main.go\"]", src),
            Ok("found main.go".into())
        );
        assert_eq!(
            eval("any = [\"go.mod\", \"go.work\"]", src),
            Err("none of go.mod, go.work found".into())
        );
        assert_eq!(
            eval("any = [\"go.mod\"]", src),
            Err("missing go.mod".into())
        );
        assert_eq!(
            eval("all = [\"main.go\", \"cmd\"]", src),
            Ok("found main.go, cmd".into())
        );
        assert_eq!(
            eval("all = [\"main.go\", \"a\", \"b\"]", src),
            Err("missing a, b".into())
        );
        assert_eq!(
            eval("any = [\"main.go\"]\nnone = [\"Dockerfile\"]", src),
            Ok("found main.go; no Dockerfile".into())
        );
        fs::write(src.join("Dockerfile"), "FROM x").unwrap();
        assert_eq!(
            eval("any = [\"main.go\"]\nnone = [\"x\", \"Dockerfile\"]", src),
            Err("found Dockerfile (excluded)".into())
        );
    }

    #[test]
    fn content_matches() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        fs::write(
            src.join("package.json"),
            r#"{"scripts":{"start":"node server.js"},"dependencies":{"next":"14"}}"#,
        )
        .unwrap();
        fs::write(src.join("broken.json"), "{\"a\": ").unwrap();
        fs::write(src.join("pyproject.toml"), "[tool.poetry]\nname = \"x\"\n").unwrap();

        let m = |body: &str| eval(&format!("[[match]]\n{body}"), src);
        assert_eq!(
            m("file = \"package.json\"\nkey = \"scripts.start\""),
            Ok("package.json has key scripts.start".into())
        );
        assert_eq!(
            m("file = \"package.json\"\nkey = \"scripts.build\""),
            Err("package.json has no key scripts.build".into())
        );
        assert_eq!(
            m("file = \"package.json\"\nkey = \"dependencies.next\"\ncontains = \"node\""),
            Ok("package.json has key dependencies.next and contains \"node\"".into())
        );
        assert_eq!(
            m("file = \"package.json\"\ncontains = \"deno\""),
            Err("package.json does not contain \"deno\"".into())
        );
        assert_eq!(
            m("file = \"pyproject.toml\"\nkey = \"tool.poetry\""),
            Ok("pyproject.toml has key tool.poetry".into())
        );
        assert_eq!(
            m("file = \"app.json\"\ncontains = \"x\""),
            Err("missing app.json".into())
        );
        let broken = m("file = \"broken.json\"\nkey = \"a\"").unwrap_err();
        assert!(
            broken.starts_with("broken.json is not valid JSON: "),
            "{broken}"
        );
    }

    #[test]
    fn a_directory_is_not_a_matchable_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("x.json")).unwrap();
        assert_eq!(
            eval("[[match]]\nfile = \"x.json\"\ncontains = \"a\"", dir.path()),
            Err("x.json is a directory".into())
        );
    }

    #[test]
    fn source_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        let set = BuildpackSet::builtin().unwrap();
        assert!(detect(&set, &file)
            .unwrap_err()
            .to_string()
            .contains("reading source directory"));
        assert!(detect(&set, &dir.path().join("nope")).is_err());
    }
}
