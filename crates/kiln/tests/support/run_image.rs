//! Kiln's own run images (stacks, assembled from Debian packages by `kiln-debian`) in tests:
//! building on them with one download cache shared by every test and test run, and running a
//! one-shot command in an image under runc.
//!
//! The mirror is the one this host's apt sources name (no mirror host is written here). When it
//! does not answer, stack tests fail under `CI` and skip loudly elsewhere.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

use super::run_ok;

/// Debian indexes and packages for every test (`target/tmp/kiln-debian-cache`, the directory
/// `kiln-debian`'s own tests use too): CI downloads them once.
pub fn stack_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-debian-cache")
}

/// Whether the host's Debian mirror answers (checked once: trixie's InRelease verifies). Under
/// `CI` a mirror that does not answer panics; elsewhere it prints a loud SKIPPED line.
pub fn require_debian_mirror() -> bool {
    static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = REACHABLE.get_or_init(|| {
        use kiln_debian::fetch::{self, Cache, Source};
        let mirror = kiln_debian::mirror::find(&Default::default(), Path::new("/"))
            .map_err(|e| e.to_string())?;
        let source = Source {
            mirror,
            keyring: kiln_debian::release::Keyring::embedded().map_err(|e| e.to_string())?,
            arch: fetch::host_arch().unwrap_or("amd64").to_owned(),
            max_index_age: fetch::DEFAULT_MAX_INDEX_AGE,
        };
        let cache = Cache::open(stack_cache()).map_err(|e| e.to_string())?;
        fetch::release(&source, &cache, "trixie", &mut Vec::new())
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("the Debian mirror of the apt sources is needed under CI: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n*** SKIPPED: the Debian mirror of the apt sources does not answer: {why} ***\n"
            );
            false
        }
    }
}

/// `kiln` building on Kiln's stack (no `--run-image`): the shared download cache and the
/// host's runtimes only (this machine reaches no runtime mirror), steps sandboxed on the host's
/// root (`KILN_BUILD_ROOT=host`).
pub fn kiln_on_stack() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env_remove("KILN_RUN_IMAGE")
        .env("KILN_DEBIAN_CACHE", stack_cache())
        .env("KILN_RUNTIME_PROVIDERS", "host")
        .env("KILN_BUILD_ROOT", "host");
    cmd
}

