//! `.dockerignore`-style exclusion rules (also used for `kiln.toml` `[build] exclude`).
//!
//! Docker's semantics, not `.gitignore`'s: patterns are relative to the source root (a leading `/`
//! is ignored), `*` and `?` never cross `/`, `**` matches any number of directories, `!pattern`
//! re-includes, the last matching pattern wins, and a pattern matching a directory excludes
//! everything below it.

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct ExcludeRules {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    matcher: GlobMatcher,
    /// `!pattern`: a match re-includes.
    include: bool,
}

impl ExcludeRules {
    /// Adds patterns; `origin` names where they came from for error messages.
    pub fn add<'a>(
        &mut self,
        patterns: impl IntoIterator<Item = &'a str>,
        origin: &Path,
    ) -> Result<()> {
        for (index, raw) in patterns.into_iter().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
            let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Source {
                    path: origin.to_path_buf(),
                    why: format!("pattern {} ({raw:?}) is invalid: {e}", index + 1),
                })?;
            self.rules.push(Rule {
                matcher: glob.compile_matcher(),
                include,
            });
        }
        Ok(())
    }

    /// Excludes the path `literal` (taken as is, glob characters escaped) followed by the glob
    /// `suffix` (`""` for the path itself). Added last, so no `!pattern` re-includes it.
    pub fn exclude_literal(&mut self, literal: &str, suffix: &str, origin: &Path) -> Result<()> {
        let mut pattern = String::with_capacity(literal.len() + suffix.len());
        for c in literal.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!' | '#') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(suffix);
        self.add([pattern.as_str()], origin)
    }

    /// Whether any rule re-includes paths (then excluded directories must still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.include)
    }

    /// Whether `rel` (relative to the source root, `/`-separated) is excluded.
    pub fn is_excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            if matches_or_parent_matches(&rule.matcher, rel) {
                excluded = !rule.include;
            }
        }
        excluded
    }

    /// [`ExcludeRules::is_excluded`] for rules without `!` exceptions and a path none of whose
    /// parents is excluded (what a walk that skips excluded directories reaches): then only
    /// the path itself needs matching.
    pub fn is_excluded_below_kept_parent(&self, rel: &str) -> bool {
        debug_assert!(!self.has_exceptions());
        self.rules.iter().any(|rule| rule.matcher.is_match(rel))
    }
}

fn matches_or_parent_matches(matcher: &GlobMatcher, rel: &str) -> bool {
    if matcher.is_match(rel) {
        return true;
    }
    rel.match_indices('/')
        .any(|(i, _)| matcher.is_match(&rel[..i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> ExcludeRules {
        let mut r = ExcludeRules::default();
        r.add(patterns.iter().copied(), Path::new(".dockerignore"))
            .unwrap();
        r
    }

    #[test]
    fn docker_semantics() {
        let r = rules(&[
            "# comment",
            "",
            "*.log",
            "/build/",
            "docs",
            "**/tmp",
            "!docs/keep.md",
        ]);
        assert!(r.is_excluded("a.log"));
        assert!(!r.is_excluded("sub/a.log"), "* does not cross /");
        assert!(r.is_excluded("build"));
        assert!(
            r.is_excluded("build/out/x.o"),
            "a matched directory excludes its contents"
        );
        assert!(r.is_excluded("docs/guide.md"));
        assert!(
            !r.is_excluded("docs/keep.md"),
            "last match wins: re-included"
        );
        assert!(r.is_excluded("a/b/tmp/x"));
        assert!(r.is_excluded("tmp"));
        assert!(!r.is_excluded("src/main.go"));
        assert!(r.has_exceptions());
    }

    #[test]
    fn invalid_pattern_names_its_origin() {
        let mut r = ExcludeRules::default();
        let err = r
            .add(["ok", "a[b"], Path::new("/src/.dockerignore"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/src/.dockerignore"), "{err}");
        assert!(err.contains("pattern 2"), "{err}");
    }
}
