//! What a built image's config tells a runtime, read back from the written image: the `PORT`
//! it listens on and exposes, the project's runtime `[env]`, labels (git-derived, `kiln.toml`,
//! `--label`), several names, the creation time and history, build-time `--env-file`, and the
//! process launchers. Cheap: the procfile-static fixture on a busybox base, no verify run.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_oci::image::assemble;
use kiln_oci::source::{load_image, ImageSource};
use kiln_oci::spec::{History, ImageConfig, RuntimeConfig};
use kiln_oci::store::BlobStore;
use support::*;

const REVISION: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// The procfile-static fixture copied to `tmp/app`, with `kiln_toml` as its `kiln.toml` and
/// `procfile` as its `Procfile` when given.
fn app(tmp: &Path, kiln_toml: Option<&str>, procfile: Option<&str>) -> PathBuf {
    let app = tmp.join("app");
    run_ok(Command::new("cp").args([
        "-r",
        fixture("procfile-static").to_str().unwrap(),
        app.to_str().unwrap(),
    ]));
    if let Some(text) = kiln_toml {
        std::fs::write(app.join("kiln.toml"), text).unwrap();
    }
    if let Some(text) = procfile {
        std::fs::write(app.join("Procfile"), text).unwrap();
    }
    app
}

/// A busybox base (see [`busybox_base_image`]) whose config has one history entry for its
/// layer, so Kiln's entries are appended to it.
fn busybox_base_with_history(out: &Path) {
    let plain = out.with_extension("plain.tar");
    busybox_base_image(&plain);
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let loaded = load_image(
        &ImageSource::OciArchive {
            path: plain,
            reference: None,
        },
        &store,
    )
    .unwrap();
    let mut config: ImageConfig = loaded.config.clone();
    config.history = vec![History {
        created: Some("2020-01-01T00:00:00Z".into()),
        created_by: Some("busybox base".into()),
        comment: None,
        empty_layer: false,
    }];
    let image = assemble(&store, config, &loaded.layers, BTreeMap::new()).unwrap();
    kiln_oci::archive::write_oci_archive(&store, &image, None, out).unwrap();
}

/// The command that builds `app` on a busybox base (with history) as an OCI layout at
/// `tmp/out` with `extra` arguments, and that layout.
fn layout_build(tmp: &Path, app: &Path, extra: &[&str]) -> (std::process::Command, PathBuf) {
    let base = tmp.join("busybox.tar");
    if !base.exists() {
        busybox_base_with_history(&base);
    }
    let out = tmp.join("out");
    let run_image = format!("oci-archive:{}", base.display());
    let cache = tmp.join("cache");
    let mut cmd = kiln_cmd();
    cmd.args([
        "build",
        app.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--format",
        "oci-dir",
        "--run-image",
        &run_image,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--no-verify",
    ])
    .args(extra);
    (cmd, out)
}

/// [`layout_build`], run: it must succeed.
fn build_layout(tmp: &Path, app: &Path, extra: &[&str]) -> PathBuf {
    let (mut cmd, out) = layout_build(tmp, app, extra);
    run_ok(&mut cmd);
    out
}

fn image_config(layout: &Path) -> ImageConfig {
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();
    let image = load_image(
        &ImageSource::OciDir {
            path: layout.to_path_buf(),
            reference: None,
        },
        &store,
    )
    .unwrap();
    image.config
}

fn build_config(tmp: &Path, kiln_toml: Option<&str>, extra: &[&str]) -> RuntimeConfig {
    let app = app(tmp, kiln_toml, None);
    image_config(&build_layout(tmp, &app, extra)).config
}

fn exposed(config: &RuntimeConfig) -> Vec<&str> {
    config.exposed_ports.keys().map(String::as_str).collect()
}

#[test]
fn image_listens_on_port_8080_by_default_and_exposes_it() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = build_config(tmp.path(), None, &[]);
    assert_eq!(config.env_var("PORT"), Some("8080"));
    assert_eq!(exposed(&config), ["8080/tcp"]);
}

#[test]
fn kiln_toml_port_and_env_reach_the_image_config_but_build_env_does_not() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let kiln_toml = "[image]\nport = 3000\n\n[env]\nGREETING = \"hello\"\n";
    let config = build_config(tmp.path(), Some(kiln_toml), &["--env", "BUILD_ONLY=secret"]);
    assert_eq!(config.env_var("PORT"), Some("3000"));
    assert_eq!(exposed(&config), ["3000/tcp"]);
    assert_eq!(config.env_var("GREETING"), Some("hello"));
    assert_eq!(config.env_var("BUILD_ONLY"), None);
    // The base's own env is kept under the project's.
    assert_eq!(config.env_var("PATH"), Some("/bin"));
}

