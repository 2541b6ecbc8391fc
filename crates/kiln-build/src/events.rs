//! What a running build tells its caller: typed [`BuildEvent`]s delivered to the caller's
//! [`Observer`] as they happen, and the [`Cancel`] handle that stops a build between any two of
//! them.
//!
//! The engine never prints. The `kiln` CLI renders events as a live TTY display, plain
//! prefixed lines or JSON lines; an embedding program renders them as it likes (see
//! `examples/embed.rs`). Events are plain data (`Serialize`), so an observer may also forward
//! them elsewhere.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use kiln_oci::digest::Digest;

use crate::error::{Error, Result};

/// The stages of a build (and of `kiln rebase` and `kiln lock`), in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Phase {
    /// Detection and planning.
    Detect,
    /// The run image: Kiln's stack assembled from packages, or a base pulled or read.
    Stack,
    /// Registry cache image import (`--cache-image`), before the steps.
    CacheImport,
    /// Language runtimes provided for buildpacks.
    Runtimes,
    /// The sandbox and the build root its steps see as `/`.
    BuildRoot,
    /// The plan's build steps (or the decision that none has to run).
    Steps,
    /// Layers packed or reused, the image checked and written.
    Export,
    /// `--publish`: the image pushed to a registry.
    Push,
    /// Registry cache image export (`--cache-image`), after the push.
    CacheExport,
    /// `kiln rebase`: the image moved onto a new base.
    Rebase,
    /// `kiln lock`: the packages resolved and written to `kiln.lock`.
    Lock,
}

impl Phase {
    /// The name renderers show: `detect`, `build-root`, `cache-import`, ….
    pub fn name(self) -> &'static str {
        match self {
            Phase::Detect => "detect",
            Phase::Stack => "stack",
            Phase::CacheImport => "cache-import",
            Phase::Runtimes => "runtimes",
            Phase::BuildRoot => "build-root",
            Phase::Steps => "steps",
            Phase::Export => "export",
            Phase::Push => "push",
            Phase::CacheExport => "cache-export",
            Phase::Rebase => "rebase",
            Phase::Lock => "lock",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing that happened. `#[non_exhaustive]`: observers must ignore events they do not
/// know, so new ones can be added without breaking them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BuildEvent {
    PhaseStarted {
        phase: Phase,
    },
    /// Sent for a phase that failed too, so a renderer can stop its clock.
    PhaseFinished {
        phase: Phase,
        duration_ms: u64,
        ok: bool,
    },
    /// A fact worth a log line: what was detected, which stack, where a runtime came from.
    Note {
        message: String,
    },
    /// Something the user should fix or know: an unmapped key, a fallback, a dropped blob.
    Warning {
        message: String,
    },
    StepStarted {
        buildpack: String,
        step: String,
        /// The command line, quoted so it can be pasted into a shell.
        command: String,
    },
    /// One line a running step printed (stdout and stderr, interleaved as they came).
    StepOutput {
        buildpack: String,
        step: String,
        line: String,
    },
    /// A step ran to success or was skipped. A failing step ends the build with
    /// [`Error::StepFailed`] instead.
    StepFinished {
        buildpack: String,
        step: String,
        /// False when it was skipped because its inputs were unchanged.
        ran: bool,
        /// Why it ran or was skipped.
        reason: String,
        duration_ms: u64,
    },
    /// A layer of the image was packed or taken from the cache (or the base).
    LayerDecided {
        name: String,
        reused: bool,
        reason: String,
        /// Compressed bytes.
        size: u64,
        digest: Digest,
    },
    /// Bytes moved so far of a long download or upload.
    Transfer {
        /// What is moving: "pulling blob sha256:… of registry r, repository p".
        what: String,
        bytes: u64,
        total: Option<u64>,
    },
}

/// Receives a build's events. Called from the thread running the build (step output too), one
/// event at a time; an observer should return quickly. Closures are observers.
pub trait Observer: Sync {
    fn event(&self, event: &BuildEvent);
}

impl<F: Fn(&BuildEvent) + Sync> Observer for F {
    fn event(&self, event: &BuildEvent) {
        self(event)
    }
}

/// An observer that drops everything.
pub struct Ignore;

impl Observer for Ignore {
    fn event(&self, _: &BuildEvent) {}
}

/// Writes each event as a plain log line ([`BuildEvent::plain_line`]): what `kiln build` prints
/// when its output is not a terminal, and a ready observer for programs that want a log.
pub struct LogLines<W> {
    out: Mutex<W>,
}

impl<W: Write + Send> LogLines<W> {
    pub fn new(out: W) -> LogLines<W> {
        LogLines {
            out: Mutex::new(out),
        }
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl<W: Write + Send> Observer for LogLines<W> {
    fn event(&self, event: &BuildEvent) {
        if let Some(line) = event.plain_line() {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            // A log nobody can write to must not fail the build.
            let _ = writeln!(out, "{line}");
        }
    }
}

impl BuildEvent {
    /// The event as one log line, prefixed with what it is about (`[nodejs/install] …`,
    /// `warning: …`, `layer app: …`); `None` for a phase's start, which its first line shows.
    pub fn plain_line(&self) -> Option<String> {
        Some(match self {
            BuildEvent::PhaseStarted { .. } => return None,
            BuildEvent::PhaseFinished {
                phase,
                duration_ms,
                ok,
            } => {
                let how = if *ok { "done" } else { "failed" };
                format!("{phase}: {how} in {}", seconds(*duration_ms))
            }
            BuildEvent::Note { message } => message.clone(),
            BuildEvent::Warning { message } => format!("warning: {message}"),
            BuildEvent::StepStarted {
                buildpack,
                step,
                command,
            } => format!("[{buildpack}/{step}] $ {command}"),
            BuildEvent::StepOutput {
                buildpack,
                step,
                line,
            } => format!("[{buildpack}/{step}] {line}"),
            BuildEvent::StepFinished {
                buildpack,
                step,
                ran: false,
                reason,
                ..
            } => format!("[{buildpack}/{step}] skipped: {reason}"),
            BuildEvent::StepFinished {
                buildpack,
                step,
                duration_ms,
                ..
            } => format!("[{buildpack}/{step}] done in {}", seconds(*duration_ms)),
            BuildEvent::LayerDecided {
                name,
                reused,
                reason,
                size,
                ..
            } => {
                let how = if *reused { "reused" } else { "built" };
                format!("layer {name}: {how} ({reason}, {size} bytes)")
            }
            BuildEvent::Transfer { what, bytes, total } => match total {
                Some(total) => format!("{what}: {bytes} of {total} bytes so far"),
                None => format!("{what}: {bytes} bytes so far"),
            },
        })
    }
}

/// `0.4 s`, `12.0 s`: durations as logs show them.
pub fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Stops a build from another thread (or from an observer, or a signal handler): the build
/// returns [`Error::Cancelled`] at its next checkpoint — before each phase, step and layer,
/// and within 100 ms while a step runs, whose processes are then killed. Its temporary files
/// are removed and the cache keeps what it had, as after a failed build: no step record,
/// layer record or output is written for a cancelled build.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for `signal_hook::flag::register` and the like.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    /// `Err(Error::Cancelled)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// What the engine carries through a build: the caller's observer and cancel flag.
#[derive(Clone, Copy)]
pub struct Events<'a> {
    observer: &'a dyn Observer,
    cancelled: &'a AtomicBool,
}

/// The flag of [`Events::silent`], never set.
static NEVER_CANCELLED: AtomicBool = AtomicBool::new(false);

impl<'a> Events<'a> {
    pub fn new(observer: &'a dyn Observer, cancel: &'a Cancel) -> Events<'a> {
        Events {
            observer,
            cancelled: &cancel.0,
        }
    }

