//! The sandbox from outside: each test runs real commands (a static busybox in a root assembled
//! here, or the host's own root) through the crate's `kiln-sandbox` helper binary and checks
//! what they could see and do. They need user namespaces and `/usr/bin/busybox`: without them
//! they fail under `CI` and skip loudly elsewhere.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_sandbox::{Error, Helper, Mount, Network, Sandbox, SandboxSpec};

const BUSYBOX: &str = "/usr/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "id", "env", "touch", "grep", "hostname", "sleep", "tr",
];

fn sandbox() -> Sandbox {
    Sandbox::new(Helper::program(env!("CARGO_BIN_EXE_kiln-sandbox")))
}

/// Whether the tests can run here (see the module comment).
fn ready() -> bool {
    let missing = if !Path::new(BUSYBOX).is_file() {
        Some(format!("{BUSYBOX} (busybox-static)"))
    } else {
        sandbox().probe().err().map(|e| e.to_string())
    };
    match missing {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("sandbox tests cannot run: {why}"),
        Some(why) => {
            eprintln!("\n*** SKIPPED: {why} ***\n");
            false
        }
    }
}

/// A root holding only `/bin/busybox` and its applets as symlinks.
fn busybox_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    root
}

fn sh(root: &Path, script: &str) -> SandboxSpec {
    let mut spec = SandboxSpec::new(root, vec!["sh".into(), "-c".into(), script.into()]);
    spec.env.insert("PATH".into(), "/bin".into());
    spec
}

/// Runs `spec` to its end: (exit code, stdout, stderr); panics if it could not start.
fn run(spec: &SandboxSpec) -> (Option<i32>, String, String) {
    let out = sandbox().command(spec).unwrap().output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn bind(host: &Path, inside: &str, writable: bool) -> Mount {
    Mount::Bind {
        host: host.to_path_buf(),
        inside: inside.into(),
        writable,
    }
}

#[test]
fn root_is_read_only_tmp_is_private_and_binds_are_as_declared() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let rw = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    fs::write(ro.path().join("ro.txt"), "read me\n").unwrap();
    let mut spec = sh(
        root.path(),
        "touch /bin/new 2>/dev/null && echo root-writable || echo root-read-only
         echo hi > /data/rw/out && echo rw-written
         (echo x > /data/ro/ro.txt) 2>/dev/null && echo ro-writable || echo ro-read-only
         cat /data/ro/ro.txt
         echo t > /tmp/private && cat /tmp/private
         echo to-stderr >&2",
    );
    spec.mounts = vec![
        bind(rw.path(), "/data/rw", true),
        bind(ro.path(), "/data/ro", false),
    ];
    let (code, stdout, stderr) = run(&spec);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "root-read-only\nrw-written\nro-read-only\nread me\nt\n"
    );
    assert_eq!(stderr, "to-stderr\n");
    assert_eq!(fs::read_to_string(rw.path().join("out")).unwrap(), "hi\n");
    assert_eq!(
        fs::read_to_string(ro.path().join("ro.txt")).unwrap(),
        "read me\n"
    );
    assert!(!root.path().join("bin/new").exists());
    // The mount points were made on the sandbox's own root, never in the root directory.
    assert!(!root.path().join("data").exists());
}

#[test]
fn a_root_and_a_bind_source_reached_through_absolute_symlinks_work() {
    if !ready() {
        return;
    }
    // As when the cache directory is a link to another disk: the helper sees the host's tree
    // under another directory, where these links would point into its own scratch root.
    let root = busybox_root();
    let data = tempfile::tempdir().unwrap();
    fs::write(data.path().join("note.txt"), "through a link\n").unwrap();
    let links = tempfile::tempdir().unwrap();
    symlink(root.path(), links.path().join("root")).unwrap();
    symlink(data.path(), links.path().join("data")).unwrap();
    let mut spec = sh(&links.path().join("root"), "cat /data/note.txt");
    spec.mounts = vec![bind(&links.path().join("data"), "/data", false)];
    let (code, stdout, stderr) = run(&spec);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "through a link\n");
}

