//! Where build steps run (`--isolation`): in a sandbox (`kiln-sandbox`) or on the host.
//!
//! In the sandbox a step sees the working copy at `/workspace` and each layer at its image path
//! `/layers/<buildpack>/<layer>` (a provided runtime at `/layers/<buildpack>/runtime`, read-only),
//! so the paths tools bake into their output are the image's. The root (`--build-root`) is a
//! build root assembled from Debian packages ([`crate::build_root`]), read-only, with the host's
//! `/etc/resolv.conf`, `/etc/hosts` and CA bundle bound in read-only (name resolution and a
//! TLS-inspecting proxy's trust work as on the host); the step `PATH` is the root's own, and no
//! host toolchain variable (`RUSTUP_HOME`, `GOROOT`, …) enters. With `--build-root host` the
//! root is the host's own `/`, read-only, with everything but its system directories hidden:
//! `/root`, `/home`, the caller's `HOME`, `/run/user`, Kiln's cache and the source tree are
//! empty, the host's `/tmp` is out of sight; the host toolchains the step environment names
//! (`PATH` entries, `RUSTUP_HOME`, …) stay visible, read-only, where they are.

use crate::events::Events;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use kiln_buildpack::plan::{Plan, APP_DIR, LAYERS_DIR};
use kiln_buildpack::project::ProjectConfig;
use kiln_sandbox::{Mount, Network, Sandbox, SandboxSpec};

use crate::build_root::{self, BuildRoot, BuildRootMode};
use crate::error::{Error, Result};
use crate::runtimes::Provided;
use crate::{BuildOptions, TOOLCHAIN_VARS};

/// `--isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The sandbox when this machine allows it, else the host, saying why in one line.
    #[default]
    Auto,
    /// The sandbox, or fail with why it cannot start.
    Sandbox,
    /// The host, as before sandboxes existed.
    Host,
}

/// `HOME` of sandboxed steps (the build's private home directory).
const HOME_DIR: &str = "/home/kiln";
/// `TMPDIR` of sandboxed steps (the build's private temp directory, on disk).
const TMP_DIR: &str = "/tmp";

/// Top-level directories of the host that sandboxed steps see (read-only): system software only.
const SYSTEM_DIRS: &[&str] = &[
    "bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt", "var", "run", "sys",
    "nix",
];

/// Where sandboxed steps run: the sandbox, and the build root (`None`: the host's `/`).
pub(crate) struct Isolated {
    pub sandbox: Sandbox,
    pub root: Option<BuildRoot>,
    pub network: Network,
}

impl Isolated {
    /// What step cache keys record: outputs made in another root (or on the host, with host
    /// paths) are not reused.
    pub(crate) fn key(&self) -> String {
        let network = match self.network {
            Network::Host => "",
            Network::None => ", no network",
        };
        match &self.root {
            Some(root) => format!("sandbox, build root {}{network}", root.report.key),
            None => format!("sandbox, host root{network}"),
        }
    }
}

/// The sandbox this build's steps run in, or `None` for the host. Only a plan with steps needs
/// one. `auto` falls back to the host with one log line saying why; `sandbox` fails with it.
pub(crate) fn probe(opts: &BuildOptions, plan: &Plan, ev: Events<'_>) -> Result<Option<Sandbox>> {
    let has_steps = plan.buildpacks.iter().any(|bp| !bp.steps.is_empty());
    if !has_steps || opts.isolation == Isolation::Host {
        return Ok(None);
    }
    let sandbox = Sandbox::new(opts.sandbox_helper.clone());
    let forced = opts.kiln_env.get(PROBE_FAIL_VAR).filter(|v| !v.is_empty());
    let probed = match forced {
        Some(reason) => Err(reason.clone()),
        None => sandbox.probe().map_err(|e| e.to_string()),
    };
    match (probed, opts.isolation) {
        (Ok(()), _) => Ok(Some(sandbox)),
        (Err(why), Isolation::Sandbox) => Err(Error::SandboxUnavailable(why)),
        (Err(why), _) => {
            ev.note(format!(
                "build steps run on the host, not sandboxed (--isolation auto): {why}"
            ));
            Ok(None)
        }
    }
}

