//! Ruby: the Ruby version (`.ruby-version`, `Gemfile` `ruby`, `Gemfile.lock` `RUBY VERSION`,
//! `.tool-versions`), Bundler's version (`BUNDLED WITH`), a `vendor/cache` of gems, Rails or Rack
//! and the start command.

use super::{first_version, version_text, Facts, PackageManager, Tree, PORT};
use crate::error::Result;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let gemfile = tree.text("Gemfile")?.unwrap_or_default();
    let lock = tree.text("Gemfile.lock")?.unwrap_or_default();
    // The line after a section header in Gemfile.lock (`RUBY VERSION\n   ruby 3.2.2p53`).
    let section = |header: &str| {
        let mut lines = lock.lines().skip_while(|l| l.trim() != header);
        lines.next()?;
        lines
            .next()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
    };

    let gemfile_ruby = gemfile
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("ruby "))
        .map(|v| v.trim_matches(['"', '\'', ' ']).to_owned());
    let lock_ruby = section("RUBY VERSION").map(|v| {
        // `ruby 3.2.2p53`: the patch level is not part of the version.
        let v = v.trim_start_matches("ruby ");
        v.split('p').next().unwrap_or(v).to_owned()
    });
    facts.version = first_version(vec![
        (
            tree.text(".ruby-version")?
                .as_deref()
                .and_then(version_text)
                .map(|v| v.trim_start_matches("ruby-").to_owned()),
            ".ruby-version".into(),
        ),
        (gemfile_ruby, "Gemfile ruby".into()),
        (lock_ruby, "Gemfile.lock RUBY VERSION".into()),
        tree.tool_manager_version(&["ruby"])?,
    ]);

    let bundled = section("BUNDLED WITH");
    facts.package_manager = Some(PackageManager {
        name: "bundler".into(),
        from: if bundled.is_some() {
            "Gemfile.lock BUNDLED WITH".into()
        } else {
            "Gemfile".into()
        },
        version: bundled,
    });
    if !lock.is_empty() {
        facts.set("lockfile", "Gemfile.lock");
    }
    // `bundle cache` (`bundle package`) keeps the app's gems in vendor/cache: installing from
    // there (`--local`) needs no gem server, so the build works where rubygems.org is out of
    // reach and installs exactly the committed files.
    if tree
        .list("vendor/cache", false)?
        .iter()
        .any(|name| name.ends_with(".gem"))
    {
        facts.set("gem_cache", "vendor/cache");
    }

    let gem = |name: &str| {
        gemfile.contains(&format!("gem \"{name}\"")) || gemfile.contains(&format!("gem '{name}'"))
    };
    // Every server is told `$PORT` (8080 when unset) and all addresses.
    if gem("rails") || tree.is_file("config/application.rb") {
        facts.framework = Some("rails".into());
        facts.start(
            format!("exec bundle exec rails server -b 0.0.0.0 -p {PORT}"),
            "Rails default",
        );
    } else if tree.is_file("config.ru") {
        facts.framework = Some(if gem("sinatra") { "sinatra" } else { "rack" }.into());
        if gem("puma") {
            // Puma still reads config/puma.rb (workers, threads); the bind comes from here.
            facts.start(
                format!("exec bundle exec puma -b tcp://0.0.0.0:{PORT} config.ru"),
                "config.ru (Rack) with puma",
            );
        } else {
            facts.start(
                format!("exec bundle exec rackup -o 0.0.0.0 -p {PORT}"),
                "config.ru (Rack)",
            );
        }
    } else if let Some(entry) = ["app.rb", "main.rb", "server.rb"]
        .into_iter()
        .find(|f| tree.is_file(f))
    {
        if gem("sinatra") {
            // A classic Sinatra app takes `-o`/`-p` on its command line.
            facts.framework = Some("sinatra".into());
            facts.start(
                format!("exec bundle exec ruby {entry} -o 0.0.0.0 -p {PORT}"),
                entry,
            );
        } else {
            facts.start(format!("bundle exec ruby {entry}"), entry);
        }
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of(files: &[(&str, &str)]) -> Facts {
        crate::analyze::analyze_files(analyze, files).unwrap()
    }

    fn start_of(files: &[(&str, &str)]) -> String {
        facts_of(files).start.unwrap().command
    }

    #[test]
    fn gems_in_vendor_cache_are_a_gem_cache() {
        let cached = facts_of(&[
            ("Gemfile", "gem 'rack'\n"),
            ("vendor/cache/rack-3.1.20.gem", "gem"),
        ]);
        assert_eq!(cached.get("gem_cache").as_deref(), Some("vendor/cache"));
        // A directory without gems (a placeholder, `.keep`) is no cache to install from.
        let empty = facts_of(&[("Gemfile", "gem 'rack'\n"), ("vendor/cache/.keep", "")]);
        assert_eq!(empty.get("gem_cache"), None);
    }

    #[test]
    fn every_server_is_told_port() {
        let rails = start_of(&[("Gemfile", "gem \"rails\"\n")]);
        assert_eq!(
            rails,
            "exec bundle exec rails server -b 0.0.0.0 -p ${PORT:-8080}"
        );
        let puma = start_of(&[("Gemfile", "gem 'puma'\n"), ("config.ru", "run App\n")]);
        assert_eq!(
            puma,
            "exec bundle exec puma -b tcp://0.0.0.0:${PORT:-8080} config.ru"
        );
        let rack = start_of(&[("Gemfile", "gem 'rack'\n"), ("config.ru", "run App\n")]);
        assert_eq!(rack, "exec bundle exec rackup -o 0.0.0.0 -p ${PORT:-8080}");
        let sinatra = start_of(&[("Gemfile", "gem 'sinatra'\n"), ("app.rb", "get('/') {}\n")]);
        assert_eq!(
            sinatra,
            "exec bundle exec ruby app.rb -o 0.0.0.0 -p ${PORT:-8080}"
        );
    }
}
