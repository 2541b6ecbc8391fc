//! How a running build is shown: the live display under a pseudo-terminal, plain lines, JSON
//! event lines, `--quiet`, the summary table, and Ctrl-C cancelling a build cleanly. Cheap:
//! every build is a Procfile app on scratch with one host step.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// On a Procfile app, the step `work` prints `one`, `two` and `three` a little apart; with
/// `SLOW` set it then waits on a background `sleep` (its pid written to `$PIDS`).
const TALKING_BUILDPACK: &str = r#"
[buildpack]
id = "talk"
version = "1.0.0"

[detect]
any = ["Procfile"]

[[build.steps]]
name = "work"
command = "sh"
args = ["-c", "echo one; sleep 0.3; echo two; sleep 0.3; echo three; if [ -n \"$SLOW\" ]; then sleep 300 & echo $! > \"$PIDS\"; echo waiting; wait; fi"]

[[processes]]
type = "web"
command = "true"
"#;

/// `kiln build` of `fixtures/procfile-static` with the talking buildpack, on the host, into
/// `tmp/out.tar`.
fn build_cmd(tmp: &Path, extra: &[&str]) -> Command {
    let bps = buildpacks_dir(tmp, "talk", TALKING_BUILDPACK);
    let mut cmd = kiln_cmd();
    cmd.args([
        "build",
        fixture("procfile-static").to_str().unwrap(),
        "--output",
        tmp.join("out.tar").to_str().unwrap(),
        "--cache-dir",
        tmp.join("cache").to_str().unwrap(),
        "--buildpacks",
        bps.to_str().unwrap(),
        "--isolation",
        "host",
        "--no-verify",
    ])
    .args(extra)
    .env_remove("NO_COLOR");
    cmd
}

/// Runs `cmd` with its stdout and stderr on a new pseudo-terminal (120 columns) and returns
/// everything the terminal received.
fn run_on_pty(mut cmd: Command) -> (std::process::ExitStatus, String) {
    // SAFETY: plain libc calls on a descriptor this function owns; results are checked.
    let master = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        OwnedFd::from_raw_fd(fd)
    };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer is as long as we say.
    let named = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    assert_eq!(named, 0, "ptsname_r");
    // SAFETY: ptsname_r wrote a NUL-terminated string into the buffer.
    let slave_path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    let slave = File::options()
        .read(true)
        .write(true)
        .open(&slave_path)
        .unwrap();
    cmd.stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .env("TERM", "xterm-256color");
    let mut child = cmd.spawn().expect("kiln starts");
    // Only the child holds the terminal now: its exit ends the reads below (EIO).
    drop(cmd);
    let mut master = File::from(master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().unwrap();
    (status, String::from_utf8_lossy(&seen).into_owned())
}

#[test]
fn on_a_terminal_phases_and_steps_are_live_lines_with_times_then_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let (status, screen) = run_on_pty(build_cmd(tmp.path(), &[]));
    assert!(status.success(), "{screen}");
    // Drawn, not printed: indicatif moves the cursor and clears lines to redraw.
    assert!(
        screen.contains("\x1b[2K"),
        "no redraw sequences:\n{screen:?}"
    );
    // Finished phases and steps stay as lines with a tick and their time.
    for done in ["detect", "stack", "steps", "export"] {
        let line = screen
            .lines()
            .find(|l| l.contains('✓') && l.contains(done))
            .unwrap_or_else(|| panic!("no finished {done} line:\n{screen}"));
        assert!(line.contains(" s"), "{line}");
    }
    assert!(
        screen
            .lines()
            .any(|l| l.contains('✓') && l.contains("talk/work")),
        "{screen}"
    );
    // Compact: step output is shown beside its spinner, not as a log line per output line.
    assert!(!screen.contains("[talk/work] one"), "{screen}");
    // Colour, as NO_COLOR is not set.
    assert!(screen.contains("\x1b[32m"), "no colour:\n{screen:?}");
    // The summary table: every layer and step.
    assert!(screen.contains("layer"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("app ") && l.contains("built")),
        "{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("talk/work") && l.contains("ran")),
        "{screen}"
    );
    assert!(screen.lines().any(|l| l.starts_with("total ")), "{screen}");

    // NO_COLOR turns colour off, and --verbose prints every step line above the spinners.
    let mut cmd = build_cmd(tmp.path(), &["--verbose"]);
    cmd.env("NO_COLOR", "1");
    let (status, screen) = run_on_pty(cmd);
    assert!(status.success(), "{screen}");
    assert!(
        !screen.contains("\x1b[32m"),
        "colour despite NO_COLOR:\n{screen:?}"
    );
    for line in ["one", "two", "three"] {
        assert!(screen.contains(&format!("[talk/work] {line}")), "{screen}");
    }
}

