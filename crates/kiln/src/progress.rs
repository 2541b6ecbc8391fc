//! How `kiln build`, `kiln rebase` and `kiln lock` show a running build: the engine's
//! [`BuildEvent`]s rendered live on a terminal (indicatif), as plain prefixed lines (CI logs,
//! pipes), or as JSON lines; then a summary table.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use kiln_build::cache_admin::human_size as human;
use kiln_build::events::{seconds, BuildEvent, LogLines, Observer, Phase};
use kiln_build::BuildReport;

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` when standard error is a terminal, else `plain`.
    Auto,
    /// Live spinners per phase and step, with elapsed times.
    Tty,
    /// One prefixed line per event.
    Plain,
    /// One JSON object per event, on standard error (`docs/json-output.md`).
    Json,
}

/// `--quiet` / `--verbose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Warnings only, and no summary.
    Quiet,
    Normal,
    /// On a terminal, every line steps print, not only the last.
    Verbose,
}

/// The observer the CLI hands the engine.
pub enum Renderer {
    Plain {
        lines: LogLines<std::io::Stderr>,
        quiet: bool,
    },
    Json(Mutex<std::io::Stderr>),
    Tty(Tty),
}

impl Renderer {
    pub fn new(mode: ProgressMode, verbosity: Verbosity) -> Renderer {
        if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
            console::set_colors_enabled(false);
            console::set_colors_enabled_stderr(false);
        }
        let mode = match mode {
            ProgressMode::Auto if console::Term::stderr().is_term() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        };
        match mode {
            ProgressMode::Tty => Renderer::Tty(Tty::new(verbosity)),
            ProgressMode::Json => Renderer::Json(Mutex::new(std::io::stderr())),
            _ => Renderer::Plain {
                lines: LogLines::new(std::io::stderr()),
                quiet: verbosity == Verbosity::Quiet,
            },
        }
    }

    /// Whether a summary table follows a successful build.
    pub fn wants_summary(&self) -> bool {
        match self {
            Renderer::Plain { quiet, .. } => !quiet,
            Renderer::Json(_) => false,
            Renderer::Tty(tty) => tty.verbosity != Verbosity::Quiet,
        }
    }

    /// Clears what is still drawn (a failed build's spinners) before the error is printed.
    pub fn finish(&self) {
        if let Renderer::Tty(tty) = self {
            tty.finish();
        }
    }
}

impl Observer for Renderer {
    fn event(&self, event: &BuildEvent) {
        match self {
            Renderer::Plain { lines, quiet } => {
                if !quiet || matches!(event, BuildEvent::Warning { .. }) {
                    lines.event(event);
                }
            }
            Renderer::Json(out) => {
                if let Ok(line) = serde_json::to_string(event) {
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(out, "{line}");
                }
            }
            Renderer::Tty(tty) => tty.event(event),
        }
    }
}

