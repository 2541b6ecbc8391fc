//! Reading what a script or a shell command line will run, without running anything: a `#!`
//! line as the kernel splits it, `env`'s arguments, and the first program of a `sh -c` line
//! (best effort: only a plain word, never one the shell would expand).

/// How many bytes of a `#!` line the kernel reads (`BINPRM_BUF_SIZE`).
pub(crate) const SHEBANG_MAX: usize = 256;

/// A `#!` line: the interpreter and its one optional argument (Linux passes everything after
/// the interpreter as one argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shebang {
    pub interpreter: String,
    pub argument: Option<String>,
}

/// The `#!` line at the start of `head`, if any. `Err` when it names no interpreter.
pub(crate) fn shebang(head: &[u8]) -> Option<Result<Shebang, String>> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let line = String::from_utf8_lossy(line);
    let line = line.trim_start_matches([' ', '\t']);
    let (interpreter, argument) = match line.find([' ', '\t']) {
        Some(at) => (&line[..at], line[at..].trim_matches([' ', '\t'])),
        None => (line, ""),
    };
    if interpreter.is_empty() {
        return Some(Err("its #! line names no interpreter".to_owned()));
    }
    Some(Ok(Shebang {
        interpreter: interpreter.to_owned(),
        argument: (!argument.is_empty()).then(|| argument.to_owned()),
    }))
}

/// The program `env` runs given `args` (its arguments before the script): options and
/// `NAME=VALUE` assignments skipped, `-S` splitting its argument as `env` does.
pub(crate) fn env_program(args: &[String]) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    for arg in args {
        match arg
            .strip_prefix("-S")
            .or_else(|| arg.strip_prefix("--split-string="))
        {
            Some(split) => words.extend(split.split_whitespace().map(str::to_owned)),
            None => words.push(arg.clone()),
        }
    }
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "-u" | "--unset" | "-C" | "--chdir" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w if is_assignment(w) => {}
            _ => return Some(word),
        }
    }
    None
}

/// Whether `argv` is a shell running a command line (`sh -c LINE`, as Kiln wraps start commands
/// that need a shell): the line, if so.
pub(crate) fn shell_line(argv: &[String]) -> Option<&str> {
    let shell = argv.first()?.rsplit('/').next()?;
    let is_shell = matches!(
        shell,
        "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh" | "mksh"
    );
    match argv {
        [_, flag, line, ..] if is_shell && flag == "-c" => Some(line),
        _ => None,
    }
}

/// Words after which the shell runs the rest of the command itself.
const PREFIXES: &[&str] = &["exec"];
/// Builtins that cannot change where the next command is found: the next command is looked at.
const BUILTINS: &[&str] = &[
    ":", "true", "false", "echo", "printf", "export", "unset", "readonly", "umask", "ulimit",
    "trap", "wait", "shift", "read", "test", "[", "set", "local", "type", "hash", "alias",
    "unalias", "getopts", "times", "command", "jobs", "kill", "return", "break", "continue",
];
/// Words after which nothing can be told: they change the directory or the commands, or start
/// a compound command.
const STOPPERS: &[&str] = &[
    "cd", "pushd", "popd", ".", "source", "eval", "if", "then", "else", "elif", "fi", "for",
    "while", "until", "do", "done", "case", "esac", "in", "function", "select", "!", "{", "}",
    "[[", "]]", "time", "coproc",
];

/// The first program a shell command line runs, when it is a plain word: leading assignments,
/// `exec` and builtins that leave command lookup alone are skipped. `None` when it cannot be
/// told without a shell (expansions, quotes, `cd`, a compound command, `PATH` set in the line).
pub(crate) fn first_program(line: &str) -> Option<String> {
    for command in simple_commands(line) {
        let mut words = command.iter().map(String::as_str).peekable();
        while let Some(word) = words.next_if(|w| is_assignment(w)) {
            if word.starts_with("PATH=") {
                return None;
            }
        }
        while words.next_if(|w| PREFIXES.contains(w)).is_some() {}
        let Some(word) = words.next() else {
            continue; // only assignments: they last for the rest of the line
        };
        if STOPPERS.contains(&word) || !is_plain(word) {
            return None;
        }
        if BUILTINS.contains(&word) {
            if words.any(|w| w.starts_with("PATH=")) {
                return None; // `export PATH=…`: the next command is found elsewhere
            }
            continue;
        }
        return Some(word.to_owned());
    }
    None
}