/// A `.git` directory in `app`: branch `main` packed at [`REVISION`], an origin URL with a
/// token in it.
fn fake_checkout(app: &Path) {
    let git = app.join(".git");
    std::fs::create_dir_all(git.join("refs/heads")).unwrap();
    std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(
        git.join("packed-refs"),
        format!("# pack-refs with: peeled fully-peeled sorted\n{REVISION} refs/heads/main\n"),
    )
    .unwrap();
    std::fs::write(
        git.join("config"),
        "[core]\n\trepositoryformatversion = 0\n[remote \"origin\"]\n\turl = https://x-access-token:ghs_secret@github.com/acme/site.git\n",
    )
    .unwrap();
}

#[test]
fn labels_from_git_then_kiln_toml_then_label_flags() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let kiln_toml =
        "[labels]\nteam = \"from-toml\"\n\"org.opencontainers.image.title\" = \"site\"\n";
    let app = app(tmp.path(), Some(kiln_toml), None);
    fake_checkout(&app);
    let layout = build_layout(
        tmp.path(),
        &app,
        &["--label", "team=from-cli", "--label", "tier=web=1"],
    );
    let labels = image_config(&layout).config.labels;
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/acme/site.git"
    );
    assert_eq!(labels["org.opencontainers.image.revision"], REVISION);
    assert_eq!(
        labels["org.opencontainers.image.created"],
        "1980-01-01T00:00:01Z"
    );
    assert_eq!(labels["org.opencontainers.image.title"], "site");
    assert_eq!(labels["team"], "from-cli");
    assert_eq!(labels["tier"], "web=1");
    assert!(labels.contains_key("dev.kiln.metadata"));
    // The token is nowhere in the image.
    assert!(!labels.values().any(|v| v.contains("ghs_secret")));

    // kiln.toml over the git-derived value; Kiln's own labels cannot be set.
    let over = "[labels]\n\"org.opencontainers.image.revision\" = \"v1\"\n";
    std::fs::write(app.join("kiln.toml"), over).unwrap();
    let labels = image_config(&build_layout(tmp.path(), &app, &[]))
        .config
        .labels;
    assert_eq!(labels["org.opencontainers.image.revision"], "v1");
    let out = kiln(&[
        "build",
        app.to_str().unwrap(),
        "--output",
        tmp.path().join("x").to_str().unwrap(),
        "--label",
        "dev.kiln.metadata=forged",
    ]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"));
}

#[test]
fn several_tags_and_an_explicit_creation_time_with_history_to_match() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path(), None, None);
    let layout = build_layout(
        tmp.path(),
        &app,
        &[
            "--tag",
            "registry.example/site:1.0",
            "--tag",
            "site:latest",
            "--creation-time",
            "1700000000",
        ],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        ["registry.example/site:1.0", "docker.io/library/site:latest"]
    );
    assert_eq!(
        index["manifests"][0]["digest"],
        index["manifests"][1]["digest"]
    );
    let config = image_config(&layout);
    let created = "2023-11-14T22:13:20Z";
    assert_eq!(config.created.as_deref(), Some(created));
    assert_eq!(
        config.config.labels["org.opencontainers.image.created"],
        created
    );
    // The base's history entry is kept; Kiln's (one per layer it added) carry the time.
    assert_eq!(config.history.len(), 2, "{:?}", config.history);
    assert_eq!(
        config.history[0].created.as_deref(),
        Some("2020-01-01T00:00:00Z")
    );
    assert_eq!(config.history[1].created.as_deref(), Some(created));
    assert_eq!(
        config.history[1].created_by.as_deref(),
        Some("kiln: layer app")
    );

    // `now`: a real date (not the reproducible 1980 one), the same everywhere in the config.
    let layout = build_layout(tmp.path(), &app, &["--creation-time", "now"]);
    let config = image_config(&layout);
    let created = config.created.clone().unwrap();
    assert!(created.as_str() > "2026-01-01", "{created}");
    assert_eq!(config.history[1].created.as_ref(), Some(&created));
    assert_eq!(
        config.config.labels["org.opencontainers.image.created"],
        created
    );
    // Layer mtimes stay reproducible: the app layer is the cached one.
    assert_eq!(
        kiln(&[
            "build",
            app.to_str().unwrap(),
            "--output",
            tmp.path().join("y").to_str().unwrap(),
            "--creation-time",
            "yesterday",
        ])
        .status
        .code(),
        Some(2)
    );
}

/// A buildpack whose one step checks the variables `--env-file` and `--env` gave it.
const ENV_CHECK_BUILDPACK: &str = r#"
[buildpack]
id = "envcheck"
version = "1.0.0"