#[test]
fn mount_points_the_read_only_root_lacks_or_reaches_through_a_symlink_are_refused() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    symlink("/bin", root.path().join("link")).unwrap();
    let host = tempfile::tempdir().unwrap();
    for (inside, expected) in [("/bin/sub", "read-only"), ("/link/sub", "symlink")] {
        let mut spec = sh(root.path(), "true");
        spec.mounts = vec![bind(host.path(), inside, false)];
        let err = sandbox().command(&spec).unwrap().spawn().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Setup { .. }), "{text}");
        assert!(text.contains(inside) && text.contains(expected), "{text}");
    }
    // A tmpfs over the parent makes room for the mount point.
    let mut spec = sh(root.path(), "ls /bin");
    spec.mounts = vec![
        Mount::Tmpfs {
            inside: "/bin".into(),
            writable: false,
        },
        bind(host.path(), "/bin/sub", false),
    ];
    // Nothing can run from the emptied /bin, but the sandbox was built: the exec is what fails.
    let err = sandbox().command(&spec).unwrap().spawn().unwrap_err();
    assert!(
        matches!(&err, Error::Exec { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

#[test]
fn the_command_runs_as_the_build_user_without_capabilities() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let (code, stdout, stderr) = run(&sh(
        root.path(),
        "id -u; id -g; grep -E '^Cap(Eff|Prm)' /proc/self/status; grep NoNewPrivs /proc/self/status",
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "1000\n1000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n"
    );
}

#[test]
fn proc_shows_only_the_namespace_with_the_helper_as_pid_1() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let (code, stdout, stderr) = run(&sh(
        root.path(),
        "echo self=$$; tr '\\0' ' ' < /proc/1/cmdline; echo; for p in /proc/[0-9]*; do echo ${p#/proc/}; done",
    ));
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "self=2");
    assert!(
        lines[1].ends_with("__sandbox-exec "),
        "PID 1 is the helper's init: {}",
        lines[1]
    );
    // Only init and the shell itself (the loop runs in the shell, `tr` has ended).
    assert_eq!(&lines[2..], ["1", "2"]);
}

#[test]
fn the_environment_is_exactly_the_specs() {
    if !ready() {
        return;
    }
    // The caller has HOME and PATH at least; none of its variables may come through.
    assert!(std::env::var_os("PATH").is_some());
    let root = busybox_root();
    let mut spec = SandboxSpec::new(root.path(), vec!["/bin/env".into()]);
    spec.env = BTreeMap::from([
        ("GREETING".to_owned(), "hello world".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ]);
    let (code, stdout, stderr) = run(&spec);
    assert_eq!(code, Some(0), "{stderr}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["GREETING=hello world", "PATH=/bin"]);
}

#[test]
fn host_files_outside_the_binds_are_invisible_even_with_the_host_root() {
    if !ready() {
        return;
    }
    // The host's own root, as Kiln uses it until build roots exist: a masked directory and
    // the host's /tmp must be out of reach.
    let secret_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let secret = secret_dir.path().join("secret.txt");
    fs::write(&secret, "s3cr3t").unwrap();
    let in_host_tmp = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "cat {} 2>/dev/null || echo masked; test -e {} && echo tmp-visible || echo tmp-private; cat /etc/hostname >/dev/null && echo root-visible",
        secret.display(),
        in_host_tmp.path().display()
    );
    let mut spec = SandboxSpec::new("/", vec!["/bin/sh".into(), "-c".into(), script]);
    spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
    // Without the mask the file is readable: the test can tell.
    let (_, unmasked, _) = run(&spec);
    assert!(unmasked.starts_with("s3cr3t"), "{unmasked}");
    spec.mounts = vec![Mount::Tmpfs {
        inside: secret_dir.path().to_path_buf(),
        writable: false,
    }];
    let (code, stdout, stderr) = run(&spec);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "masked\ntmp-private\nroot-visible\n");

    // A root of its own shows nothing of the host but the sandbox's own directories.
    let root = busybox_root();
    let (_, stdout, _) = run(&sh(root.path(), "ls /"));
    assert_eq!(stdout, "bin\ndev\nproc\ntmp\n");
}

#[test]
fn exit_codes_and_signals_pass_through() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let status = |script: &str| {
        sandbox()
            .command(&sh(root.path(), script))
            .unwrap()
            .output()
            .unwrap()
            .status
    };
    assert_eq!(status("exit 42").code(), Some(42));
    assert_eq!(status("exit 0").code(), Some(0));
    let killed = status("kill -9 $$");
    assert_eq!((killed.code(), killed.signal()), (None, Some(9)));
    assert_eq!(status("kill -TERM $$").signal(), Some(15));
}