/// The line split into simple commands (at `;`, `&&`, `||`, `|`, `&` and newlines, up to a
/// comment), each a list of whitespace-separated words. Quoting is not followed: a quoted word
/// is not plain, and [`first_program`] stops at it.
fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word = String::new();
    let end_word = |word: &mut String, commands: &mut Vec<Vec<String>>| {
        if !word.is_empty() {
            commands
                .last_mut()
                .expect("never empty")
                .push(std::mem::take(word));
        }
    };
    for c in line.chars() {
        match c {
            ' ' | '\t' => end_word(&mut word, &mut commands),
            ';' | '&' | '|' | '\n' => {
                end_word(&mut word, &mut commands);
                if !commands.last().expect("never empty").is_empty() {
                    commands.push(Vec::new());
                }
            }
            '#' if word.is_empty() => break,
            _ => word.push(c),
        }
    }
    end_word(&mut word, &mut commands);
    commands
}

/// A word the shell takes literally: no expansion, quoting, redirection or glob.
fn is_plain(word: &str) -> bool {
    !word.is_empty()
        && !word.contains([
            '$', '`', '\'', '"', '\\', '(', ')', '<', '>', '*', '?', '[', ']', '{', '}', '~', '=',
        ])
}

/// `NAME=VALUE` with a valid shell variable name.
fn is_assignment(word: &str) -> bool {
    let Some((name, _)) = word.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(interpreter: &str, argument: Option<&str>) -> Option<Result<Shebang, String>> {
        Some(Ok(Shebang {
            interpreter: interpreter.into(),
            argument: argument.map(str::to_owned),
        }))
    }

    #[test]
    fn shebang_lines_split_as_the_kernel_does() {
        assert_eq!(shebang(b"#!/bin/sh\necho"), sb("/bin/sh", None));
        assert_eq!(
            shebang(b"#! /usr/bin/env  node --x \n"),
            sb("/usr/bin/env", Some("node --x"))
        );
        assert_eq!(shebang(b"#!/bin/bash\r\n"), sb("/bin/bash\r", None));
        assert_eq!(shebang(b"\x7fELF"), None);
        assert!(matches!(shebang(b"#!   \n"), Some(Err(_))));
    }

    #[test]
    fn env_finds_its_program() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(env_program(&args(&["node"])), Some("node".into()));
        assert_eq!(
            env_program(&args(&["-S node --harmony"])),
            Some("node".into())
        );
        assert_eq!(
            env_program(&args(&["-i", "A=1", "python3"])),
            Some("python3".into())
        );
        assert_eq!(
            env_program(&args(&["-u", "X", "ruby"])),
            Some("ruby".into())
        );
        assert_eq!(env_program(&args(&[])), None);
    }

    #[test]
    fn shell_lines_are_recognized() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(shell_line(&argv(&["/bin/sh", "-c", "x y"])), Some("x y"));
        assert_eq!(shell_line(&argv(&["bash", "-c", "x"])), Some("x"));
        assert_eq!(shell_line(&argv(&["/bin/sh", "script.sh"])), None);
        assert_eq!(shell_line(&argv(&["/usr/bin/node", "-c", "x"])), None);
    }

    #[test]
    fn first_program_of_a_line() {
        let cases = [
            ("./server --port $PORT", Some("./server")),
            ("exec ./server", Some("./server")),
            ("PORT=80 RUST_LOG=info exec bin/app", Some("bin/app")),
            ("export A=1; B=2 node server.js", Some("node")),
            ("echo starting && exec gunicorn app:app", Some("gunicorn")),
            ("true;missing-program", Some("missing-program")),
            ("cd app && ./server", None),
            ("$HOME/bin/app", None),
            ("\"quoted\" arg", None),
            ("PATH=node_modules/.bin:$PATH next start", None),
            ("export PATH=/opt/bin:$PATH; next start", None),
            ("if true; then x; fi", None),
            ("f() { x; }; f", None),
            ("# only a comment", None),
        ];
        for (line, want) in cases {
            assert_eq!(first_program(line).as_deref(), want, "{line}");
        }
    }
}
