//! deb822 control data (Packages, Release, a .deb's `control`): stanzas of `Field: value`
//! lines, continuation lines starting with a space or tab, stanzas separated by blank lines.
//!
//! A small parser rather than `deb822-lossless`: Kiln only reads (never edits) these files, a
//! Packages index has ~60 000 stanzas, and borrowing `&str` slices keeps parsing allocation-free
//! where a lossless syntax tree would build one node per token. Field names compare
//! case-insensitively, as deb822 says.

use crate::error::{Error, Result};

/// One stanza, borrowing from the parsed text.
#[derive(Debug, Clone)]
pub struct Stanza<'a> {
    /// 1-based line of the stanza's first field, for error messages.
    pub line: usize,
    /// The stanza's text exactly as written (without the separating blank line).
    pub text: &'a str,
    /// `(name, value)`: the value runs from after `:` to the end of its last continuation line,
    /// trimmed; continuation lines keep their leading whitespace.
    pub fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Stanza<'a> {
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// A field that must be present; the error names `what` (the file) and the stanza's line.
    pub fn require(&self, name: &str, what: &str) -> Result<&'a str> {
        self.get(name).ok_or_else(|| Error::Parse {
            what: format!("{what}:{}", self.line),
            why: format!("stanza has no {name} field"),
        })
    }
}

/// Splits `text` into stanzas. `what` names the source in errors ("trixie main/binary-amd64
/// Packages").
pub fn parse<'a>(text: &'a str, what: &str) -> Result<Vec<Stanza<'a>>> {
    let mut stanzas = Vec::new();
    for_each(text, what, |stanza| {
        stanzas.push(stanza);
        Ok(())
    })?;
    Ok(stanzas)
}

/// [`parse`], handing each stanza to `f` as soon as it is complete (a Packages index need not
/// be held as stanzas all at once).
pub fn for_each<'a>(
    text: &'a str,
    what: &str,
    mut f: impl FnMut(Stanza<'a>) -> Result<()>,
) -> Result<()> {
    let mut current: Option<Open<'a>> = None;
    let mut offset = 0;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            if let Some(open) = current.take() {
                f(open.finish(text, start))?;
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if current.as_ref().is_none_or(|o| o.field.is_none()) {
                return Err(Error::Parse {
                    what: format!("{what}:{line_no}"),
                    why: "continuation line outside a field".to_owned(),
                });
            }
            continue;
        }
        // deb822 comments (apt's .sources files have them, even inside stanzas).
        if line.starts_with('#') {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return Err(Error::Parse {
                what: format!("{what}:{line_no}"),
                why: format!("expected `Field: value`, found {line:?}"),
            });
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(Error::Parse {
                what: format!("{what}:{line_no}"),
                why: format!("invalid field name {name:?}"),
            });
        }
        let open = current.get_or_insert_with(|| Open {
            line: line_no,
            start,
            fields: Vec::new(),
            field: None,
        });
        open.end_field(text, start);
        open.field = Some((name, start + name.len() + 1));
    }
    if let Some(open) = current.take() {
        f(open.finish(text, offset))?;
    }
    Ok(())
}

/// A stanza being read: where it starts, its finished fields, and the field whose value may
/// still continue (name, byte offset of its value).
struct Open<'a> {
    line: usize,
    start: usize,
    fields: Vec<(&'a str, &'a str)>,
    field: Option<(&'a str, usize)>,
}

impl<'a> Open<'a> {
    fn end_field(&mut self, text: &'a str, end: usize) {
        if let Some((name, value_start)) = self.field.take() {
            self.fields.push((name, text[value_start..end].trim()));
        }
    }

    fn finish(mut self, text: &'a str, end: usize) -> Stanza<'a> {
        self.end_field(text, end);
        Stanza {
            line: self.line,
            text: &text[self.start..end],
            fields: self.fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_continuations_and_stanza_text() {
        let text = "Package: a\nDepends: b,\n c (>= 1)\nDescription: x\n long\n .\n more\n\n\nPackage: B\nversion: 2\n";
        let stanzas = parse(text, "test").unwrap();
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[0].get("package"), Some("a"));
        assert_eq!(stanzas[0].get("Depends"), Some("b,\n c (>= 1)"));
        assert_eq!(stanzas[0].get("Description"), Some("x\n long\n .\n more"));
        assert_eq!(
            stanzas[0].text,
            "Package: a\nDepends: b,\n c (>= 1)\nDescription: x\n long\n .\n more\n"
        );
        assert_eq!(stanzas[1].line, 10);
        assert_eq!(stanzas[1].get("Version"), Some("2"));
        assert_eq!(stanzas[1].text, "Package: B\nversion: 2\n");
        assert!(stanzas[1]
            .require("Filename", "test")
            .unwrap_err()
            .to_string()
            .contains("test:10"));
    }

    #[test]
    fn rejects_malformed_lines() {
        let err = parse("Package: a\nno colon here\n", "Packages").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Packages:2: expected `Field: value`, found \"no colon here\""
        );
        assert!(parse(" stray\n", "x").is_err());
    }
}
