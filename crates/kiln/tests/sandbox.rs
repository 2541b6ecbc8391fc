//! Build steps in the sandbox, end to end through the `kiln` binary: a step that snoops finds
//! none of the caller's files or secrets, the image holds none of them and no host path of the
//! cache or working copy; `--isolation host` still runs on the host; where sandboxes cannot
//! start (simulated with `KILN_SANDBOX_PROBE_FAIL`), `sandbox` fails with the reason and `auto`
//! falls back in one line; killing Kiln kills the step's processes. Needs user namespaces (as
//! every build here does by default): fails under `CI` without them, skips loudly elsewhere.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::{buildpacks_dir, kiln_cmd, layer_contents};

/// One step that reports what it can see: the environment (less the paths this test hands it),
/// whether each probed path is readable (by number, so no host path is written), where `$PWD`,
/// `${app}` and `${layer:x}` point, and its uid.
const BUILDPACK: &str = r#"
[buildpack]
id = "probe"
version = "1.0.0"

[detect]
all = ["probe.txt"]

[[build.steps]]
name = "snoop"
command = "sh"
args = ["-c", """
env | grep -v -e '^PROBE_' | sort > env.txt
i=0
for f in "$PROBE_TMP_SECRET" "$PROBE_HOME_KEY" "$PROBE_EXCLUDED" "$PROBE_CACHE"; do
  i=$((i+1))
  if cat "$f" >/dev/null 2>&1 || [ -n "$(ls -A "$f" 2>/dev/null)" ]; then echo "read $i"; else echo "hidden $i"; fi
done > files.txt
echo "pwd=$PWD app=${app} layer=${layer:x} home=$HOME tmp=$TMPDIR" > ${layer:x}/paths.txt
id -u > uid.txt
"""]

[[layers]]
name = "x"
launch = true

[[processes]]
type = "web"
command = ["/bin/true"]
"#;

const SECRET: &str = "hunter2-s3cr3t";

/// A project whose secrets lie where a careless build could read them.
struct Snoop {
    root: tempfile::TempDir,
    src: PathBuf,
    bps: PathBuf,
    cache: PathBuf,
    home: PathBuf,
    /// A secret in the host's /tmp, outside the working copy.
    _tmp_secret: tempfile::NamedTempFile,
    probes: Vec<(String, String)>,
}

impl Snoop {
    fn new() -> Snoop {
        // Outside /tmp, so only the sandbox's masks can hide it (its /tmp is private anyway).
        let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let bps = buildpacks_dir(root.path(), "probe", BUILDPACK);
        let src = root.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("probe.txt"), "probe\n").unwrap();
        // Excluded from the working copy, but present in the source tree.
        fs::write(src.join(".env"), format!("API_KEY={SECRET}\n")).unwrap();
        fs::write(src.join(".dockerignore"), ".env\n").unwrap();
        let home = root.path().join("home");
        fs::create_dir_all(home.join(".ssh")).unwrap();
        fs::write(home.join(".ssh/id_rsa"), SECRET).unwrap();
        let cache = root.path().join("cache");
        let mut tmp_secret = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut tmp_secret, SECRET.as_bytes()).unwrap();
        let probes = vec![
            ("PROBE_TMP_SECRET", tmp_secret.path().to_path_buf()),
            ("PROBE_HOME_KEY", home.join(".ssh/id_rsa")),
            ("PROBE_EXCLUDED", src.join(".env")),
            ("PROBE_CACHE", cache.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .collect();
        Snoop {
            src,
            bps,
            cache,
            home,
            _tmp_secret: tmp_secret,
            probes,
            root,
        }
    }

    fn layout(&self) -> PathBuf {
        self.root.path().join("image")
    }

    /// `kiln build … ARGS` with a secret in Kiln's environment and `HOME` in the project.
    fn build(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = kiln_cmd();
        cmd.args([
            "build",
            self.src.to_str().unwrap(),
            "--output",
            self.layout().to_str().unwrap(),
            "--format",
            "oci-dir",
            "--buildpacks",
            self.bps.to_str().unwrap(),
            "--cache-dir",
            self.cache.to_str().unwrap(),
            "--no-cache",
            // What the steps saw is the point: the image (`/bin/true` on scratch) never runs.
            "--no-verify",
        ]);
        for (key, value) in &self.probes {
            cmd.args(["--env", &format!("{key}={value}")]);
        }
        cmd.args(args)
            .env("HOME", &self.home)
            .env("SECRET_TOKEN", SECRET)
            .envs(env.iter().copied());
        cmd.output().expect("kiln runs")
    }

    fn build_ok(&self, args: &[&str], env: &[(&str, &str)]) -> (String, BTreeMap<String, String>) {
        let out = self.build(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln build failed:\n{stderr}");
        // Every layer's files, by path.
        let files = layer_contents(&self.layout())
            .into_iter()
            .flatten()
            .collect();
        (stderr, files)
    }
}

/// Whether sandboxes start here (the default `auto` of every build needs them to sandbox).
fn sandboxes_work() -> bool {
    let helper = kiln_sandbox::Helper::program(env!("CARGO_BIN_EXE_kiln"));
    match kiln_sandbox::Sandbox::new(helper).probe() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => panic!("sandboxes cannot start: {why}"),
        Err(why) => {
            eprintln!("\n*** SKIPPED: {why} ***\n");
            false
        }
    }
}

