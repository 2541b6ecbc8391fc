//! The helper: a freshly executed, single-threaded process (so it may fork and do anything
//! before `exec`, which a multi-threaded caller may not) that builds the sandbox and runs the
//! command in it. Three processes:
//!
//! - the **helper** (the caller's child): reads the request, enters new namespaces, maps the
//!   caller's uid/gid to [`BUILD_UID`]/[`BUILD_GID`], forks, forwards signals to init and exits
//!   as the command did (code, or the same signal);
//! - **init** (PID 1 of the new PID namespace): mounts the root, `/proc`, `/dev`, `/tmp` and the
//!   spec's mounts, pivots into them, forks the command, reaps zombies, forwards signals to the
//!   command's process group and exits when the command does — which kills whatever the command
//!   left running;
//! - the **command**, which runs without capabilities as [`BUILD_UID`].
//!
//! Both the helper and init ask to be killed with their parent (`PR_SET_PDEATHSIG`), so killing
//! the caller kills the whole namespace.

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{kill, killpg, raise, signal, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, execve, fork, getgid, getppid, getuid, pipe2, pivot_root, sethostname, setpgid,
    ForkResult, Pid,
};

use crate::spec::{Answer, Failure, Mount, Network, Request, SandboxSpec, Stage};
use crate::{BUILD_GID, BUILD_UID, PROTOCOL};

/// The hidden argument that makes a program the helper (see [`crate::run_helper_if_requested`]).
pub const HELPER_ARG: &str = "__sandbox-exec";

/// The helper's end of the channel to its caller: requests in, answers out.
pub(crate) const CHANNEL_FD: i32 = 3;

/// Exit code of the helper when the sandbox could not be set up (the reason went to the caller
/// through the channel).
const SETUP_FAILED: i32 = 125;
/// Exit code when `argv[0]` could not be executed, as shells use.
const EXEC_FAILED: i32 = 127;

/// Signals the helper and init pass on rather than die of.
const FORWARDED: [Signal; 6] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Device nodes bound from the host into the sandbox's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Where the host's root and the new root sit while the sandbox is being built.
const OLD_ROOT: &str = "/oldroot";
const NEW_ROOT: &str = "/newroot";

/// Runs the helper: never returns. Call it only in a process started by [`crate::Sandbox`].
pub fn helper_main() -> ! {
    // SAFETY: fcntl on a raw number only inspects it; ownership is taken once it is known open.
    let open = fcntl(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(CHANNEL_FD) },
        FcntlArg::F_GETFD,
    );
    if open.is_err() {
        eprintln!(
            "{HELPER_ARG}: this is Kiln's sandbox helper; it is started by Kiln, not by hand"
        );
        std::process::exit(2);
    }
    // SAFETY: fd 3 is open (checked above) and nothing else in this process owns it.
    let channel = File::from(unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) });
    // The command must not inherit it: its closing tells the caller the command started.
    let _ = fcntl(&channel, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let request = match read_request(&channel) {
        Ok(request) => request,
        Err(failure) => fail(&channel, failure),
    };
    send(&channel, &Answer::Hello { protocol: PROTOCOL });
    helper(&request, channel)
}

fn read_request(channel: &File) -> Result<Request, Failure> {
    let mut line = String::new();
    BufReader::new(channel)
        .read_line(&mut line)
        .map_err(|e| setup_io("reading the request", e))?;
    let request: Request = serde_json::from_str(&line).map_err(|e| Failure {
        stage: Stage::Setup,
        what: "reading the request".into(),
        errno: None,
        message: e.to_string(),
    })?;
    if request.protocol != PROTOCOL {
        return Err(Failure {
            stage: Stage::Setup,
            what: "reading the request".into(),
            errno: None,
            message: format!(
                "protocol {} asked, this helper speaks {PROTOCOL}: the helper is another Kiln version",
                request.protocol
            ),
        });
    }
    Ok(request)
}

fn send(mut channel: &File, answer: &Answer) {
    if let Ok(mut line) = serde_json::to_vec(answer) {
        line.push(b'\n');
        // The caller may be gone; there is no one else to tell.
        let _ = channel.write_all(&line);
    }
}

fn fail(channel: &File, failure: Failure) -> ! {
    let code = match failure.stage {
        Stage::Setup => SETUP_FAILED,
        Stage::Exec => EXEC_FAILED,
    };
    send(channel, &Answer::Failed(failure));
    std::process::exit(code)
}

type Step<T> = Result<T, Failure>;

fn setup_err(what: impl Into<String>, errno: Errno) -> Failure {
    Failure {
        stage: Stage::Setup,
        what: what.into(),
        errno: Some(errno as i32),
        message: errno.desc().to_owned(),
    }
}

