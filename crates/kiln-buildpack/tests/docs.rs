//! `docs/buildpack-toml.md` stays true: its annotated example loads, detects and plans as the
//! comments in it say.

use std::fs;
use std::path::PathBuf;

use kiln_buildpack::detect::detect;
use kiln_buildpack::plan::plan;
use kiln_buildpack::project::ProjectConfig;
use kiln_buildpack::{Buildpack, BuildpackSet};

const DOC: &str = include_str!("../../../docs/buildpack-toml.md");

/// The first ```toml block after the "A complete example" heading.
fn example() -> &'static str {
    let section = &DOC[DOC.find("## A complete example").expect("example heading")..];
    let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
    let len = section[start..].find("```").expect("end of block");
    &section[start..start + len]
}

#[test]
fn annotated_example_loads_detects_and_plans() {
    let buildpack = Buildpack::from_toml(example(), PathBuf::from("node/buildpack.toml")).unwrap();
    assert_eq!(buildpack.spec.buildpack.id, "node");
    let set = BuildpackSet {
        buildpacks: vec![buildpack],
    };

    let src = tempfile::tempdir().unwrap();
    fs::write(
        src.path().join("package.json"),
        r#"{"name": "shop", "scripts": {"start": "node server.js"}, "engines": {"node": "20"}}"#,
    )
    .unwrap();
    fs::write(src.path().join("package-lock.json"), "{}").unwrap();
    let detection = detect(&set, src.path()).unwrap();
    assert_eq!(
        detection.buildpacks[0].reason,
        "found package-lock.json; found package.json; no Dockerfile; \
         package.json has key scripts.start; package.json contains \"\\\"engines\\\"\""
    );

    let plan = plan(&set, &detection, &ProjectConfig::default(), src.path()).unwrap();
    let steps = &plan.buildpacks[0].steps;
    assert_eq!(steps[0].env["npm_config_cache"], "${layer:npm-cache}");
    assert_eq!(steps[1].env["APP_NAME"], "shop");
    let processes: Vec<_> = plan
        .processes
        .iter()
        .map(|p| (p.kind.as_str(), p.default, p.command.join(" ")))
        .collect();
    assert_eq!(
        processes,
        [
            ("web", true, "node /workspace/server.js".to_owned()),
            (
                "worker",
                false,
                "node /workspace/worker.js --queue jobs".to_owned()
            ),
        ]
    );
    assert_eq!(
        plan.launch_env["NODE_VERSION_FILE"],
        "/layers/node/runtime/node-version"
    );

    // Without the detect rules' files it is rejected, with the first failing rule as the reason.
    let empty = tempfile::tempdir().unwrap();
    let detection = detect(&set, empty.path()).unwrap();
    assert_eq!(
        detection.rejected[0].reason,
        "none of package-lock.json, npm-shrinkwrap.json found"
    );
}
