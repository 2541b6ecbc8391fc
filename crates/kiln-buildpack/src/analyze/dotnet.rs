//! .NET: the project file (`*.csproj`, `*.fsproj`, `*.vbproj`, else a `*.sln`) at the root, the
//! SDK version (`global.json sdk.version`, else the project's `TargetFramework`) and the assembly
//! to run.

use super::{between, json_str, Facts, PackageManager, Sourced, Tree};
use crate::error::Result;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let files = tree.list(".", false)?;
    let project = files
        .iter()
        .find(|f| f.ends_with(".csproj") || f.ends_with(".fsproj") || f.ends_with(".vbproj"))
        .or_else(|| files.iter().find(|f| f.ends_with(".sln")))
        .cloned();
    let global = tree.json("global.json")?;
    let project_text = match &project {
        Some(p) => tree.text(p)?.unwrap_or_default(),
        None => String::new(),
    };
    facts.version = if let Some(v) = global.as_ref().and_then(|g| json_str(g, "sdk.version")) {
        Some(Sourced {
            version: v.to_owned(),
            from: "global.json sdk.version".into(),
        })
    } else {
        between(&project_text, "<TargetFramework>", "</TargetFramework>").map(|tf| Sourced {
            version: tf
                .trim_start_matches("netcoreapp")
                .trim_start_matches("net")
                .to_owned(),
            from: format!("{} TargetFramework", project.as_deref().unwrap_or("")),
        })
    };
    facts.package_manager = Some(PackageManager {
        name: "nuget".into(),
        version: None,
        from: "dotnet restore".into(),
    });
    if let Some(project) = &project {
        facts.set("project", project.clone());
        if !project.ends_with(".sln") {
            let stem = project.rsplit_once('.').map(|(s, _)| s).unwrap_or(project);
            let assembly = between(&project_text, "<AssemblyName>", "</AssemblyName>")
                .unwrap_or_else(|| stem.to_owned());
            facts.set("assembly", assembly.clone());
            if project_text.contains("Microsoft.NET.Sdk.Web") {
                facts.framework = Some("aspnetcore".into());
            }
        } else {
            facts.notes.push(format!(
                "only a solution ({project}) at the root: no project whose assembly to run"
            ));
        }
    }
    Ok(facts)
}
