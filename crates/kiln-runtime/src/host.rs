//! The `host` provider: a toolchain already on the build machine.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::{Error, Found, ProvidedRuntime, Runtime, Version, VersionReq};

/// Prefixes shared with unrelated software: only the runtime's own paths are taken from them.
const SHARED_PREFIXES: [&str; 3] = ["/", "/usr", "/usr/local"];

pub fn provide(runtime: Runtime, req: &VersionReq, path: &OsStr) -> Result<Found, Error> {
    let exe_name = match runtime {
        Runtime::Node => "node",
        Runtime::Python => "python3",
        Runtime::Bun => "bun",
        Runtime::Deno => "deno",
        // A host SDK's prefix mixes SDKs, runtimes and workloads the image must not get
        // wholesale; a host Gleam needs the host's Erlang. Both come from the download provider.
        Runtime::Dotnet | Runtime::Gleam => {
            return Ok(Found::No(format!(
                "host: {runtime} is not taken from the build machine (set {} to a mirror)",
                runtime.mirror_env_var()
            )));
        }
    };
    let Some(exe) = find_on_path(exe_name, path) else {
        return Ok(Found::No(format!("host: no {exe_name} on PATH")));
    };
    let probe = match runtime {
        Runtime::Node => probe_node(&exe)?,
        Runtime::Python => probe_python(&exe)?,
        _ => probe_single_binary(&exe, exe_name)?,
    };
    if !req.matches(&probe.version) {
        return Ok(Found::No(format!(
            "host {}: {} does not match {req}",
            exe.display(),
            probe.version
        )));
    }
    Ok(Found::yes(ProvidedRuntime {
        runtime,
        version: probe.version,
        provider: "host",
        include: probe.include,
        prune: probe.prune,
        bin: PathBuf::from("bin"),
        sha256: None,
        integrity: None,
        bundled: Vec::new(),
        source: exe.display().to_string(),
        root: probe.prefix,
    }))
}

struct Probe {
    version: Version,
    prefix: PathBuf,
    include: Vec<PathBuf>,
    prune: Vec<String>,
}

