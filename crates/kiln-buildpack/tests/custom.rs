//! Buildpack directories loaded with `BuildpackSet::load_dir`: manifest errors with file and line,
//! validation, id/directory agreement, and planning features the built-ins do not use.

mod common;

use std::fs;
use std::path::Path;

use common::tree;
use kiln_buildpack::detect::detect;
use kiln_buildpack::plan::plan;
use kiln_buildpack::project::ProjectConfig;
use kiln_buildpack::{BuildpackSet, Error};
use tempfile::TempDir;

/// A buildpack directory: `order.toml` listing `buildpacks` in order, each with its manifest.
fn buildpack_dir(buildpacks: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = buildpacks.iter().map(|(id, _)| format!("{id:?}")).collect();
    fs::write(
        dir.path().join("order.toml"),
        format!("order = [{}]\n", ids.join(", ")),
    )
    .unwrap();
    for (id, manifest) in buildpacks {
        fs::create_dir(dir.path().join(id)).unwrap();
        fs::write(dir.path().join(id).join("buildpack.toml"), manifest).unwrap();
    }
    dir
}

fn load_err(buildpacks: &[(&str, &str)]) -> (TempDir, Error) {
    let dir = buildpack_dir(buildpacks);
    let err = BuildpackSet::load_dir(dir.path()).unwrap_err();
    (dir, err)
}

fn manifest_path(dir: &Path, id: &str) -> String {
    dir.join(id).join("buildpack.toml").display().to_string()
}

#[test]
fn toml_syntax_error_names_path_line_and_column() {
    // Line 7 has an unterminated string.
    let manifest =
        "[buildpack]\nid = \"rust\"\nversion = \"0.1.0\"\n\n[detect]\nall = [\"Cargo.toml\"]\n\
                    any = [\"src/main.rs]\n";
    let (dir, err) = load_err(&[("rust", manifest)]);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:7:20: ", manifest_path(dir.path(), "rust"))),
        "{text}"
    );
    match err {
        Error::Manifest {
            line,
            column,
            message,
            ..
        } => {
            assert_eq!(line, Some(7));
            // The unterminated string runs to the end of the line.
            assert_eq!(column, Some(20));
            // The parser's own rendering (a snippet with `|` gutters) is left out.
            assert!(!message.contains('\n'), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_field_is_named_with_its_line() {
    let manifest =
        "[buildpack]\nid = \"x\"\nversion = \"1\"\n\n[[layers]]\nname = \"bin\"\nlaunhc = true\n";
    let (dir, err) = load_err(&[("x", manifest)]);
    let text = err.to_string();
    assert!(text.contains("unknown field `launhc`"), "{text}");
    assert!(
        text.starts_with(&format!("{}:7:1: ", manifest_path(dir.path(), "x"))),
        "{text}"
    );
}

#[test]
fn undeclared_layer_is_rejected() {
    let manifest = "[buildpack]\nid = \"x\"\nversion = \"1\"\n[detect]\nall = [\"a\"]\n\
                    [[build.steps]]\nname = \"s\"\ncommand = \"make\"\nargs = [\"PREFIX=${layer:x}\"]\n";
    let (dir, err) = load_err(&[("x", manifest)]);
    let text = err.to_string();
    assert!(text.starts_with(&manifest_path(dir.path(), "x")), "{text}");
    assert!(text.contains("${layer:x}"), "{text}");
    assert!(text.contains("not declared"), "{text}");
    assert!(matches!(err, Error::Manifest { line: None, .. }));
}

#[test]
fn id_must_match_directory() {
    let manifest = "[buildpack]\nid = \"python\"\nversion = \"1\"\n";
    let (dir, err) = load_err(&[("py", manifest)]);
    let text = err.to_string();
    assert!(text.starts_with(&manifest_path(dir.path(), "py")), "{text}");
    assert!(
        text.contains("\"python\"") && text.contains("\"py\""),
        "{text}"
    );
}

#[test]
fn missing_manifest_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("order.toml"), "order = [\"ghost\"]\n").unwrap();
    let err = BuildpackSet::load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&manifest_path(dir.path(), "ghost")), "{err}");
}

