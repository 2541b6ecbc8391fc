//! Shared end-to-end test support: running the `kiln` binary, external tools (fail under `CI`,
//! loud skip elsewhere), a busybox base image built with Kiln's own writer, and running an image
//! under runc to talk HTTP to it (GUIDE.md §5: skopeo → umoci unpack → trimmed config → runc).

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod registry;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_oci::image::assemble;
use kiln_oci::layer::{normalize, write_layer, Entry, EntryKind, LayerOptions};
use kiln_oci::reference::Reference;
use kiln_oci::spec::ImageConfig;
use kiln_oci::store::BlobStore;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures").join(name)
}

/// The `kiln` binary for tests that are not about the run image or the build root: they build
/// on `scratch`, as if `--run-image scratch` were given (`KILN_RUN_IMAGE`), and sandboxed
/// steps see the host's root (`KILN_BUILD_ROOT=host`, so the host's toolchains), so they need
/// no Debian mirror. Tests of Kiln's stacks use `support::run_image::kiln_on_stack`; tests of
/// build roots `support::run_image::kiln_hermetic`.
pub fn kiln_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env("KILN_RUN_IMAGE", "scratch")
        .env("KILN_BUILD_ROOT", "host");
    cmd
}

/// Runs `kiln ARGS`, returning its output (never panics on a non-zero exit).
pub fn kiln(args: &[&str]) -> Output {
    kiln_cmd()
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

/// Runs `kiln build SRC --output OUT` with its own cache beside OUT, then `extra` arguments.
pub fn build_to(src: &Path, out: &Path, extra: &[&str]) -> Output {
    let cache = out.with_extension("cache");
    kiln(
        &[
            &[
                "build",
                src.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            extra,
        ]
        .concat(),
    )
}

/// Runs `kiln ARGS` and asserts success, returning stdout.
pub fn kiln_ok(args: &[&str]) -> String {
    let out = kiln(args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 stdout")
}

/// The buildpack `fails`: on a Procfile app its step `explode` prints `compiling` on stdout,
/// `error: widget missing` on stderr, and exits with code 3.
pub const FAILING_STEP_BUILDPACK: &str = r#"
[buildpack]
id = "fails"
version = "1.0.0"

[detect]
any = ["Procfile"]

[[build.steps]]
name = "explode"
command = "sh"
args = ["-c", "echo compiling; echo 'error: widget missing' >&2; exit 3"]

[[processes]]
type = "web"
command = "true"
"#;

/// A buildpacks directory under `root` holding the single buildpack `id` with `manifest` as its
/// `buildpack.toml` (for `--buildpacks`).
pub fn buildpacks_dir(root: &Path, id: &str, manifest: &str) -> PathBuf {
    let dir = root.join("buildpacks");
    std::fs::create_dir_all(dir.join(id)).unwrap();
    std::fs::write(dir.join("order.toml"), format!("order = [\"{id}\"]\n")).unwrap();
    std::fs::write(dir.join(id).join("buildpack.toml"), manifest).unwrap();
    dir
}

/// `(ran, reason)` of the step called `name` in a `kiln build --json` report.
pub fn step_outcome(report: &serde_json::Value, name: &str) -> (bool, String) {
    let step = report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {report}"));
    (
        step["ran"].as_bool().unwrap(),
        step["reason"].as_str().unwrap().to_owned(),
    )
}

/// Whether every tool is on PATH. Missing tools fail the test under CI (env `CI` set) and skip it
/// loudly elsewhere.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("required tools missing under CI: {}", missing.join(", "));
    }
    eprintln!(
        "\n*** SKIPPED: missing {} (install them, or run .ci/run) ***\n",
        missing.join(", ")
    );
    false
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Runs an external command and asserts success, returning stdout.
/// A private copy of fixture `name` under `dir` (created if missing), for a test that changes
/// it: `dir/name`.
pub fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let dest = dir.join(name);
    run_ok(Command::new("cp").arg("-r").arg(fixture(name)).arg(&dest));
    dest
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes an oci-archive at `out` holding a static busybox (`/bin/busybox` plus `sh`, `httpd`, …
/// links) and `PATH=/bin`: a tiny base image with a shell, built with Kiln's own layer writer.
pub fn busybox_base_image(out: &Path) {
    let busybox = Path::new("/usr/bin/busybox");
    let size = std::fs::metadata(busybox)
        .expect("busybox-static installed")
        .len();
    let mut entries = vec![Entry {
        path: "bin/busybox".into(),
        kind: EntryKind::file(busybox, size),
        mode: 0o755,
    }];
    for applet in ["sh", "httpd", "cat", "ls", "env", "wget"] {
        entries.push(Entry {
            path: format!("bin/{applet}"),
            kind: EntryKind::Symlink {
                target: "busybox".into(),
            },
            mode: 0o777,
        });
    }
    entries.push(Entry {
        path: "tmp".into(),
        kind: EntryKind::Dir,
        mode: 0o1777,
    });
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let layer = write_layer(
        &store,
        &normalize(entries).unwrap(),
        &LayerOptions::default(),
    )
    .unwrap();
    let mut config = ImageConfig::for_host();
    config.config.set_env_var("PATH", "/bin");
    config.config.cmd = Some(vec!["/bin/sh".into()]);
    let image = assemble(&store, config, &[layer], BTreeMap::new()).unwrap();
    let tag = Reference::parse("kiln-test/busybox:1").unwrap();
    kiln_oci::archive::write_oci_archive(&store, &image, Some(&tag), out).unwrap();
}

/// A one-file base image (`/etc/base-version` holding `version`) for `linux/<architecture>`,
/// written to `out` and named `tag` in its index when given. Needs no external tool.
pub fn tiny_base_image(out: &Path, version: &str, tag: Option<&str>, architecture: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("version");
    std::fs::write(&file, version).unwrap();
    let entries = vec![Entry {
        path: "etc/base-version".into(),
        kind: EntryKind::file(file, version.len() as u64),
        mode: 0o644,
    }];
    let store = BlobStore::open(dir.path().join("store")).unwrap();
    let layer = write_layer(
        &store,
        &normalize(entries).unwrap(),
        &LayerOptions::default(),
    )
    .unwrap();
    let mut config = ImageConfig::for_host();
    config.architecture = architecture.to_owned();
    config.variant = None;
    let image = assemble(&store, config, &[layer], BTreeMap::new()).unwrap();
    let tag = tag.map(|t| Reference::parse(t).unwrap());
    kiln_oci::archive::write_oci_archive(&store, &image, tag.as_ref(), out).unwrap();
}

/// The build host's architecture in OCI names (`amd64`, `arm64`).
pub fn host_architecture() -> String {
    kiln_oci::spec::Platform::host().architecture
}

/// Starts the image at `archive` (built from `fixtures/procfile-static` on a busybox base) and
/// checks that its httpd serves the fixture's page; returns the running container.
pub fn serve_procfile_static(archive: &Path) -> Container {
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", archive.display()),
        &[("PORT", &port.to_string())],
    );
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("<h1>hello from kiln procfile-static</h1>"),
        "{body}"
    );
    container
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A container started under runc from an image; killed and deleted on drop.
pub struct Container {
    id: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Container {
    /// Copies `image` (`oci-archive:PATH`, `docker-archive:PATH`, …) with skopeo, unpacks it with
    /// umoci and starts it detached with runc, sharing the host network, with `env` added.
    pub fn start(image: &str, env: &[(&str, &str)]) -> Container {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let bundle = dir.path().join("bundle");
        run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            image,
            &format!("oci:{}:run", layout.display()),
        ]));
        run_ok(Command::new("umoci").args([
            "unpack",
            "--image",
            &format!("{}:run", layout.display()),
            bundle.to_str().unwrap(),
        ]));
        // The unpacked bundle is all runc needs: the layout's compressed copy of every layer
        // would only take disk while the container runs.
        std::fs::remove_dir_all(&layout).unwrap();
        let config_path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        // What this machine's sandbox cannot do (GUIDE.md §5).
        let process = config["process"].as_object_mut().unwrap();
        process.remove("rlimits");
        process.insert("terminal".into(), false.into());
        let process_env = process["env"].as_array_mut().unwrap();
        for (k, v) in env {
            // Replacing the image's own value (its `PORT=8080`), as `docker run -e` does.
            let prefix = format!("{k}=");
            process_env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&prefix)));
            process_env.push(format!("{k}={v}").into());
        }
        let linux = config["linux"].as_object_mut().unwrap();
        linux.remove("resources");
        linux.remove("cgroupsPath");
        linux["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|ns| ns["type"] != "network");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        let id = format!(
            "kiln-test-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace('.', "")
        );
        let log = dir.path().join("container.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let status = Command::new("runc")
            .args(["run", "-d", &id])
            .current_dir(&bundle)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .status()
            .expect("runc runs");
        let container = Container { id, _dir: dir, log };
        assert!(status.success(), "runc run failed:\n{}", container.log());
        container
    }

    /// The unpacked root filesystem the container runs from.
    pub fn rootfs(&self) -> PathBuf {
        self._dir.path().join("bundle/rootfs")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GETs `path` on 127.0.0.1:`port`, retrying until the server answers (or 20 s pass), and
    /// returns (status line, body).
    pub fn http_get(&self, port: u16, path: &str) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match http_get(port, path) {
                Ok(answer) => return answer,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("no HTTP answer on port {port}: {e}\n{}", self.log()),
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.id, "KILL"])
            .output();
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.id])
            .output();
    }
}

