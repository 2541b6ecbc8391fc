//! C and C++ projects built with CMake or Meson: which build system, and the one executable the
//! project installs (the start command). CMake: an `add_executable(NAME …)` whose `NAME` is also
//! in an `install(TARGETS …)`; Meson: an `executable('NAME', …, install : true)`. The root build
//! file is read, and the directories it adds (`add_subdirectory(src)`, `subdir('src')`) with
//! literal names, a bounded number of files deep; the tree is never walked.

use std::collections::BTreeMap;

use super::{Facts, Tree};
use crate::error::Result;

const CMAKE: &str = "CMakeLists.txt";
const MESON: &str = "meson.build";
/// The install prefix in the image: the `cpp` buildpack's `app` launch layer.
const PREFIX: &str = "/layers/cpp/app";

/// How many build files (the root's included) are read at most, and how deep subdirectories go.
const MAX_FILES: usize = 32;
const MAX_DEPTH: usize = 4;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let (system, found) = if tree.is_file(CMAKE) {
        if tree.is_file(MESON) {
            facts.notes.push(format!(
                "both {CMAKE} and {MESON} found: building with CMake"
            ));
        }
        ("cmake", cmake(tree)?)
    } else if tree.is_file(MESON) {
        ("meson", meson(tree)?)
    } else {
        return Ok(facts);
    };
    facts.set("build_system", system);
    facts.notes.extend(found.notes);
    let file = if system == "cmake" { CMAKE } else { MESON };
    match found.installed.as_slice() {
        [one] => {
            facts.set("bin", one.name.clone());
            facts.set("bin_dir", one.dir.clone());
        }
        [] => facts.notes.push(format!(
            "no installed executable found ({}); set the start command under [processes] in \
             kiln.toml",
            if system == "cmake" {
                "looked for add_executable(NAME …) with NAME in install(TARGETS …)"
            } else {
                "looked for executable('NAME', …, install : true)"
            }
        )),
        several => facts.notes.push(format!(
            "several installed executables in {file} and the directories it adds ({}): choose \
             one with `web = \"…\"` under [processes] in kiln.toml",
            several
                .iter()
                .map(|e| format!("{PREFIX}/{}/{}", e.dir, e.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    Ok(facts)
}

/// An executable the project installs: its name and the directory below the install prefix.
#[derive(Debug, PartialEq, Eq)]
struct Installed {
    name: String,
    dir: String,
}

#[derive(Default)]
struct Found {
    installed: Vec<Installed>,
    notes: Vec<String>,
}

/// A command call in a build file: its name, its argument text and the 1-based line it starts on.
struct Call<'a> {
    name: &'a str,
    args: &'a str,
    line: usize,
}

/// The `name(args)` calls of a CMake (`cmake`) or Meson file, comments and strings respected;
/// an unclosed call is an error naming the file and line.
fn calls<'a>(tree: &Tree, file: &str, text: &'a str, cmake: bool) -> Result<Vec<Call<'a>>> {
    let bytes = text.as_bytes();
    let mut calls = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c == b'#' {
            i = skip_comment(bytes, i, cmake, &mut line);
        } else if c == b'"' || (!cmake && c == b'\'') {
            i = skip_string(bytes, i, &mut line);
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            // A method call (`meson.project_name()`) or a name inside an expression is a word.
            let is_method = start > 0 && bytes[start - 1] == b'.';
            let name = &text[start..i];
            let mut j = i;
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            if is_method || bytes.get(j) != Some(&b'(') {
                continue;
            }
            let call_line = line;
            let open = j + 1;
            let mut depth = 1;
            let mut k = open;
            while k < bytes.len() && depth > 0 {
                match bytes[k] {
                    b'\n' => {
                        line += 1;
                        k += 1;
                    }
                    b'#' => k = skip_comment(bytes, k, cmake, &mut line),
                    b'"' => k = skip_string(bytes, k, &mut line),
                    b'\'' if !cmake => k = skip_string(bytes, k, &mut line),
                    b'(' => {
                        depth += 1;
                        k += 1;
                    }
                    b')' => {
                        depth -= 1;
                        k += 1;
                    }
                    _ => k += 1,
                }
            }
            if depth > 0 {
                return Err(tree.malformed(
                    file,
                    Some((call_line, 1)),
                    format!("`{name}(` is never closed by `)`"),
                ));
            }
            calls.push(Call {
                name,
                args: &text[open..k - 1],
                line: call_line,
            });
            // CMake calls do not nest; Meson's do (`executable(…, files(…))`), and only the
            // outer one matters here.
            i = k;
        } else {
            i += 1;
        }
    }
    Ok(calls)
}