/// The sandbox with its root: a Debian build root for `plan` unless `--build-root host`.
pub(crate) fn isolate(
    opts: &BuildOptions,
    plan: &Plan,
    project: &ProjectConfig,
    sandbox: Option<Sandbox>,
    ev: Events<'_>,
) -> Result<Option<Isolated>> {
    let Some(sandbox) = sandbox else {
        return Ok(None);
    };
    let root = match opts.build_root {
        BuildRootMode::Debian => {
            let request = build_root::request(opts, plan, project)?;
            Some(build_root::prepare(opts, project, &request, ev)?)
        }
        BuildRootMode::Host => None,
    };
    Ok(Some(Isolated {
        sandbox,
        root,
        network: opts.network,
    }))
}

/// How the build's directories are named to steps: by their host paths, or inside the sandbox
/// by their image paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepPaths {
    Host,
    Image,
}

impl StepPaths {
    pub(crate) fn of(sandbox: Option<&StepSandbox>) -> StepPaths {
        match sandbox {
            Some(_) => StepPaths::Image,
            None => StepPaths::Host,
        }
    }

    pub(crate) fn app(self, host: &Path) -> PathBuf {
        self.pick(host, APP_DIR)
    }

    pub(crate) fn layer(self, buildpack: &str, name: &str, host: &Path) -> PathBuf {
        self.pick(host, &format!("{LAYERS_DIR}/{buildpack}/{name}"))
    }

    pub(crate) fn home(self, host: &Path) -> PathBuf {
        self.pick(host, HOME_DIR)
    }

    pub(crate) fn tmp(self, host: &Path) -> PathBuf {
        self.pick(host, TMP_DIR)
    }

    pub(crate) fn runtime_bin(self, provided: &Provided) -> PathBuf {
        match self {
            StepPaths::Host => provided.runtime.root.join(&provided.runtime.bin),
            StepPaths::Image => PathBuf::from(provided.image_bin()),
        }
    }

    fn pick(self, host: &Path, image: &str) -> PathBuf {
        match self {
            StepPaths::Host => host.to_path_buf(),
            StepPaths::Image => PathBuf::from(image),
        }
    }
}

/// The host directories a sandboxed build involves.
pub(crate) struct BuildDirs<'a> {
    pub app: &'a Path,
    pub home: &'a Path,
    pub tmp: &'a Path,
    /// Buildpack id → layer name → host directory.
    pub layers: &'a BTreeMap<String, BTreeMap<String, PathBuf>>,
    pub runtimes: &'a [Provided],
    /// Host directories steps must not see even where the root shows them (cache, source, the
    /// caller's home).
    pub private: &'a [&'a Path],
    /// The caller's step environment: where the host toolchains it names are.
    pub env: &'a BTreeMap<String, String>,
}

/// The sandbox every step of one build runs in: the same root and mounts, each step with its
/// own command, environment and working directory.
pub(crate) struct StepSandbox {
    sandbox: Sandbox,
    root: PathBuf,
    network: Network,
    mounts: Vec<Mount>,
}

/// Host files a build root gets, read-only, where they exist: name resolution, and the trust
/// store (a TLS-inspecting proxy's CA is in the host's bundle, not Debian's).
const HOST_FILES: &[&str] = &["/etc/resolv.conf", "/etc/hosts"];

