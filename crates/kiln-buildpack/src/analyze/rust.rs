//! Rust: the toolchain (`rust-toolchain.toml`, `rust-toolchain`, `rust-version`), workspaces, and
//! which binary the image runs (`default-run`, the package, a single `src/bin/*`; in a virtual
//! workspace, the member the user chose, else the only member with a binary, else the only one
//! among `default-members`).

use super::workspace::invalid_choice;
use super::{first_version, toml_str, version_text, Facts, Tree, Workspaces};
use crate::error::Result;

/// `app`: the workspace member the user chose (`kiln.toml` `app` / `KILN_APP`), with its source.
pub(super) fn analyze(tree: &Tree, app: Option<&(String, String)>) -> Result<Facts> {
    let mut facts = Facts::default();
    let cargo = tree.toml("Cargo.toml")?.unwrap_or_default();
    check_manifest(tree, &cargo)?;
    let toolchain = tree.toml("rust-toolchain.toml")?;

    let rust_version = toml_str(&cargo, "package.rust-version")
        .or_else(|| toml_str(&cargo, "workspace.package.rust-version"))
        .map(|v| format!(">={v}"));
    facts.version = first_version(vec![
        (
            toolchain
                .as_ref()
                .and_then(|t| toml_str(t, "toolchain.channel"))
                .map(str::to_owned),
            "rust-toolchain.toml toolchain.channel".into(),
        ),
        (
            tree.text("rust-toolchain")?
                .as_deref()
                .and_then(version_text),
            "rust-toolchain".into(),
        ),
        (rust_version, "Cargo.toml package.rust-version".into()),
    ]);

    facts.package_manager = Some(super::PackageManager {
        name: "cargo".into(),
        version: None,
        from: "Cargo.toml".into(),
    });
    if tree.is_file("Cargo.lock") {
        facts.set("lockfile", "Cargo.lock");
    }

    if let Some(members) = cargo
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
    {
        facts.workspaces = Some(Workspaces {
            tool: "cargo".into(),
            members: members
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect(),
            orchestrator: None,
        });
    }

    // The package to install: the chosen member, else the root's, else the workspace's binary.
    let (package, bin) = match (app, facts.workspaces.as_ref()) {
        (Some(choice), Some(ws)) => chosen_binary(tree, ws, choice)?,
        (None, _) if cargo.contains_key("package") => {
            (".".to_owned(), binary(tree, ".", &cargo, &mut facts.notes)?)
        }
        (app, ws) => {
            if let Some((_, from)) = app {
                facts.notes.push(format!(
                    "{from} not used: Cargo.toml declares no [workspace]"
                ));
            }
            match ws {
                Some(ws) => workspace_binary(tree, ws, &cargo, &mut facts.notes)?,
                None => (".".to_owned(), None),
            }
        }
    };
    if let Some((name, from)) = bin {
        facts.set("bin", name);
        facts.set("bin_from", from);
        facts.set("package_path", package);
    }
    Ok(facts)
}

/// The binary of the package in `dir` (`.` or a workspace member), with where it was found.
fn binary(
    tree: &Tree,
    dir: &str,
    cargo: &toml::Table,
    notes: &mut Vec<String>,
) -> Result<Option<(String, String)>> {
    let at = |rel: &str| {
        if dir == "." {
            rel.to_owned()
        } else {
            format!("{dir}/{rel}")
        }
    };
    let manifest = at("Cargo.toml");
    let bins: Vec<String> = tree
        .list(&at("src/bin"), false)?
        .into_iter()
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_owned))
        .collect();
    let found = if let Some(run) = toml_str(cargo, "package.default-run") {
        Some((run.to_owned(), format!("{manifest} package.default-run")))
    } else if let Some(name) =
        toml_str(cargo, "package.name").filter(|_| tree.is_file(&at("src/main.rs")))
    {
        Some((name.to_owned(), format!("{manifest} package.name")))
    } else if bins.len() == 1 {
        Some((bins[0].clone(), at("src/bin/")))
    } else if let Some(name) = cargo
        .get("bin")
        .and_then(|b| b.as_array())
        .filter(|b| b.len() == 1)
        .and_then(|b| b[0].get("name"))
        .and_then(|n| n.as_str())
    {
        Some((name.to_owned(), format!("{manifest} [[bin]]")))
    } else {
        if bins.len() > 1 {
            notes.push(format!(
                "several binaries in {} ({}); set package.default-run",
                at("src/bin"),
                bins.join(", ")
            ));
        } else if dir == "." {
            notes.push(
                "no binary: no src/main.rs, src/bin/*.rs or single [[bin]] (a library?)".into(),
            );
        }
        None
    };
    Ok(found)
}

