//! Shell-script apps: the interpreter `start.sh`'s `#!` line names (`#!/bin/bash`,
//! `#!/usr/bin/env zsh`), so the script runs through it, as the kernel would run it, rather than
//! through `/bin/sh`; and the Debian package that has a shell interpreter.

use super::{Facts, Tree};
use crate::error::Result;

/// The start script the `shell` buildpack runs.
const SCRIPT: &str = "start.sh";

/// Shells by program name, with the Debian package that provides them.
const SHELL_PACKAGES: &[(&str, &str)] = &[
    ("sh", "dash"),
    ("dash", "dash"),
    ("bash", "bash"),
    ("zsh", "zsh"),
    ("ksh", "ksh"),
    ("ksh93", "ksh"),
    ("mksh", "mksh"),
    ("fish", "fish"),
    ("busybox", "busybox"),
];

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let Some(text) = tree.text(SCRIPT)? else {
        return Ok(facts);
    };
    let Some((interpreter, arg)) = shebang(&text) else {
        facts
            .notes
            .push(format!("{SCRIPT} has no #! line: it runs with /bin/sh"));
        return Ok(facts);
    };
    // `#!/usr/bin/env bash`: the program is env's first operand.
    let program = match (interpreter.rsplit('/').next(), arg) {
        (Some("env"), Some(arg)) => arg
            .split_whitespace()
            .find(|w| !w.starts_with('-'))
            .unwrap_or(arg),
        (name, _) => name.unwrap_or(interpreter),
    };
    let program = program.rsplit('/').next().unwrap_or(program);
    facts.set("interpreter", interpreter);
    if let Some(arg) = arg {
        facts.set("interpreter_arg", arg);
    }
    if let Some((_, package)) = SHELL_PACKAGES.iter().find(|(name, _)| *name == program) {
        facts.set("interpreter_package", *package);
        if *package != "dash" {
            facts.notes.push(format!(
                "{SCRIPT} runs with {program}: Debian package `{package}` joins Kiln's stack \
                 (which has only dash as /bin/sh); a --run-image must have it"
            ));
        }
    }
    Ok(facts)
}

/// `(interpreter, optional argument)` of a `#!` first line, split as Linux does: the
/// interpreter up to the first blank, the rest (trimmed) as one argument.
fn shebang(text: &str) -> Option<(&str, Option<&str>)> {
    let line = text.strip_prefix("#!")?.lines().next()?;
    let line = line.trim_matches([' ', '\t', '\r']);
    let (interpreter, arg) = match line.split_once([' ', '\t']) {
        Some((interpreter, arg)) => (interpreter, Some(arg.trim_matches([' ', '\t']))),
        None => (line, None),
    };
    (!interpreter.is_empty()).then_some((interpreter, arg.filter(|a| !a.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs_split_as_the_kernel_does() {
        assert_eq!(shebang("#!/bin/bash\necho"), Some(("/bin/bash", None)));
        assert_eq!(
            shebang("#! /bin/bash -e \r\n"),
            Some(("/bin/bash", Some("-e")))
        );
        assert_eq!(
            shebang("#!/usr/bin/env -S bash -eu\n"),
            Some(("/usr/bin/env", Some("-S bash -eu")))
        );
        assert_eq!(shebang("echo hi\n"), None);
        assert_eq!(shebang("#!\n"), None);
    }

    fn facts_of(script: &str) -> Facts {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SCRIPT), script).unwrap();
        analyze(&Tree {
            src: dir.path(),
            prefix: "",
        })
        .unwrap()
    }

    #[test]
    fn the_interpreter_and_its_package() {
        let bash = facts_of("#!/usr/bin/env bash\necho hi\n");
        assert_eq!(bash.get("interpreter").as_deref(), Some("/usr/bin/env"));
        assert_eq!(bash.get("interpreter_arg").as_deref(), Some("bash"));
        assert_eq!(bash.get("interpreter_package").as_deref(), Some("bash"));
        assert!(
            bash.notes[0].contains("Debian package `bash` joins Kiln's stack"),
            "{:?}",
            bash.notes
        );
        let zsh = facts_of("#!/usr/bin/zsh\n");
        assert_eq!(zsh.get("interpreter_package").as_deref(), Some("zsh"));
        assert_eq!(zsh.get("interpreter_arg"), None);
        let sh = facts_of("#!/bin/sh -e\n");
        assert_eq!(sh.get("interpreter_package").as_deref(), Some("dash"));
        assert!(sh.notes.is_empty());
        let none = facts_of("echo hi\n");
        assert_eq!(none.get("interpreter"), None);
    }
}
