//! The built-in `go` and `procfile` buildpacks against real source trees: detection reasons and the
//! resulting plan.

mod common;

use std::path::Path;

use common::tree;
use kiln_buildpack::detect::{detect, Detection, Verdict};
use kiln_buildpack::plan::{plan, Plan};
use kiln_buildpack::project::ProjectConfig;
use kiln_buildpack::{BuildpackSet, Error};

fn detect_builtin(src: &Path) -> Detection {
    detect(&BuildpackSet::builtin().unwrap(), src).unwrap()
}

fn plan_builtin(src: &Path) -> kiln_buildpack::Result<Plan> {
    let set = BuildpackSet::builtin().unwrap();
    let detection = detect(&set, src)?;
    let project = ProjectConfig::load(src)?;
    plan(&set, &detection, &project, src)
}

fn verdict(id: &str, reason: &str) -> Verdict {
    Verdict {
        id: id.into(),
        reason: reason.into(),
    }
}

const GO_MOD: &str = "module example.com/hello\n\ngo 1.22\n";
const MAIN_GO: &str = "package main\n\nfunc main() {}\n";

#[test]
fn go_detected_by_go_mod() {
    let src = tree(&[("go.mod", GO_MOD), ("main.go", MAIN_GO)]);
    let detection = detect_builtin(src.path());
    assert!(detection.detected);
    assert_eq!(detection.buildpacks, [verdict("go", "found go.mod")]);
    assert!(detection
        .rejected
        .contains(&verdict("rust", "missing Cargo.toml")));
    assert_eq!(
        detection.rejected.last(),
        Some(&verdict("procfile", "missing Procfile"))
    );
}

#[test]
fn go_detected_by_main_go_alone() {
    let src = tree(&[("main.go", MAIN_GO)]);
    assert_eq!(
        detect_builtin(src.path()).buildpacks,
        [verdict("go", "found main.go")]
    );
}

#[test]
fn nothing_detected_says_why() {
    let src = tree(&[("README.md", "hi")]);
    let detection = detect_builtin(src.path());
    assert!(!detection.detected);
    assert!(detection.buildpacks.is_empty());
    assert!(detection
        .rejected
        .contains(&verdict("go", "none of go.mod, go.work, main.go found")));
    assert_eq!(detection.rejected.len(), 23);
}

#[test]
fn symlinked_go_mod_is_not_counted() {
    let outside = tree(&[("go.mod", GO_MOD)]);
    let src = tree(&[]);
    std::os::unix::fs::symlink(outside.path().join("go.mod"), src.path().join("go.mod")).unwrap();
    let detection = detect_builtin(src.path());
    assert!(!detection.detected);
    assert!(detection
        .rejected
        .contains(&verdict("go", "none of go.mod, go.work, main.go found")));
}

#[test]
fn go_plan_alone() {
    let src = tree(&[("go.mod", GO_MOD), ("main.go", MAIN_GO)]);
    let plan = plan_builtin(src.path()).unwrap();
    assert_eq!(plan.buildpacks.len(), 1);
    let go = &plan.buildpacks[0];
    assert_eq!((go.id.as_str(), go.reason.as_str()), ("go", "found go.mod"));
    let step = &go.steps[0];
    assert_eq!(step.name, "compile");
    assert_eq!(step.command, "go");
    assert_eq!(step.workdir, ".");
    assert!(
        step.args.contains(&"${layer:bin}/app".to_owned()),
        "{:?}",
        step.args
    );
    assert_eq!(step.env["CGO_ENABLED"], "0");
    assert_eq!(step.env["GOCACHE"], "${layer:go-cache}/build");
    let layers: Vec<_> = go
        .layers
        .iter()
        .map(|l| (l.name.as_str(), l.launch, l.cache))
        .collect();
    assert_eq!(layers, [("bin", true, true), ("go-cache", false, true)]);
    assert_eq!(
        (step.inputs.as_slice(), step.outputs.as_slice()),
        (&["**".to_owned()][..], &["bin".to_owned()][..])
    );

    assert_eq!(plan.processes.len(), 1);
    let web = &plan.processes[0];
    assert_eq!(web.kind, "web");
    assert_eq!(web.command, ["/layers/go/bin/app"]);
    assert!(web.default);
    assert_eq!(web.buildpack, "go");
    assert!(plan.launch_env.is_empty());
}

#[test]
fn procfile_and_go_both_pass_and_procfile_web_wins() {
    let src = tree(&[
        ("go.mod", GO_MOD),
        ("main.go", MAIN_GO),
        (
            "Procfile",
            "web: ./server --port 8080\nworker: ./server --worker\n",
        ),
    ]);
    let detection = detect_builtin(src.path());
    assert_eq!(
        detection.buildpacks,
        [
            verdict("go", "found go.mod"),
            verdict("procfile", "found Procfile")
        ]
    );
    assert_eq!(detection.rejected.len(), 21, "{:?}", detection.rejected);

    let plan = plan_builtin(src.path()).unwrap();
    let ids: Vec<_> = plan.buildpacks.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["go", "procfile"]);
    let processes: Vec<_> = plan
        .processes
        .iter()
        .map(|p| {
            (
                p.kind.as_str(),
                p.buildpack.as_str(),
                p.default,
                p.command.clone(),
            )
        })
        .collect();
    assert_eq!(
        processes,
        [
            (
                "web",
                "procfile",
                true,
                vec!["./server".into(), "--port".into(), "8080".into()]
            ),
            (
                "worker",
                "procfile",
                false,
                vec!["./server".into(), "--worker".into()]
            ),
        ]
    );
}