#[test]
fn a_sandboxed_step_finds_no_host_file_or_secret_and_the_image_no_host_path() {
    if !sandboxes_work() {
        return;
    }
    let snoop = Snoop::new();
    let (stderr, files) = snoop.build_ok(&[], &[]);
    assert!(!stderr.contains("run on the host"), "{stderr}");
    assert_eq!(
        files["workspace/files.txt"],
        "hidden 1\nhidden 2\nhidden 3\nhidden 4\n"
    );
    let env = &files["workspace/env.txt"];
    assert!(
        !env.contains("SECRET_TOKEN") && !env.contains(SECRET),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "HOME=/home/kiln"), "{env}");
    assert_eq!(
        files["layers/probe/x/paths.txt"],
        "pwd=/workspace app=/workspace layer=/layers/probe/x home=/home/kiln tmp=/tmp\n"
    );
    assert_eq!(files["workspace/uid.txt"], "1000\n");
    // No shipped file names where the build happened on this machine, or holds a secret.
    let cache = fs::canonicalize(&snoop.cache)
        .unwrap()
        .display()
        .to_string();
    let project = fs::canonicalize(snoop.root.path())
        .unwrap()
        .display()
        .to_string();
    for (path, body) in &files {
        for needle in [&cache, &project, SECRET] {
            assert!(!body.contains(needle), "{path} contains {needle}: {body}");
        }
    }
}

#[test]
fn isolation_host_runs_steps_on_the_host_where_they_see_everything() {
    let snoop = Snoop::new();
    let (stderr, files) = snoop.build_ok(&["--isolation", "host"], &[]);
    assert!(
        !stderr.contains("run on the host"),
        "said only for auto: {stderr}"
    );
    // What the sandbox hides is really there: the probes above are not vacuous.
    assert_eq!(
        files["workspace/files.txt"],
        "read 1\nread 2\nread 3\nread 4\n"
    );
    let paths = &files["layers/probe/x/paths.txt"];
    assert!(
        paths.starts_with("pwd=/") && !paths.starts_with("pwd=/workspace"),
        "{paths}"
    );
}

#[test]
fn where_sandboxes_cannot_start_sandbox_fails_with_the_reason_and_auto_falls_back_once() {
    let snoop = Snoop::new();
    let reason = "kernel.unprivileged_userns_clone=0 (simulated)";
    let env = [("KILN_SANDBOX_PROBE_FAIL", reason)];
    let out = snoop.build(&["--isolation", "sandbox"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: --isolation sandbox: {reason}")),
        "{stderr}"
    );
    assert!(!snoop.layout().exists(), "no image without the sandbox");

    let (stderr, files) = snoop.build_ok(&[], &env);
    let fallbacks: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("run on the host"))
        .collect();
    assert_eq!(
        fallbacks,
        [format!(
            "build steps run on the host, not sandboxed (--isolation auto): {reason}"
        )]
    );
    assert_eq!(
        files["workspace/files.txt"],
        "read 1\nread 2\nread 3\nread 4\n"
    );
}

/// Host pids of live (not zombie) processes in the PID namespace `ns` (`pid:[…]`).
fn processes_in(ns: &Path) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            !zombie && fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns)
        })
        .collect()
}

fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[test]
fn killing_kiln_during_a_step_leaves_no_step_process_alive() {
    if !sandboxes_work() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("kiln-kill-test-{}", std::process::id());
    let manifest = BUILDPACK.replace(
        "env | grep",
        &format!("sleep 600 & echo started; wait; : {marker}\nenv | grep"),
    );
    let bps = buildpacks_dir(tmp.path(), "probe", &manifest);
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("probe.txt"), "probe\n").unwrap();
    let mut kiln = kiln_cmd()
        .args(["build", src.to_str().unwrap(), "--output"])
        .arg(tmp.path().join("out.tar"))
        .arg("--buildpacks")
        .arg(&bps)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(kiln.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("[probe/snoop] started") {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = kiln.kill();
            panic!("kiln ended before the step started");
        }
    }
    let shell = pids()
        .into_iter()
        .find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        })
        .expect("the step's shell is running");
    let ns = fs::read_link(format!("/proc/{shell}/ns/pid")).unwrap();
    assert_ne!(
        Some(&ns),
        fs::read_link("/proc/self/ns/pid").ok().as_ref(),
        "the step runs in a PID namespace of its own"
    );
    let before = processes_in(&ns);
    assert!(before.len() >= 3, "init, the shell and sleep: {before:?}");
    kiln.kill().unwrap();
    kiln.wait().unwrap();
    // The kernel tears the namespace down asynchronously: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = processes_in(&ns);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_in(&ns);
    }
    assert!(left.is_empty(), "step processes outlived kiln: {left:?}");
}
