//! PHP: `composer.json` (malformed is an error), the PHP version (`require.php`), Laravel and the
//! start command.

use super::{json_str, Facts, PackageManager, Sourced, Tree, PORT};
use crate::error::Result;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let composer = tree.json("composer.json")?;
    if let Some(v) = composer.as_ref().and_then(|c| json_str(c, "require.php")) {
        facts.version = Some(Sourced {
            version: v.to_owned(),
            from: "composer.json require.php".into(),
        });
    }
    if composer.is_some() {
        facts.package_manager = Some(PackageManager {
            name: "composer".into(),
            version: None,
            from: if tree.is_file("composer.lock") {
                "composer.lock"
            } else {
                "composer.json"
            }
            .into(),
        });
        facts.set("installer", "composer");
    }
    let laravel = tree.is_file("artisan")
        || composer
            .as_ref()
            .and_then(|c| c.get("require"))
            .and_then(|r| r.get("laravel/framework"))
            .is_some();
    if laravel {
        facts.framework = Some("laravel".into());
        facts.start(
            format!("exec php artisan serve --host=0.0.0.0 --port={PORT}"),
            "Laravel artisan",
        );
    } else {
        let docroot = if tree.is_file("public/index.php") {
            "public"
        } else {
            "."
        };
        facts.start(
            format!("exec php -S 0.0.0.0:{PORT} -t {docroot}"),
            format!("{docroot}/index.php"),
        );
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_server_and_artisan_listen_on_port() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree {
            src: dir.path(),
            prefix: "",
        };
        std::fs::create_dir(dir.path().join("public")).unwrap();
        std::fs::write(dir.path().join("public/index.php"), "<?php\n").unwrap();
        let start = analyze(&tree).unwrap().start.unwrap().command;
        assert_eq!(start, "exec php -S 0.0.0.0:${PORT:-8080} -t public");
        std::fs::write(dir.path().join("artisan"), "<?php\n").unwrap();
        let start = analyze(&tree).unwrap().start.unwrap().command;
        assert_eq!(
            start,
            "exec php artisan serve --host=0.0.0.0 --port=${PORT:-8080}"
        );
    }
}