fn setup_io(what: impl Into<String>, e: std::io::Error) -> Failure {
    Failure {
        stage: Stage::Setup,
        what: what.into(),
        errno: e.raw_os_error(),
        message: e.to_string(),
    }
}

/// Adds the operation to an error.
trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Step<T>;
}

impl<T> Ctx<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Step<T> {
        self.map_err(|e| setup_err(what(), e))
    }
}

impl<T> Ctx<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Step<T> {
        self.map_err(|e| setup_io(what(), e))
    }
}

/// The helper process: namespaces, then init, then the command's exit status as its own.
fn helper(request: &Request, channel: File) -> ! {
    let (status_read, status_write, lifeline_read, lifeline_write) = match enter_namespaces(request)
    {
        Ok(pipes) => pipes,
        Err(failure) => fail(&channel, failure),
    };
    let waited = waited_signals();
    if let Err(e) = waited.thread_block() {
        fail(&channel, setup_err("blocking signals", e));
    }
    // SAFETY: this process is single-threaded (freshly executed, no thread started).
    match unsafe { fork() } {
        Err(e) => fail(&channel, setup_err("forking init", e)),
        Ok(ForkResult::Child) => {
            drop((status_read, lifeline_write));
            init(request, channel, status_write, lifeline_read)
        }
        Ok(ForkResult::Parent { child }) => {
            // Only init and the command hold the channel now: it closes when the command starts.
            drop((channel, status_write, lifeline_read));
            let init_status = wait_forwarding(child, &waited);
            let status = read_status(status_read).unwrap_or(init_status);
            drop(lifeline_write);
            exit_like(status)
        }
    }
}

/// New namespaces with the caller's ids mapped; returns the status and lifeline pipes
/// (read, write, read, write).
fn enter_namespaces(request: &Request) -> Step<(OwnedFd, OwnedFd, OwnedFd, OwnedFd)> {
    prctl::set_pdeathsig(Signal::SIGKILL).ctx(|| "setting the parent-death signal".into())?;
    if getppid().as_raw() as u32 != request.parent_pid {
        // The caller died before the line above: nobody waits for this sandbox.
        std::process::exit(SETUP_FAILED);
    }
    let (uid, gid) = (getuid(), getgid());
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if request.spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).ctx(|| "unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | …)".into())?;
    // Unprivileged processes may map only their own ids, and a gid map needs setgroups denied.
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/uid_map", &format!("{BUILD_UID} {uid} 1\n"))?;
    write_proc("/proc/self/gid_map", &format!("{BUILD_GID} {gid} 1\n"))?;
    sethostname(&request.spec.hostname).ctx(|| "setting the hostname".into())?;
    let (status_read, status_write) =
        pipe2(OFlag::O_CLOEXEC).ctx(|| "creating the status pipe".into())?;
    // Init watches this pipe: when the helper dies, its end closes.
    let (lifeline_read, lifeline_write) =
        pipe2(OFlag::O_CLOEXEC).ctx(|| "creating the lifeline pipe".into())?;
    Ok((status_read, status_write, lifeline_read, lifeline_write))
}

fn write_proc(path: &str, content: &str) -> Step<()> {
    fs::write(path, content).ctx(|| format!("writing {content:?} to {path}"))
}

/// The signals the helper and init wait for: every forwarded one, and `SIGCHLD`.
fn waited_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Waits for `child`, passing it every forwarded signal; returns how it ended.
fn wait_forwarding(child: Pid, waited: &SigSet) -> WaitStatus {
    loop {
        match waited.wait() {
            Ok(Signal::SIGCHLD) => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => continue,
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return status,
                Ok(_) => continue,
                Err(_) => return WaitStatus::Exited(child, SETUP_FAILED),
            },
            Ok(sig) => {
                let _ = kill(child, sig);
            }
            Err(_) => continue,
        }
    }
}

/// The command's status as init reported it: `e<code>` or `s<signal>`.
fn read_status(pipe: OwnedFd) -> Option<WaitStatus> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut File::from(pipe), &mut text).ok()?;
    let pid = Pid::from_raw(0);
    let value: i32 = text.get(1..)?.parse().ok()?;
    match text.as_bytes().first()? {
        b'e' => Some(WaitStatus::Exited(pid, value)),
        b's' => Signal::try_from(value)
            .ok()
            .map(|sig| WaitStatus::Signaled(pid, sig, false)),
        _ => None,
    }
}