/// The live display: a spinner for each running phase and step, each finished one kept as a
/// line with its time; warnings and (with `--verbose`) step output print above them.
pub struct Tty {
    multi: MultiProgress,
    verbosity: Verbosity,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Tty {
    fn new(verbosity: Verbosity) -> Tty {
        Tty {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            verbosity,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn spinner(&self, key: String, prefix: String, message: String) {
        let style =
            ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {elapsed:>4} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(style);
        bar.set_prefix(prefix);
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(100));
        self.lock().insert(key, bar);
    }

    /// Ends the spinner `key` as a kept line: `✓ PREFIX TIME MESSAGE`.
    fn done(&self, key: &str, mark: console::StyledObject<&str>, line: String) {
        if let Some(bar) = self.lock().remove(key) {
            bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.finish_with_message(format!("{mark} {line}"));
        } else {
            self.println(format!("{mark} {line}"));
        }
    }

    fn message(&self, key: &str, message: String) {
        if let Some(bar) = self.lock().get(key) {
            bar.set_message(message);
        }
    }

    fn println(&self, line: String) {
        // Printing above the bars keeps them drawn below; a terminal that went away is no error.
        let _ = self.multi.println(line);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self) {
        for (_, bar) in self.lock().drain() {
            bar.abandon();
        }
    }

    fn event(&self, event: &BuildEvent) {
        let quiet = self.verbosity == Verbosity::Quiet;
        match event {
            BuildEvent::Warning { message } => {
                self.println(format!("{} {message}", style("warning:").yellow().bold()));
            }
            _ if quiet => {}
            BuildEvent::PhaseStarted { phase } => {
                self.spinner(phase_key(*phase), format!("{phase:<12}"), String::new());
            }
            BuildEvent::PhaseFinished {
                phase,
                duration_ms,
                ok,
            } => {
                let mark = if *ok {
                    style("✓").green()
                } else {
                    style("✗").red()
                };
                let line = format!("{phase:<12} {}", seconds(*duration_ms));
                self.done(&phase_key(*phase), mark, line);
            }
            BuildEvent::Note { message } => self.message_current(message.clone()),
            BuildEvent::Transfer { what, bytes, total } => {
                let so_far = match total {
                    Some(total) => format!("{} / {}", human(*bytes), human(*total)),
                    None => human(*bytes),
                };
                self.message_current(format!("{so_far}  {what}"));
            }
            BuildEvent::StepStarted {
                buildpack,
                step,
                command,
            } => {
                let name = format!("{buildpack}/{step}");
                self.spinner(
                    step_key(&name),
                    format!("  {name:<22}"),
                    format!("$ {command}"),
                );
            }
            BuildEvent::StepOutput {
                buildpack,
                step,
                line,
            } => {
                let name = format!("{buildpack}/{step}");
                if self.verbosity == Verbosity::Verbose {
                    self.println(format!("{} {line}", style(format!("[{name}]")).dim()));
                }
                // Compact: the step's latest line beside its spinner.
                self.message(&step_key(&name), line.clone());
            }
            BuildEvent::StepFinished {
                buildpack,
                step,
                ran,
                reason,
                duration_ms,
            } => {
                let name = format!("{buildpack}/{step}");
                if *ran {
                    let line = format!("  {name:<22} {}", seconds(*duration_ms));
                    self.done(&step_key(&name), style("✓").green(), line);
                } else {
                    let line = format!("  {name:<22} skipped: {reason}");
                    self.done(&step_key(&name), style("·").dim(), line);
                }
            }
            BuildEvent::LayerDecided {
                name, reused, size, ..
            } => {
                let how = if *reused { "reused" } else { "built" };
                self.message_current(format!("layer {name}: {how}, {}", human(*size)));
            }
            // Events added later are shown by the plain renderer; here they are skipped.
            _ => {}
        }
    }

    /// The message of the phase spinner that started last (the one running).
    fn message_current(&self, message: String) {
        let bars = self.lock();
        // Phases run one after another: at most one phase spinner is live at a time.
        if let Some(bar) = bars
            .iter()
            .find(|(key, _)| key.starts_with("phase:"))
            .map(|(_, b)| b)
        {
            bar.set_message(message);
        }
    }
}

fn phase_key(phase: Phase) -> String {
    format!("phase:{phase}")
}

fn step_key(name: &str) -> String {
    format!("step:{name}")
}

/// The table printed after a build: every layer (size, reused or why rebuilt), every step
/// (ran or skipped, time, why), and the total.
pub fn summary(report: &BuildReport) -> String {
    let mut out = String::new();
    let width = report
        .layers
        .iter()
        .map(|l| l.name.len())
        .chain(
            report
                .steps
                .iter()
                .map(|s| s.buildpack.len() + 1 + s.name.len()),
        )
        .max()
        .unwrap_or(0)
        .max(5);
    out.push_str(&format!(
        "{:<width$}  {:>9}  {:<7}  why\n",
        "layer", "size", ""
    ));
    for layer in &report.layers {
        let how = if layer.reused { "reused" } else { "built" };
        out.push_str(&format!(
            "{:<width$}  {:>9}  {how:<7}  {}\n",
            layer.name,
            human(layer.size),
            layer.reason
        ));
    }
    if !report.steps.is_empty() {
        out.push_str(&format!(
            "{:<width$}  {:>9}  {:<7}  why\n",
            "step", "time", ""
        ));
        for step in &report.steps {
            let (how, time) = if step.ran {
                ("ran", seconds(step.duration_ms))
            } else {
                ("skipped", "-".to_owned())
            };
            out.push_str(&format!(
                "{:<width$}  {time:>9}  {how:<7}  {}\n",
                format!("{}/{}", step.buildpack, step.name),
                step.reason
            ));
        }
    }
    let t = &report.timings;
    out.push_str(&format!(
        "total {} (detect {}, steps {}, export {})\n",
        seconds(t.total_ms),
        seconds(t.detect_ms),
        seconds(t.steps_ms),
        seconds(t.export_ms)
    ));
    out
}

/// Ctrl-C (SIGINT) and SIGTERM cancel the build through `cancel`: its steps are killed and its
/// temporary files removed. A second Ctrl-C exits at once (status 130), as a user pressing it
/// twice expects.
pub fn cancel_on_signals(cancel: &kiln_build::events::Cancel) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = cancel.flag();
    for signal in [SIGINT, SIGTERM] {
        // Registered before the flag: it fires only when the flag is already set.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone());
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
}
