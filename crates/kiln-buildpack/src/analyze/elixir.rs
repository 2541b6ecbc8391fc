//! Elixir: the release `mix release` builds, read from `mix.exs`, so the image starts its
//! `bin/<release> start` script by name (the version and Phoenix are declarative rules of the
//! buildpack).
//!
//! `mix.exs` is Elixir code, not data: only the literal forms `mix new` writes are read
//! (`app: :name`, `releases: [name: [...]]`). Anything else leaves the fact unset with a note.

use super::{Facts, Tree};
use crate::error::Result;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let Some(mix) = tree.text("mix.exs")? else {
        return Ok(facts);
    };
    // A project's default release is named after its app; the first of `releases:` is the one
    // named explicitly (an umbrella project has only those), so `mix release NAME` builds the
    // release the process starts even when several are declared.
    let first_release = keyword_after(&mix, "releases:").and_then(|rest| {
        let rest = rest.strip_prefix('[')?.trim_start();
        let name = identifier(rest)?;
        rest[name.len()..].starts_with(':').then_some(name)
    });
    let app = keyword_after(&mix, "app:").and_then(|rest| identifier(rest.strip_prefix(':')?));
    if first_release.is_some() {
        // `mix release NAME` knows only declared names, not the app's default release.
        facts.set("release_declared", "true");
    }
    match first_release.or(app) {
        Some(name) => facts.set("release", name),
        None => facts.notes.push(
            "mix.exs names no `app: :name` or `releases: [name: …]` Kiln can read: \
             no default process (set one in kiln.toml [processes])"
                .into(),
        ),
    }
    Ok(facts)
}

/// The text after the first `key` that starts a word (`app:`, not `webapp:`), whitespace
/// skipped.
fn keyword_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.match_indices(key).find_map(|(at, _)| {
        let before = text[..at].chars().next_back();
        let starts_word = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
        starts_word.then(|| text[at + key.len()..].trim_start())
    })
}

/// An Elixir atom's name at the start of `text` (`elixir_http`), if one is there.
fn identifier(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let name = &text[..end];
    name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release_of(mix: &str) -> Facts {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mix.exs"), mix).unwrap();
        analyze(&Tree {
            src: dir.path(),
            prefix: "",
        })
        .unwrap()
    }

    #[test]
    fn the_release_is_the_apps_unless_releases_name_one() {
        let plain = "def project do\n  [\n    app: :elixir_http,\n    version: \"0.1.0\",\n    \
                     deps: deps()\n  ]\nend\ndef application, do: [extra_applications: [:logger]]";
        let facts = release_of(plain);
        assert_eq!(facts.get("release").as_deref(), Some("elixir_http"));
        assert_eq!(facts.get("release_declared"), None);
        let named = "[app: :shop, releases: [\n  shop_web: [include_executables_for: [:unix]],\n  \
                     worker: []\n]]";
        let facts = release_of(named);
        assert_eq!(facts.get("release").as_deref(), Some("shop_web"));
        assert_eq!(facts.get("release_declared").as_deref(), Some("true"));
        // `releases: releases()` is code: the app's default release it is.
        let code = "[app: :shop, releases: releases()]";
        assert_eq!(release_of(code).get("release").as_deref(), Some("shop"));
        // `webapp:` is not `app:`.
        let other = "[webapp: :nope]";
        let facts = release_of(other);
        assert_eq!(facts.get("release"), None);
        assert!(facts.notes[0].contains("no default process"), "{facts:?}");
    }
}
