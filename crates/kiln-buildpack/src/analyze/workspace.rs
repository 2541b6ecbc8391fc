//! Workspaces of every tool (npm/pnpm/yarn, Cargo, `go.work`): which directories are members,
//! whether a pattern covers one, and the member the user chose (`kiln.toml` `app` / `KILN_APP`).

use super::{Tree, Workspaces};
use crate::error::{Error, Result};

/// Most members a workspace is searched through (one directory listing per `dir/*` pattern).
const MAX_MEMBERS: usize = 256;

impl Workspaces {
    /// The member directories, sorted: patterns expanded one level (`apps/*`) or taken as
    /// written (`apps/web`); deeper globs (`**`) are not walked (detection never walks the
    /// tree) and are noted, as are more than [`MAX_MEMBERS`] members (then none are returned).
    pub(super) fn member_dirs(&self, tree: &Tree, notes: &mut Vec<String>) -> Result<Vec<String>> {
        let mut dirs = Vec::new();
        for pattern in &self.members {
            let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
            if pattern.starts_with('!') {
                continue;
            }
            match pattern.strip_suffix("/*") {
                Some(parent) if !is_glob(parent) => {
                    for name in tree.list(parent, true)? {
                        dirs.push(format!("{parent}/{name}"));
                    }
                }
                _ if !is_glob(pattern) => dirs.push(pattern.to_owned()),
                _ => notes.push(format!(
                    "workspace pattern {pattern:?} is not searched for the app (only `dir/*` and \
                     plain paths are): name it with KILN_APP"
                )),
            }
            if dirs.len() > MAX_MEMBERS {
                notes.push(format!(
                    "more than {MAX_MEMBERS} workspace members: name the app with KILN_APP"
                ));
                return Ok(Vec::new());
            }
        }
        dirs.sort();
        dirs.dedup();
        dirs.retain(|dir| crate::manifest::check_relative(dir).is_ok());
        Ok(dirs)
    }

    /// Checks the app the user chose (`(dir, source)`): a relative path that is a member.
    /// Errors name the setting and the members.
    pub(super) fn check_choice(&self, choice: &(String, String)) -> Result<()> {
        let dir = &choice.0;
        let invalid = |why: String| invalid_choice(choice, why);
        crate::manifest::check_relative(dir).map_err(|why| invalid(why.to_owned()))?;
        if !self
            .members
            .iter()
            .any(|pattern| member_matches(pattern, dir))
        {
            return Err(invalid(format!(
                "not a member of the {} workspace (members: {})",
                self.tool,
                self.members.join(", ")
            )));
        }
        Ok(())
    }
}

/// An error about the app the user chose (`(dir, source)`): `KILN_APP = "apps/x": why`.
pub(super) fn invalid_choice((dir, from): &(String, String), why: String) -> Error {
    Error::Template(format!("{from} = {dir:?}: {why}"))
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// Whether workspace pattern `pattern` (`apps/*`, `apps/**`, `apps/web`) covers `dir`.
fn member_matches(pattern: &str, dir: &str) -> bool {
    let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
    if pattern.starts_with('!') {
        return false;
    }
    let (p, d): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), dir.split('/').collect());
    fn matches(p: &[&str], d: &[&str]) -> bool {
        match (p.first(), d.first()) {
            (None, None) => true,
            (Some(&"**"), _) => matches(&p[1..], d) || (!d.is_empty() && matches(p, &d[1..])),
            (Some(seg), Some(name)) => segment_matches(seg, name) && matches(&p[1..], &d[1..]),
            _ => false,
        }
    }
    matches(&p, &d)
}

/// One path segment against a pattern segment with `*` wildcards.
fn segment_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((before, after)) => {
            name.len() >= before.len()
                && name.starts_with(before)
                && (0..=name.len() - before.len()).any(|i| {
                    name.is_char_boundary(before.len() + i)
                        && segment_matches(after, &name[before.len() + i..])
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_patterns_cover_member_directories() {
        assert!(member_matches("apps/*", "apps/web"));
        assert!(member_matches("./apps/*/", "apps/web"));
        assert!(!member_matches("apps/*", "apps/web/x"));
        assert!(member_matches("apps/**", "apps/web/x"));
        assert!(member_matches("packages/app-*", "packages/app-web"));
        assert!(!member_matches("packages/app-*", "packages/lib"));
        assert!(member_matches("web", "web"));
        assert!(!member_matches("!apps/*", "apps/web"));
    }
}