pub(crate) fn find_on_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `exe args…` and returns its trimmed stdout, or an error naming the command.
fn run(exe: &Path, args: &[&str]) -> Result<String, Error> {
    let what = format!("running {} {}", exe.display(), args.join(" "));
    let out = Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| Error::io(what.clone(), e))?;
    if !out.status.success() {
        return Err(Error::io(
            what,
            std::io::Error::other(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn unparsable(exe: &Path, said: &str) -> Error {
    Error::io(
        format!("probing {}", exe.display()),
        std::io::Error::other(format!("unexpected output {said:?}")),
    )
}

fn probe_node(exe: &Path) -> Result<Probe, Error> {
    let said = run(exe, &["--version"])?;
    let version = Version::parse(&said).ok_or_else(|| unparsable(exe, &said))?;
    // `/usr/bin/node` → `/usr`; follow links so an nvm/volta shim finds the real install.
    let real = exe
        .canonicalize()
        .map_err(|e| Error::io(format!("resolving {}", exe.display()), e))?;
    let prefix = real
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| unparsable(exe, &real.display().to_string()))?
        .to_path_buf();
    // Node's own files, the same whether the prefix is dedicated or `/usr`.
    let include = [
        "bin/node",
        "bin/npm",
        "bin/npx",
        "bin/corepack",
        "lib/node_modules/npm",
        "lib/node_modules/corepack",
    ]
    .into_iter()
    .map(PathBuf::from)
    .filter(|p| prefix.join(p).symlink_metadata().is_ok())
    .collect();
    Ok(Probe {
        version,
        prefix,
        include,
        prune: node_prune(),
    })
}

/// Bun and Deno are one executable each: `bun --version` says `1.2.3`, `deno --version`
/// `deno 2.1.4 (stable, release, x86_64-unknown-linux-gnu)` and more lines. Only the
/// executable is taken: `bin/<name>` of the prefix it was found in (`/usr`, `~/.bun`) and, when
/// that is a link (npm's global install: `/usr/bin/bun` → `../lib/node_modules/bun/bin/bun.exe`),
/// the file it leads to under the same prefix.
fn probe_single_binary(exe: &Path, name: &str) -> Result<Probe, Error> {
    let said = run(exe, &["--version"])?;
    let first = said.lines().next().unwrap_or_default();
    let word = first
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or_default();
    let version = Version::parse(word).ok_or_else(|| unparsable(exe, &said))?;
    let real = exe
        .canonicalize()
        .map_err(|e| Error::io(format!("resolving {}", exe.display()), e))?;
    let own = PathBuf::from("bin").join(name);
    let found_in = exe.parent().and_then(Path::parent).map(Path::to_path_buf);
    let (prefix, include) = match found_in {
        Some(prefix) if real.starts_with(&prefix) => {
            let target = real
                .strip_prefix(&prefix)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let include = if target == own {
                vec![own]
            } else {
                vec![own, target]
            };
            (prefix, include)
        }
        _ if real.file_name() == Some(OsStr::new(name)) => {
            let prefix = real.parent().and_then(Path::parent);
            let prefix = prefix.ok_or_else(|| unparsable(exe, &real.display().to_string()))?;
            (prefix.to_path_buf(), vec![own])
        }
        _ => return Err(unparsable(exe, &real.display().to_string())),
    };
    Ok(Probe {
        version,
        prefix,
        include,
        prune: Vec::new(),
    })
}

/// Paths of a Node install not needed to run apps.
pub fn node_prune() -> Vec<String> {
    [
        "include",
        "share",
        "CHANGELOG.md",
        "README.md",
        "lib/node_modules/npm/docs",
        "lib/node_modules/npm/man",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// What the Python probe prints: version, `sys.base_prefix` (the install, not a venv) and
/// `LIBPL` (the directory holding the static libpython, when built with one).
#[derive(Deserialize)]
struct PythonFacts(String, PathBuf, Option<PathBuf>);

const PYTHON_PROBE: &str = "import sys, json, sysconfig; \
    print(json.dumps([sys.version.split()[0], sys.base_prefix, sysconfig.get_config_var('LIBPL')]))";

fn probe_python(exe: &Path) -> Result<Probe, Error> {
    let said = run(exe, &["-c", PYTHON_PROBE])?;
    let PythonFacts(version, prefix, libpl) =
        serde_json::from_str(&said).map_err(|_| unparsable(exe, &said))?;
    let version = Version::parse(&version).ok_or_else(|| unparsable(exe, &said))?;
    let lib = format!("lib/python{}.{}", version.major, version.minor);
    let include = if SHARED_PREFIXES.iter().any(|p| prefix == Path::new(p)) {
        let short = format!("python{}.{}", version.major, version.minor);
        [format!("bin/{short}"), "bin/python3".to_owned(), lib]
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| prefix.join(p).symlink_metadata().is_ok())
            .collect()
    } else {
        vec![PathBuf::from(".")]
    };
    let libpl = libpl.and_then(|l| l.strip_prefix(&prefix).ok().map(Path::to_path_buf));
    Ok(Probe {
        prune: python_prune(&version, libpl.as_deref()),
        version,
        prefix,
        include,
    })
}

/// Paths of a Python install not needed to run apps: the test suite, headers, docs, bytecode
/// caches (rebuilt on demand), the static library in `libpl` (relative to the prefix), and
/// `site-packages`: on a host it holds whatever was pip-installed globally there, which must not
/// leak into images (the app's dependencies get their own layer), and pip itself is a build tool.
pub fn python_prune(version: &Version, libpl: Option<&Path>) -> Vec<String> {
    let lib = format!("lib/python{}.{}", version.major, version.minor);
    let mut prune = vec![
        "include".to_owned(),
        "share".to_owned(),
        "**/__pycache__".to_owned(),
        format!("{lib}/test"),
        format!("{lib}/site-packages"),
        format!("{lib}/idlelib/idle_test"),
        format!("{lib}/tkinter/test"),
        format!("{lib}/lib2to3/tests"),
        format!("{lib}/ctypes/test"),
        format!("{lib}/unittest/test"),
    ];
    if let Some(libpl) = libpl {
        prune.push(format!(
            "{}/libpython{}.{}.a",
            libpl.display(),
            version.major,
            version.minor
        ));
    }
    prune
}
