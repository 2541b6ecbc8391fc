//! Ruby: the Ruby version (`.ruby-version`, `Gemfile` `ruby`, `Gemfile.lock` `RUBY VERSION`,
//! `.tool-versions`), Bundler's version (`BUNDLED WITH`), Rails or Rack and the start command.

use super::{first_version, version_text, Facts, PackageManager, Tree};
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

    let gem = |name: &str| {
        gemfile.contains(&format!("gem \"{name}\"")) || gemfile.contains(&format!("gem '{name}'"))
    };
    if gem("rails") || tree.is_file("config/application.rb") {
        facts.framework = Some("rails".into());
        facts.start("bundle exec rails server -b 0.0.0.0", "Rails default");
    } else if tree.is_file("config.ru") {
        facts.framework = Some(if gem("sinatra") { "sinatra" } else { "rack" }.into());
        facts.start("bundle exec rackup -o 0.0.0.0", "config.ru (Rack)");
    } else if let Some(entry) = ["app.rb", "main.rb", "server.rb"]
        .into_iter()
        .find(|f| tree.is_file(f))
    {
        facts.start(format!("bundle exec ruby {entry}"), entry);
    }
    Ok(facts)
}
