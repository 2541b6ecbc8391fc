//! .NET: the project file (`*.csproj`, `*.fsproj`, `*.vbproj`, else a `*.sln`) at the root, the
//! SDK version requirement (`global.json sdk.version` and its `rollForward`, else the project's
//! `TargetFramework` channel: `net8.0` → `8.0`, any 8.0 SDK) and the assembly to run.

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
        let roll_forward = global.as_ref().and_then(|g| json_str(g, "sdk.rollForward"));
        Some(Sourced {
            version: sdk_requirement(v, roll_forward),
            from: match roll_forward {
                Some(policy) => format!("global.json sdk.version, rollForward {policy}"),
                None => "global.json sdk.version".into(),
            },
        })
    } else {
        between(&project_text, "<TargetFramework>", "</TargetFramework>").map(|tf| Sourced {
            // `net8.0-windows` targets the 8.0 channel too.
            version: tf
                .trim_start_matches("netcoreapp")
                .trim_start_matches("net")
                .split('-')
                .next()
                .unwrap_or_default()
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

/// global.json's SDK `version` under its `rollForward` policy as a version requirement. A
/// feature band is the patch number's hundreds (`8.0.1xx`); the default policy, `patch`, stays in
/// the given band. Kiln installs the newest SDK the range allows, as the `latest*` policies do
/// (`patch`, `feature`, `minor` and `major` would prefer the lowest one installed). A version
/// that is not `MAJOR.MINOR.PATCH` is passed on as written.
fn sdk_requirement(version: &str, roll_forward: Option<&str>) -> String {
    let parts: Vec<u64> = version.split('.').map_while(|p| p.parse().ok()).collect();
    let [major, minor, patch] = parts[..] else {
        return version.to_owned();
    };
    let band_end = patch / 100 * 100 + 100;
    match roll_forward.unwrap_or("patch") {
        "disable" => version.to_owned(),
        "feature" | "latestFeature" => format!(">={version} <{major}.{}.0", minor + 1),
        "minor" | "latestMinor" => format!(">={version} <{}.0.0", major + 1),
        "major" | "latestMajor" => format!(">={version}"),
        // `patch`, `latestPatch`, and anything unknown: the band.
        _ => format!(">={version} <{major}.{minor}.{band_end}"),
    }
}

#[cfg(test)]
mod tests {
    use super::sdk_requirement;

    #[test]
    fn roll_forward_policies_as_ranges() {
        for (policy, want) in [
            (None, ">=8.0.100 <8.0.200"),
            (Some("latestPatch"), ">=8.0.100 <8.0.200"),
            (Some("latestFeature"), ">=8.0.100 <8.1.0"),
            (Some("minor"), ">=8.0.100 <9.0.0"),
            (Some("latestMajor"), ">=8.0.100"),
            (Some("disable"), "8.0.100"),
        ] {
            assert_eq!(sdk_requirement("8.0.100", policy), want, "{policy:?}");
        }
        assert_eq!(sdk_requirement("8.0.404", None), ">=8.0.404 <8.0.500");
        assert_eq!(sdk_requirement("9.0.100-rc.1", None), "9.0.100-rc.1");
    }
}
