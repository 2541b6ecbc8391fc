//! What a cache layer may carry from one build to the next (issue 9, items 2–6 and 12): a launch
//! layer holds exactly what this build's step produced, apps sharing a cache directory never see
//! each other's layers (download caches excepted, by declaration), a failed step keeps every
//! layer it did not rewrite, every path a step gets is absolute, Kiln never packs its own cache
//! or output, and leftovers of killed builds are cleaned up.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

/// `install` adds one file per line of deps.txt to the `site` launch layer without clearing it
/// first (as `pip install --target --upgrade` or `cargo install` do), and records what the
/// shared download cache and the per-app tool cache already held. `FAIL` in deps.txt fails it
/// after it has written everything.
const BUILDPACK: &str = r#"
[buildpack]
id = "pkgs"
version = "1.0.0"

[detect]
all = ["deps.txt"]

[[build.steps]]
name = "install"
command = "sh"
args = ["-c", """
set -e
for p in ${layer:site} ${layer:downloads} ${layer:tool} "$HOME" "$TMPDIR"; do
  case "$p" in /*) ;; *) echo "relative path handed to the step: $p" >&2; exit 7;; esac
done
mkdir -p ${layer:site}/lib
ls ${layer:downloads} > ${layer:site}/downloads-seen.txt
ls ${layer:tool} > ${layer:site}/tool-seen.txt
while read -r dep; do
  [ -n "$dep" ] || continue
  touch ${layer:site}/lib/$dep ${layer:downloads}/$dep ${layer:tool}/$dep
done < deps.txt
if grep -q FAIL deps.txt; then echo 'could not resolve' >&2; exit 1; fi
"""]
inputs = ["deps.txt"]
outputs = ["site"]

[[layers]]
name = "site"
launch = true
cache = true

[[layers]]
name = "downloads"
cache = true
shared = true

[[layers]]
name = "tool"
cache = true