fn http_get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("malformed response {response:?}")))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

pub mod run_image;

/// Path → contents (files, lossily as UTF-8) or "<dir>" for every entry of each layer, in
/// manifest order.
pub fn layer_contents(layout: &Path) -> Vec<BTreeMap<String, String>> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let file = fs::File::open(blob(layer["digest"].as_str().unwrap())).unwrap();
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
            archive
                .entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let path = e.path().unwrap().to_string_lossy().into_owned();
                    let body = if e.header().entry_type().is_dir() {
                        "<dir>".to_owned()
                    } else {
                        let mut bytes = Vec::new();
                        e.read_to_end(&mut bytes).unwrap();
                        String::from_utf8_lossy(&bytes).into_owned()
                    };
                    (path, body)
                })
                .collect()
        })
        .collect()
}

/// `npm config get KEY` of the machine's npm (`None` for npm's "undefined"/"null").
pub fn npm_config(key: &str) -> Option<String> {
    let value = run_ok(Command::new("npm").args(["config", "get", key]));
    let value = value.trim();
    (!value.is_empty() && value != "undefined" && value != "null").then(|| value.to_owned())
}

/// Acting on a running container: what a test does to a process inside it, and whether the
/// container is still up.
impl Container {
    /// Runs `args` in the running container (`runc exec`) and returns its stdout; panics on
    /// failure.
    pub fn exec(&self, args: &[&str]) -> String {
        run_ok(Command::new("runc").arg("exec").arg(&self.id).args(args))
    }

    /// Waits up to `timeout` for the container's init to have exited (`runc state`: `stopped`).
    pub fn stops_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let state = run_ok(Command::new("runc").args(["state", &self.id]));
            let state: serde_json::Value = serde_json::from_str(&state).unwrap();
            if state["status"] == "stopped" {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
