//! Running build steps, in the build's sandbox or on the host: an explicit environment (never the
//! caller's whole one), output streamed line by line with a `[buildpack/step]` prefix, and on
//! failure an error carrying the step, command, exit status and the tail of its output.
//!
//! No process of a step outlives it. Each step runs in a process group of its own, and the whole
//! group is killed on every way out of [`run_step`]: when the step's first process exits (which
//! takes its background children with it), on an error, and while unwinding from a panic. A Kiln
//! killed outright (SIGKILL) cannot clean up, so in a binary that calls [`supervise_if_asked`]
//! first thing in `main` (the `kiln` CLI does), a step's direct child is a small supervisor: the
//! same binary in a hidden mode, which runs the step in its group and kills that group as soon as
//! its connection to Kiln closes, i.e. Kiln is gone. Other hosts of this library run the step
//! directly with `PR_SET_PDEATHSIG`, which covers the step's own process only. A process that
//! leaves the group (`setsid`) escapes both; a PID namespace per step would catch it too.
//! A sandboxed step's direct child is the sandbox helper, leader of the step's group and of its
//! PID namespace: killing it ends every process in the sandbox, `setsid` or not.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use kiln_buildpack::plan::Step;
use kiln_buildpack::template;

use crate::error::{Error, Result};
use crate::events::{BuildEvent, Events};
use crate::isolation::{StartError, StepPaths, StepSandbox};

/// How many trailing output lines a failed step's error carries.
const TAIL_LINES: usize = 30;

/// How soon a running step notices that the build was cancelled.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The hidden first argument that runs a binary calling [`supervise_if_asked`] as a supervisor.
const SUPERVISOR_ARG: &str = "__kiln-step-supervisor";

/// The supervisor's exit code when the step cannot be started (as a shell's for "not found").
const EXIT_CANNOT_START: i32 = 127;

/// Set by [`supervise_if_asked`]: this binary can act as a step supervisor.
static SUPERVISOR_AVAILABLE: AtomicBool = AtomicBool::new(false);

/// To be called first thing in `main` of a binary that runs build steps. In the supervisor mode
/// [`run_step`] starts it in, it runs the step and exits; otherwise it returns at once, and steps
/// run by this process get a supervisor, so that even a SIGKILL of this process kills every
/// process of a running step (see the module documentation).
pub fn supervise_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(OsStr::new(SUPERVISOR_ARG)) {
        supervise(args);
    }
    // The supervisor is this very binary, found the way the kernel knows it (even if replaced
    // on disk since).
    let available = Path::new("/proc/self/exe").exists();
    SUPERVISOR_AVAILABLE.store(available, Ordering::Relaxed);
}

/// The supervisor: runs `COMMAND ARGS…` with its own environment and working directory (the
/// step's, set by [`run_step`]), kills its process group (the step's) as soon as its stdin, a
/// socket whose other end only Kiln holds, reaches end of file, and otherwise exits as the step
/// did. A step that cannot start is reported on that socket as `ERRNO\nMESSAGE`.
fn supervise(mut args: impl Iterator<Item = OsString>) -> ! {
    let control = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(_) => std::process::exit(EXIT_CANNOT_START),
    };
    let Some(command) = args.next() else {
        std::process::exit(EXIT_CANNOT_START)
    };
    let mut step = Command::new(command);
    step.args(args).stdin(Stdio::null());
    // SAFETY: the hook only makes async-signal-safe calls (see `die_with_parent`).
    unsafe { step.pre_exec(die_with_parent()) };
    let mut child = match step.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = write!(&control, "{}\n{e}", e.raw_os_error().unwrap_or(0));
            std::process::exit(EXIT_CANNOT_START);
        }
    };
    std::thread::spawn(move || {
        // Kiln never writes: a read returns only at end of file, when Kiln is gone.
        let mut buf = [0u8; 64];
        loop {
            match (&control).read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() != io::ErrorKind::Interrupted => break,
                _ => {}
            }
        }
        // SAFETY: kill(2) with pid 0 signals this process's own group: the step's.
        unsafe { libc::kill(0, libc::SIGKILL) };
    });
    match child.wait() {
        Ok(status) => exit_as(status),
        Err(_) => std::process::exit(EXIT_CANNOT_START),
    }
}

/// Ends the supervisor the way its step ended, so Kiln reports the step's own exit code or signal.
fn exit_as(status: ExitStatus) -> ! {
    if let Some(signal) = status.signal() {
        // SAFETY: plain libc calls on valid arguments; no core file of the supervisor's own.
        unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        std::process::exit(128 + signal);
    }
    std::process::exit(status.code().unwrap_or(1))
}

