//! Sandbox start overhead per step: the median wall time of running `/bin/true` in a sandbox
//! (the host's root read-only with masks and binds like a Kiln build's) minus the median of
//! running it directly, over many runs. `cargo bench -p kiln-sandbox`; set
//! `KILN_SANDBOX_BENCH_HELPER=/path/to/kiln` to measure with Kiln's own binary as the helper.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_sandbox::{Helper, Mount, Sandbox, SandboxSpec};

const RUNS: usize = 200;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(runs: usize, mut once: impl FnMut()) -> Duration {
    once(); // warm the page cache
    median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                once();
                started.elapsed()
            })
            .collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter.
    let helper = std::env::var_os("KILN_SANDBOX_BENCH_HELPER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln-sandbox")));
    let sandbox = Sandbox::new(Helper::program(&helper));
    if let Err(why) = sandbox.probe() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let dir = |name: &str| {
        let path = work.path().join(name);
        std::fs::create_dir_all(&path).expect("bench dir");
        path
    };
    let mut spec = SandboxSpec::new("/", vec!["/bin/true".into()]);
    spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
    spec.mounts = vec![
        Mount::Tmpfs {
            inside: "/root".into(),
            writable: false,
        },
        Mount::Tmpfs {
            inside: "/home".into(),
            writable: false,
        },
        Mount::Bind {
            host: dir("app"),
            inside: "/workspace".into(),
            writable: true,
        },
        Mount::Bind {
            host: dir("layers/deps"),
            inside: "/layers/bp/deps".into(),
            writable: true,
        },
        Mount::Bind {
            host: dir("layers/cache"),
            inside: "/layers/bp/cache".into(),
            writable: true,
        },
        Mount::Bind {
            host: dir("home"),
            inside: "/home/kiln".into(),
            writable: true,
        },
        Mount::Bind {
            host: dir("tmp"),
            inside: "/tmp".into(),
            writable: true,
        },
    ];
    let host = time(RUNS, || {
        let status = Command::new("/bin/true")
            .stdout(Stdio::null())
            .status()
            .expect("/bin/true runs");
        assert!(status.success());
    });
    let sandboxed = time(RUNS, || {
        let out = sandbox
            .command(&spec)
            .and_then(|c| c.output())
            .expect("sandbox runs");
        assert!(out.status.success());
    });
    println!(
        "helper {}\n/bin/true on the host:      median {:>8.2} ms ({RUNS} runs)\n/bin/true in a sandbox:     median {:>8.2} ms ({RUNS} runs)\nsandbox start overhead:     {:>8.2} ms per step",
        helper.display(),
        host.as_secs_f64() * 1e3,
        sandboxed.as_secs_f64() * 1e3,
        (sandboxed.saturating_sub(host)).as_secs_f64() * 1e3
    );
}