/// Ends this process the way the command ended: same exit code, or killed by the same signal.
fn exit_like(status: WaitStatus) -> ! {
    match status {
        WaitStatus::Exited(_, code) => std::process::exit(code),
        WaitStatus::Signaled(_, sig, _) => {
            // No core file of the helper for the command's crash.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain syscalls on this single-threaded process's own state.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                let _ = signal(sig, SigHandler::SigDfl);
            }
            let mut only = SigSet::empty();
            only.add(sig);
            let _ = only.thread_unblock();
            let _ = raise(sig);
            // Unreachable for a signal that killed the command (its default is to terminate).
            std::process::exit(128 + sig as i32)
        }
        _ => std::process::exit(SETUP_FAILED),
    }
}

/// PID 1: builds the root, runs the command, reaps, forwards, reports the command's status.
fn init(request: &Request, channel: File, status_write: OwnedFd, lifeline: OwnedFd) -> ! {
    if let Err(failure) = prepare_init(&request.spec, &lifeline) {
        fail(&channel, failure);
    }
    if request.probe {
        std::process::exit(0);
    }
    let waited = waited_signals();
    // SAFETY: init is single-threaded.
    match unsafe { fork() } {
        Err(e) => fail(&channel, setup_err("forking the command", e)),
        Ok(ForkResult::Child) => {
            drop((status_write, lifeline));
            match exec_command(&request.spec) {
                Err(failure) => fail(&channel, failure),
            }
        }
        Ok(ForkResult::Parent { child }) => {
            // Only the command holds the channel now; its exec closes it.
            drop(channel);
            let status = reap_until(child, &waited);
            let text = match status {
                WaitStatus::Signaled(_, sig, _) => format!("s{}", sig as i32),
                WaitStatus::Exited(_, code) => format!("e{code}"),
                _ => format!("e{SETUP_FAILED}"),
            };
            let _ = nix::unistd::write(&status_write, text.as_bytes());
            // Exiting as PID 1 kills every process the command left behind.
            std::process::exit(0)
        }
    }
}

/// Dies with the helper, then builds the root.
fn prepare_init(spec: &SandboxSpec, lifeline: &OwnedFd) -> Step<()> {
    prctl::set_pdeathsig(Signal::SIGKILL).ctx(|| "setting init's parent-death signal".into())?;
    let mut fds = [PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
        // Readable means hung up (nothing is ever written): the helper died before init asked
        // to die with it.
        std::process::exit(SETUP_FAILED);
    }
    build_root(spec)
}

/// Reaps every child (init adopts orphans) until `command` ends; forwards signals to its group.
fn reap_until(command: Pid, waited: &SigSet) -> WaitStatus {
    loop {
        match waited.wait() {
            Ok(Signal::SIGCHLD) => {
                loop {
                    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                        Ok(
                            status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, ..)),
                        ) if pid == command => return status,
                        Ok(WaitStatus::StillAlive) | Err(_) => break,
                        Ok(_) => continue,
                    }
                }
            }
            Ok(sig) => {
                // The command leads its own process group; if it left it, reach it alone.
                if killpg(command, sig).is_err() {
                    let _ = kill(command, sig);
                }
            }
            Err(_) => continue,
        }
    }
}

/// In the command's process, after fork: a clean process state, then `execve`.
fn exec_command(spec: &SandboxSpec) -> Step<Infallible> {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // Rust runtimes ignore SIGPIPE, and an ignored signal stays ignored across exec.
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: resetting dispositions in a single-threaded process about to exec.
            let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        }
    }
    SigSet::empty()
        .thread_set_mask()
        .ctx(|| "unblocking signals".into())?;
    prctl::set_no_new_privs().ctx(|| "setting no_new_privs".into())?;
    chdir(&spec.workdir).ctx(|| format!("changing to the workdir {}", spec.workdir.display()))?;
    let cstring = |s: &str| CString::new(s).expect("validated: no NUL");
    let argv: Vec<CString> = spec.argv.iter().map(|a| cstring(a)).collect();
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect();
    let program = &spec.argv[0];
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        // As execvp: each PATH entry in turn (empty means the current directory).
        let path = spec
            .env
            .get("PATH")
            .map_or("/usr/local/bin:/usr/bin:/bin", String::as_str);
        path.split(':')
            .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
            .collect()
    };
    let mut error = Errno::ENOENT;
    for candidate in &candidates {
        let path = CString::new(candidate.as_os_str().as_bytes()).expect("no NUL");
        let Err(errno) = execve(&path, &argv, &env);
        match errno {
            // Not here: try the next directory, but remember that one was not executable.
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES => error = Errno::EACCES,
            other => {
                error = other;
                break;
            }
        }
    }
    Err(Failure {
        stage: Stage::Exec,
        what: format!("executing {program}"),
        errno: Some(error as i32),
        message: error.desc().to_owned(),
    })
}

