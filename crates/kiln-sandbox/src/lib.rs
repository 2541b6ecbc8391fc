//! `kiln-sandbox` runs **one command in an unprivileged, isolated root**, and does nothing else.
//!
//! The command gets new user, mount, PID, IPC and UTS namespaces (and a network namespace of its
//! own with [`Network::None`]); no privilege is needed. Inside:
//!
//! - `/` is [`SandboxSpec::root`], read-only; `/proc` is a fresh proc of the new PID namespace;
//!   `/dev` holds only `null`, `zero`, `full`, `random`, `urandom`, `tty`, `shm/` and `pts/`; `/tmp`
//!   is a private tmpfs. Nothing else of the host is visible except the spec's [`Mount`]s (binds,
//!   read-only or writable, and empty tmpfs masks), so files such as `/etc/resolv.conf` or a trust
//!   store are there only when the caller binds them.
//! - The command runs as uid/gid [`BUILD_UID`]/[`BUILD_GID`] (the caller's own ids outside) with
//!   no capabilities and `no_new_privs`, so it cannot undo a mount: a tmpfs hiding a host
//!   directory stays, a read-only bind stays read-only.
//! - Its environment is exactly [`SandboxSpec::env`]; its stdin, stdout and stderr are the ones
//!   the caller gives the [`SandboxCommand`].
//! - Its exit code, or the signal that killed it, is the sandbox's (the [`std::process::Child`]
//!   returned by [`SandboxCommand::spawn`] reports it). Killing the caller kills every process of
//!   the sandbox.
//!
//! How: a multi-threaded program may do only async-signal-safe work between `fork` and `exec`,
//! and unsharing a user namespace needs a single-threaded process anyway. So the namespaces are
//! set up by a freshly executed **helper**: by default the calling program itself
//! (`/proc/self/exe __sandbox-exec`), whose `main` must call [`run_helper_if_requested`] first;
//! see [`Helper`]. Where user namespaces are not available (some CI containers), [`Sandbox::probe`]
//! says why in one line.

mod helper;
mod spec;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

pub use helper::{helper_main, HELPER_ARG};
pub use spec::{Mount, Network, SandboxSpec};

use spec::{Answer, Failure, Request, Stage};

/// The uid the command runs as inside the sandbox. Not 0: a root command would hold every
/// capability of its user namespace and could unmount what hides the host; and tools behave as
/// for an ordinary build user (no `chown` to archive owners that are not mapped, no "running as
/// root" refusals). Files it creates in writable binds belong to the caller outside.
pub const BUILD_UID: u32 = 1000;
/// The gid of [`BUILD_UID`].
pub const BUILD_GID: u32 = 1000;

/// Version of the caller ↔ helper messages; a helper of another version refuses the request.
const PROTOCOL: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid sandbox: {0}")]
    Spec(String),
    #[error("could not start the sandbox helper {program}: {source}")]
    Helper {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "{program} did not answer as a Kiln sandbox helper (its main must call \
         kiln_sandbox::run_helper_if_requested() first)"
    )]
    NotAHelper { program: String },
    #[error("setting up the sandbox: {what}: {message}")]
    Setup {
        what: String,
        errno: Option<i32>,
        message: String,
    },
    /// `argv[0]` could not be executed inside the sandbox (`NotFound` when it is not on `PATH`).
    #[error("{program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

/// The program that becomes the helper, and the arguments that make it one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Helper {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Helper {
    /// The running program itself (`/proc/self/exe`, so a binary replaced on disk since it
    /// started still works), with [`HELPER_ARG`].
    pub fn current_exe() -> Helper {
        Helper::program("/proc/self/exe")
    }

    /// `program` [`HELPER_ARG`]: a binary whose main calls [`run_helper_if_requested`].
    pub fn program(program: impl Into<PathBuf>) -> Helper {
        Helper {
            program: program.into(),
            args: vec![HELPER_ARG.into()],
        }
    }
}

/// Runs the helper (and never returns) when this process was started as one: call it first in
/// `main` of every program that uses [`Helper::current_exe`].
pub fn run_helper_if_requested() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(HELPER_ARG)) {
        helper_main()
    }
}

/// Starts sandboxes through one [`Helper`].
#[derive(Debug, Clone)]
pub struct Sandbox {
    helper: Helper,
}