[[processes]]
type = "web"
command = ["/bin/true"]
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    bps: PathBuf,
    cache: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Setup {
            bps: buildpacks_dir(&root, "pkgs", BUILDPACK),
            cache: root.join("cache"),
            root,
            _tmp: tmp,
        }
    }

    /// A source tree `name` whose deps.txt lists `deps`.
    fn app(&self, name: &str, deps: &[&str]) -> PathBuf {
        let src = self.root.join(name);
        fs::create_dir_all(&src).unwrap();
        set_deps(&src, deps);
        src
    }

    fn args(&self, src: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "build",
            src.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--format",
            "oci-dir",
            "--buildpacks",
            self.bps.to_str().unwrap(),
            "--cache-dir",
            self.cache.to_str().unwrap(),
            "--json",
            // The web process is a placeholder on scratch: these images are never started.
            "--no-verify",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn build(&self, src: &Path, out: &Path, extra: &[&str]) -> Value {
        let args = self.args(src, out, extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        serde_json::from_str(&kiln_ok(&refs)).unwrap()
    }
}

fn set_deps(src: &Path, deps: &[&str]) {
    let text: String = deps.iter().map(|d| format!("{d}\n")).collect();
    fs::write(src.join("deps.txt"), text).unwrap();
}

/// The `site` launch layer of the image at `layout`: path → contents.
fn site_layer(layout: &Path) -> BTreeMap<String, String> {
    layer_contents(layout)
        .into_iter()
        .find(|layer| layer.contains_key("layers/pkgs/site/"))
        .expect("the image has the site layer")
}

/// Installed package names in the site layer.
fn installed(layout: &Path) -> Vec<String> {
    site_layer(layout)
        .keys()
        .filter_map(|p| p.strip_prefix("layers/pkgs/site/lib/"))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn seen(layout: &Path, what: &str) -> String {
    site_layer(layout)[&format!("layers/pkgs/site/{what}-seen.txt")].clone()
}

#[test]
fn apps_sharing_a_cache_never_ship_each_others_files_and_removed_deps_disappear() {
    let s = Setup::new();
    let web = s.app("web", &["flask", "jinja2"]);
    let api = s.app("api", &["fastapi"]);
    let out = s.root.join("image");

    s.build(&web, &out, &[]);
    assert_eq!(installed(&out), ["flask", "jinja2"]);

    // Another app on the same cache: its image holds only its own packages, and its per-app
    // tool cache starts empty, but the shared download cache is the one `web` filled.
    s.build(&api, &out, &[]);
    assert_eq!(installed(&out), ["fastapi"]);
    assert_eq!(seen(&out, "tool"), "");
    assert_eq!(seen(&out, "downloads"), "flask\njinja2\n");

    // A package removed from the list is gone after the rebuild, although the step adds onto
    // what it finds: it found an empty layer. Its own tool cache came back.
    set_deps(&web, &["flask"]);
    let report = s.build(&web, &out, &[]);
    assert_eq!(
        step_outcome(&report, "install"),
        (true, "inputs changed: deps.txt".into())
    );
    assert_eq!(installed(&out), ["flask"]);
    assert_eq!(seen(&out, "tool"), "flask\njinja2\n");

    // Unchanged again: skipped, and the kept layer is this app's, not the last build's.
    let again = s.build(&web, &out, &[]);
    assert!(!step_outcome(&again, "install").0);
    assert_eq!(installed(&out), ["flask"]);
    let api_again = s.build(&api, &out, &[]);
    assert!(!step_outcome(&api_again, "install").0);
    assert_eq!(installed(&out), ["fastapi"]);
}

#[test]
fn one_app_keeps_its_cache_across_checkouts_when_named_and_apps_with_one_name_share_it() {
    let s = Setup::new();
    let first = s.app("checkout-1", &["six"]);
    let second = s.app("checkout-2", &["six"]);
    let out = s.root.join("image");
    s.build(&first, &out, &["--tag", "registry.example/team/web:1"]);
    // Another checkout path, same image repository: the step is skipped from the kept layer.
    let report = s.build(&second, &out, &["--tag", "registry.example/team/web:2"]);
    assert!(!step_outcome(&report, "install").0, "{report}");
    // A different name (flag over tag) is another project: nothing of `web` is used.
    let other = s.build(
        &second,
        &out,
        &[
            "--tag",
            "registry.example/team/web:2",
            "--project",
            "worker",
        ],
    );
    assert_eq!(
        step_outcome(&other, "install"),
        (true, "no cache".into()),
        "{other}"
    );
    assert_eq!(seen(&out, "tool"), "");
}

#[test]
fn a_failed_step_keeps_every_cache_layer_as_the_last_good_build_left_it() {
    let s = Setup::new();
    let src = s.app("app", &["a"]);
    let out = s.root.join("image");
    let good = s.build(&src, &out, &[]);

    set_deps(&src, &["a", "b", "FAIL"]);
    let args = s.args(&src, &out, &[]);
    let failed = kiln_cmd().args(&args).output().unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("step pkgs/install failed"), "{stderr}");

    // Every cache layer is still there. The tool caches keep what the failed run added (they
    // are the tool's own, valid after a failed run); the shipped layer is the last good one.
    set_deps(&src, &["a"]);
    let back = s.build(&src, &out, &[]);
    let log = back.to_string();
    assert!(!step_outcome(&back, "install").0, "{log}");
    assert_eq!(back["manifest_digest"], good["manifest_digest"]);
    set_deps(&src, &["a", "c"]);
    s.build(&src, &out, &[]);
    assert_eq!(seen(&out, "tool"), "FAIL\na\nb\n");
    assert_eq!(seen(&out, "downloads"), "FAIL\na\nb\n");
    assert_eq!(installed(&out), ["a", "c"]);
}

#[test]
fn a_relative_cache_dir_gives_steps_absolute_paths_and_nothing_lands_in_the_app() {
    let s = Setup::new();
    let src = s.app("app", &["a"]);
    let args = [
        "build",
        "app",
        "--output",
        "image",
        "--format",
        "oci-dir",
        "--buildpacks",
        s.bps.to_str().unwrap(),
        "--cache-dir",
        "relative-cache",
        "--json",
        "--no-verify",
    ];
    let out = kiln_cmd().args(args).current_dir(&s.root).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.root.join("relative-cache/projects").is_dir());
    let app_layer = layer_contents(&s.root.join("image"))
        .pop()
        .expect("an app layer");
    // The app's own files (the layer also holds the process launchers under `layers/`).
    let paths: Vec<&String> = app_layer
        .keys()
        .filter(|p| p.starts_with("workspace/"))
        .collect();
    assert_eq!(paths, ["workspace/", "workspace/deps.txt"], "{paths:?}");
    assert!(!src.join("relative-cache").exists());
}