/// Everything between a private mount namespace and the pivot into the new root.
fn build_root(spec: &SandboxSpec) -> Step<()> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .ctx(|| "making / private".into())?;
    // A scratch tmpfs over /tmp holds the new root and the old one while the sandbox is built.
    // Pivoting into it at once moves the host's tree to /oldroot with its /tmp uncovered (the
    // scratch tmpfs is the new root now), so bind sources anywhere on the host stay reachable.
    tmpfs("/tmp", "mode=0755")?;
    chdir("/tmp").ctx(|| "changing to /tmp".into())?;
    for dir in ["oldroot", "newroot"] {
        fs::create_dir(dir).ctx(|| format!("creating /tmp/{dir}"))?;
    }
    tmpfs("newroot", "mode=0755")?;
    pivot_root(".", "oldroot").ctx(|| "pivot_root into the scratch tmpfs".into())?;
    chdir("/").ctx(|| "changing to /".into())?;

    bind_root(&spec.root)?;
    let new = |inside: &str| format!("{NEW_ROOT}{inside}");
    tmpfs(new("/tmp"), "mode=1777")?;
    mount(
        Some("proc"),
        new("/proc").as_str(),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .ctx(|| "mounting a proc filesystem of the new PID namespace at /proc".into())?;
    build_dev()?;

    let mut read_only_later = vec![PathBuf::from(NEW_ROOT)];
    let mut mounts: Vec<&Mount> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| m.inside().components().count());
    for m in mounts {
        let inside = m.inside();
        let target = in_new_root(inside);
        check_no_symlink(inside)?;
        match m {
            Mount::Tmpfs { writable, .. } => {
                make_dir(&target, inside)?;
                tmpfs(&target, "mode=0755")?;
                if !writable {
                    read_only_later.push(target);
                }
            }
            Mount::Bind { host, writable, .. } => {
                let source = in_old_root(host);
                let meta =
                    fs::metadata(&source).ctx(|| format!("bind source {}", host.display()))?;
                if meta.is_dir() {
                    make_dir(&target, inside)?;
                } else {
                    make_file(&target, inside)?;
                }
                bind(&source, &target, *writable)?;
            }
        }
    }
    for path in read_only_later.iter().rev() {
        mount(
            none,
            path,
            none,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            none,
        )
        .ctx(|| format!("making {} read-only", path.display()))?;
    }
    umount2(OLD_ROOT, MntFlags::MNT_DETACH).ctx(|| "detaching the host's root".into())?;
    chdir(NEW_ROOT).ctx(|| "changing to the new root".into())?;
    // Stacks the scratch tmpfs on the new root, then detaches it (pivot_root(2), NOTES).
    pivot_root(".", ".").ctx(|| "pivot_root into the new root".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the scratch tmpfs".into())?;
    chdir("/").ctx(|| "changing to /".into())
}

fn in_old_root(host: &Path) -> PathBuf {
    Path::new(OLD_ROOT).join(host.strip_prefix("/").unwrap_or(host))
}

fn in_new_root(inside: &Path) -> PathBuf {
    Path::new(NEW_ROOT).join(inside.strip_prefix("/").unwrap_or(inside))
}

fn tmpfs(target: impl AsRef<Path>, options: &str) -> Step<()> {
    let target = target.as_ref();
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options),
    )
    .ctx(|| format!("mounting a tmpfs at {}", target.display()))
}