/// The binary of the member the user chose; a choice that is not a member with a binary is an
/// error naming the setting.
fn chosen_binary(
    tree: &Tree,
    ws: &Workspaces,
    choice: &(String, String),
) -> Result<(String, Option<(String, String)>)> {
    ws.check_choice(choice)?;
    let (dir, from) = choice;
    let manifest = format!("{dir}/Cargo.toml");
    let cargo = tree
        .toml(&manifest)?
        .ok_or_else(|| invalid_choice(choice, format!("{}{manifest} not found", tree.prefix)))?;
    let mut notes = Vec::new();
    let Some((name, found)) = binary(tree, dir, &cargo, &mut notes)? else {
        let why = notes.pop().unwrap_or_else(|| {
            "no binary: no src/main.rs, src/bin/*.rs or single [[bin]]".to_owned()
        });
        return Err(invalid_choice(choice, why));
    };
    Ok((dir.clone(), Some((name, format!("{found} ({from})")))))
}

/// A workspace's app when the user chose none: the only member with a binary, else the only
/// binary member among `workspace.default-members` (what a bare `cargo build` builds). Members
/// are the listed paths and `dir/*` globs (one directory level) minus `workspace.exclude`, each
/// read as its own `Cargo.toml`.
fn workspace_binary(
    tree: &Tree,
    ws: &Workspaces,
    cargo: &toml::Table,
    notes: &mut Vec<String>,
) -> Result<(String, Option<(String, String)>)> {
    let listed = |key: &str| -> Vec<String> {
        cargo
            .get("workspace")
            .and_then(|w| w.get(key))
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str())
                    .map(|m| m.trim_start_matches("./").trim_end_matches('/').to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let excluded = listed("exclude");
    let members: Vec<String> = ws
        .member_dirs(tree, notes)?
        .into_iter()
        .filter(|m| !excluded.contains(m))
        .collect();
    let mut found = Vec::new();
    for member in &members {
        let Some(cargo) = tree.toml(&format!("{member}/Cargo.toml"))? else {
            continue;
        };
        if let Some(bin) = binary(tree, member, &cargo, &mut Vec::new())? {
            found.push((member.clone(), bin));
        }
    }
    if found.len() > 1 {
        let defaults = listed("default-members");
        let mut default_bins: Vec<_> = found.iter().filter(|(m, _)| defaults.contains(m)).collect();
        if default_bins.len() == 1 {
            let (member, (name, _)) = default_bins.remove(0);
            return Ok((
                member.clone(),
                Some((
                    name.clone(),
                    "Cargo.toml workspace.default-members".to_owned(),
                )),
            ));
        }
    }
    match found.len() {
        1 => {
            let (member, (name, from)) = found.remove(0);
            Ok((member, Some((name, from))))
        }
        0 => {
            notes.push(if members.is_empty() {
                "virtual workspace with no binary member (no member directories found)".to_owned()
            } else {
                format!(
                    "virtual workspace with no binary member (looked in {})",
                    members.join(", ")
                )
            });
            Ok((".".into(), None))
        }
        _ => {
            let names: Vec<String> = found
                .iter()
                .map(|(member, (bin, _))| format!("{bin} in {member}"))
                .collect();
            notes.push(format!(
                "workspace with several binary members ({}): choose one with `app = \"{}\"` in \
                 kiln.toml or KILN_APP={}",
                names.join(", "),
                found[0].0,
                found[0].0
            ));
            Ok((".".into(), None))
        }
    }
}

/// What cargo itself would refuse before building anything: a manifest with neither `[package]`
/// nor `[workspace]` (an empty file among them), or a `[package]` without a string `name`.
fn check_manifest(tree: &Tree, cargo: &toml::Table) -> Result<()> {
    let package = cargo.get("package");
    if package.is_none() && !cargo.contains_key("workspace") {
        let what = if cargo.is_empty() {
            "empty"
        } else {
            "no [package] or [workspace] table"
        };
        return Err(tree.malformed(
            "Cargo.toml",
            None,
            format!("{what}: cargo needs [package] (a crate) or [workspace]"),
        ));
    }
    if package.is_some() && toml_str(cargo, "package.name").is_none() {
        let text = tree.text("Cargo.toml")?.unwrap_or_default();
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("[package]"))
            .map(|i| (i + 1, 1));
        return Err(tree.malformed(
            "Cargo.toml",
            line,
            "[package] has no name (a string): cargo needs one".to_owned(),
        ));
    }
    Ok(())
}
