//! Cache correctness, end to end through the `kiln` binary: hits, misses with their reasons,
//! `touch`-only changes, corrupted blobs, concurrent builds, killed builds, and step skipping.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::*;

/// A buildpack with a skippable "install" step (inputs: deps.lock) writing a cache layer that is
/// also shipped, and a step that always runs. `FAIL_INSTALL` in deps.lock makes install fail.
const BUILDPACK: &str = r#"
[buildpack]
id = "deps"
version = "1.0.0"

[detect]
all = ["deps.lock"]

[[build.steps]]
name = "install"
command = "sh"
args = ["-c", """
set -e
echo installing >&2
mkdir -p ${layer:modules}/lib
cat deps.lock > ${layer:modules}/lib/installed.txt
if grep -q FAIL_INSTALL deps.lock; then echo 'npm ERR! could not resolve' >&2; exit 1; fi
"""]
inputs = ["deps.lock"]
outputs = ["modules"]

[[build.steps]]
name = "compile"
command = "sh"
args = ["-c", "mkdir -p out && cat src/*.txt > out/bundle.txt"]

[[layers]]
name = "modules"
launch = true
cache = true

[[processes]]
type = "web"
command = ["/bin/true"]
"#;

struct Project {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    bps: PathBuf,
    cache: PathBuf,
    out: PathBuf,
}

impl Project {
    fn new() -> Project {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let bps = buildpacks_dir(&root, "deps", BUILDPACK);
        let src = root.join("src");
        fs::create_dir_all(src.join("src")).unwrap();
        fs::write(src.join("deps.lock"), "left-pad 1.3.0\n").unwrap();
        fs::write(src.join("src/a.txt"), "alpha\n").unwrap();
        fs::write(src.join("src/b.txt"), "beta\n").unwrap();
        Project {
            src,
            bps,
            cache: root.join("cache"),
            out: root.join("image.tar"),
            _tmp: tmp,
        }
    }