/// Past a comment starting at `i` (`#` to the end of the line; CMake's `#[[ … ]]` bracket
/// comments to their closing bracket).
fn skip_comment(bytes: &[u8], i: usize, cmake: bool, line: &mut usize) -> usize {
    if cmake {
        let rest = &bytes[i + 1..];
        let equals = rest.iter().skip(1).take_while(|&&b| b == b'=').count();
        if rest.first() == Some(&b'[') && rest.get(1 + equals) == Some(&b'[') {
            let close: Vec<u8> = [b"]".as_slice(), &vec![b'='; equals], b"]"].concat();
            let body = i + 3 + equals;
            if let Some(end) = bytes[body.min(bytes.len())..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
            {
                *line += bytes[body..body + end]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                return body + end + close.len();
            }
        }
    }
    bytes[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |n| i + n)
}

/// Past a quoted string starting at `i` (backslash escapes; Meson's `'''` strings too).
fn skip_string(bytes: &[u8], i: usize, line: &mut usize) -> usize {
    let quote = bytes[i];
    if quote == b'\'' && bytes[i..].starts_with(b"'''") {
        let end = bytes[i + 3..]
            .windows(3)
            .position(|w| w == b"'''")
            .map_or(bytes.len(), |n| i + 3 + n + 3);
        *line += bytes[i..end].iter().filter(|&&b| b == b'\n').count();
        return end;
    }
    let mut k = i + 1;
    while k < bytes.len() && bytes[k] != quote {
        if bytes[k] == b'\n' {
            *line += 1;
        }
        k += if bytes[k] == b'\\' { 2 } else { 1 };
    }
    (k + 1).min(bytes.len())
}

/// CMake's argument words: whitespace-separated, `"quoted"` as one word without its quotes.
fn cmake_words(args: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = args.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            // A line comment inside the call.
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => word.extend(chars.next()),
                    c => word.push(c),
                }
            }
            words.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word);
        }
    }
    words
}