/// A `pre_exec` hook making the child get SIGKILL when the thread that spawned it ends (the
/// thread running the step waits for it, so in effect: when its parent dies). It runs between
/// fork and exec, so it only makes async-signal-safe calls (`prctl`, `getppid`).
fn die_with_parent() -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    move || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are async-signal-safe.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before the prctl: then the signal will never come.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    }
}

/// A spawned step (or its supervisor), leader of its own process group. Dropping it unreaped
/// kills the group and reaps the leader, so no way out of [`run_step`] leaves the step running.
struct StepGroup {
    child: Child,
    reaped: bool,
}

impl StepGroup {
    /// SIGKILL to every process of the group. Only ever called before the leader is reaped: until
    /// then its pid, which is the group's id, cannot be reused by an unrelated group.
    fn kill(&self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on a negative pid signals that process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for StepGroup {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// Blocks until the process `pid` (a child) has exited, leaving it unreaped (`WNOWAIT`), so that
/// its group can still be killed safely.
fn wait_exited(pid: libc::id_t) {
    loop {
        // SAFETY: siginfo_t is plain data, and waitid writes at most one into it.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// What the threads watching a step report.
enum Event {
    Line(String),
    /// The step's first process exited: whatever it left running is killed now.
    Exited,
}

/// Where a step's `${app}` and `${layer:NAME}` point on the host, and its base environment.
/// Where a step's `${app}` and `${layer:NAME}` are on the host, its base environment, and the
/// sandbox it runs in (where they are at their image paths).
pub struct StepContext<'a> {
    pub buildpack: &'a str,
    pub app_dir: &'a Path,
    pub layer_dirs: &'a BTreeMap<String, PathBuf>,
    /// The environment every step starts from (see [`crate::BuildOptions::env`]).
    pub base_env: &'a BTreeMap<String, String>,
    /// `None`: the step runs on the host.
    pub(crate) sandbox: Option<&'a StepSandbox>,
}

impl StepContext<'_> {
    fn expand(&self, input: &str) -> Result<String> {
        let paths = StepPaths::of(self.sandbox);
        let mut lookup = |var: &str| -> Option<String> {
            if var == "app" {
                return Some(paths.app(self.app_dir).display().to_string());
            }
            let name = var.strip_prefix("layer:")?;
            self.layer_dirs
                .get(name)
                .map(|p| paths.layer(self.buildpack, name, p).display().to_string())
        };
        Ok(template::expand(input, &mut lookup)?)
    }
}

/// Runs `step`, streaming its output into `log`.
pub fn run_step(step: &Step, ctx: &StepContext<'_>, ev: Events<'_>) -> Result<()> {
    let command = ctx.expand(&step.command)?;
    let args = step
        .args
        .iter()
        .map(|a| ctx.expand(a))
        .collect::<Result<Vec<_>>>()?;
    let workdir = StepPaths::of(ctx.sandbox)
        .app(ctx.app_dir)
        .join(ctx.expand(&step.workdir)?);
    let mut env = ctx.base_env.clone();
    for (key, value) in &step.env {
        env.insert(key.clone(), ctx.expand(value)?);
    }
    let display = shell_words(&command, &args);
    ev.emit(BuildEvent::StepStarted {
        buildpack: ctx.buildpack.to_owned(),
        step: step.name.clone(),
        command: display.clone(),
    });

    let failed = |status: String, exit_code: Option<i32>, tail: Vec<String>| Error::StepFailed {
        buildpack: ctx.buildpack.to_owned(),
        step: step.name.clone(),
        command: display.clone(),
        status,
        exit_code,
        tail: tail.into(),
    };
    let start_error = |e: StartError| {
        let status = match e {
            StartError::Command(e) => {
                let hint = if e.kind() == io::ErrorKind::NotFound {
                    format!(
                        " (is `{command}` installed and on PATH={}?)",
                        env.get("PATH").map(String::as_str).unwrap_or("")
                    )
                } else {
                    String::new()
                };
                format!("could not start: {e}{hint}")
            }
            StartError::Sandbox(e) => format!("could not start in the sandbox: {e}"),
        };
        failed(status, None, Vec::new())
    };
    let cannot_start = |e: io::Error| start_error(StartError::Command(e));
    let (control, child) = match ctx.sandbox {
        // Sandboxed: the same command line, environment and pipes, inside the build's sandbox;
        // the helper dies with Kiln and takes the sandbox's PID namespace with it.
        Some(sandbox) => (
            None,
            sandbox
                .spawn(&command, &args, &workdir, &env)
                .map_err(start_error)?,
        ),
        None => {
            let (control, mut cmd) = if SUPERVISOR_AVAILABLE.load(Ordering::Relaxed) {
                let (ours, theirs) = UnixStream::pair().map_err(cannot_start)?;
                let mut cmd = Command::new("/proc/self/exe");
                cmd.arg(SUPERVISOR_ARG)
                    .arg(&command)
                    .args(&args)
                    .stdin(Stdio::from(OwnedFd::from(theirs)));
                (Some(ours), cmd)
            } else {
                let mut cmd = Command::new(&command);
                cmd.args(&args).stdin(Stdio::null());
                // SAFETY: the hook only makes async-signal-safe calls (see `die_with_parent`).
                unsafe { cmd.pre_exec(die_with_parent()) };
                (None, cmd)
            };
            cmd.current_dir(&workdir)
                .env_clear()
                .envs(&env)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            let spawned = cmd.spawn();
            // The command holds the supervisor's end of the control socket: only the supervisor
            // may keep it, or its end of file would not mean "Kiln is gone".
            drop(cmd);
            (control, spawned.map_err(cannot_start)?)
        }
    };
    let mut group = StepGroup {
        child,
        reaped: false,
    };

    // Both pipes feed one channel so lines interleave roughly as the step printed them.
    let (tx, rx) = mpsc::channel::<Event>();
    let readers: Vec<_> = [
        group
            .child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        group
            .child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(|l| l.ok()) {
                let line = String::from_utf8_lossy(&line).into_owned();
                if tx.send(Event::Line(line)).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    let pid = group.child.id();
    std::thread::spawn(move || {
        wait_exited(pid);
        let _ = tx.send(Event::Exited);
    });
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut cancelled = false;
    // Ends when every pipe is closed: background processes holding them are killed at `Exited`,
    // and all of them once the build is cancelled.
    loop {
        match rx.recv_timeout(CANCEL_POLL) {
            Ok(Event::Line(line)) => {
                ev.emit(BuildEvent::StepOutput {
                    buildpack: ctx.buildpack.to_owned(),
                    step: step.name.clone(),
                    line: line.clone(),
                });
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Ok(Event::Exited) => group.kill(),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !cancelled && ev.check().is_err() {
            cancelled = true;
            group.kill();
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = group
        .wait()
        .map_err(|e| failed(format!("could not be waited for: {e}"), None, Vec::new()))?;
    if cancelled {
        return Err(Error::Cancelled);
    }
    if let Some(e) = control.and_then(|socket| start_failure(&socket)) {
        return Err(cannot_start(e));
    }
    if status.success() {
        return Ok(());
    }
    let exit_code = status.code();
    let status = match (exit_code, status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "failed".to_owned(),
    };
    Err(failed(status, exit_code, tail.into()))
}

/// The error a supervisor reported on the control socket (`ERRNO\nMESSAGE`) when it could not
/// start the step; read once the supervisor has exited, so all it wrote is there.
fn start_failure(socket: &UnixStream) -> Option<io::Error> {
    socket.set_nonblocking(true).ok()?;
    let mut report = String::new();
    let _ = (&*socket).read_to_string(&mut report);
    let (errno, message) = report.split_once('\n')?;
    Some(match errno.parse::<i32>() {
        Ok(errno) if errno > 0 => io::Error::from_raw_os_error(errno),
        _ => io::Error::other(message.to_owned()),
    })
}

/// A copy-pasteable rendering of a command line for logs and errors.
fn shell_words(command: &str, args: &[String]) -> String {
    std::iter::once(command)
        .chain(args.iter().map(String::as_str))
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                w.to_owned()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn step(command: &str, args: &[&str]) -> Step {
        Step {
            name: "s".into(),
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([("GREETING".into(), "hi from ${app}".into())]),
            workdir: ".".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            from: None,
        }
    }

    fn run(step: &Step, base_env: BTreeMap<String, String>) -> (Result<()>, String) {
        let app = tempfile::tempdir().unwrap();
        let layers = BTreeMap::from([("out".to_owned(), app.path().join("out"))]);
        let ctx = StepContext {
            buildpack: "bp",
            app_dir: app.path(),
            layer_dirs: &layers,
            base_env: &base_env,
            sandbox: None,
        };
        let log = crate::events::LogLines::new(Vec::new());
        let cancel = crate::events::Cancel::new();
        let result = run_step(step, &ctx, Events::new(&log, &cancel));
        (result, String::from_utf8(log.into_inner()).unwrap())
    }

    #[test]
    fn environment_is_explicit_and_output_prefixed() {
        std::env::set_var("KILN_TEST_LEAK", "leaked");
        let base = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let (result, log) = run(
            &step(
                "sh",
                &[
                    "-c",
                    "echo \"$GREETING\"; echo \"leak=$KILN_TEST_LEAK\" >&2",
                ],
            ),
            base,
        );
        result.unwrap();
        assert!(log.contains("[bp/s] hi from /"), "{log}");
        assert!(
            log.contains("[bp/s] leak=\n"),
            "caller env must not reach steps: {log}"
        );
    }

    #[test]
    fn failure_names_step_command_code_and_tail() {
        let base = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let script = "for i in $(seq 1 40); do echo line$i; done; exit 7";
        let (result, _) = run(&step("sh", &["-c", script]), base);
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("step bp/s failed: `sh -c "), "{err}");
        assert!(err.contains("exited with code 7"), "{err}");
        assert!(err.contains("line40"), "{err}");
        assert!(!err.contains("line10\n"), "only the tail is kept: {err}");
    }

    /// Whether the process `pid` is alive within a few seconds of being killed: polled, as a
    /// killed process still shows in /proc until it has died and been reaped.
    fn still_alive(pid: &str) -> bool {
        let dead = || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the command name in parentheses; a zombie has finished.
            matches!(
                stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]),
                None | Some("Z")
            )
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !dead() {
            if std::time::Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// `base` env with `PIDS` naming a file in a fresh directory the step writes pids into.
    fn with_pid_file(base: &mut BTreeMap<String, String>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        base.insert("PIDS".into(), pids.display().to_string());
        (dir, pids)
    }

    #[test]
    fn background_processes_die_with_the_step_that_started_them() {
        for (script, ok) in [
            ("sleep 300 >/dev/null 2>&1 & echo $! > \"$PIDS\"", true),
            (
                "sleep 300 >/dev/null 2>&1 & echo $! > \"$PIDS\"; exit 3",
                false,
            ),
        ] {
            let mut base = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
            let (_dir, pids) = with_pid_file(&mut base);
            let (result, _) = run(&step("sh", &["-c", script]), base);
            assert_eq!(result.is_ok(), ok, "{script}: {result:?}");
            let pid = fs::read_to_string(&pids).unwrap();
            assert!(
                !still_alive(pid.trim()),
                "{script}: background sleep outlived the step"
            );
        }
    }

    /// An observer that panics once the step has printed `go`.
    fn panicking_observer(event: &BuildEvent) {
        if let BuildEvent::StepOutput { line, .. } = event {
            assert_ne!(line, "go", "the observer gave up");
        }
    }

    /// Runs a step that starts a background `sleep`, prints `go` and waits, under `observer`
    /// and `cancel`; then checks that none of its processes outlived it.
    fn run_go_step(
        observer: &dyn crate::events::Observer,
        cancel: &crate::events::Cancel,
    ) -> Result<()> {
        let mut base = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let (_dir, pids) = with_pid_file(&mut base);
        let script = "echo $$ > \"$PIDS\"; sleep 300 >/dev/null 2>&1 & echo $! >> \"$PIDS\"; \
                      echo go; wait";
        let app = tempfile::tempdir().unwrap();
        let layers = BTreeMap::new();
        let ctx = StepContext {
            buildpack: "bp",
            app_dir: app.path(),
            layer_dirs: &layers,
            base_env: &base,
            sandbox: None,
        };
        let sh = step("sh", &["-c", script]);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_step(&sh, &ctx, Events::new(observer, cancel))
        }));
        for pid in fs::read_to_string(&pids).unwrap().lines() {
            assert!(!still_alive(pid), "process {pid} of the step outlived it");
        }
        result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    #[test]
    fn cancelling_kills_the_running_step_and_its_background_processes() {
        let cancel = crate::events::Cancel::new();
        // The observer cancels once the step is under way, as a Ctrl-C would.
        let observer = |event: &BuildEvent| {
            if let BuildEvent::StepOutput { line, .. } = event {
                if line == "go" {
                    cancel.cancel();
                }
            }
        };
        let started = std::time::Instant::now();
        let result = run_go_step(&observer, &cancel);
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn a_panic_while_a_step_runs_kills_its_whole_group() {
        let unwound = std::panic::catch_unwind(|| {
            run_go_step(&panicking_observer, &crate::events::Cancel::new())
        });
        assert!(
            unwound.is_err(),
            "the observer's panic must reach the caller"
        );
    }

    #[test]
    fn missing_command_says_so() {
        let base = BTreeMap::from([("PATH".to_owned(), "/nonexistent".to_owned())]);
        let (result, _) = run(&step("kiln-no-such-tool", &[]), base);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("could not start"), "{err}");
        assert!(err.contains("kiln-no-such-tool` installed"), "{err}");
    }
}