    fn args(&self, cache: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "build",
            self.src.to_str().unwrap(),
            "--output",
            self.out.to_str().unwrap(),
            "--buildpacks",
            self.bps.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--json",
            // The web process is a placeholder on scratch: these images are never started.
            "--no-verify",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn build_in(&self, cache: &Path, extra: &[&str]) -> Value {
        let args = self.args(cache, extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        serde_json::from_str(&kiln_ok(&refs)).unwrap()
    }

    fn build(&self, extra: &[&str]) -> Value {
        self.build_in(&self.cache, extra)
    }
}

fn layers(report: &Value) -> Vec<(String, bool, String)> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["reused"].as_bool().unwrap(),
                l["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn digest(report: &Value) -> String {
    report["manifest_digest"].as_str().unwrap().to_owned()
}

#[test]
fn rebuilds_reuse_what_is_unchanged_and_say_why_the_rest_changed() {
    let p = Project::new();
    let cold = p.build(&[]);
    assert_eq!(
        layers(&cold),
        [
            ("deps/modules".into(), false, "no cache".into()),
            ("app".into(), false, "no cache".into())
        ]
    );
    assert_eq!(step_outcome(&cold, "install"), (true, "no cache".into()));
    assert_eq!(
        step_outcome(&cold, "compile"),
        (true, "declares no inputs".into())
    );

    // Nothing changed: every layer reused, install skipped, same digest.
    let noop = p.build(&[]);
    assert_eq!(digest(&noop), digest(&cold));
    assert!(layers(&noop).iter().all(|(_, reused, _)| *reused));
    assert_eq!(layers(&noop)[0].2, "unchanged");
    // The compile step rewrites out/bundle.txt: same bytes, new mtime.
    assert_eq!(
        layers(&noop)[1].2,
        "content unchanged (only timestamps differ)"
    );
    assert_eq!(
        step_outcome(&noop, "install"),
        (false, "inputs unchanged (deps.lock)".into())
    );

    // `touch` only: content keys hit, digest unchanged.
    run_ok(Command::new("touch").args([
        "-d",
        "2030-01-01",
        p.src.join("src/a.txt").to_str().unwrap(),
        p.src.join("deps.lock").to_str().unwrap(),
    ]));
    let touched = p.build(&[]);
    assert_eq!(digest(&touched), digest(&cold));
    assert_eq!(
        layers(&touched)[1],
        (
            "app".into(),
            true,
            "content unchanged (only timestamps differ)".into()
        )
    );
    assert!(
        !step_outcome(&touched, "install").0,
        "touch must not re-run install"
    );

    // One source file changed: only the app layer is rebuilt, and the reason says where.
    fs::write(p.src.join("src/b.txt"), "beta 2\n").unwrap();
    let edited = p.build(&[]);
    assert_ne!(digest(&edited), digest(&cold));
    let edited_layers = layers(&edited);
    assert!(edited_layers[0].1, "dependency layer reused");
    assert_eq!(
        edited_layers[0].2, "unchanged",
        "dependency layer digest must not move"
    );
    assert_eq!(
        edited_layers[1],
        (
            "app".into(),
            false,
            "2 files changed under workspace/".into()
        ),
        "src/b.txt and the compiled out/bundle.txt"
    );
    assert_eq!(
        edited["layers"][0]["digest"], cold["layers"][0]["digest"],
        "unchanged dependency layer keeps its digest"
    );

    // The lockfile changed: install runs again and says why.
    fs::write(p.src.join("deps.lock"), "left-pad 1.3.1\n").unwrap();
    let relocked = p.build(&[]);
    assert_eq!(
        step_outcome(&relocked, "install"),
        (true, "inputs changed: deps.lock".into())
    );
    assert_eq!(
        layers(&relocked)[0],
        (
            "deps/modules".into(),
            false,
            "1 file changed under layers/deps/modules/lib/".into()
        )
    );

    // Another compressor: nothing reused, and the reason names it.
    let zstd = p.build(&["--compression", "zstd"]);
    assert!(
        layers(&zstd)[1]
            .2
            .starts_with("compressor changed (gzip-4/"),
        "{:?}",
        layers(&zstd)
    );

    // --no-cache rebuilds and re-runs everything, and gives the same bytes.
    let fresh = p.build(&["--no-cache"]);
    assert!(layers(&fresh)
        .iter()
        .all(|(_, reused, why)| !reused && why == "--no-cache"));
    assert_eq!(step_outcome(&fresh, "install"), (true, "--no-cache".into()));
    assert_eq!(digest(&fresh), digest(&relocked));
}

#[test]
fn a_corrupted_cached_blob_is_detected_and_rebuilt_never_shipped() {
    let p = Project::new();
    let cold = p.build(&[]);
    let app_digest = cold["layers"][1]["digest"].as_str().unwrap();
    let blob = p
        .cache
        .join("blobs/sha256")
        .join(app_digest.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();

    let out = kiln_cmd().args(p.args(&p.cache, &[])).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cached blob {app_digest} is corrupt")),
        "{stderr}"
    );
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(digest(&again), digest(&cold));
    assert!(!layers(&again)[1].1);
    // The shipped blob is the good one again.
    let good = fs::read(&blob).unwrap();
    assert_eq!(
        kiln_oci::digest::Digest::of(&good).as_str(),
        app_digest,
        "the store holds a correct blob again"
    );
}

#[test]
fn two_builds_at_once_on_one_cache_both_succeed_with_the_same_digest() {
    let p = Project::new();
    let spawn = |out: &Path| {
        let mut args = p.args(&p.cache, &[]);
        let i = args.iter().position(|a| a == "--output").unwrap();
        args[i + 1] = out.display().to_string();
        kiln_cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let dir = p.out.parent().unwrap();
    let (a, b) = (spawn(&dir.join("a.tar")), spawn(&dir.join("b.tar")));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (ra, rb): (Value, Value) = (
        serde_json::from_slice(&a.stdout).unwrap(),
        serde_json::from_slice(&b.stdout).unwrap(),
    );
    assert_eq!(digest(&ra), digest(&rb));
    // The cache is consistent afterwards: a third build reuses everything.
    assert!(layers(&p.build(&[])).iter().all(|(_, reused, _)| *reused));
}

#[test]
fn a_build_killed_at_any_point_leaves_a_cache_the_next_build_trusts() {
    let p = Project::new();
    // Enough content that export takes a while, so kills land in the middle of it.
    let mut seed: u64 = 7;
    for i in 0..24 {
        let bytes: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                b"abcdefghij \n"[(seed >> 60) as usize % 12]
            })
            .collect();
        fs::write(p.src.join(format!("src/blob{i}.txt")), bytes).unwrap();
    }
    let clean = p.build_in(&p.out.with_extension("clean-cache"), &[]);
    for delay_ms in [40, 120, 250, 500] {
        let mut child = kiln_cmd()
            .args(p.args(&p.cache, &[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let after = p.build(&[]);
    assert_eq!(digest(&after), digest(&clean));
    let again = p.build(&[]);
    assert_eq!(digest(&again), digest(&clean));
    assert!(layers(&again).iter().all(|(_, reused, _)| *reused));
}

#[test]
fn a_failing_install_shows_its_error_and_leaves_the_previous_cache_intact() {
    let p = Project::new();
    let good = p.build(&[]);
    fs::write(p.src.join("deps.lock"), "left-pad 1.3.0\nFAIL_INSTALL\n").unwrap();
    let args = p.args(&p.cache, &[]);
    let out = kiln_cmd().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("step deps/install failed"), "{stderr}");
    assert!(stderr.contains("npm ERR! could not resolve"), "{stderr}");

    // Back to the good lockfile: the kept cache is the last good one, so install is skipped and
    // the image is identical to the good build.
    fs::write(p.src.join("deps.lock"), "left-pad 1.3.0\n").unwrap();
    let back = p.build(&[]);
    assert!(
        !step_outcome(&back, "install").0,
        "{:?}",
        step_outcome(&back, "install")
    );
    assert_eq!(digest(&back), digest(&good));
}

#[test]
fn cache_ls_lists_and_prune_bounds_the_cache() {
    let p = Project::new();
    let cold = p.build(&[]);
    let cache = p.cache.to_str().unwrap();
    let listing: Value =
        serde_json::from_str(&kiln_ok(&["cache", "ls", "--cache-dir", cache, "--json"])).unwrap();
    let items = listing["items"].as_array().unwrap();
    let names_of = |kind: &str| -> Vec<String> {
        items
            .iter()
            .filter(|i| i["kind"] == kind)
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut layer_digests: Vec<String> = cold["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    layer_digests.sort();
    let mut listed = names_of("layer");
    listed.sort();
    assert_eq!(listed, layer_digests);
    // Kept per app: `<project key>/<buildpack>/<layer>`, the key named after the source dir.
    let kept_layers = names_of("cache-layer");
    assert_eq!(kept_layers.len(), 1, "{kept_layers:?}");
    assert!(
        kept_layers[0].starts_with("src-") && kept_layers[0].ends_with("/deps/modules"),
        "{kept_layers:?}"
    );
    assert!(names_of("blob").contains(&cold["config_digest"].as_str().unwrap().to_owned()));
    let total = listing["total_bytes"].as_u64().unwrap();
    assert!(total > 0);

    // Nothing is a day old yet.
    let kept: Value = serde_json::from_str(&kiln_ok(&[
        "cache",
        "prune",
        "--cache-dir",
        cache,
        "--older-than",
        "1d",
        "--json",
    ]))
    .unwrap();
    assert_eq!(kept["removed"].as_array().unwrap().len(), 0);
    assert_eq!(kept["remaining_bytes"].as_u64().unwrap(), total);

    let pruned: Value = serde_json::from_str(&kiln_ok(&[
        "cache",
        "prune",
        "--cache-dir",
        cache,
        "--max-size",
        "0",
        "--json",
    ]))
    .unwrap();
    assert_eq!(pruned["remaining_bytes"], 0);
    assert_eq!(pruned["freed_bytes"].as_u64().unwrap(), total);

    // The next build starts from nothing, says so, and makes the same image.
    let rebuilt = p.build(&[]);
    assert_eq!(digest(&rebuilt), digest(&cold));
    assert_eq!(
        layers(&rebuilt)[1],
        (
            "app".into(),
            false,
            "no cache (pruned since the last build)".into()
        )
    );
    assert_eq!(
        step_outcome(&rebuilt, "install"),
        (true, "output layer modules is not in the cache".into())
    );
}

#[test]
fn when_every_step_skips_the_app_layer_comes_from_the_source_with_the_same_bytes() {
    let p = Project::new();
    // Drop the always-running compile step: only the skippable install remains.
    let manifest = BUILDPACK.replace(
        "[[build.steps]]\nname = \"compile\"\ncommand = \"sh\"\nargs = [\"-c\", \"mkdir -p out && cat src/*.txt > out/bundle.txt\"]\n",
        "",
    );
    assert_ne!(manifest, BUILDPACK);
    fs::write(p.bps.join("deps/buildpack.toml"), manifest).unwrap();
    let cold = p.build(&[]);
    let args = p.args(&p.cache, &[]);
    let out = kiln_cmd().args(&args).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no build step needs to run: the app layer comes straight from the source"),
        "{stderr}"
    );
    assert!(!stderr.contains("working copy"), "{stderr}");
    let warm: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(digest(&warm), digest(&cold));
    assert!(layers(&warm)
        .iter()
        .all(|(_, reused, why)| *reused && why == "unchanged"));
    assert_eq!(
        step_outcome(&warm, "install"),
        (false, "inputs unchanged (deps.lock)".into())
    );
}

/// Like Node's: `install` fills `node_modules` (captured into a cached launch layer) and is
/// skipped when the lockfile is unchanged; `build` always runs and needs `node_modules`.
const CAPTURING_BUILDPACK: &str = r#"
[buildpack]
id = "deps"
version = "1.0.0"

[detect]
all = ["deps.lock"]

[[build.steps]]
name = "install"
command = "sh"
args = ["-c", "mkdir -p node_modules/left-pad && cp deps.lock node_modules/left-pad/index.js"]
inputs = ["deps.lock"]
outputs = ["modules"]

[[build.steps]]
name = "build"
command = "sh"
args = ["-c", "cat node_modules/left-pad/index.js src/a.txt > bundle.js"]

[[layers]]
name = "modules"
launch = true
cache = true
capture = ["node_modules"]

[[processes]]
type = "web"
command = "true"
"#;

#[test]
fn captured_cache_layers_come_back_for_later_steps_when_the_install_is_skipped() {
    let p = Project::new();
    fs::write(p.bps.join("deps/buildpack.toml"), CAPTURING_BUILDPACK).unwrap();
    let cold = p.build(&["--format", "oci-dir"]);
    assert!(step_outcome(&cold, "install").0);
    let warm = p.build(&["--format", "oci-dir"]);
    assert_eq!(
        step_outcome(&warm, "install"),
        (false, "inputs unchanged (deps.lock)".into())
    );
    assert!(step_outcome(&warm, "build").0);
    assert_eq!(digest(&warm), digest(&cold));
    assert_eq!(
        layers(&warm)[0],
        ("deps/modules".into(), true, "unchanged".into())
    );

    // The image: node_modules only in the modules layer, the bundle (built from the restored
    // node_modules) in the app layer.
    let index: Value =
        serde_json::from_slice(&fs::read(p.out.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        p.out
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let files = |i: usize| -> Vec<(String, String)> {
        let file = fs::File::open(blob(manifest["layers"][i]["digest"].as_str().unwrap())).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut out = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type().is_file() {
                let mut body = String::new();
                std::io::Read::read_to_string(&mut e, &mut body).unwrap();
                out.push((e.path().unwrap().display().to_string(), body));
            }
        }
        out
    };
    assert_eq!(
        files(0),
        [(
            "workspace/node_modules/left-pad/index.js".to_owned(),
            "left-pad 1.3.0\n".to_owned()
        )]
    );
    let app = files(1);
    assert!(
        app.iter().all(|(path, _)| !path.contains("node_modules")),
        "{app:?}"
    );
    assert!(app.contains(&(
        "workspace/bundle.js".to_owned(),
        "left-pad 1.3.0\nalpha\n".to_owned()
    )));
}
