//! Embedding Kiln: build an image from a source directory with your own progress display, and
//! cancel the build if it takes too long.
//!
//! `cargo run -p kiln-build --example embed -- SRC OUTPUT.tar [SECONDS]`
//!
//! The observer below prints phases and steps as they finish; a watchdog thread cancels the
//! build after SECONDS (default 600). A cancelled build returns `Error::Cancelled`, with its
//! steps killed, its temporary files removed and the cache as it was.

use std::process::ExitCode;
use std::time::Duration;

use kiln_build::events::{BuildEvent, Cancel};

fn main() -> ExitCode {
    // Build steps run in sandboxes that this program, re-executed, sets up.
    kiln_sandbox::run_helper_if_requested();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, output, rest @ ..] = args.as_slice() else {
        eprintln!("usage: embed SRC OUTPUT.tar [SECONDS]");
        return ExitCode::from(2);
    };
    let Ok(limit) = rest.first().map_or(Ok(600), |s| s.parse::<u64>()) else {
        eprintln!("SECONDS: expected a number");
        return ExitCode::from(2);
    };
    // Library code reads no process environment: the build gets ours explicitly.
    let mut opts = kiln_build::BuildOptions::from_env(src, output, std::env::vars().collect());
    opts.cancel = Cancel::new();
    let cancel = opts.cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(limit));
        cancel.cancel();
    });

    // Any `Fn(&BuildEvent) + Sync` is an observer; unknown (future) events are ignored.
    let observer = |event: &BuildEvent| match event {
        BuildEvent::PhaseFinished {
            phase, duration_ms, ..
        } => eprintln!("{phase:>12} {duration_ms} ms"),
        BuildEvent::StepFinished {
            buildpack,
            step,
            ran,
            reason,
            ..
        } => eprintln!(
            "{buildpack}/{step}: {} ({reason})",
            if *ran { "ran" } else { "skipped" }
        ),
        BuildEvent::Warning { message } => eprintln!("warning: {message}"),
        _ => {}
    };
    match kiln_build::build(&opts, &observer) {
        Ok(report) => {
            println!("{} {}", report.manifest_digest, output);
            for layer in &report.layers {
                let how = if layer.reused { "reused" } else { "built" };
                println!(
                    "  {:<10} {} {} bytes ({how})",
                    layer.name, layer.digest, layer.size
                );
            }
            ExitCode::SUCCESS
        }
        Err(kiln_build::Error::Cancelled) => {
            eprintln!("cancelled after {limit} s");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
