//! `--env-file FILE`: build-time variables for the steps, one `KEY=VALUE` a line, with the
//! same meaning as `--env` (they never reach the image). Docker's `--env-file` format: blank
//! lines and lines starting with `#` are skipped, the value is everything after the first `=`
//! taken literally (no quotes removed, no `$` expanded), and a bare `KEY` takes the caller's
//! value — an error when it is unset, as for `--env KEY`, so a missing secret fails loudly.
//! Errors name the file and line.

use std::path::Path;

use crate::error::{Error, Result};

/// Files larger than this are not env files.
const MAX_SIZE: u64 = 1 << 20;

/// The variables of `path`, in file order (a later line for the same key wins when they are
/// inserted in order). `lookup` gives the caller's value of a bare `KEY`
/// (`|k| std::env::var(k).ok()`).
pub fn read(path: &Path, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>> {
    let meta = std::fs::metadata(path).map_err(|e| options(path, None, e.to_string()))?;
    if !meta.is_file() {
        return Err(options(path, None, "not a regular file".into()));
    }
    if meta.len() > MAX_SIZE {
        return Err(options(
            path,
            None,
            format!("{} bytes: larger than {MAX_SIZE}", meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| options(path, None, e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        options(path, Some(line), "not valid UTF-8".into())
    })?;
    parse(&text, path, lookup)
}

/// [`read`] of text already in memory (`path` only names it in errors).
pub fn parse(
    text: &str,
    path: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = match trimmed.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (trimmed.trim_end(), None),
        };
        kiln_buildpack::check_env_name(key)
            .map_err(|why| options(path, Some(line_no), format!("variable name {key:?} {why}")))?;
        let value = match value {
            Some(value) => value.to_owned(),
            None => lookup(key).ok_or_else(|| {
                options(
                    path,
                    Some(line_no),
                    format!("{key}: not set in the environment"),
                )
            })?,
        };
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

fn options(path: &Path, line: Option<usize>, why: String) -> Error {
    match line {
        Some(line) => Error::Options(format!("--env-file {}:{line}: {why}", path.display())),
        None => Error::Options(format!("--env-file {}: {why}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(key: &str) -> Option<String> {
        (key == "FROM_CALLER").then(|| "caller's".to_owned())
    }

    #[test]
    fn docker_env_file_lines() {
        let text = "# comment\n\nA=1\r\n  B=x y\nC=\"quoted\" stays\nD=a=b\nE=\nFROM_CALLER\nA=2\n";
        let vars = parse(text, Path::new("build.env"), lookup).unwrap();
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("A", "1"),
                ("B", "x y"),
                ("C", "\"quoted\" stays"),
                ("D", "a=b"),
                ("E", ""),
                ("FROM_CALLER", "caller's"),
                ("A", "2"),
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let path = Path::new("ci/build.env");
        let err = parse("A=1\nB C=2\n", path, lookup).unwrap_err().to_string();
        assert!(err.starts_with("--env-file ci/build.env:2: "), "{err}");
        let err = parse("\n\nMISSING\n", path, lookup)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--env-file ci/build.env:3: MISSING: not set in the environment"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.env");
        std::fs::write(&file, b"A=1\nB=\xff\n").unwrap();
        let err = read(&file, lookup).unwrap_err().to_string();
        assert!(err.ends_with("bad.env:2: not valid UTF-8"), "{err}");
        let err = read(&dir.path().join("none.env"), lookup)
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.env: "), "{err}");
    }
}
