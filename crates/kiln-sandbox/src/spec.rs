//! What a sandbox runs and in which root: plain data, serialized to the helper as JSON.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// One command in an isolated root. Nothing of the caller reaches it unless named here: not its
/// environment, not its files, not its processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The directory that becomes `/`, read-only. Its top-level entries are bound in (symlinks
    /// recreated), except `proc`, `dev` and `tmp`, which are always the sandbox's own: a fresh
    /// `/proc` of its PID namespace, a minimal `/dev`, a private tmpfs at `/tmp`.
    pub root: PathBuf,
    /// Applied after the root, parents before children (mounts at the same depth in the order
    /// given). A mount point that the root lacks is created on the sandbox's own tmpfs: at the top
    /// level, or inside an earlier [`Mount::Tmpfs`]; inside a read-only part of the root it cannot
    /// be, and that is an error naming the path.
    pub mounts: Vec<Mount>,
    /// Absolute path inside the sandbox.
    pub workdir: PathBuf,
    /// Exactly the command's environment.
    pub env: BTreeMap<String, String>,
    /// `argv[0]` is looked up on `env`'s `PATH` (inside the sandbox) unless it contains a `/`.
    pub argv: Vec<String>,
    pub network: Network,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mount {
    /// `host` (a file or directory, with everything mounted below it) at `inside`.
    Bind {
        host: PathBuf,
        inside: PathBuf,
        writable: bool,
    },
    /// An empty tmpfs at `inside`: hides what the root has there. When not `writable`, it becomes
    /// read-only once the mount points of later mounts inside it exist.
    Tmpfs { inside: PathBuf, writable: bool },
}

impl Mount {
    pub fn inside(&self) -> &Path {
        match self {
            Mount::Bind { inside, .. } | Mount::Tmpfs { inside, .. } => inside,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The host's network (installers need their registries).
    Host,
    /// A network namespace of its own: only `lo`, down.
    None,
}

impl SandboxSpec {
    /// `argv` in `root`, from `/`, with an empty environment, the host's network and the
    /// hostname `kiln`.
    pub fn new(root: impl Into<PathBuf>, argv: Vec<String>) -> SandboxSpec {
        SandboxSpec {
            root: root.into(),
            mounts: Vec::new(),
            workdir: PathBuf::from("/"),
            env: BTreeMap::new(),
            argv,
            network: Network::Host,
            hostname: "kiln".to_owned(),
        }
    }

    /// Checks what the helper would otherwise fail on later, with a less precise message.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: String| Err(Error::Spec(why));
        if !self.root.is_absolute() {
            return bad(format!("root {} is not absolute", self.root.display()));
        }
        if !self.root.is_dir() {
            return bad(format!("root {} is not a directory", self.root.display()));
        }
        match self.argv.first() {
            None => return bad("argv is empty".into()),
            Some(program) if program.is_empty() => return bad("argv[0] is empty".into()),
            Some(_) => {}
        }
        if let Some(arg) = self.argv.iter().find(|a| a.contains('\0')) {
            return bad(format!("argument {arg:?} contains a NUL byte"));
        }
        check_inside("workdir", &self.workdir, true)?;
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return bad(format!(
                    "environment variable {key:?}={value:?} is not valid"
                ));
            }
        }
        if self.hostname.is_empty() || self.hostname.len() > 64 {
            return bad(format!(
                "hostname {:?} must be 1 to 64 bytes",
                self.hostname
            ));
        }
        for mount in &self.mounts {
            check_inside("mount point", mount.inside(), false)?;
            if let Mount::Bind { host, .. } = mount {
                if !host.is_absolute() {
                    return bad(format!("bind source {} is not absolute", host.display()));
                }
            }
        }
        Ok(())
    }

    /// This spec with its host paths (the root, bind sources) resolved as the host sees them.
    /// The helper reaches the host's tree under another directory once it has pivoted, where an
    /// absolute symlink on the way (a cache directory linked elsewhere, `/etc/resolv.conf`
    /// pointing into `/run`) would resolve against the sandbox's scratch root instead.
    pub(crate) fn with_host_paths_resolved(&self) -> Result<SandboxSpec, Error> {
        let resolve = |what: &str, path: &Path| {
            std::fs::canonicalize(path)
                .map_err(|e| Error::Spec(format!("{what} {}: {e}", path.display())))
        };
        let mut spec = self.clone();
        spec.root = resolve("root", &self.root)?;
        for mount in &mut spec.mounts {
            if let Mount::Bind { host, .. } = mount {
                *host = resolve("bind source", host)?;
            }
        }
        Ok(spec)
    }
}

/// An absolute, normalized path inside the sandbox (no `.` or `..`); `/` only where allowed.
fn check_inside(what: &str, path: &Path, root_ok: bool) -> Result<(), Error> {
    let mut components = path.components();
    let normal = components.next() == Some(Component::RootDir)
        && components.all(|c| matches!(c, Component::Normal(_)));
    if !normal {
        return Err(Error::Spec(format!(
            "{what} {} must be an absolute path without `.` or `..`",
            path.display()
        )));
    }
    if !root_ok && path == Path::new("/") {
        return Err(Error::Spec(format!(
            "{what} cannot be `/`: that is the root"
        )));
    }
    Ok(())
}

/// What the caller sends the helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub protocol: u32,
    /// The helper exits at once when its parent is no longer this process (it died before the
    /// helper could ask to be killed with it).
    pub parent_pid: u32,
    /// Set up everything, then exit 0 instead of running `argv`.
    pub probe: bool,
    pub spec: SandboxSpec,
}

/// What the helper sends back, one JSON object a line: `Hello` first, then at most one `Failed`.
/// The channel closes when the command has been executed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Answer {
    Hello { protocol: u32 },
    Failed(Failure),
}

/// Why the helper could not run the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub stage: Stage,
    /// The operation, e.g. `mounting proc at /proc`.
    pub what: String,
    pub errno: Option<i32>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    /// Namespaces and mounts.
    Setup,
    /// `execve` of `argv[0]`.
    Exec,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec::new("/", vec!["true".into()])
    }

    fn invalid(spec: SandboxSpec) -> String {
        spec.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_plain_spec_is_valid() {
        spec().validate().unwrap();
    }

    #[test]
    fn paths_must_be_absolute_and_normal() {
        let mut s = spec();
        s.workdir = "work".into();
        assert!(invalid(s).contains("workdir work must be an absolute"));
        let mut s = spec();
        s.mounts.push(Mount::Tmpfs {
            inside: "/a/../etc".into(),
            writable: false,
        });
        assert!(invalid(s).contains("mount point /a/../etc"));
        let mut s = spec();
        s.mounts.push(Mount::Tmpfs {
            inside: "/".into(),
            writable: false,
        });
        assert!(invalid(s).contains("cannot be `/`"));
        let mut s = spec();
        s.mounts.push(Mount::Bind {
            host: "rel".into(),
            inside: "/x".into(),
            writable: false,
        });
        assert!(invalid(s).contains("bind source rel is not absolute"));
    }

    #[test]
    fn root_argv_env_and_hostname_are_checked() {
        let mut s = spec();
        s.root = "/no/such/root".into();
        assert!(invalid(s).contains("not a directory"));
        let mut s = spec();
        s.argv.clear();
        assert!(invalid(s).contains("argv is empty"));
        let mut s = spec();
        s.env.insert("A=B".into(), "c".into());
        assert!(invalid(s).contains("\"A=B\""));
        let mut s = spec();
        s.hostname = "h".repeat(65);
        assert!(invalid(s).contains("1 to 64 bytes"));
    }
}
