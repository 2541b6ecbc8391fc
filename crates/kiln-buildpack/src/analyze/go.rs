//! Go: the version from `go.mod`'s `toolchain`/`go` directives, `go.work` workspaces, and which
//! package to build (the root, or a `cmd/<name>` layout; in a `go.work` workspace, the module
//! the user chose, else the only module with a main package).

use super::workspace::invalid_choice;
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

/// `app`: the `go.work` module the user chose (`kiln.toml` `app` / `KILN_APP`), with its source.
pub(super) fn analyze(tree: &Tree, app: Option<&(String, String)>) -> Result<Facts> {
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
        // A workspace without a root module takes its language version from go.work.
        if facts.version.is_none() {
            facts.version = work.lines().find_map(|l| {
                let v = l.trim().strip_prefix("go ")?.trim();
                Some(Sourced {
                    version: format!(">={v}"),
                    from: "go.work go".into(),
                })
            });
        }
        facts.workspaces = Some(Workspaces {
            tool: "go".into(),
            members,
            orchestrator: None,
        });
    }

    // The package to build: the chosen workspace module's, else the root's, else the only
    // workspace module's with a main package. `go build ./api` from the root works in
    // workspace mode, so the build always runs at the root.
    let package = match (app, facts.workspaces.as_ref()) {
        (Some(choice), Some(ws)) => {
            ws.check_choice(choice)?;
            let dir = &choice.0;
            let module = module_of(tree, dir)?;
            let Some(package) = main_package(tree, dir, module.as_deref(), &mut facts.notes)?
            else {
                return Err(invalid_choice(
                    choice,
                    format!("no main package in {dir}/ or under {dir}/cmd/<name>/"),
                ));
            };
            Some(package)
        }
        (app, ws) => {
            if let Some((_, from)) = app {
                facts
                    .notes
                    .push(format!("{from} not used: there is no go.work workspace"));
            }
            match main_package(tree, ".", module.as_deref(), &mut facts.notes)? {
                Some(package) => Some(package),
                None => match ws {
                    Some(ws) => workspace_package(tree, ws, &mut facts.notes)?,
                    None => {
                        facts
                            .notes
                            .push("no main package at the root or under cmd/<name>/".into());
                        None
                    }
                },
            }
        }
    };
    if let Some(package) = package {
        facts.set("package", package);
    }
    Ok(facts)
}

/// The module path of the `go.mod` in `dir`, if any.
fn module_of(tree: &Tree, dir: &str) -> Result<Option<String>> {
    Ok(tree.text(&format!("{dir}/go.mod"))?.and_then(|text| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("module ")
                .map(|m| m.trim().trim_matches('"').to_owned())
        })
    }))
}

/// The main package of the module in `dir` (`.` or a workspace module), as a `go build`
/// argument: `dir` itself when it has a main.go, else `dir/cmd/<name>` (the module's last path
/// segment if several, else the first alphabetically).
fn main_package(
    tree: &Tree,
    dir: &str,
    module: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Option<String>> {
    let at = |rel: &str| {
        if dir == "." {
            rel.to_owned()
        } else {
            format!("{dir}/{rel}")
        }
    };
    if tree.is_file(&at("main.go")) {
        return Ok(Some(if dir == "." {
            ".".to_owned()
        } else {
            format!("./{dir}")
        }));
    }
    let cmds: Vec<String> = tree
        .list(&at("cmd"), true)?
        .into_iter()
        .filter(|d| tree.is_file(&at(&format!("cmd/{d}/main.go"))))
        .collect();
    let base = module.and_then(|m| m.rsplit('/').next()).unwrap_or("");
    let chosen = cmds.iter().find(|c| *c == base).or(cmds.first()).cloned();
    if cmds.len() > 1 {
        notes.push(format!(
            "several commands under {} ({}); building {}",
            at("cmd/"),
            cmds.join(", "),
            at(&format!("cmd/{}", chosen.as_deref().unwrap_or("")))
        ));
    }
    Ok(chosen.map(|c| format!("./{}", at(&format!("cmd/{c}")))))
}

/// The only `go.work` module with a main package; several are a note naming them.
fn workspace_package(
    tree: &Tree,
    ws: &Workspaces,
    notes: &mut Vec<String>,
) -> Result<Option<String>> {
    let mut found = Vec::new();
    for dir in ws.member_dirs(tree, notes)? {
        let module = module_of(tree, &dir)?;
        if let Some(package) = main_package(tree, &dir, module.as_deref(), &mut Vec::new())? {
            found.push((dir, package));
        }
    }
    match found.len() {
        0 => {
            notes.push(
                "no main package at the root, under cmd/<name>/ or in a go.work module".into(),
            );
            Ok(None)
        }
        1 => Ok(found.pop().map(|(_, package)| package)),
        _ => {
            let dirs: Vec<&str> = found.iter().map(|(dir, _)| dir.as_str()).collect();
            notes.push(format!(
                "go.work modules with a main package: {}; choose one with `app = \"{}\"` in \
                 kiln.toml or KILN_APP={}",
                dirs.join(", "),
                dirs[0],
                dirs[0]
            ));
            Ok(None)
        }
    }
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