    /// Events nobody watches, of work nobody cancels (`kiln inspect`, `kiln cache ls`).
    pub fn silent() -> Events<'static> {
        Events {
            observer: &Ignore,
            cancelled: &NEVER_CANCELLED,
        }
    }

    pub fn emit(&self, event: BuildEvent) {
        self.observer.event(&event);
    }

    pub fn note(&self, message: impl Into<String>) {
        self.emit(BuildEvent::Note {
            message: message.into(),
        });
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(BuildEvent::Warning {
            message: message.into(),
        });
    }

    /// A registry transfer's progress, as a [`BuildEvent::Transfer`].
    pub fn transfer(&self, transfer: &kiln_registry::Transfer<'_>) {
        self.emit(BuildEvent::Transfer {
            what: transfer.what.to_owned(),
            bytes: transfer.bytes,
            total: transfer.total,
        });
    }

    /// `Err(Error::Cancelled)` once the build was cancelled.
    pub fn check(&self) -> Result<()> {
        if self.cancelled.load(Ordering::SeqCst) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Runs `f` as `phase`: a cancellation checkpoint first, then started and finished events
    /// around it (finished with `ok: false` when it fails).
    pub fn phase<T>(&self, phase: Phase, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check()?;
        self.emit(BuildEvent::PhaseStarted { phase });
        let started = Instant::now();
        let result = f();
        self.emit(BuildEvent::PhaseFinished {
            phase,
            duration_ms: crate::elapsed_ms(started),
            ok: result.is_ok(),
        });
        result
    }
}

impl std::fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("cancelled", &self.cancelled.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_phase_is_bracketed_by_started_and_finished_and_is_a_checkpoint() {
        let seen = Mutex::new(Vec::new());
        let observer = |e: &BuildEvent| seen.lock().unwrap().push(e.clone());
        let cancel = Cancel::new();
        let events = Events::new(&observer, &cancel);
        let failed: Result<()> = events.phase(Phase::Export, || Err(Error::Options("no".into())));
        assert!(failed.is_err());
        {
            let seen = seen.lock().unwrap();
            assert_eq!(
                seen[0],
                BuildEvent::PhaseStarted {
                    phase: Phase::Export
                }
            );
            assert!(matches!(
                seen[1],
                BuildEvent::PhaseFinished {
                    phase: Phase::Export,
                    ok: false,
                    ..
                }
            ));
        }
        cancel.cancel();
        let mut ran = false;
        let result = events.phase(Phase::Push, || {
            ran = true;
            Ok(())
        });
        assert!(matches!(result, Err(Error::Cancelled)));
        assert!(!ran, "a cancelled build starts no phase");
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn events_serialize_with_a_tag_and_kebab_phases() {
        let json = serde_json::to_string(&BuildEvent::PhaseStarted {
            phase: Phase::BuildRoot,
        })
        .unwrap();
        assert_eq!(json, r#"{"event":"phase_started","phase":"build-root"}"#);
    }
}