/// The build root's CA bundle (Debian's path), where the host's trust store is bound.
const ROOT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Variables naming a trust store: in a build root they name [`ROOT_CA_BUNDLE`] (or its
/// directory) when the caller set them.
const TRUST_VARS: &[(&str, &str)] = &[
    ("SSL_CERT_FILE", ROOT_CA_BUNDLE),
    ("NODE_EXTRA_CA_CERTS", ROOT_CA_BUNDLE),
    ("SSL_CERT_DIR", "/etc/ssl/certs"),
];

/// The host's CA bundle: the step environment's `SSL_CERT_FILE`, else Debian's path.
fn host_trust_bundle(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    env.get("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(ROOT_CA_BUNDLE)])
        .find(|p| p.is_file())
}

/// `PATH` of steps in a build root (Debian's default), before runtimes and layers.
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Tests set this `KILN_*` variable to make the sandbox probe fail with its value as the
/// reason, as if user namespaces were unavailable.
pub const PROBE_FAIL_VAR: &str = "KILN_SANDBOX_PROBE_FAIL";

/// Why a step could not start.
pub(crate) enum StartError {
    /// The command could not be executed (not found, not executable).
    Command(std::io::Error),
    /// The sandbox around it could not be set up.
    Sandbox(kiln_sandbox::Error),
}

impl StepSandbox {
    pub(crate) fn new(isolated: &Isolated, dirs: &BuildDirs<'_>) -> Result<StepSandbox> {
        let mut mounts = Vec::new();
        match &isolated.root {
            Some(_) => {
                for file in HOST_FILES {
                    if Path::new(file).is_file() {
                        mounts.push(read_only(Path::new(file), Path::new(file)));
                    }
                }
                if let Some(bundle) = host_trust_bundle(dirs.env) {
                    mounts.push(read_only(&bundle, Path::new(ROOT_CA_BUNDLE)));
                }
            }
            None => {
                let hidden = hidden_dirs(dirs.private);
                for dir in &hidden {
                    mounts.push(Mount::Tmpfs {
                        inside: dir.clone(),
                        writable: false,
                    });
                }
                for path in toolchain_paths(dirs.env) {
                    if is_under_any(&path, &hidden) {
                        mounts.push(read_only(&path, &path));
                    }
                }
            }
        }
        mounts.push(writable(dirs.app, Path::new(APP_DIR)));
        for (buildpack, layers) in dirs.layers {
            for (name, dir) in layers {
                let inside = StepPaths::Image.layer(buildpack, name, dir);
                mounts.push(writable(dir, &inside));
            }
        }
        for provided in dirs.runtimes {
            let inside = PathBuf::from(&provided.image_dir);
            mounts.push(read_only(&provided.runtime.root, &inside));
        }
        mounts.push(writable(dirs.home, Path::new(HOME_DIR)));
        mounts.push(writable(dirs.tmp, Path::new(TMP_DIR)));
        Ok(StepSandbox {
            sandbox: isolated.sandbox.clone(),
            network: isolated.network,
            root: isolated
                .root
                .as_ref()
                .map_or_else(|| PathBuf::from("/"), |r| r.dir.clone()),
            mounts,
        })
    }

    /// The step environment in this sandbox: in a build root, its own `PATH` and none of the
    /// host's toolchain locations.
    pub(crate) fn step_env(&self, env: &mut BTreeMap<String, String>) {
        if self.root != Path::new("/") {
            let trust: Vec<(&str, &str)> = TRUST_VARS
                .iter()
                .filter(|(key, _)| env.contains_key(*key))
                .copied()
                .collect();
            for key in TOOLCHAIN_VARS {
                env.remove(*key);
            }
            for (key, inside) in trust {
                env.insert(key.into(), inside.into());
            }
            env.insert("PATH".into(), ROOT_PATH.into());
        }
    }

    /// Starts `command args…` in the sandbox with exactly `env`, stdin null, stdout and stderr
    /// piped (as on the host).
    pub(crate) fn spawn(
        &self,
        command: &str,
        args: &[String],
        workdir: &Path,
        env: &BTreeMap<String, String>,
    ) -> std::result::Result<Child, StartError> {
        let argv = std::iter::once(command.to_owned())
            .chain(args.iter().cloned())
            .collect();
        let mut spec = SandboxSpec::new(&self.root, argv);
        spec.mounts = self.mounts.clone();
        spec.workdir = workdir.to_path_buf();
        spec.env = env.clone();
        spec.network = self.network;
        let mut prepared = self.sandbox.command(&spec).map_err(StartError::Sandbox)?;
        prepared
            .command_mut()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The helper leads the step's process group, so killing the group (see `steps`)
            // kills it, and with it the sandbox's PID namespace.
            .process_group(0);
        prepared.spawn().map_err(|e| match e {
            kiln_sandbox::Error::Exec { source, .. } => StartError::Command(source),
            other => StartError::Sandbox(other),
        })
    }
}

fn read_only(host: &Path, inside: &Path) -> Mount {
    Mount::Bind {
        host: host.to_path_buf(),
        inside: inside.to_path_buf(),
        writable: false,
    }
}

fn writable(host: &Path, inside: &Path) -> Mount {
    Mount::Bind {
        host: host.to_path_buf(),
        inside: inside.to_path_buf(),
        writable: true,
    }
}

/// What the host root must not show: its non-system top-level directories, `/run/user` and
/// `private` (which holds the caller's `HOME`); outermost only, and nothing the sandbox's own `/tmp` covers.
fn hidden_dirs(private: &[&Path]) -> Vec<PathBuf> {
    let top_level = std::fs::read_dir("/")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !SYSTEM_DIRS.iter().any(|s| e.file_name() == *s))
        .map(|e| e.path());
    let named = private
        .iter()
        .map(|p| p.to_path_buf())
        .chain([PathBuf::from("/run/user")])
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| p.is_dir());
    // The sandbox's /tmp, /proc and /dev are its own already; / itself cannot be hidden.
    let own = ["/tmp", "/proc", "/dev"].map(PathBuf::from);
    let candidates: BTreeSet<PathBuf> = top_level
        .chain(named)
        .filter(|p| p != Path::new("/") && !is_under_any(p, &own))
        .collect();
    let mut outermost: Vec<PathBuf> = Vec::new();
    for path in candidates {
        // Sorted, so a parent comes before its children.
        if !is_under_any(&path, &outermost) {
            outermost.push(path);
        }
    }
    outermost
}

