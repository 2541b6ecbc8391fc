//! Procfile parsing: `type: command` lines; blank lines and `#` comments ignored. A malformed line
//! is an error naming the file and line.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::{excerpt, is_process_type};

/// `(process type, command)` in file order. Duplicate types: an error.
pub fn parse(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let mut processes = Vec::new();
    // Type → line of its first declaration, to point at both ends of a duplicate.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message: String| Error::Manifest {
            path: path.to_path_buf(),
            line: Some(line_no),
            column: None,
            message,
        };
        let Some((kind, command)) = line.split_once(':') else {
            return Err(error(format!(
                "expected `type: command`, found {}",
                excerpt(line)
            )));
        };
        let (kind, command) = (kind.trim(), command.trim());
        if !is_process_type(kind) {
            return Err(error(format!(
                "process type {} must match [A-Za-z0-9_-]+",
                excerpt(kind)
            )));
        }
        if command.is_empty() {
            return Err(error(format!(
                "process type {} has an empty command",
                excerpt(kind)
            )));
        }
        if let Some(first) = seen.insert(kind.to_owned(), line_no) {
            return Err(error(format!(
                "process type {} already declared on line {first}",
                excerpt(kind)
            )));
        }
        processes.push((kind.to_owned(), command.to_owned()));
    }
    Ok(processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<(String, String)>> {
        parse(text, Path::new("app/Procfile"))
    }

    fn line_of(err: Error) -> Option<usize> {
        match err {
            Error::Manifest { line, .. } => line,
            other => panic!("not a manifest error: {other:?}"),
        }
    }

    #[test]
    fn parses_types_in_order() {
        let text = "# processes\n\nweb: ./server --port $PORT\r\n  worker:bin/work  \n";
        assert_eq!(
            parse_str(text).unwrap(),
            vec![
                ("web".to_owned(), "./server --port $PORT".to_owned()),
                ("worker".to_owned(), "bin/work".to_owned()),
            ]
        );
    }

    #[test]
    fn colons_in_the_command_are_kept() {
        let parsed = parse_str("web: serve --listen 0.0.0.0:8080\n").unwrap();
        assert_eq!(parsed[0].1, "serve --listen 0.0.0.0:8080");
    }

    #[test]
    fn line_without_colon_names_its_line() {
        let err = parse_str("web: a\n\n./server\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "app/Procfile:3: expected `type: command`, found \"./server\""
        );
        assert_eq!(line_of(err), Some(3));
    }

    #[test]
    fn empty_command_and_bad_type() {
        assert_eq!(line_of(parse_str("# c\nweb:   \n").unwrap_err()), Some(2));
        let err = parse_str("web server: x\n").unwrap_err();
        assert!(err.to_string().contains("\"web server\""), "{err}");
        assert!(parse_str(": x\n").is_err());
    }

    #[test]
    fn a_huge_offending_line_is_quoted_cut_short() {
        let huge = "x".repeat(10 << 20);
        for text in [
            format!("web: a\n{huge}\n"),
            format!("{huge} bad: x\n"),
            format!("{huge}:\n"),
            format!("{huge}: a\n{huge}: b\n"),
        ] {
            let err = parse_str(&text).unwrap_err().to_string();
            assert!(err.len() < 200, "{} bytes", err.len());
            assert!(err.contains(&format!("\"{}\"…", "x".repeat(80))), "{err}");
        }
    }

    #[test]
    fn duplicate_type_points_at_both_lines() {
        let err = parse_str("web: a\nworker: b\nweb: c\n").unwrap_err();
        assert!(
            err.to_string().contains("already declared on line 1"),
            "{err}"
        );
        assert_eq!(line_of(err), Some(3));
    }
}
