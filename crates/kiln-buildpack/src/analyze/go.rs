//! Go: the version from `go.mod`'s `toolchain`/`go` directives, `go.work` workspaces, and which
//! package to build (the root, or a `cmd/<name>` layout).

use super::{Facts, Sourced, Tree, Workspaces};
use crate::error::Result;
use crate::manifest::excerpt;

/// The directives `go` accepts in each file (cmd/go/internal/modfile); anything else makes every
/// `go` command fail, so it is refused here with the file and line.
const GO_MOD_DIRECTIVES: &[&str] = &[
    "module",
    "go",
    "toolchain",
    "godebug",
    "require",
    "exclude",
    "replace",
    "retract",
    "tool",
    "ignore",
];
const GO_WORK_DIRECTIVES: &[&str] = &["go", "toolchain", "godebug", "use", "replace"];

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let go_mod = tree.text("go.mod")?;
    if let Some(text) = &go_mod {
        check_syntax(tree, "go.mod", text, GO_MOD_DIRECTIVES)?;
    }
    let directive = |name: &str| {
        go_mod.as_deref().and_then(|text| {
            text.lines().find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(name))
                    .then(|| words.next().map(str::to_owned))
                    .flatten()
            })
        })
    };
    // `toolchain go1.22.3` is the exact toolchain; `go 1.22` the minimum language version.
    facts.version = if let Some(t) = directive("toolchain") {
        Some(Sourced {
            version: t.trim_start_matches("go").to_owned(),
            from: "go.mod toolchain".into(),
        })
    } else {
        directive("go").map(|v| Sourced {
            version: format!(">={v}"),
            from: "go.mod go".into(),
        })
    };
    let module = directive("module");
    if go_mod.is_some() && module.is_none() {
        return Err(tree.malformed(
            "go.mod",
            None,
            "no module path: go needs a `module example.com/app` directive".into(),
        ));
    }
    if let Some(module) = &module {
        facts.set("module", module.clone());
    }

    if let Some(work) = tree.text("go.work")? {
        check_syntax(tree, "go.work", &work, GO_WORK_DIRECTIVES)?;
        let members = work
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("./") || l.starts_with("use ./"))
            .map(|l| l.trim_start_matches("use ").to_owned())
            .collect();
        facts.workspaces = Some(Workspaces {
            tool: "go".into(),
            members,
            orchestrator: None,
        });
    }

    // The package to build: the root if it has a main.go, else `cmd/<name>` (the module's last
    // path segment if several, else the first alphabetically).
    let package = if tree.is_file("main.go") {
        Some(".".to_owned())
    } else {
        let cmds: Vec<String> = tree
            .list("cmd", true)?
            .into_iter()
            .filter(|d| tree.is_file(&format!("cmd/{d}/main.go")))
            .collect();
        let base = module
            .as_deref()
            .and_then(|m| m.rsplit('/').next())
            .unwrap_or("");
        let chosen = cmds.iter().find(|c| *c == base).or(cmds.first()).cloned();
        if cmds.len() > 1 {
            facts.notes.push(format!(
                "several commands under cmd/ ({}); building cmd/{}",
                cmds.join(", "),
                chosen.as_deref().unwrap_or("")
            ));
        }
        chosen.map(|c| format!("./cmd/{c}"))
    };
    match package {
        Some(p) => facts.set("package", p),
        None => facts
            .notes
            .push("no main package at the root or under cmd/<name>/".into()),
    }
    Ok(facts)
}

/// Each line is a known directive (a `directive (` block's lines are its arguments), `//`
/// comments and blank lines aside, and every block is closed.
fn check_syntax(tree: &Tree, file: &str, text: &str, directives: &[&str]) -> Result<()> {
    let error = |line: usize, message: String| tree.malformed(file, Some((line, 1)), message);
    let mut open_block: Option<usize> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split("//").next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if open_block.is_some() {
            if line == ")" {
                open_block = None;
            }
            continue;
        }
        let word = line.split_whitespace().next().unwrap_or(line);
        let word = word.strip_suffix('(').unwrap_or(word);
        if !directives.contains(&word) {
            return Err(error(
                index + 1,
                format!(
                    "unknown directive {} (expected one of {})",
                    excerpt(word),
                    directives.join(", ")
                ),
            ));
        }
        if line.ends_with('(') {
            open_block = Some(index + 1);
        }
    }
    match open_block {
        Some(line) => Err(error(line, "block `(` is never closed by `)`".into())),
        None => Ok(()),
    }
}