[detect]
any = ["Procfile"]

[[build.steps]]
name = "check"
command = "sh"
args = ["-c", "test \"$FROM_FILE\" = 'a \"quoted\" value' && test \"$OVERRIDDEN\" = from-cli && test \"$FROM_CALLER\" = caller"]

[[processes]]
type = "web"
command = "true"
"#;

#[test]
fn env_file_reaches_build_steps_not_the_image_and_errors_name_the_line() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path(), None, None);
    let bps = buildpacks_dir(tmp.path(), "envcheck", ENV_CHECK_BUILDPACK);
    let env_file = tmp.path().join("build.env");
    std::fs::write(
        &env_file,
        "# build settings\nFROM_FILE=a \"quoted\" value\n\nOVERRIDDEN=from-file\nFROM_CALLER\n",
    )
    .unwrap();
    let build = |env_file: &Path| {
        let extra = [
            "--buildpacks",
            bps.to_str().unwrap(),
            "--env-file",
            env_file.to_str().unwrap(),
            "--env",
            "OVERRIDDEN=from-cli",
        ];
        let (mut cmd, out) = layout_build(tmp.path(), &app, &extra);
        (cmd.env("FROM_CALLER", "caller").output().unwrap(), out)
    };
    let (ok, out) = build(&env_file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let config = image_config(&out).config;
    for key in ["FROM_FILE", "OVERRIDDEN", "FROM_CALLER"] {
        assert_eq!(config.env_var(key), None, "{key} is build-time only");
    }

    std::fs::write(&env_file, "A=1\nnot a name=2\n").unwrap();
    let (bad, _) = build(&env_file);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(&format!("--env-file {}:2: ", env_file.display())),
        "{stderr}"
    );
}

#[test]
fn every_process_has_a_launcher_that_runs_it() {
    if !require_tools(&["busybox", "skopeo", "umoci", "runc"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let procfile = "web: httpd -f -v -p \"${PORT:-8080}\" -h /workspace/public\n\
                    greet: echo \"hello from $0, it's ${1:-nobody}\"\n";
    let app = app(tmp.path(), None, Some(procfile));
    let layout = build_layout(tmp.path(), &app, &[]);
    let files: BTreeMap<String, String> = layer_contents(&layout).into_iter().flatten().collect();
    let greet = &files["layers/kiln/processes/greet"];
    assert!(greet.starts_with("#!/bin/sh\n"), "{greet}");
    assert!(
        greet.contains(r#"exec '/bin/sh' '-c' 'echo "hello from $0, it'\''s ${1:-nobody}"' "$@""#),
        "{greet}"
    );
    assert!(files.contains_key("layers/kiln/processes/web"));

    let port = free_port();
    let container = Container::start(
        &format!("oci:{}", layout.display()),
        &[("PORT", &port.to_string())],
    );
    let (status, _) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}");
    let said = container.exec(&["/layers/kiln/processes/greet", "me"]);
    assert_eq!(said, "hello from me, it's nobody\n");
}

#[test]
fn user_on_a_run_image_of_ones_own_is_kept_unless_kiln_toml_names_one() {
    if !require_tools(&["busybox", "skopeo", "umoci", "runc"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The busybox base says nothing: Kiln cannot know its users, so it sets none.
    assert_eq!(build_config(tmp.path(), None, &[]).user, None);

    let tmp = tempfile::tempdir().unwrap();
    let config = build_config(tmp.path(), Some("[image]\nuser = \"root\"\n"), &[]);
    assert_eq!(config.user.as_deref(), Some("0:0"));

    // `nonroot`: uid/gid 65532, and the app directory is its own, so the app can write there
    // (runc maps nothing: the uid in the image is the uid that runs).
    let tmp = tempfile::tempdir().unwrap();
    let app = app(tmp.path(), Some("[image]\nuser = \"nonroot\"\n"), None);
    let layout = build_layout(tmp.path(), &app, &[]);
    assert_eq!(
        image_config(&layout).config.user.as_deref(),
        Some("65532:65532")
    );
    let port = free_port();
    let container = Container::start(
        &format!("oci:{}", layout.display()),
        &[("PORT", &port.to_string())],
    );
    let (status, _) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}");
    let ids = container.exec(&[
        "/bin/sh",
        "-c",
        "echo $(cat /proc/self/status | busybox grep '^Uid:')",
    ]);
    assert_eq!(ids.split_whitespace().nth(1), Some("65532"), "{ids}");
    let wrote = container.exec(&[
        "/bin/sh",
        "-c",
        "echo hi > /workspace/new && cat /workspace/new",
    ]);
    assert_eq!(wrote, "hi\n");
}
