//! The check itself: from the image's entrypoint to every file the kernel and the dynamic
//! loader would open to start it, looked up in the image ([`ImageFs`]), never on the host.
//!
//! Files are examined breadth first: the start program and a shell line's first program, then
//! their interpreters and libraries, then those libraries' own, …

use std::collections::{HashMap, HashSet};

use kiln_oci::spec::ImageConfig;

use crate::elf::{self, ElfInfo};
use crate::error::{Error, Result};
use crate::image_fs::{split_last, ImageFs, Kind, LookupError};
use crate::shell;

/// Docker's `PATH` when an image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How many `#!` interpreters may stand in a row (Linux's `BINPRM_MAX_RECURSION`).
const MAX_INTERPRETER_DEPTH: usize = 4;
/// How many executables and libraries one check examines at most (a bound, not a limit real
/// programs reach: Node needs 7, a large Python extension set a few dozen).
const MAX_OBJECTS: usize = 512;
/// How many `ld.so.conf`-style files are followed through `include`.
const MAX_CONF_FILES: usize = 64;
/// Libraries musl's loader provides itself: never searched for.
const MUSL_BUILTIN: &[&str] = &["c", "pthread", "rt", "m", "dl", "util", "xnet"];
/// Libraries of glibc itself: all in Debian's `libc6`.
const GLIBC_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libanl.so.1",
    "libnsl.so.1",
];

/// Checks that `config`'s default process (entrypoint, then cmd) can start in `fs`: see the
/// crate documentation for what is checked.
pub fn verify(fs: &mut ImageFs, config: &ImageConfig) -> Result<()> {
    let runtime = &config.config;
    let argv: Vec<String> = runtime
        .entrypoint
        .iter()
        .flatten()
        .chain(runtime.cmd.iter().flatten())
        .cloned()
        .collect();
    let path = runtime.env_var("PATH").unwrap_or(DEFAULT_PATH);
    let mut checker = Checker {
        path: path.split(':').map(str::to_owned).collect(),
        ld_library_path: runtime
            .env_var("LD_LIBRARY_PATH")
            .map(|p| p.split(':').map(str::to_owned).collect())
            .unwrap_or_default(),
        cwd: runtime
            .working_dir
            .clone()
            .filter(|d| d.starts_with('/'))
            .unwrap_or_else(|| "/".to_owned()),
        architecture: config.architecture.clone(),
        machine: elf::machine_of(&config.architecture),
        fs,
        problems: Vec::new(),
        seen: HashSet::new(),
        loaded: HashMap::new(),
        missing: HashSet::new(),
        conf_dirs: None,
    };
    checker.run(&argv)?;
    if checker.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::WontStart {
            command: format!("{argv:?}"),
            problems: checker.problems,
        })
    }
}

/// A file to examine in the next round.
enum Item {
    /// The canonical path `path` is executed (`depth` interpreters deep).
    Exec { path: String, depth: usize },
    /// The shared library at canonical `path`, found as `found_at` (its `$ORIGIN` is that
    /// directory), loaded by an object whose RPATH chain is `loader_rpath`.
    Library {
        path: String,
        found_at: String,
        loader_rpath: Vec<String>,
    },
}

impl Item {
    fn path(&self) -> &str {
        match self {
            Item::Exec { path, .. } | Item::Library { path, .. } => path,
        }
    }
}

struct Checker<'a> {
    fs: &'a mut ImageFs,
    /// The image's `PATH`.
    path: Vec<String>,
    ld_library_path: Vec<String>,
    /// The working directory (absolute): where relative paths start.
    cwd: String,
    architecture: String,
    /// The ELF machine the image's architecture runs, when known.
    machine: Option<u16>,
    problems: Vec<String>,
    /// Canonical paths already examined (or queued).
    seen: HashSet<String>,
    /// Library names already found (the loader loads a name once), with where.
    loaded: HashMap<String, String>,
    /// Library names already reported missing.
    missing: HashSet<String>,
    /// Directories of the image's `/etc/ld.so.conf`, read when first needed.
    conf_dirs: Option<Vec<String>>,
}