/// Why sandboxes cannot run here, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl Sandbox {
    pub fn new(helper: Helper) -> Sandbox {
        Sandbox { helper }
    }

    pub fn helper(&self) -> &Helper {
        &self.helper
    }

    /// Prepares `spec` to run; [`SandboxCommand::spawn`] starts it.
    pub fn command(&self, spec: &SandboxSpec) -> Result<SandboxCommand, Error> {
        self.prepare(spec, false)
    }

    fn prepare(&self, spec: &SandboxSpec, probe: bool) -> Result<SandboxCommand, Error> {
        spec.validate()?;
        let request = Request {
            protocol: PROTOCOL,
            parent_pid: std::process::id(),
            probe,
            spec: spec.with_host_paths_resolved()?,
        };
        let mut request = serde_json::to_vec(&request).map_err(|e| Error::Spec(e.to_string()))?;
        request.push(b'\n');
        let program = self.helper.program.display().to_string();
        let (ours, theirs) = UnixStream::pair().map_err(|source| Error::Helper {
            program: program.clone(),
            source,
        })?;
        let mut command = Command::new(&self.helper.program);
        command
            .args(&self.helper.args)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null());
        let fd = theirs.as_raw_fd();
        // SAFETY: only dup2/fcntl, which are async-signal-safe, run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let done = if fd == helper::CHANNEL_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, helper::CHANNEL_FD)
                };
                if done == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(SandboxCommand {
            command,
            ours,
            theirs,
            request,
            program,
            argv0: spec.argv[0].clone(),
        })
    }

    /// Whether sandboxes work here: tried once per helper and process (a sandbox that mounts a
    /// root, `/proc` and `/dev`, then exits). The reason names what forbids user namespaces when
    /// a setting is known to (`kernel.unprivileged_userns_clone=0`, `user.max_user_namespaces=0`,
    /// AppArmor's restriction, a seccomp filter as in Docker's default profile).
    pub fn probe(&self) -> Result<(), Unavailable> {
        static PROBED: Mutex<BTreeMap<Helper, Result<(), Unavailable>>> =
            Mutex::new(BTreeMap::new());
        let mut probed = PROBED.lock().unwrap_or_else(|e| e.into_inner());
        probed
            .entry(self.helper.clone())
            .or_insert_with(|| self.try_probe())
            .clone()
    }

    fn try_probe(&self) -> Result<(), Unavailable> {
        let spec = SandboxSpec::new("/", vec!["true".into()]);
        let mut probe = self
            .prepare(&spec, true)
            .map_err(|e| Unavailable(unavailable_reason(&e)))?;
        // A program that is no helper may print anything.
        probe
            .command_mut()
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = probe
            .spawn()
            .map_err(|e| Unavailable(unavailable_reason(&e)))?;
        let status = child
            .wait_with_output()
            .map_err(|e| Unavailable(format!("waiting for the sandbox probe: {e}")))?
            .status;
        if status.success() {
            Ok(())
        } else {
            Err(Unavailable(format!(
                "the sandbox probe {status} without saying why"
            )))
        }
    }
}

/// A sandboxed command ready to start.
pub struct SandboxCommand {
    command: Command,
    /// The caller's end of the channel to the helper.
    ours: UnixStream,
    /// The helper's end, held until it is inherited.
    theirs: UnixStream,
    request: Vec<u8>,
    program: String,
    argv0: String,
}

impl SandboxCommand {
    /// The helper's command, to set the stdin, stdout and stderr the sandboxed command gets
    /// (stdin defaults to null) or a process group. Its program, arguments, environment and
    /// working directory are the sandbox's: do not change them.
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Starts the sandbox and returns once the command has been executed in it, or with why it
    /// could not be. The child's exit status is the command's (code, or the signal that killed
    /// it); its stdout/stderr pipes, when asked for, carry the command's output.
    pub fn spawn(mut self) -> Result<Child, Error> {
        let mut child = self.command.spawn().map_err(|source| Error::Helper {
            program: self.program.clone(),
            source,
        })?;
        drop(self.theirs);
        // A helper that died early makes the write fail; its answer (or none) says why.
        let _ = (&self.ours).write_all(&self.request);
        let _ = self.ours.shutdown(std::net::Shutdown::Write);
        // The channel closes when the command has been executed (close-on-exec) or the helper,
        // init and the command's process all ended.
        let mut hello = false;
        let mut failure: Option<Failure> = None;
        for line in BufReader::new(&self.ours).lines().map_while(Result::ok) {
            match serde_json::from_str::<Answer>(&line) {
                Ok(Answer::Hello { protocol }) => hello = protocol == PROTOCOL,
                Ok(Answer::Failed(f)) => failure = Some(f),
                Err(_) => {}
            }
        }
        if hello && failure.is_none() {
            return Ok(child);
        }
        let _ = child.wait();
        Err(match failure {
            None => Error::NotAHelper {
                program: self.program,
            },
            Some(f) if f.stage == Stage::Exec => Error::Exec {
                program: self.argv0,
                source: match f.errno {
                    Some(errno) => std::io::Error::from_raw_os_error(errno),
                    None => std::io::Error::other(f.message),
                },
            },
            Some(f) => Error::Setup {
                what: f.what,
                errno: f.errno,
                message: f.message,
            },
        })
    }

    /// Runs the command to its end, collecting its stdout and stderr.
    pub fn output(mut self) -> Result<Output, Error> {
        self.command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let program = self.program.clone();
        self.spawn()?
            .wait_with_output()
            .map_err(|source| Error::Helper { program, source })
    }
}

/// One line on why no sandbox can start here, naming the setting that forbids it when known.
fn unavailable_reason(error: &Error) -> String {
    let sysctl = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|v| v.trim().to_owned())
    };
    let known = if sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        Some("kernel.unprivileged_userns_clone=0 forbids unprivileged user namespaces")
    } else if sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        Some("user.max_user_namespaces=0 forbids user namespaces")
    } else if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref()
        == Some("1")
    {
        Some("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1)")
    } else {
        None
    };
    let seccomp = matches!(
        error,
        Error::Setup { what, errno: Some(libc::EPERM), .. } if what.starts_with("unshare")
    );
    match known {
        Some(known) => format!("user namespaces are not available here: {known} ({error})"),
        None if seccomp => format!(
            "user namespaces are not available here: unshare was refused (EPERM), as a \
             container's seccomp profile (Docker's default) does ({error})"
        ),
        None => format!("sandboxes cannot start here: {error}"),
    }
}