/// The root's top-level entries, each bound read-only (symlinks recreated), on the new root's
/// own tmpfs: so mount points for the spec's mounts can be created beside them.
fn bind_root(root: &Path) -> Step<()> {
    let source = in_old_root(root);
    let mut entries: Vec<_> = fs::read_dir(&source)
        .ctx(|| format!("listing the root {}", root.display()))?
        .collect::<std::io::Result<_>>()
        .ctx(|| format!("listing the root {}", root.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if ["proc", "dev", "tmp"]
            .map(OsStr::new)
            .contains(&name.as_os_str())
        {
            continue;
        }
        let from = entry.path();
        let to = Path::new(NEW_ROOT).join(&name);
        let kind = entry
            .file_type()
            .ctx(|| format!("reading {}", from.display()))?;
        if kind.is_symlink() {
            let target = fs::read_link(&from).ctx(|| format!("reading {}", from.display()))?;
            symlink(&target, &to).ctx(|| format!("creating {}", to.display()))?;
            continue;
        }
        if kind.is_dir() {
            fs::create_dir(&to)
        } else {
            File::create(&to).map(drop)
        }
        .ctx(|| format!("creating {}", to.display()))?;
        bind(&from, &to, false)?;
    }
    for dir in ["proc", "dev", "tmp"] {
        fs::create_dir(Path::new(NEW_ROOT).join(dir)).ctx(|| format!("creating /{dir}"))?;
    }
    Ok(())
}

/// A minimal `/dev`: the host's harmless nodes bound onto a tmpfs, `/dev/shm`, `/dev/pts`.
fn build_dev() -> Step<()> {
    let dev = Path::new(NEW_ROOT).join("dev");
    tmpfs(&dev, "mode=0755")?;
    for name in DEVICES {
        let host = Path::new(OLD_ROOT).join("dev").join(name);
        if fs::symlink_metadata(&host).is_err() {
            // Some container hosts lack /dev/tty; the others are always there.
            continue;
        }
        let node = dev.join(name);
        File::create(&node).ctx(|| format!("creating /dev/{name}"))?;
        let none: Option<&str> = None;
        mount(Some(&host), &node, none, MsFlags::MS_BIND, none)
            .ctx(|| format!("binding /dev/{name}"))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlink(target, dev.join(name)).ctx(|| format!("creating /dev/{name}"))?;
    }
    fs::create_dir(dev.join("shm")).ctx(|| "creating /dev/shm".into())?;
    tmpfs(dev.join("shm"), "mode=1777")?;
    fs::create_dir(dev.join("pts")).ctx(|| "creating /dev/pts".into())?;
    // Optional: some container runtimes refuse a new devpts instance; only terminals need it.
    let _ = mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    Ok(())
}

/// Refuses a mount point reached through a symlink of the root: absolute links would resolve
/// against the scratch root while the sandbox is being built, not against the new root.
fn check_no_symlink(inside: &Path) -> Step<()> {
    let mut path = PathBuf::from(NEW_ROOT);
    for part in inside.components().skip(1) {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Failure {
                    stage: Stage::Setup,
                    what: format!("mount point {}", inside.display()),
                    errno: None,
                    message: format!(
                        "{} is a symlink in the root; mount at its target instead",
                        path.strip_prefix(NEW_ROOT)
                            .map_or(path.as_path(), |p| p)
                            .display()
                    ),
                });
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn make_dir(target: &Path, inside: &Path) -> Step<()> {
    fs::create_dir_all(target).map_err(|e| mount_point_error(inside, e))
}

fn make_file(target: &Path, inside: &Path) -> Step<()> {
    if let Some(parent) = target.parent() {
        make_dir(parent, inside.parent().unwrap_or(inside))?;
    }
    if fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    File::create(target)
        .map(drop)
        .map_err(|e| mount_point_error(inside, e))
}

fn mount_point_error(inside: &Path, e: std::io::Error) -> Failure {
    let message = if e.raw_os_error() == Some(libc::EROFS) {
        "the root has no such path and is read-only there: give the root that directory, or \
         mount a tmpfs over its parent first"
            .to_owned()
    } else {
        e.to_string()
    };
    Failure {
        stage: Stage::Setup,
        what: format!("creating the mount point {}", inside.display()),
        errno: e.raw_os_error(),
        message,
    }
}

/// Binds `source` (recursively: what is mounted below it comes along) at `target`; read-only
/// for the whole tree unless `writable`. Never set-uid.
fn bind(source: &Path, target: &Path, writable: bool) -> Step<()> {
    let none: Option<&str> = None;
    mount(
        Some(source),
        target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .ctx(|| format!("binding {} at {}", source.display(), target.display()))?;
    let mut attr = libc::MOUNT_ATTR_NOSUID;
    if !writable {
        attr |= libc::MOUNT_ATTR_RDONLY;
    }
    set_mount_attr_recursive(target, attr)
}

/// `mount_setattr(AT_RECURSIVE)`: one call for a whole tree of mounts (a plain remount would
/// touch only the top one, and must repeat each mount's locked flags).
fn set_mount_attr_recursive(target: &Path, attr_set: u64) -> Step<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let path = CString::new(target.as_os_str().as_bytes()).expect("no NUL in mount paths");
    // SAFETY: a valid C string and a properly sized, initialized struct.
    let res = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if res == 0 {
        return Ok(());
    }
    let errno = Errno::last();
    let mut failure = setup_err(format!("mount_setattr on {}", target.display()), errno);
    if errno == Errno::ENOSYS {
        failure.message =
            "this kernel has no mount_setattr: read-only binds need Linux 5.12 or later".into();
    }
    Err(failure)
}
