//! Go: the version from `go.mod`'s `toolchain`/`go` directives, `go.work` workspaces, and which
//! package to build (the root, or a `cmd/<name>` layout).

use super::{Facts, Sourced, Tree, Workspaces};
use crate::error::Result;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let go_mod = tree.text("go.mod")?;
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
    if let Some(module) = &module {
        facts.set("module", module.clone());
    }

    if let Some(work) = tree.text("go.work")? {
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