/// `${NAME}` references replaced from `vars`; `None` when one is unknown.
fn expand(word: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}')?;
        out.push_str(vars.get(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The keywords that end the target list of `install(TARGETS …)`.
const INSTALL_KEYWORDS: &[&str] = &[
    "EXPORT",
    "RUNTIME_DEPENDENCIES",
    "RUNTIME_DEPENDENCY_SET",
    "ARCHIVE",
    "LIBRARY",
    "RUNTIME",
    "OBJECTS",
    "FRAMEWORK",
    "BUNDLE",
    "PRIVATE_HEADER",
    "PUBLIC_HEADER",
    "RESOURCE",
    "FILE_SET",
    "CXX_MODULES_BMI",
    "DESTINATION",
    "PERMISSIONS",
    "CONFIGURATIONS",
    "COMPONENT",
    "NAMELINK_COMPONENT",
    "OPTIONAL",
    "EXCLUDE_FROM_ALL",
    "NAMELINK_ONLY",
    "NAMELINK_SKIP",
    "INCLUDES",
];

/// Where `install(TARGETS …)` puts executables: `RUNTIME DESTINATION d`, else a plain
/// `DESTINATION d` (before any artifact keyword), else `bin` (CMake's default
/// `CMAKE_INSTALL_BINDIR`). Only relative destinations are kept.
fn runtime_destination(words: &[String], vars: &BTreeMap<String, String>) -> String {
    let mut kind: Option<&str> = None;
    let mut chosen = None;
    for (i, word) in words.iter().enumerate() {
        match word.as_str() {
            "ARCHIVE" | "LIBRARY" | "RUNTIME" | "OBJECTS" | "FRAMEWORK" | "BUNDLE"
            | "PRIVATE_HEADER" | "PUBLIC_HEADER" | "RESOURCE" | "FILE_SET" => kind = Some(word),
            "DESTINATION" if matches!(kind, None | Some("RUNTIME")) => {
                if let Some(dest) = words.get(i + 1).and_then(|d| expand(d, vars)) {
                    if kind == Some("RUNTIME") || chosen.is_none() {
                        chosen = Some(dest);
                    }
                }
            }
            _ => {}
        }
    }
    chosen
        .map(|d| d.trim_end_matches('/').to_owned())
        .filter(|d| !d.is_empty() && !d.starts_with('/') && !d.split('/').any(|s| s == ".."))
        .unwrap_or_else(|| "bin".to_owned())
}

/// CMake: executables (`add_executable`, not `IMPORTED`/`ALIAS`) and installed targets across
/// the root `CMakeLists.txt` and its literal `add_subdirectory` directories.
fn cmake(tree: &Tree) -> Result<Found> {
    let mut found = Found::default();
    let mut vars = BTreeMap::from([
        ("CMAKE_INSTALL_BINDIR".to_owned(), "bin".to_owned()),
        ("CMAKE_INSTALL_SBINDIR".to_owned(), "sbin".to_owned()),
    ]);
    let mut executables: Vec<String> = Vec::new();
    let mut installed: Vec<(String, String)> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut queue = vec![(String::new(), 0)];
    let mut read = 0;
    while let Some((dir, depth)) = queue.pop() {
        let file = format!("{dir}{CMAKE}");
        let Some(text) = tree.text(&file)? else {
            continue;
        };
        read += 1;
        let mut subdirs = Vec::new();
        for call in calls(tree, &file, &text, true)? {
            let words = cmake_words(call.args);
            let Some(first) = words.first() else { continue };
            match call.name.to_ascii_lowercase().as_str() {
                "project" if depth == 0 => {
                    if let Some(name) = expand(first, &vars) {
                        vars.insert("PROJECT_NAME".into(), name.clone());
                        vars.insert("CMAKE_PROJECT_NAME".into(), name);
                    }
                }
                "project" => {
                    if let Some(name) = expand(first, &vars) {
                        vars.insert("PROJECT_NAME".into(), name);
                    }
                }
                // Only plain `set(NAME value)`: the value a later `${NAME}` most likely has.
                "set" if words.len() == 2 => {
                    if let Some(value) = expand(&words[1], &vars) {
                        vars.insert(first.clone(), value);
                    }
                }
                "add_executable" => {
                    if words
                        .iter()
                        .skip(1)
                        .any(|w| w == "IMPORTED" || w == "ALIAS")
                    {
                        continue;
                    }
                    match expand(first, &vars) {
                        Some(name) => executables.push(name),
                        None => {
                            unknown.push(format!("{file}:{}: add_executable({first} …)", call.line))
                        }
                    }
                }
                "install" if first == "TARGETS" => {
                    let dest = runtime_destination(&words, &vars);
                    for word in words[1..]
                        .iter()
                        .take_while(|w| !INSTALL_KEYWORDS.contains(&w.as_str()))
                    {
                        match expand(word, &vars) {
                            Some(name) => installed.push((name, dest.clone())),
                            None => unknown
                                .push(format!("{file}:{}: install(TARGETS {word} …)", call.line)),
                        }
                    }
                }
                "add_subdirectory" => {
                    if let Some(sub) = expand(first, &vars).and_then(|s| relative_dir(&s)) {
                        subdirs.push(sub);
                    }
                }
                _ => {}
            }
        }
        // Depth-first, in the order the file adds them.
        for sub in subdirs.into_iter().rev() {
            if depth < MAX_DEPTH {
                queue.push((format!("{dir}{sub}/"), depth + 1));
            }
        }
        if read >= MAX_FILES {
            found.notes.push(format!(
                "read the first {MAX_FILES} CMakeLists.txt files only"
            ));
            break;
        }
    }
    for name in executables {
        if let Some((_, dir)) = installed.iter().find(|(n, _)| *n == name) {
            if !found.installed.iter().any(|e| e.name == name) {
                found.installed.push(Installed {
                    name,
                    dir: dir.clone(),
                });
            }
        }
    }
    if !unknown.is_empty() {
        found.notes.push(format!(
            "names Kiln cannot resolve (variables set in ways it does not follow): {}",
            unknown.join(", ")
        ));
    }
    Ok(found)
}

/// A subdirectory named in a build file, as a clean relative path (`src`, `apps/server`).
fn relative_dir(dir: &str) -> Option<String> {
    let dir = dir.trim_end_matches('/');
    let dir = dir.strip_prefix("./").unwrap_or(dir);
    let clean = !dir.is_empty()
        && !dir.starts_with('/')
        && dir
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    clean.then(|| dir.to_owned())
}

/// Meson's top-level arguments of a call: split at commas outside strings and brackets.
fn meson_args(args: &str) -> Vec<&str> {
    let bytes = args.as_bytes();
    let mut parts = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, 0, 0);
    let mut line = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => {
                i = skip_string(bytes, i, &mut line);
                continue;
            }
            b'#' => {
                i = skip_comment(bytes, i, false, &mut line);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                parts.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(args[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// A Meson string literal's value (`'name'`), else `None`.
fn meson_string(arg: &str) -> Option<String> {
    let inner = arg.strip_prefix('\'')?.strip_suffix('\'')?;
    (!inner.contains('\'')).then(|| inner.replace("\\\\", "\\"))
}

/// Meson: `executable(NAME, …, install : true)` across the root `meson.build` and its literal
/// `subdir('dir')` directories. `NAME` is a string, `meson.project_name()` or a variable
/// assigned a string.
fn meson(tree: &Tree) -> Result<Found> {
    let mut found = Found::default();
    let mut unknown = Vec::new();
    let mut project = None;
    let mut queue = vec![(String::new(), 0)];
    let mut read = 0;
    while let Some((dir, depth)) = queue.pop() {
        let file = format!("{dir}{MESON}");
        let Some(text) = tree.text(&file)? else {
            continue;
        };
        read += 1;
        let strings = meson_string_vars(&text);
        let mut subdirs = Vec::new();
        for call in calls(tree, &file, &text, false)? {
            let args = meson_args(call.args);
            let Some(first) = args.first() else { continue };
            match call.name {
                "project" if depth == 0 => project = meson_string(first),
                "subdir" => {
                    if let Some(sub) = meson_string(first).and_then(|s| relative_dir(&s)) {
                        subdirs.push(sub);
                    }
                }
                "executable" => {
                    let keyword = |key: &str| {
                        args.iter().find_map(|a| {
                            let (k, v) = a.split_once(':')?;
                            (k.trim() == key).then(|| v.trim())
                        })
                    };
                    if keyword("install") != Some("true") {
                        continue;
                    }
                    let name = if *first == "meson.project_name()" {
                        project.clone()
                    } else {
                        meson_string(first).or_else(|| strings.get(*first).cloned())
                    };
                    let dir = keyword("install_dir")
                        .and_then(meson_string)
                        .and_then(|d| relative_dir(&d))
                        .unwrap_or_else(|| "bin".to_owned());
                    match name {
                        Some(name) if !found.installed.iter().any(|e| e.name == name) => {
                            found.installed.push(Installed { name, dir });
                        }
                        Some(_) => {}
                        None => {
                            unknown.push(format!("{file}:{}: executable({first}, …)", call.line))
                        }
                    }
                }
                _ => {}
            }
        }
        for sub in subdirs.into_iter().rev() {
            if depth < MAX_DEPTH {
                queue.push((format!("{dir}{sub}/"), depth + 1));
            }
        }
        if read >= MAX_FILES {
            found
                .notes
                .push(format!("read the first {MAX_FILES} meson.build files only"));
            break;
        }
    }
    if !unknown.is_empty() {
        found.notes.push(format!(
            "executable names Kiln cannot resolve: {}",
            unknown.join(", ")
        ));
    }
    Ok(found)
}

/// `name = 'value'` assignments of a Meson file.
fn meson_string_vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once('=')?;
            let name = name.trim();
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let value = meson_string(value.split('#').next()?.trim())?;
            valid.then(|| (name.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of(files: &[(&str, &str)]) -> Result<Facts> {
        crate::analyze::analyze_files(analyze, files)
    }

    #[test]
    fn cmake_one_installed_executable() {
        let facts = facts_of(&[(
            CMAKE,
            "cmake_minimum_required(VERSION 3.16)\nproject(hello CXX)\n\
             # add_executable(commented main.cpp)\n\
             add_executable(${PROJECT_NAME} main.cpp)\n\
             add_executable(tool tool.cpp) # not installed\n\
             add_library(util util.cpp)\n\
             install(TARGETS ${PROJECT_NAME} util)\n",
        )])
        .unwrap();
        assert_eq!(facts.get("build_system").as_deref(), Some("cmake"));
        assert_eq!(facts.get("bin").as_deref(), Some("hello"));
        assert_eq!(facts.get("bin_dir").as_deref(), Some("bin"));
        assert!(facts.notes.is_empty(), "{:?}", facts.notes);
    }

    #[test]
    fn cmake_destination_and_subdirectories() {
        let facts = facts_of(&[
            (CMAKE, "project(x)\nadd_subdirectory(src)\n"),
            (
                "src/CMakeLists.txt",
                "ADD_EXECUTABLE(server\n  \"main.cpp\"\n)\n\
                 install(TARGETS server RUNTIME DESTINATION sbin LIBRARY DESTINATION lib)\n",
            ),
        ])
        .unwrap();
        assert_eq!(facts.get("bin").as_deref(), Some("server"));
        assert_eq!(facts.get("bin_dir").as_deref(), Some("sbin"));
    }

    #[test]
    fn cmake_several_and_none() {
        let several = facts_of(&[(
            CMAKE,
            "add_executable(a a.cpp)\nadd_executable(b b.cpp)\ninstall(TARGETS a b)\n",
        )])
        .unwrap();
        assert_eq!(several.get("bin"), None);
        assert_eq!(several.get("build_system").as_deref(), Some("cmake"));
        assert_eq!(
            several.notes,
            [
                "several installed executables in CMakeLists.txt and the directories it adds \
              (/layers/cpp/app/bin/a, /layers/cpp/app/bin/b): choose one with `web = \"…\"` \
              under [processes] in kiln.toml"
            ]
        );
        let none = facts_of(&[(
            CMAKE,
            "add_executable(a a.cpp)\n#[[ install(TARGETS a) ]]\n",
        )])
        .unwrap();
        assert_eq!(none.get("bin"), None);
        assert_eq!(
            none.notes,
            [
                "no installed executable found (looked for add_executable(NAME …) with NAME in \
              install(TARGETS …)); set the start command under [processes] in kiln.toml"
            ]
        );
    }

    #[test]
    fn cmake_unclosed_call_names_file_and_line() {
        let err = facts_of(&[(CMAKE, "project(x)\n\nadd_executable(a\n  a.cpp\n")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "CMakeLists.txt:3:1: `add_executable(` is never closed by `)`"
        );
    }

    #[test]
    fn meson_one_installed_executable() {
        let facts = facts_of(&[(
            MESON,
            "project('hello', 'cpp', default_options : ['cpp_std=c++17'])\n\
             # executable('old', 'old.cpp', install : true)\n\
             executable('test-helper', 'helper.cpp')\n\
             executable(meson.project_name(), files('main.cpp'),\n  install : true)\n",
        )])
        .unwrap();
        assert_eq!(facts.get("build_system").as_deref(), Some("meson"));
        assert_eq!(facts.get("bin").as_deref(), Some("hello"));
        assert_eq!(facts.get("bin_dir").as_deref(), Some("bin"));
        assert!(facts.notes.is_empty(), "{:?}", facts.notes);
    }

    #[test]
    fn meson_subdir_variables_several_and_none() {
        let several = facts_of(&[
            (MESON, "project('x', 'c')\nsubdir('src')\n"),
            (
                "src/meson.build",
                "name = 'server'\nexe = executable(name, 'main.c', install: true)\n\
                 executable('cli', 'cli.c', install : true, install_dir : 'libexec')\n",
            ),
        ])
        .unwrap();
        assert_eq!(several.get("bin"), None);
        assert!(
            several.notes[0].contains(
                "in meson.build and the directories it adds (/layers/cpp/app/bin/server, \
                 /layers/cpp/app/libexec/cli)"
            ),
            "{:?}",
            several.notes
        );
        let one = facts_of(&[(
            MESON,
            "project('x', 'c')\nexecutable('cli', 'cli.c', install : true, install_dir : 'libexec')\n",
        )])
        .unwrap();
        assert_eq!(one.get("bin").as_deref(), Some("cli"));
        assert_eq!(one.get("bin_dir").as_deref(), Some("libexec"));
        let none = facts_of(&[(MESON, "project('x', 'c')\nexecutable('a', 'a.c')\n")]).unwrap();
        assert_eq!(none.get("bin"), None);
        assert_eq!(none.get("build_system").as_deref(), Some("meson"));
        assert_eq!(
            none.notes,
            [
                "no installed executable found (looked for executable('NAME', …, install : \
              true)); set the start command under [processes] in kiln.toml"
            ]
        );
        let err = facts_of(&[(MESON, "project('x',\n  'c'\n")])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "meson.build:1:1: `project(` is never closed by `)`");
    }
}
