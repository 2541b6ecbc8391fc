//! `${...}` templates in step args/env, process commands and launch env.
//!
//! Variables: `${app}` (the app directory), `${layer:NAME}` (a layer of the same buildpack) — both
//! expanded by whoever knows the paths (host paths for steps, image paths for processes) — and
//! `${toml:FILE:KEY}` / `${json:FILE:KEY}` (a value from a source file, resolved when planning).
//! `$$` is a literal `$`. An unknown variable or an unterminated `${` is an error.

use crate::error::{Error, Result};

/// Expands every `${var}` in `input` through `lookup` (given the text between the braces).
/// `lookup` returning `None` is an error naming the variable.
pub fn expand(input: &str, lookup: &mut dyn FnMut(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(input.len());
    for piece in pieces(input)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(var) => match lookup(var) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(Error::Template(format!(
                        "unknown variable `${{{var}}}` in {input:?}"
                    )))
                }
            },
        }
    }
    Ok(out)
}

/// Expands `${app}` to `app` and `${layer:NAME}` to `<layers>/NAME`; any other variable is an
/// error. The planner uses it with image paths (`/workspace`, `/layers/<id>`); the engine can use
/// it with host paths for the step templates a [`crate::plan::Step`] carries.
pub fn expand_paths(input: &str, app: &str, layers: &str) -> Result<String> {
    expand(input, &mut |var| match parse_var(var)? {
        Var::App => Some(app.to_owned()),
        Var::Layer(name) => Some(format!("{layers}/{name}")),
        Var::Source { .. } | Var::Fact(_) => None,
    })
}

/// A variable between `${` and `}`, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var<'a> {
    App,
    Layer(&'a str),
    /// `${fact:NAME}`: a fact of the buildpack's analysis, resolved when planning.
    Fact(&'a str),
    /// `${toml:FILE:KEY}` or `${json:FILE:KEY}`.
    Source {
        format: SourceFormat,
        file: &'a str,
        key: &'a str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceFormat {
    Toml,
    Json,
}

impl SourceFormat {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SourceFormat::Toml => "TOML",
            SourceFormat::Json => "JSON",
        }
    }
}

/// Classifies a variable; `None` for a name Kiln does not know. `FILE` may not contain `:`
/// (the first `:` after the prefix ends it), so dotted keys can be anything else.
pub(crate) fn parse_var(var: &str) -> Option<Var<'_>> {
    if var == "app" {
        return Some(Var::App);
    }
    if let Some(name) = var.strip_prefix("layer:") {
        return Some(Var::Layer(name));
    }
    if let Some(name) = var.strip_prefix("fact:") {
        return Some(Var::Fact(name));
    }
    let (format, rest) = if let Some(rest) = var.strip_prefix("toml:") {
        (SourceFormat::Toml, rest)
    } else if let Some(rest) = var.strip_prefix("json:") {
        (SourceFormat::Json, rest)
    } else {
        return None;
    };
    let (file, key) = rest.split_once(':')?;
    Some(Var::Source { format, file, key })
}

