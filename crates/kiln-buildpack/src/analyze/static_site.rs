//! Static sites: which directory is the site (`Staticfile` `root:`, else the first of `dist/`,
//! `public/` and the app root with an `index.html`), whether it is a single-page app whose
//! client-side router needs every unknown path answered with `index.html` (`Staticfile`
//! `pushstate: enabled`, Cloud Foundry's option), and whether the app brings its own
//! `Caddyfile`.

use super::{Facts, Tree};
use crate::error::{Error, Result};

const STATICFILE: &str = "Staticfile";

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let staticfile = tree.text(STATICFILE)?.unwrap_or_default();
    let mut root = None;
    let mut spa = false;
    for (number, line) in staticfile.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        match key.trim() {
            "root" => {
                let dir = value.trim_end_matches('/');
                if dir.is_empty() || dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
                    return Err(Error::Template(format!(
                        "{}{STATICFILE}:{}: root {value:?} must be a directory inside the app",
                        tree.prefix,
                        number + 1
                    )));
                }
                root = Some(dir.to_owned());
            }
            "pushstate" => spa = value == "enabled",
            _ => {}
        }
    }
    let root = root.or_else(|| {
        ["dist", "public", "."]
            .into_iter()
            .find(|d| tree.is_file(&format!("{d}/index.html")))
            .map(str::to_owned)
    });
    facts.set("site_root", root.unwrap_or_else(|| ".".to_owned()));
    facts.set("spa", if spa { "true" } else { "false" });
    if tree.is_file("Caddyfile") {
        facts.set("caddyfile", "Caddyfile");
        facts
            .notes
            .push("served with the app's own Caddyfile".to_owned());
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of(files: &[(&str, &str)]) -> Result<Facts> {
        crate::analyze::analyze_files(analyze, files)
    }

    #[test]
    fn the_site_root_spa_and_caddyfile_follow_the_tree() {
        let plain = facts_of(&[("public/index.html", "x")]).unwrap();
        assert_eq!(plain.get("site_root").as_deref(), Some("public"));
        assert_eq!(plain.get("spa").as_deref(), Some("false"));
        assert!(plain.get("caddyfile").is_none());

        let spa = facts_of(&[
            (
                "Staticfile",
                "root: build/\npushstate: enabled # client router\n",
            ),
            ("build/index.html", "x"),
            ("Caddyfile", ":80\n"),
        ])
        .unwrap();
        assert_eq!(spa.get("site_root").as_deref(), Some("build"));
        assert_eq!(spa.get("spa").as_deref(), Some("true"));
        assert_eq!(spa.get("caddyfile").as_deref(), Some("Caddyfile"));

        let root = facts_of(&[("index.html", "x")]).unwrap();
        assert_eq!(root.get("site_root").as_deref(), Some("."));

        let err = facts_of(&[("Staticfile", "\nroot: ../etc\n")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("Staticfile:2: root \"../etc\""), "{err}");
    }
}