#[test]
fn detection_follows_order_and_explains_rejections() {
    let node = "[buildpack]\nid = \"node\"\nversion = \"1\"\n[detect]\nnone = [\"Dockerfile\"]\n\
                [[detect.match]]\nfile = \"package.json\"\nkey = \"scripts.start\"\n";
    let static_site =
        "[buildpack]\nid = \"static\"\nversion = \"1\"\n[detect]\nall = [\"public/index.html\"]\n";
    let empty = "[buildpack]\nid = \"empty\"\nversion = \"1\"\n";
    let dir = buildpack_dir(&[("static", static_site), ("node", node), ("empty", empty)]);
    let set = BuildpackSet::load_dir(dir.path()).unwrap();

    let src = tree(&[
        (
            "package.json",
            r#"{"scripts": {"start": "node server.js"}}"#,
        ),
        ("public/index.html", "<h1>hi</h1>"),
    ]);
    let detection = detect(&set, src.path()).unwrap();
    let passed: Vec<_> = detection
        .buildpacks
        .iter()
        .map(|v| (v.id.as_str(), v.reason.as_str()))
        .collect();
    assert_eq!(
        passed,
        [
            ("static", "found public/index.html"),
            ("node", "no Dockerfile; package.json has key scripts.start"),
        ]
    );
    assert_eq!(detection.rejected[0].reason, "declares no detect rules");

    fs::write(src.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let detection = detect(&set, src.path()).unwrap();
    assert_eq!(detection.rejected[0].id, "node");
    assert_eq!(detection.rejected[0].reason, "found Dockerfile (excluded)");
}

#[test]
fn malformed_json_fails_the_rule_without_aborting_detection() {
    let node = "[buildpack]\nid = \"node\"\nversion = \"1\"\n\
                [[detect.match]]\nfile = \"package.json\"\nkey = \"scripts.start\"\n";
    let any = "[buildpack]\nid = \"any\"\nversion = \"1\"\n[detect]\nany = [\"package.json\"]\n";
    let dir = buildpack_dir(&[("node", node), ("any", any)]);
    let set = BuildpackSet::load_dir(dir.path()).unwrap();
    let src = tree(&[("package.json", "{\"scripts\": {\n")]);
    let detection = detect(&set, src.path()).unwrap();
    assert_eq!(detection.buildpacks[0].id, "any");
    let reason = &detection.rejected[0].reason;
    assert!(
        reason.starts_with("package.json is not valid JSON: "),
        "{reason}"
    );
    assert!(reason.contains("line"), "{reason}");
}

#[test]
fn rules_do_not_look_through_symlinked_directories() {
    let bp = "[buildpack]\nid = \"x\"\nversion = \"1\"\n[detect]\nall = [\"linked/Procfile\"]\n";
    let dir = buildpack_dir(&[("x", bp)]);
    let set = BuildpackSet::load_dir(dir.path()).unwrap();
    let outside = tree(&[("Procfile", "web: x\n")]);
    let src = tree(&[]);
    std::os::unix::fs::symlink(outside.path(), src.path().join("linked")).unwrap();
    let detection = detect(&set, src.path()).unwrap();
    assert_eq!(detection.rejected[0].reason, "missing linked/Procfile");

    // The same path as a real directory passes.
    let real = tree(&[("linked/Procfile", "web: x\n")]);
    assert!(detect(&set, real.path()).unwrap().detected);
}

/// A Rust-like buildpack: build env, step env and project env merged; source values resolved.
const RUST: &str = r#"[buildpack]
id = "rust"
version = "0.1.0"

[detect]
all = ["Cargo.toml"]

[build.env]
CARGO_HOME = "${layer:cargo}"
A = "buildpack"
B = "buildpack"
C = "buildpack"

[[build.steps]]
name = "build"
command = "cargo"
args = ["build", "--release", "--bin", "${toml:Cargo.toml:package.name}"]
env = { C = "step", CARGO_TARGET_DIR = "${layer:target}" }

[[layers]]
name = "cargo"
cache = true

[[layers]]
name = "target"
cache = true
capture = ["target"]

[[layers]]
name = "bin"
launch = true

[[processes]]
type = "web"
command = "${layer:bin}/${toml:Cargo.toml:package.name} --port 8080"

[launch.env]
APP_NAME = "${toml:Cargo.toml:package.name}"
"#;

#[test]
fn env_merge_order_and_source_values() {
    let dir = buildpack_dir(&[("rust", RUST)]);
    let set = BuildpackSet::load_dir(dir.path()).unwrap();
    let src = tree(&[
        (
            "Cargo.toml",
            "[package]\nname = \"rust-hello\"\nversion = \"0.1.0\"\n",
        ),
        (
            "kiln.toml",
            "[build.env]\nB = \"project\"\nC = \"project\"\n",
        ),
    ]);
    let detection = detect(&set, src.path()).unwrap();
    let project = ProjectConfig::load(src.path()).unwrap();
    let plan = plan(&set, &detection, &project, src.path()).unwrap();

    let step = &plan.buildpacks[0].steps[0];
    assert_eq!(step.args, ["build", "--release", "--bin", "rust-hello"]);
    assert_eq!(step.env["A"], "buildpack");
    assert_eq!(step.env["B"], "project");
    assert_eq!(step.env["C"], "step");
    assert_eq!(step.env["CARGO_HOME"], "${layer:cargo}");
    assert_eq!(step.env["CARGO_TARGET_DIR"], "${layer:target}");

    assert_eq!(
        plan.processes[0].command,
        ["/layers/rust/bin/rust-hello", "--port", "8080"]
    );
    assert_eq!(plan.launch_env["APP_NAME"], "rust-hello");
    assert_eq!(plan.buildpacks[0].layers[1].capture, ["target"]);
}

#[test]
fn missing_source_key_names_file_and_key() {
    let dir = buildpack_dir(&[("rust", RUST)]);
    let set = BuildpackSet::load_dir(dir.path()).unwrap();
    let src = tree(&[("Cargo.toml", "[workspace]\nmembers = []\n")]);
    let detection = detect(&set, src.path()).unwrap();
    let err = plan(&set, &detection, &ProjectConfig::default(), src.path()).unwrap_err();
    assert!(matches!(err, Error::Template(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("Cargo.toml has no key package.name"),
        "{text}"
    );
}
