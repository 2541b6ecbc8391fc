//! Step processes never outlive the build that started them: not a background process left
//! behind by a step that finished or failed, not the whole process tree of a running step when
//! Kiln itself is killed with SIGKILL (nothing may keep writing into the cache after that).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A buildpack with one step running `script` under `sh -c`, its processes marked by
/// `KILN_TEST_MARK=<mark>` in their environment.
fn buildpack(root: &Path, script: &str, mark: &str) -> PathBuf {
    let manifest = format!(
        r#"
[buildpack]
id = "procs"
version = "1.0.0"

[detect]
any = ["Procfile"]

[[build.steps]]
name = "spawn"
command = "sh"
args = ["-c", "{script}"]
env = {{ KILN_TEST_MARK = "{mark}" }}

[[processes]]
type = "web"
command = ["/bin/true"]
"#
    );
    buildpacks_dir(root, "procs", &manifest)
}

fn build_command(tmp: &Path, bps: &Path) -> Command {
    let mut cmd = kiln_cmd();
    cmd.arg("build")
        .arg(fixture("procfile-static"))
        .arg("--output")
        .arg(tmp.join("out.tar"))
        .arg("--cache-dir")
        .arg(tmp.join("cache"))
        .arg("--buildpacks")
        .arg(bps)
        // Only the step's processes matter: the image (`/bin/true` on scratch) never runs.
        .arg("--no-verify");
    cmd
}

/// `(pid, command name)` of every live process whose environment holds `KILN_TEST_MARK=<mark>`
/// (zombies have no readable environment, so they do not count).
fn marked_processes(mark: &str) -> Vec<(u32, String)> {
    let needle = format!("KILN_TEST_MARK={mark}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes())
        {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_owned()));
        }
    }
    found
}

/// Polls `done` until it holds or `limit` passes; whether it held.
fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that no marked process is alive within a few seconds; kills any that are (so a failing
/// test leaves nothing behind) and names them.
fn assert_no_step_process_survives(mark: &str, context: &str) {
    if poll_until(Duration::from_secs(10), || {
        marked_processes(mark).is_empty()
    }) {
        return;
    }
    let left = marked_processes(mark);
    for (pid, _) in &left {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    panic!("{context}: step processes still alive: {left:?}");
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn killing_kiln_kills_the_running_step_and_its_background_children() {
    let tmp = tempfile::tempdir().unwrap();
    let mark = tmp.path().display().to_string();
    let bps = buildpack(tmp.path(), "sleep 300 & sleep 300", &mark);
    let log = std::fs::File::create(tmp.path().join("kiln.log")).unwrap();
    let mut kiln = build_command(tmp.path(), &bps)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = poll_until(Duration::from_secs(120), || {
        let procs = marked_processes(&mark);
        procs.iter().filter(|(_, comm)| comm == "sleep").count() >= 2
    });
    if !started {
        let _ = kiln.kill();
        let _ = kiln.wait();
        let log = std::fs::read_to_string(tmp.path().join("kiln.log")).unwrap();
        assert_no_step_process_survives(&mark, "after a step that never started");
        panic!("the step's two sleeps never ran; kiln's log:\n{log}");
    }
    kiln.kill().unwrap(); // SIGKILL: Kiln runs no cleanup of its own
    kiln.wait().unwrap();
    assert_no_step_process_survives(&mark, "after SIGKILL of kiln");
}

#[test]
fn background_processes_of_finished_and_failed_steps_are_killed() {
    for (script, ok) in [
        ("sleep 300 >/dev/null 2>&1 & echo started", true),
        ("sleep 300 >/dev/null 2>&1 & exit 3", false),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mark = tmp.path().display().to_string();
        let bps = buildpack(tmp.path(), script, &mark);
        let out = build_command(tmp.path(), &bps).output().unwrap();
        assert_eq!(out.status.success(), ok, "{script}: {}", stderr(&out));
        if !ok {
            assert!(
                stderr(&out).contains("exited with code 3"),
                "{}",
                stderr(&out)
            );
        }
        assert_no_step_process_survives(&mark, script);
    }
}