#[test]
fn without_a_terminal_events_are_prefixed_lines_json_lines_or_only_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = build_cmd(tmp.path(), &[]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    let at = |wanted: &str| {
        lines
            .iter()
            .position(|l| *l == wanted || l.starts_with(wanted))
            .unwrap_or_else(|| panic!("no line {wanted:?}:\n{log}"))
    };
    // In order, each prefixed with what it is about.
    let started = at("[talk/work] $ sh -c 'echo one;");
    let (one, two, three) = (
        at("[talk/work] one"),
        at("[talk/work] two"),
        at("[talk/work] three"),
    );
    let done = at("[talk/work] done in ");
    let steps = at("steps: done in ");
    assert!(started < one && one < two && two < three && three < done && done < steps);
    assert!(at("layer app: built (") > steps, "{log}");
    assert!(
        !log.contains('\x1b'),
        "escape codes in a plain log:\n{log:?}"
    );
    // Then the summary table.
    assert!(at("total ") > at("layer "), "{log}");

    // --quiet: nothing but warnings (there are none) and errors.
    let quiet = build_cmd(tmp.path(), &["--quiet"]).output().unwrap();
    assert!(quiet.status.success());
    assert_eq!(
        String::from_utf8_lossy(&quiet.stderr),
        "",
        "--quiet printed"
    );

    // --progress json: one event object per line, in order.
    let json = build_cmd(tmp.path(), &["--progress", "json"])
        .output()
        .unwrap();
    assert!(json.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let index = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("{events:#?}"))
    };
    let output = index(&|e| e["event"] == "step_output" && e["line"] == "two");
    let finished =
        index(&|e| e["event"] == "step_finished" && e["step"] == "work" && e["ran"] == true);
    let export = index(&|e| e["event"] == "phase_finished" && e["phase"] == "export");
    let layer = index(&|e| e["event"] == "layer_decided" && e["name"] == "app");
    assert!(output < finished && finished < layer && layer < export);
    assert_eq!(events[export]["ok"], true);
    assert!(events[layer]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

/// Whether process `pid` is gone (or a zombie: killed, waiting for its reaper) within `limit`.
fn ends_within(pid: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name in parentheses.
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        if matches!(state, None | Some("Z")) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_kills_the_running_step_and_leaves_no_image_and_a_cache_the_next_build_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let mut cmd = build_cmd(
        tmp.path(),
        &[
            "--env",
            "SLOW=1",
            "--env",
            &format!("PIDS={}", pids.display()),
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("the build ended before its step waited:\n{log}");
        }
        log.push_str(&line);
        if line.trim_end() == "[talk/work] waiting" {
            break;
        }
    }
    let sent = Instant::now();
    // SAFETY: kill(2) on the child we started.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "cancelling took {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("error: build cancelled"), "{log}");
    // The step's background sleep is gone, as is every temporary file; no image was written.
    let sleep = std::fs::read_to_string(&pids).unwrap();
    assert!(
        ends_within(sleep.trim(), Duration::from_secs(10)),
        "the step's sleep {} outlived the cancel",
        sleep.trim()
    );
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !matches!(n.as_str(), "cache" | "buildpacks" | "pids"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let listing = kiln_ok(&[
        "cache",
        "ls",
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]);
    assert!(!listing.contains("leftover"), "{listing}");

    // The cache is sound: the next build runs and writes its image.
    let again = build_cmd(tmp.path(), &[]).output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(tmp.path().join("out.tar").is_file());
}