#[test]
fn procfile_with_shell_syntax_runs_through_sh() {
    let src = tree(&[("Procfile", "web: ./server --port $PORT\n")]);
    let plan = plan_builtin(src.path()).unwrap();
    assert_eq!(
        plan.processes[0].command,
        ["/bin/sh", "-c", "./server --port $PORT"]
    );
}

#[test]
fn procfile_without_web_keeps_go_web_as_default() {
    let src = tree(&[
        ("go.mod", GO_MOD),
        ("main.go", MAIN_GO),
        ("Procfile", "worker: ./w\n"),
    ]);
    let plan = plan_builtin(src.path()).unwrap();
    let kinds: Vec<_> = plan
        .processes
        .iter()
        .map(|p| (p.kind.as_str(), p.buildpack.as_str(), p.default))
        .collect();
    assert_eq!(kinds, [("web", "go", true), ("worker", "procfile", false)]);
}

#[test]
fn broken_procfile_line_is_reported() {
    let src = tree(&[(
        "Procfile",
        "# processes\nweb: ./server\nthis line is broken\n",
    )]);
    // Detection only checks that a Procfile exists; planning reads it.
    assert!(detect_builtin(src.path()).detected);
    let err = plan_builtin(src.path()).unwrap_err();
    match &err {
        Error::Manifest { path, line, .. } => {
            assert_eq!(path, &src.path().join("Procfile"));
            assert_eq!(*line, Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: ", src.path().join("Procfile").display())),
        "{err}"
    );
}

#[test]
fn kiln_toml_env_reaches_go_steps_and_overrides_the_buildpack() {
    let src = tree(&[
        ("go.mod", GO_MOD),
        ("main.go", MAIN_GO),
        (
            "kiln.toml",
            "[build]\nenv = { GOFLAGS = \"-tags=prod\", CGO_ENABLED = \"1\" }\n",
        ),
    ]);
    let plan = plan_builtin(src.path()).unwrap();
    let env = &plan.buildpacks[0].steps[0].env;
    assert_eq!(env["GOFLAGS"], "-tags=prod");
    assert_eq!(env["CGO_ENABLED"], "1");
    assert_eq!(env["GOTOOLCHAIN"], "local");
}

#[test]
fn broken_kiln_toml_names_file_and_line() {
    let src = tree(&[
        ("go.mod", GO_MOD),
        ("kiln.toml", "[build]\nenv = { A = 1 }\n"),
    ]);
    let err = plan_builtin(src.path()).unwrap_err().to_string();
    let expected = format!("{}:2:", src.path().join("kiln.toml").display());
    assert!(err.starts_with(&expected), "{err}");
}

/// The repository's `fixtures/rust-hello` (the README example).
fn rust_hello() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/rust-hello")
}

#[test]
fn rust_fixture_plans_a_static_cargo_install() {
    let src = rust_hello();
    let detection = detect_builtin(&src);
    assert_eq!(detection.buildpacks, [verdict("rust", "found Cargo.toml")]);
    let plan = plan_builtin(&src).unwrap();
    let step = &plan.buildpacks[0].steps[0];
    // Through sh, for `--target "$(host triple)"`: see buildpacks/rust/buildpack.toml.
    assert_eq!(step.command, "sh");
    assert!(step.args[1].starts_with("exec cargo install --target "));
    assert_eq!(
        step.args[2..],
        [
            "sh",
            "--path",
            ".",
            "--root",
            "${layer:bin}",
            "--no-track",
            "--locked",
            "--bin",
            "rust-hello"
        ]
    );
    assert!(step.env["CARGO_ENCODED_RUSTFLAGS"].starts_with("-Ctarget-feature=+crt-static\u{1f}"));
    assert_eq!(
        plan.processes[0].command,
        ["/layers/rust/bin/bin/rust-hello"]
    );
    assert!(plan.processes[0].default);
    let shipped: Vec<_> = plan.buildpacks[0]
        .layers
        .iter()
        .filter(|l| l.launch)
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(shipped, ["bin"]);
}

#[test]
fn a_virtual_cargo_workspace_is_detected_but_builds_nothing() {
    let src = tree(&[
        ("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n"),
        ("Cargo.lock", "version = 3\n"),
    ]);
    let plan = plan_builtin(src.path()).unwrap();
    assert!(plan.buildpacks[0].steps.is_empty());
    assert!(plan.processes.is_empty());
    let workspaces = plan.buildpacks[0].facts.workspaces.as_ref().unwrap();
    assert_eq!(workspaces.members, ["a"]);
}