#[test]
fn exec_failures_name_the_error() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let mut spec = sh(root.path(), "");
    spec.argv = vec!["no-such-tool".into()];
    match sandbox().command(&spec).unwrap().spawn() {
        Err(Error::Exec { program, source }) => {
            assert_eq!(program, "no-such-tool");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an exec error, got {other:?}"),
    }
    spec.argv = vec!["/bin".into()];
    match sandbox().command(&spec).unwrap().spawn() {
        Err(Error::Exec { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied)
        }
        other => panic!("expected an exec error, got {other:?}"),
    }
}

/// Interface names in a `/proc/net/dev` listing.
fn interfaces(net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn network_none_has_only_loopback_and_host_has_the_hosts() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let mut spec = sh(root.path(), "cat /proc/net/dev");
    spec.network = Network::None;
    let (_, stdout, _) = run(&spec);
    assert_eq!(interfaces(&stdout), ["lo"]);
    spec.network = Network::Host;
    let (_, stdout, _) = run(&spec);
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(interfaces(&stdout), host);
}

#[test]
fn hostname_and_workdir_are_the_specs() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let data = tempfile::tempdir().unwrap();
    let mut spec = sh(root.path(), "hostname; pwd");
    spec.hostname = "box".into();
    spec.workdir = "/data".into();
    spec.mounts = vec![bind(data.path(), "/data", false)];
    let (_, stdout, stderr) = run(&spec);
    assert_eq!(stdout, "box\n/data\n", "{stderr}");
}

#[test]
fn output_streams_while_running_and_signals_reach_the_command() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let spec = sh(
        root.path(),
        "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 1; done",
    );
    let mut command = sandbox().command(&spec).unwrap();
    command.command_mut().stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(
        line, "ready\n",
        "the first line arrives while the command runs"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

/// Host pids of live (not zombie) processes whose PID namespace is `ns` (`pid:[…]`).
fn processes_in(ns: &Path) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            !zombie && fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns)
        })
        .collect()
}

/// Kills the child when a failed assertion unwinds past it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The host pid of the process whose command line contains `marker`.
fn find_process(marker: &str) -> Option<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
}

#[test]
fn killing_the_caller_leaves_no_process_of_the_sandbox_alive() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let marker = format!("kiln-sandbox-kill-test-{}", std::process::id());
    let spec = sh(
        root.path(),
        // `sleep` is forked before `ready` is printed: all three processes exist by then.
        &format!("sleep 600 & echo ready; wait; : {marker}"),
    );
    // The caller is a separate process (the crate's runner), so it can be SIGKILLed.
    let mut caller = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kiln-sandbox"))
            .arg("run")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let caller = &mut caller.0;
    let json = serde_json::to_vec(&spec).unwrap();
    caller.stdin.take().unwrap().write_all(&json).unwrap();
    let mut line = String::new();
    BufReader::new(caller.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let shell = find_process(&marker).expect("the sandboxed shell is running");
    let ns = fs::read_link(format!("/proc/{shell}/ns/pid")).unwrap();
    let before = processes_in(&ns);
    assert!(
        before.len() >= 3,
        "init, the shell and sleep are in the namespace: {before:?}"
    );
    caller.kill().unwrap();
    caller.wait().unwrap();
    // The kernel kills the namespace asynchronously; wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = processes_in(&ns);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_in(&ns);
    }
    assert!(
        left.is_empty(),
        "still alive after the caller was killed: {left:?}"
    );
}

#[test]
fn a_program_that_is_not_a_helper_is_detected() {
    if !ready() {
        return;
    }
    let root = busybox_root();
    let fake = Sandbox::new(Helper::program("/bin/true"));
    let err = fake
        .command(&sh(root.path(), "true"))
        .unwrap()
        .spawn()
        .unwrap_err();
    assert!(matches!(err, Error::NotAHelper { .. }), "{err}");
    assert!(fake
        .probe()
        .unwrap_err()
        .to_string()
        .contains("did not answer"));
}
