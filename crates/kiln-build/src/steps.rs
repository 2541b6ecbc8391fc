//! Running build steps, in the build's sandbox or on the host: an explicit environment (never the
//! caller's whole one), output streamed line by line with a `[buildpack/step]` prefix, and on
//! failure an error carrying the step, command, exit status and the tail of its output.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use kiln_buildpack::plan::Step;
use kiln_buildpack::template;

use crate::error::{Error, Result};
use crate::isolation::{StartError, StepPaths, StepSandbox};

/// How many trailing output lines a failed step's error carries.
const TAIL_LINES: usize = 30;

/// Where a step's `${app}` and `${layer:NAME}` are on the host, its base environment, and the
/// sandbox it runs in (where they are at their image paths).
pub struct StepContext<'a> {
    pub buildpack: &'a str,
    pub app_dir: &'a Path,
    pub layer_dirs: &'a BTreeMap<String, PathBuf>,
    /// The environment every step starts from (see [`crate::BuildOptions::env`]).
    pub base_env: &'a BTreeMap<String, String>,
    /// `None`: the step runs on the host.
    pub(crate) sandbox: Option<&'a StepSandbox>,
}

impl StepContext<'_> {
    fn expand(&self, input: &str) -> Result<String> {
        let paths = StepPaths::of(self.sandbox);
        let mut lookup = |var: &str| -> Option<String> {
            if var == "app" {
                return Some(paths.app(self.app_dir).display().to_string());
            }
            let name = var.strip_prefix("layer:")?;
            self.layer_dirs
                .get(name)
                .map(|p| paths.layer(self.buildpack, name, p).display().to_string())
        };
        Ok(template::expand(input, &mut lookup)?)
    }
}

/// Runs `step`, streaming its output into `log`.
pub fn run_step(step: &Step, ctx: &StepContext<'_>, log: &mut dyn Write) -> Result<()> {
    let command = ctx.expand(&step.command)?;
    let args = step
        .args
        .iter()
        .map(|a| ctx.expand(a))
        .collect::<Result<Vec<_>>>()?;
    let workdir = StepPaths::of(ctx.sandbox)
        .app(ctx.app_dir)
        .join(ctx.expand(&step.workdir)?);
    let mut env = ctx.base_env.clone();
    for (key, value) in &step.env {
        env.insert(key.clone(), ctx.expand(value)?);
    }
    let display = shell_words(&command, &args);
    let prefix = format!("[{}/{}]", ctx.buildpack, step.name);
    let _ = writeln!(log, "{prefix} $ {display}");

    let failed = |status: String, tail: Vec<String>| Error::StepFailed {
        buildpack: ctx.buildpack.to_owned(),
        step: step.name.clone(),
        command: display.clone(),
        status,
        tail,
    };
    let spawned = match ctx.sandbox {
        // Sandboxed: the same command line, environment and pipes, inside the build's sandbox.
        Some(sandbox) => sandbox.spawn(&command, &args, &workdir, &env),
        None => Command::new(&command)
            .args(&args)
            .current_dir(&workdir)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(StartError::Command),
    };
    let mut child = spawned.map_err(|e| {
        let status = match e {
            StartError::Command(e) => {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        " (is `{command}` installed and on PATH={}?)",
                        env.get("PATH").map(String::as_str).unwrap_or("")
                    )
                } else {
                    String::new()
                };
                format!("could not start: {e}{hint}")
            }
            StartError::Sandbox(e) => format!("could not start in the sandbox: {e}"),
        };
        failed(status, Vec::new())
    })?;

    // Both pipes feed one channel so lines interleave roughly as the step printed them.
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(|l| l.ok()) {
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    for line in rx {
        let _ = writeln!(log, "{prefix} {line}");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .map_err(|e| failed(format!("could not be waited for: {e}"), Vec::new()))?;
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "failed".to_owned(),
    };
    Err(failed(status, tail.into()))
}

/// A copy-pasteable rendering of a command line for logs and errors.
fn shell_words(command: &str, args: &[String]) -> String {
    std::iter::once(command)
        .chain(args.iter().map(String::as_str))
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                w.to_owned()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(command: &str, args: &[&str]) -> Step {
        Step {
            name: "s".into(),
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([("GREETING".into(), "hi from ${app}".into())]),
            workdir: ".".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn run(step: &Step, base_env: BTreeMap<String, String>) -> (Result<()>, String) {
        let app = tempfile::tempdir().unwrap();
        let layers = BTreeMap::from([("out".to_owned(), app.path().join("out"))]);
        let ctx = StepContext {
            buildpack: "bp",
            app_dir: app.path(),
            layer_dirs: &layers,
            base_env: &base_env,
            sandbox: None,
        };
        let mut log = Vec::new();
        let result = run_step(step, &ctx, &mut log);
        (result, String::from_utf8(log).unwrap())
    }

    #[test]
    fn environment_is_explicit_and_output_prefixed() {
        std::env::set_var("KILN_TEST_LEAK", "leaked");
        let base = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let (result, log) = run(
            &step(
                "sh",
                &[
                    "-c",
                    "echo \"$GREETING\"; echo \"leak=$KILN_TEST_LEAK\" >&2",
                ],
            ),
            base,
        );
        result.unwrap();
        assert!(log.contains("[bp/s] hi from /"), "{log}");
        assert!(
            log.contains("[bp/s] leak=\n"),
            "caller env must not reach steps: {log}"
        );
    }

    #[test]
    fn failure_names_step_command_code_and_tail() {
        let base = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let script = "for i in $(seq 1 40); do echo line$i; done; exit 7";
        let (result, _) = run(&step("sh", &["-c", script]), base);
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("step bp/s failed: `sh -c "), "{err}");
        assert!(err.contains("exited with code 7"), "{err}");
        assert!(err.contains("line40"), "{err}");
        assert!(!err.contains("line10\n"), "only the tail is kept: {err}");
    }

    #[test]
    fn missing_command_says_so() {
        let base = BTreeMap::from([("PATH".to_owned(), "/nonexistent".to_owned())]);
        let (result, _) = run(&step("kiln-no-such-tool", &[]), base);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("could not start"), "{err}");
        assert!(err.contains("kiln-no-such-tool` installed"), "{err}");
    }
}