/// The variables of `input`, in order (checks the syntax too).
pub(crate) fn variables(input: &str) -> Result<Vec<&str>> {
    Ok(pieces(input)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(var) => Some(var),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Replaces the variables for which `resolve` returns a value and leaves the others (and every
/// literal `$`) as template text, so the result can still be given to [`expand`]. Planning uses it
/// to resolve `${toml:…}`/`${json:…}` while keeping `${app}`/`${layer:…}` for the engine.
pub(crate) fn expand_some(
    input: &str,
    resolve: &mut dyn FnMut(&str) -> Result<Option<String>>,
) -> Result<String> {
    let mut out = String::with_capacity(input.len());
    for piece in pieces(input)? {
        match piece {
            Piece::Text(text) => out.push_str(&escape(text)),
            Piece::Var(var) => match resolve(var)? {
                Some(value) => out.push_str(&escape(&value)),
                None => {
                    out.push_str("${");
                    out.push_str(var);
                    out.push('}');
                }
            },
        }
    }
    Ok(out)
}

/// `text` as a template that expands to exactly `text`.
pub(crate) fn escape(text: &str) -> String {
    text.replace('$', "$$")
}

#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// Literal text, escapes already undone.
    Text(&'a str),
    /// The text between `${` and `}`.
    Var(&'a str),
}

fn pieces(input: &str) -> Result<Vec<Piece<'_>>> {
    let mut pieces = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            // `$$`: keep the first `$` as text, skip the second.
            pieces.push(Piece::Text(&rest[..at + 1]));
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| Error::Template(format!("unterminated `${{` in {input:?}")))?;
            pieces.push(Piece::Text(&rest[..at]));
            pieces.push(Piece::Var(&body[..end]));
            rest = &body[end + 1..];
        } else {
            // A lone `$` (e.g. `$PORT` for a shell) is literal.
            pieces.push(Piece::Text(&rest[..at + 1]));
            rest = after;
        }
    }
    pieces.push(Piece::Text(rest));
    pieces.retain(|p| *p != Piece::Text(""));
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(var: &str) -> Option<String> {
        match var {
            "app" => Some("/workspace".into()),
            "layer:bin" => Some("/layers/go/bin".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_escapes() {
        let out = expand("${layer:bin}/app --root=${app} costs $$5", &mut vars).unwrap();
        assert_eq!(out, "/layers/go/bin/app --root=/workspace costs $5");
    }

    #[test]
    fn lone_dollar_stays_literal() {
        assert_eq!(expand("$PORT $ x$", &mut vars).unwrap(), "$PORT $ x$");
        assert_eq!(expand("$$$$", &mut vars).unwrap(), "$$");
        assert_eq!(expand("", &mut vars).unwrap(), "");
    }

    #[test]
    fn unknown_variable_is_named() {
        let err = expand("run ${nope}", &mut vars).unwrap_err().to_string();
        assert!(err.contains("${nope}"), "{err}");
    }

    #[test]
    fn unterminated_names_the_input() {
        let err = expand("a ${layer:bin", &mut vars).unwrap_err().to_string();
        assert!(err.contains("unterminated"), "{err}");
        assert!(err.contains("a ${layer:bin"), "{err}");
    }

    #[test]
    fn expand_paths_uses_layer_root() {
        let out = expand_paths("${layer:bin}/app ${app}", "/w", "/layers/go").unwrap();
        assert_eq!(out, "/layers/go/bin/app /w");
        assert!(expand_paths("${toml:a.toml:b}", "/w", "/l").is_err());
    }

    #[test]
    fn parse_var_kinds() {
        assert_eq!(parse_var("app"), Some(Var::App));
        assert_eq!(parse_var("layer:go-cache"), Some(Var::Layer("go-cache")));
        assert_eq!(
            parse_var("toml:Cargo.toml:package.name"),
            Some(Var::Source {
                format: SourceFormat::Toml,
                file: "Cargo.toml",
                key: "package.name"
            })
        );
        assert_eq!(parse_var("json:package.json"), None);
        assert_eq!(parse_var("apps"), None);
    }

    #[test]
    fn expand_some_keeps_a_valid_template() {
        let mut resolve = |var: &str| -> Result<Option<String>> {
            Ok((var == "toml:a.toml:k").then(|| "v$1".to_owned()))
        };
        let out = expand_some("${app}/${toml:a.toml:k} $$HOME $x", &mut resolve).unwrap();
        assert_eq!(out, "${app}/v$$1 $$HOME $$x");
        // Expanding the partial result gives what a single expansion would have.
        let full = expand(&out, &mut |v| (v == "app").then(|| "/w".to_owned())).unwrap();
        assert_eq!(full, "/w/v$1 $HOME $x");
    }

    #[test]
    fn variables_lists_in_order() {
        assert_eq!(
            variables("${a} $$ ${layer:b}").unwrap(),
            vec!["a", "layer:b"]
        );
        assert!(variables("${a").is_err());
    }
}