impl Checker<'_> {
    fn run(&mut self, argv: &[String]) -> Result<()> {
        let Some(program) = argv.first() else {
            self.problems
                .push("the image has no entrypoint or cmd: there is nothing to start".to_owned());
            return Ok(());
        };
        let mut round = Vec::new();
        if let Some(path) =
            self.locate(program, &format!("the start command's program `{program}`"))
        {
            self.queue(&mut round, Item::Exec { path, depth: 0 });
        }
        if let Some(first) = shell::shell_line(argv).and_then(shell::first_program) {
            let what = format!("`{first}`, the first program of the start command's shell line,");
            if let Some(path) = self.locate(&first, &what) {
                self.queue(&mut round, Item::Exec { path, depth: 0 });
            }
        }
        while !round.is_empty() {
            let mut next = Vec::new();
            for item in round {
                self.examine(item, &mut next)?;
            }
            round = next;
        }
        Ok(())
    }

    fn queue(&mut self, round: &mut Vec<Item>, item: Item) {
        if self.seen.len() < MAX_OBJECTS && self.seen.insert(item.path().to_owned()) {
            round.push(item);
        }
    }

    fn examine(&mut self, item: Item, next: &mut Vec<Item>) -> Result<()> {
        let path = item.path().to_owned();
        let facts = self.fs.examine(&path)?;
        let elf = facts
            .elf
            .map(|e| e.map_err(|why| format!("{path} is not a valid ELF file: {why}")));
        match item {
            Item::Exec { path, depth } => match elf {
                Some(Ok(info)) => self.check_program(&path, &info, next)?,
                Some(Err(problem)) => self.problems.push(problem),
                None => match facts
                    .shebang
                    .as_deref()
                    .and_then(|l| shell::shebang(l.as_bytes()))
                {
                    Some(Ok(line)) => self.check_script(&path, line, depth, next),
                    Some(Err(why)) => self.problems.push(format!("{path}: {why}")),
                    None => self.problems.push(format!(
                        "{path} is neither an ELF executable nor a script starting with #!: \
                         the kernel cannot run it (exec format error)"
                    )),
                },
            },
            Item::Library {
                path,
                found_at,
                loader_rpath,
            } => match elf {
                Some(Ok(info)) => {
                    let origin = split_last(&found_at).0.to_owned();
                    self.check_needed(&path, &info, &origin, &loader_rpath, false, next)?;
                }
                Some(Err(problem)) => self.problems.push(problem),
                None => self.problems.push(format!(
                    "{path} (found as {found_at}) is not an ELF shared library"
                )),
            },
        }
        Ok(())
    }

    /// An ELF program: right machine, its interpreter there, its libraries found.
    fn check_program(&mut self, path: &str, info: &ElfInfo, next: &mut Vec<Item>) -> Result<()> {
        if let Some(want) = self.machine.filter(|m| *m != info.machine) {
            self.problems.push(format!(
                "{path} is an ELF program for {}, but the image is for {} ({}): the kernel \
                 cannot run it",
                elf::machine_name(info.machine),
                self.architecture,
                elf::machine_name(want)
            ));
            return Ok(());
        }
        let mut musl = false;
        if let Some(interpreter) = &info.interpreter {
            musl = interpreter.contains("ld-musl");
            if let Err(why) = self.executable_at(interpreter) {
                let (_, name) = split_last(interpreter);
                let hint = if self.fs.find_by_name(name).is_empty() {
                    " — the image has no dynamic loader of that name at all: link the program \
                     statically (Go with CGO_ENABLED=0, Rust with +crt-static) or use a run \
                     image that has its C library (--run-image)"
                } else {
                    ""
                };
                self.problems.push(format!(
                    "{interpreter}, the ELF interpreter (dynamic loader) of {path}: {why}{hint}"
                ));
            }
        }
        let origin = split_last(path).0.to_owned();
        self.check_needed(path, info, &origin, &[], musl, next)
    }

    /// A `#!` script: its interpreter there and executable (and for `env NAME`, NAME on PATH).
    fn check_script(
        &mut self,
        path: &str,
        line: shell::Shebang,
        depth: usize,
        next: &mut Vec<Item>,
    ) {
        if depth >= MAX_INTERPRETER_DEPTH {
            self.problems.push(format!(
                "{path}: more than {MAX_INTERPRETER_DEPTH} #! interpreters in a row"
            ));
            return;
        }
        let interpreter = &line.interpreter;
        match self.executable_at(interpreter) {
            Ok(found) => self.queue(
                next,
                Item::Exec {
                    path: found,
                    depth: depth + 1,
                },
            ),
            Err(why) => {
                let crlf = if interpreter.ends_with('\r') {
                    " (the #! line ends in a carriage return: the file has Windows line endings)"
                } else {
                    ""
                };
                self.problems.push(format!(
                    "{interpreter:?}, the #! interpreter of {path}: {why}{crlf}"
                ));
                return;
            }
        }
        if split_last(interpreter).1 != "env" {
            return;
        }
        let args: Vec<String> = line.argument.into_iter().collect();
        match shell::env_program(&args) {
            Some(program) => {
                let what = format!("`{program}`, which {path} runs through {interpreter},");
                if let Some(found) = self.locate(&program, &what) {
                    self.queue(
                        next,
                        Item::Exec {
                            path: found,
                            depth: depth + 1,
                        },
                    );
                }
            }
            None => self.problems.push(format!(
                "{path}: its #!{interpreter} line names no program for env to run"
            )),
        }
    }

    /// Finds each `DT_NEEDED` of the object at `path` as glibc's (or musl's) loader would.
    fn check_needed(
        &mut self,
        path: &str,
        info: &ElfInfo,
        origin: &str,
        loader_rpath: &[String],
        musl: bool,
        next: &mut Vec<Item>,
    ) -> Result<()> {
        if info.needed.is_empty() {
            return Ok(());
        }
        // DT_RPATH counts only without DT_RUNPATH, and is inherited by what this object loads.
        let mut rpath: Vec<String> = Vec::new();
        if info.runpath.is_none() {
            rpath.extend(info.rpath.iter().filter_map(|d| self.expand(d, origin)));
        }
        rpath.extend(loader_rpath.iter().cloned());
        let mut dirs: Vec<String> = Vec::new();
        if info.runpath.is_none() {
            dirs.extend(rpath.iter().cloned());
        }
        dirs.extend(
            self.ld_library_path
                .iter()
                .filter_map(|d| self.expand(d, origin)),
        );
        for dir in info.runpath.iter().flatten() {
            dirs.extend(self.expand(dir, origin));
        }
        dirs.extend(self.system_dirs(info.machine, musl)?);
        let mut unique = HashSet::new();
        dirs.retain(|d| unique.insert(d.clone()));
        for name in &info.needed {
            if musl && is_musl_builtin(name) {
                continue;
            }
            if self.loaded.contains_key(name) || self.missing.contains(name) {
                continue;
            }
            let candidates: Vec<String> = if name.contains('/') {
                vec![self.absolute(name)]
            } else {
                dirs.iter().map(|d| format!("{d}/{name}")).collect()
            };
            let found = candidates.into_iter().find_map(|at| {
                let canonical = self.fs.resolve(&at, true).ok()?;
                let is_file = matches!(
                    self.fs
                        .node(canonical.trim_start_matches('/'))
                        .map(|n| &n.kind),
                    Some(Kind::File(_))
                );
                is_file.then_some((canonical, at))
            });
            match found {
                Some((canonical, at)) => {
                    self.loaded.insert(name.clone(), canonical.clone());
                    let item = Item::Library {
                        path: canonical,
                        found_at: at,
                        loader_rpath: rpath.clone(),
                    };
                    self.queue(next, item);
                }
                None => {
                    self.missing.insert(name.clone());
                    let hint = self.library_hint(name);
                    self.problems.push(format!(
                        "{name} needed by {path}: not found in the image's library paths ({}){hint}",
                        dirs.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where the loader looks after RPATH, LD_LIBRARY_PATH and RUNPATH: musl's path file or
    /// defaults, or glibc's `ld.so.conf` directories then its built-in ones.
    fn system_dirs(&mut self, machine: u16, musl: bool) -> Result<Vec<String>> {
        if musl {
            let path_file = self
                .fs
                .children("/etc")
                .into_iter()
                .find(|n| n.starts_with("ld-musl-") && n.ends_with(".path"));
            if let Some(file) = path_file {
                if let Some(text) = self.read_small(&format!("/etc/{file}"))? {
                    return Ok(text
                        .split([':', '\n'])
                        .map(str::trim)
                        .filter(|d| d.starts_with('/'))
                        .map(str::to_owned)
                        .collect());
                }
            }
            return Ok(["/lib", "/usr/local/lib", "/usr/lib"]
                .map(String::from)
                .to_vec());
        }
        let mut dirs = self.conf_dirs()?;
        if let Some(triplet) = elf::triplet_of(machine) {
            dirs.push(format!("/lib/{triplet}"));
            dirs.push(format!("/usr/lib/{triplet}"));
        }
        dirs.extend(["/lib", "/usr/lib", "/lib64", "/usr/lib64"].map(String::from));
        Ok(dirs)
    }

    /// The directories `/etc/ld.so.conf` names, following `include`s (globs in the last
    /// component), read once.
    fn conf_dirs(&mut self) -> Result<Vec<String>> {
        if let Some(dirs) = &self.conf_dirs {
            return Ok(dirs.clone());
        }
        let mut dirs = Vec::new();
        let mut files = 0;
        self.read_conf("/etc/ld.so.conf", &mut dirs, &mut files)?;
        self.conf_dirs = Some(dirs.clone());
        Ok(dirs)
    }

    fn read_conf(&mut self, file: &str, dirs: &mut Vec<String>, files: &mut usize) -> Result<()> {
        *files += 1;
        if *files > MAX_CONF_FILES {
            return Ok(());
        }
        let Some(text) = self.read_small(file)? else {
            return Ok(());
        };
        let here = split_last(file).0.to_owned();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(pattern) = line
                .strip_prefix("include")
                .filter(|p| p.starts_with([' ', '\t']))
            {
                for pattern in pattern.split_whitespace() {
                    let pattern = if pattern.starts_with('/') {
                        pattern.to_owned()
                    } else {
                        format!("{here}/{pattern}")
                    };
                    for included in self.glob(&pattern) {
                        self.read_conf(&included, dirs, files)?;
                    }
                }
            } else if !line.is_empty() && !line.starts_with("hwcap") {
                // `DIR`, `DIR=TYPE` (old ldconfig), several per line.
                for dir in line.split([':', ',', ' ', '\t']) {
                    let dir = dir.split('=').next().unwrap_or("");
                    if dir.starts_with('/') {
                        dirs.push(dir.trim_end_matches('/').to_owned());
                    }
                }
            }
        }
        Ok(())
    }

    /// The files matching `pattern` (a glob in its last component only), sorted, as ldconfig
    /// reads them.
    fn glob(&self, pattern: &str) -> Vec<String> {
        let (dir, name) = split_last(pattern);
        let Ok(dir) = self.fs.resolve(dir, true) else {
            return Vec::new();
        };
        let Ok(matcher) = globset::Glob::new(name).map(|g| g.compile_matcher()) else {
            return Vec::new();
        };
        let mut found: Vec<String> = self
            .fs
            .children(&dir)
            .into_iter()
            .filter(|n| matcher.is_match(n))
            .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
            .collect();
        found.sort();
        found
    }

    /// The text of a small configuration file of the image; `None` when there is none.
    fn read_small(&mut self, path: &str) -> Result<Option<String>> {
        let Ok(canonical) = self.fs.resolve(path, true) else {
            return Ok(None);
        };
        if !matches!(
            self.fs
                .node(canonical.trim_start_matches('/'))
                .map(|n| &n.kind),
            Some(Kind::File(_))
        ) {
            return Ok(None);
        }
        Ok(self.fs.examine(&canonical)?.text)
    }

    /// `$ORIGIN` expanded, relative entries made absolute (the loader takes them relative to the
    /// working directory); `None` for an entry with another `$` token (not followed).
    fn expand(&self, dir: &str, origin: &str) -> Option<String> {
        let dir = dir.replace("${ORIGIN}", origin).replace("$ORIGIN", origin);
        if dir.contains('$') {
            return None;
        }
        let dir = if dir.is_empty() { ".".to_owned() } else { dir };
        Some(self.absolute(&dir).trim_end_matches('/').to_owned())
    }

    /// Finds a program as the runtime (`argv[0]`) or a shell does: a name with a `/` from the
    /// working directory, another on the image's `PATH`. Reports a problem and gives `None` when
    /// it is not there or not executable. `what` names it in the problem.
    fn locate(&mut self, name: &str, what: &str) -> Option<String> {
        if name.contains('/') {
            return match self.executable_at(name) {
                Ok(found) => Some(found),
                Err(why) => {
                    self.problems.push(format!("{what}: {why}"));
                    None
                }
            };
        }
        let mut not_executable = None;
        for dir in &self.path {
            let dir = if dir.is_empty() { "." } else { dir };
            let candidate = self.absolute(&format!("{dir}/{name}"));
            let Ok(canonical) = self.fs.resolve(&candidate, true) else {
                continue;
            };
            match self.fs.node(canonical.trim_start_matches('/')) {
                Some(node) if matches!(node.kind, Kind::File(_)) && node.mode & 0o111 != 0 => {
                    return Some(canonical)
                }
                Some(node) if matches!(node.kind, Kind::File(_)) => {
                    not_executable.get_or_insert((candidate, node.mode));
                }
                _ => {}
            }
        }
        let problem = match not_executable {
            Some((candidate, mode)) => {
                format!("{what}: {candidate} is not executable (mode {mode:04o})")
            }
            None => format!(
                "{what} is not on the image's PATH ({}){}",
                self.path.join(":"),
                self.program_hint(name)
            ),
        };
        self.problems.push(problem);
        None
    }

    /// The canonical path of the executable file at `path` (absolute or from the working
    /// directory), or why it cannot be executed.
    fn executable_at(&self, path: &str) -> Result<String, String> {
        let absolute = self.absolute(path);
        let canonical = self.fs.resolve(&absolute, true).map_err(|e| match e {
            LookupError::Missing { path: missing } if missing == absolute => {
                format!("{absolute} does not exist in the image")
            }
            other => format!("{absolute} does not exist in the image ({other})"),
        })?;
        let shown = if canonical == absolute {
            absolute.clone()
        } else {
            format!("{absolute} (→ {canonical})")
        };
        match self.fs.node(canonical.trim_start_matches('/')) {
            Some(node) => match node.kind {
                Kind::File(_) if node.mode & 0o111 != 0 => Ok(canonical),
                Kind::File(_) => Err(format!(
                    "{shown} is not executable (mode {:04o})",
                    node.mode
                )),
                Kind::Dir => Err(format!("{shown} is a directory")),
                _ => Err(format!("{shown} is not a regular file")),
            },
            None => Err(format!("{shown} is a directory")), // the root
        }
    }

    /// `path` made absolute against the working directory.
    fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_owned()
        } else {
            let path = path.strip_prefix("./").unwrap_or(path);
            format!("{}/{path}", self.cwd.trim_end_matches('/'))
        }
    }

    /// Where in the image a program that is not on `PATH` is (if anywhere), and what to do.
    fn program_hint(&self, name: &str) -> String {
        let elsewhere = self.elsewhere(name, true);
        if elsewhere.is_empty() {
            " — it must come from the run image (--run-image) or a layer of the build".to_owned()
        } else {
            format!(" — the image has {elsewhere}, which is not on PATH")
        }
    }

    /// Where in the image a library that is not in the search path is (if anywhere), and what
    /// to do.
    fn library_hint(&self, name: &str) -> String {
        let elsewhere = self.elsewhere(name, false);
        if !elsewhere.is_empty() {
            return format!(
                " — the image has {elsewhere}: add that directory to LD_LIBRARY_PATH or the \
                 program's RUNPATH"
            );
        }
        let package = if GLIBC_LIBS.contains(&name) || name.starts_with("ld-linux") {
            "it is part of glibc, Debian package \"libc6\"".to_owned()
        } else {
            match debian_package_guess(name) {
                Some(guess) => format!("by Debian's naming rule probably \"{guess}\""),
                None => "see which package ships it".to_owned(),
            }
        };
        format!(
            " — add the Debian package that provides it to the run image with kiln.toml \
             [packages] run = [\"…\"] ({package}), or use a --run-image that has it"
        )
    }

    /// Up to three places in the image with a file named `name` (executable ones when
    /// `executable`), with the layer of each: "/a/b (from layer x), …".
    fn elsewhere(&self, name: &str, executable: bool) -> String {
        self.fs
            .find_by_name(name)
            .into_iter()
            .filter(|(path, _)| {
                let Ok(canonical) = self.fs.resolve(path, true) else {
                    return false;
                };
                matches!(
                    self.fs.node(canonical.trim_start_matches('/')),
                    Some(n) if matches!(n.kind, Kind::File(_)) && (!executable || n.mode & 0o111 != 0)
                )
            })
            .take(3)
            .map(|(path, node)| format!("{path} (from {})", self.fs.layer_name(node.layer)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `libc.so`, `libpthread.so.0`, …: what musl's loader is itself.
fn is_musl_builtin(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("lib") else {
        return name.starts_with("ld-musl");
    };
    MUSL_BUILTIN
        .iter()
        .any(|lib| rest.strip_prefix(lib).is_some_and(|r| r.starts_with('.')))
}

/// Debian Policy §8.1's package name for a shared library: `libpq.so.5` → `libpq5`,
/// `libfoo2.so.3` → `libfoo2-3`, `libgcc_s.so.1` → `libgcc-s1`. Only a guess: some packages
/// are named otherwise (`zlib1g`).
fn debian_package_guess(soname: &str) -> Option<String> {
    let (stem, version) = soname.split_once(".so.")?;
    let stem = stem.to_ascii_lowercase().replace('_', "-");
    let version = version.replace('.', "-"); // rare: several numbers
    if stem.ends_with(|c: char| c.is_ascii_digit()) {
        Some(format!("{stem}-{version}"))
    } else {
        Some(format!("{stem}{version}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_names_follow_policy() {
        assert_eq!(
            debian_package_guess("libpq.so.5").as_deref(),
            Some("libpq5")
        );
        assert_eq!(
            debian_package_guess("libgcc_s.so.1").as_deref(),
            Some("libgcc-s1")
        );
        assert_eq!(
            debian_package_guess("libfoo2.so.3").as_deref(),
            Some("libfoo2-3")
        );
        assert_eq!(debian_package_guess("libfoo.so"), None);
    }

    #[test]
    fn musl_provides_its_own_libc() {
        assert!(
            is_musl_builtin("libc.musl-x86_64.so.1"),
            "libc.musl-…: the loader itself"
        );
        assert!(is_musl_builtin("libc.so"));
        assert!(is_musl_builtin("libpthread.so.0"));
        assert!(!is_musl_builtin("libcrypto.so.3"));
        assert!(!is_musl_builtin("libmagic.so.1"));
    }
}