#[test]
fn kiln_never_packs_its_own_cache_or_output_when_they_are_inside_the_source() {
    let s = Setup::new();
    let src = s.app("app", &["a"]);
    fs::create_dir_all(src.join("dist")).unwrap();
    let out = src.join("dist/image.tar");
    let cache = src.join(".kiln-cache");
    let build = || -> Value {
        let stdout = kiln_ok(&[
            "build",
            src.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--buildpacks",
            s.bps.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--json",
            "--no-verify",
        ]);
        serde_json::from_str(&stdout).unwrap()
    };
    let first = build();
    // A leftover temporary of the output, as a killed write leaves it, is not packed either.
    fs::write(src.join("dist/.image.tar.Zz99Zz.tmp"), "half").unwrap();
    let second = build();
    assert_eq!(first["manifest_digest"], second["manifest_digest"]);
    // Same again once the step is skipped and the app layer comes straight from the source.
    assert!(!step_outcome(&second, "install").0);
    let third = build();
    assert_eq!(first["manifest_digest"], third["manifest_digest"]);

    let layout = s.root.join("layout");
    fs::create_dir_all(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&out)
            .arg("-C")
            .arg(&layout),
    );
    let app_layer = layer_contents(&layout).pop().expect("an app layer");
    // The app's own files (the layer also holds the process launchers under `layers/`).
    let paths: Vec<&String> = app_layer
        .keys()
        .filter(|p| p.starts_with("workspace/"))
        .collect();
    assert_eq!(
        paths,
        ["workspace/", "workspace/deps.txt", "workspace/dist/"],
        "{paths:?}"
    );
}

#[test]
fn leftovers_of_killed_builds_are_listed_then_removed_by_the_next_build() {
    let s = Setup::new();
    let src = s.app("app", &["a"]);
    let out = s.root.join("image");
    let good = s.build(&src, &out, &[]);

    // What a SIGKILLed build leaves: its scratch dir, a checked-out cache layer, a blob being
    // written, an output layout being written.
    let dead = [
        s.cache.join("tmp/build-dead01"),
        s.cache.join("work/projects/app-0000000000000000/pkgs/site"),
        s.cache.join("blobs/sha256/.tmp-dead02"),
    ];
    fs::create_dir_all(dead[0].join("app")).unwrap();
    fs::create_dir_all(&dead[1]).unwrap();
    fs::write(&dead[2], "partial blob").unwrap();
    let dead_output = s.root.join(".image.Dd00Dd.tmp");
    fs::create_dir_all(dead_output.join("blobs/sha256")).unwrap();

    let cache = s.cache.to_str().unwrap();
    let listing: Value =
        serde_json::from_str(&kiln_ok(&["cache", "ls", "--cache-dir", cache, "--json"])).unwrap();
    let mut leftovers: Vec<String> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "leftover")
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    leftovers.sort();
    assert_eq!(
        leftovers,
        [
            "blobs/sha256/.tmp-dead02",
            "tmp/build-dead01",
            "work/projects/app-0000000000000000/pkgs/site"
        ]
    );
    assert!(dead.iter().all(|p| p.exists()), "cache ls removes nothing");

    let again = s.build(&src, &out, &[]);
    assert_eq!(again["manifest_digest"], good["manifest_digest"]);
    for path in dead.iter().chain([&dead_output]) {
        assert!(!path.exists(), "{} was left", path.display());
    }
    let listing: Value =
        serde_json::from_str(&kiln_ok(&["cache", "ls", "--cache-dir", cache, "--json"])).unwrap();
    assert!(
        listing["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] != "leftover"),
        "{listing}"
    );
}

/// `cargo install` refuses to overwrite a binary it finds in its `--root`: the rebuilt `bin`
/// layer must start empty, after a source change and after a `PATH` change alike.
#[test]
fn rust_rebuilds_after_a_source_change_and_after_a_path_change() {
    if !require_tools(&["cargo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = copy_fixture("rust-hello", tmp.path());
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("image"));
    let build = |extra: &[&str]| -> Value {
        let mut args = vec![
            "build",
            src.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--format",
            "oci-dir",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&kiln_ok(&args)).unwrap()
    };
    let shipped_binary = || -> String {
        layer_contents(&out)
            .into_iter()
            .find_map(|layer| layer.get("layers/rust/bin/bin/rust-hello").cloned())
            .expect("the binary is in the image")
    };
    build(&[]);
    assert!(shipped_binary().contains("hello from kiln rust-hello"));

    let main = src.join("src/main.rs");
    let code = fs::read_to_string(&main).unwrap();
    fs::write(
        &main,
        code.replace("hello from kiln", "greetings from kiln"),
    )
    .unwrap();
    let changed = build(&[]);
    assert!(step_outcome(&changed, "install").0);
    assert!(shipped_binary().contains("greetings from kiln rust-hello"));

    let path = format!("PATH={}:/nonexistent", std::env::var("PATH").unwrap());
    let new_path = build(&["--env", &path]);
    assert_eq!(
        step_outcome(&new_path, "install"),
        (true, "command or environment changed".into())
    );
    assert!(shipped_binary().contains("greetings from kiln rust-hello"));
}