/// `kiln` as on a machine with nothing but Kiln: an empty `PATH` (no host toolchain can be
/// found), a fresh `HOME`, none of the caller's variables but the trust store and the npm
/// registry this machine reaches (`KILN_NPM_REGISTRY`, from npm's own configuration), building
/// on Kiln's stack with steps in a Debian build root (`--isolation sandbox`: no host fallback).
pub fn kiln_hermetic(home: &Path) -> Command {
    let empty_path = home.join("empty-path");
    fs::create_dir_all(&empty_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env_clear()
        .env("PATH", &empty_path)
        .env("HOME", home)
        .env("KILN_DEBIAN_CACHE", stack_cache());
    for key in ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "CI"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    if let Some(registry) = super::npm_config("registry") {
        cmd.env("KILN_NPM_REGISTRY", registry);
    }
    cmd
}

/// Runs `args` once in `image` (`oci-archive:PATH`, …) under runc in the foreground, asserts
/// it succeeded and returns its trimmed stdout. `add` copies host files into the unpacked root first (`(host path, image path)`),
/// e.g. a binary to prove the image can run it.
pub fn run_once(image: &str, args: &[&str], add: &[(&Path, &str)]) -> String {
    let mut once = OneShot::new(image, args);
    for (host, in_image) in add {
        once = once.add(host, in_image);
    }
    once.run()
}

/// One foreground `runc run` of an image, with what [`run_once`] cannot say: bind mounts, the
/// user, extra environment, and `/proc` left unmasked (what `docker run --security-opt
/// systempaths=unconfined` gives: a nested sandbox needs it to mount its own `/proc`).
pub struct OneShot {
    image: String,
    args: Vec<String>,
    add: Vec<(PathBuf, String)>,
    mounts: Vec<serde_json::Value>,
    env: Vec<String>,
    user: Option<(u32, u32)>,
    unmask_proc: bool,
}

impl OneShot {
    pub fn new(image: &str, args: &[&str]) -> OneShot {
        OneShot {
            image: image.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
            add: Vec::new(),
            mounts: Vec::new(),
            env: Vec::new(),
            user: None,
            unmask_proc: false,
        }
    }

    /// Copies the host file `host` to `in_image` in the unpacked root.
    pub fn add(mut self, host: &Path, in_image: &str) -> OneShot {
        self.add.push((host.to_owned(), in_image.to_owned()));
        self
    }

    /// Binds the host path `host` at `in_image`, read-only unless `writable`.
    pub fn bind(mut self, host: &Path, in_image: &str, writable: bool) -> OneShot {
        let mode = if writable { "rw" } else { "ro" };
        self.mounts.push(serde_json::json!({
            "destination": in_image,
            "type": "bind",
            "source": host,
            "options": ["rbind", mode],
        }));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> OneShot {
        self.env.push(format!("{key}={value}"));
        self
    }

    pub fn user(mut self, uid: u32, gid: u32) -> OneShot {
        self.user = Some((uid, gid));
        self
    }

    pub fn unmask_proc(mut self) -> OneShot {
        self.unmask_proc = true;
        self
    }

    pub fn run(self) -> String {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let bundle = dir.path().join("bundle");
        run_ok(
            Command::new("skopeo")
                .args(["copy", "--quiet", &self.image])
                .arg(format!("oci:{}:run", layout.display())),
        );
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:run", layout.display()))
                .arg(&bundle),
        );
        for (host, in_image) in &self.add {
            let dest = bundle.join("rootfs").join(in_image.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(host, &dest)
                .unwrap_or_else(|e| panic!("copying {} into the image: {e}", host.display()));
        }
        let config_path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
        sandbox_config(&mut config);
        config["process"]["args"] = self.args.iter().map(|a| Value::from(a.as_str())).collect();
        if let Some(env) = config["process"]["env"].as_array_mut() {
            env.extend(self.env.iter().map(|e| Value::from(e.as_str())));
        }
        if let Some((uid, gid)) = self.user {
            config["process"]["user"] = serde_json::json!({ "uid": uid, "gid": gid });
        }
        if let Some(mounts) = config["mounts"].as_array_mut() {
            mounts.extend(self.mounts);
        }
        if self.unmask_proc {
            config["linux"]["maskedPaths"] = Value::Array(Vec::new());
            config["linux"]["readonlyPaths"] = Value::Array(Vec::new());
        }
        fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "kiln-once-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst)
        );
        // A foreground `runc run` removes the container when its process exits.
        run_ok(
            Command::new("runc")
                .args(["run", &id])
                .current_dir(&bundle)
                .stdin(Stdio::null()),
        )
        .trim()
        .to_owned()
    }
}

/// What this machine's sandbox cannot give a container (GUIDE.md §5): no rlimits, resources or
/// cgroup path, no terminal, the host's network namespace.
pub fn sandbox_config(config: &mut serde_json::Value) {
    if let Some(process) = config["process"].as_object_mut() {
        process.remove("rlimits");
        process.insert("terminal".into(), false.into());
    }
    if let Some(linux) = config["linux"].as_object_mut() {
        linux.remove("resources");
        linux.remove("cgroupsPath");
        if let Some(namespaces) = linux.get_mut("namespaces").and_then(|n| n.as_array_mut()) {
            namespaces.retain(|ns| ns["type"] != "network");
        }
    }
}

/// Runs `kiln build --json` on `src` with no `--run-image` (Kiln's stack), returning the
/// process output.
pub fn build_on_stack(src: &Path, cache: &Path, out: &Path) -> Output {
    kiln_on_stack()
        .args([
            "build",
            src.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap()
}

/// [`build_on_stack`], asserting success and parsing the report.
pub fn build_on_stack_ok(src: &Path, cache: &Path, out: &Path) -> Value {
    let output = build_on_stack(src, cache, out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