/// Existing absolute paths the step environment points at for toolchains: `PATH` entries and
/// [`TOOLCHAIN_VARS`].
fn toolchain_paths(env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let path_entries = env
        .get("PATH")
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    let locators = TOOLCHAIN_VARS
        .iter()
        .filter_map(|key| env.get(*key))
        .map(PathBuf::from);
    let mut seen = BTreeSet::new();
    path_entries
        .into_iter()
        .chain(locators)
        .filter(|p| p.is_absolute() && p.exists())
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

fn is_under_any(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_replace_host_paths_only_in_the_sandbox() {
        let host = Path::new("/cache/tmp/build-1/layers/go/bin");
        assert_eq!(StepPaths::Host.layer("go", "bin", host), host);
        assert_eq!(
            StepPaths::Image.layer("go", "bin", host),
            Path::new("/layers/go/bin")
        );
        assert_eq!(
            StepPaths::Image.app(Path::new("/cache/app")),
            Path::new("/workspace")
        );
        assert_eq!(StepPaths::Image.home(Path::new("/h")), Path::new(HOME_DIR));
    }

    #[test]
    fn hidden_dirs_cover_home_root_and_private_dirs_outermost_first() {
        // A directory outside /tmp, and one inside it.
        let private = Path::new(env!("CARGO_MANIFEST_DIR"));
        let inner = private.join("src");
        let canonical = std::fs::canonicalize(private).unwrap();
        let hidden = hidden_dirs(&[private, &inner]);
        assert!(hidden.contains(&PathBuf::from("/root")), "{hidden:?}");
        assert!(!hidden
            .iter()
            .any(|h| h.starts_with("/usr") || h.starts_with("/etc")));
        // The private dir is hidden, by itself or by a hidden parent; its child is not listed.
        assert!(is_under_any(&canonical, &hidden), "{hidden:?}");
        assert!(!hidden.contains(&inner.canonicalize().unwrap()));
        // Under /tmp nothing is listed: the sandbox's /tmp never shows the host's.
        let in_tmp = tempfile::tempdir().unwrap();
        let hidden = hidden_dirs(&[in_tmp.path()]);
        assert!(!hidden.iter().any(|h| h.starts_with("/tmp")), "{hidden:?}");
    }
}
