//! Rust: the toolchain (`rust-toolchain.toml`, `rust-toolchain`, `rust-version`), workspaces, and
//! which binary the image runs (`default-run`, the package, a single `src/bin/*`).

use super::{first_version, toml_str, version_text, Facts, Tree, Workspaces};
use crate::error::Result;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
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

    let bins: Vec<String> = tree
        .list("src/bin", false)?
        .into_iter()
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_owned))
        .collect();
    let bin = if let Some(run) = toml_str(&cargo, "package.default-run") {
        Some((run.to_owned(), "Cargo.toml package.default-run"))
    } else if let Some(name) =
        toml_str(&cargo, "package.name").filter(|_| tree.is_file("src/main.rs"))
    {
        Some((name.to_owned(), "Cargo.toml package.name"))
    } else if bins.len() == 1 {
        Some((bins[0].clone(), "src/bin/"))
    } else if let Some(name) = cargo
        .get("bin")
        .and_then(|b| b.as_array())
        .filter(|b| b.len() == 1)
        .and_then(|b| b[0].get("name"))
        .and_then(|n| n.as_str())
    {
        Some((name.to_owned(), "Cargo.toml [[bin]]"))
    } else {
        if bins.len() > 1 {
            facts.notes.push(format!(
                "several binaries in src/bin ({}); set package.default-run",
                bins.join(", ")
            ));
        }
        None
    };
    if let Some((name, from)) = bin {
        facts.set("bin", name);
        facts.set("bin_from", from);
    } else if toml_str(&cargo, "package.name").is_none() {
        facts
            .notes
            .push("virtual workspace: build a member as the app root".into());
    } else if bins.is_empty() {
        facts
            .notes
            .push("no binary: no src/main.rs, src/bin/*.rs or single [[bin]] (a library?)".into());
    }
    Ok(facts)
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
