//! PHP: `composer.json` (malformed is an error), the PHP version (`require.php`), Laravel and
//! the document root php-fpm and Caddy serve.

use super::{json_str, Facts, PackageManager, Sourced, Tree};
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
    }
    // Laravel's front controller is always public/index.php; elsewhere public/ only when it has
    // one, else the app root (whose Composer files and dotfiles the Caddyfile hides).
    let docroot = if laravel || tree.is_file("public/index.php") {
        "public"
    } else {
        "."
    };
    facts.set("docroot", docroot);
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_root_is_public_when_it_has_the_front_controller() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree {
            src: dir.path(),
            prefix: "",
        };
        std::fs::write(dir.path().join("index.php"), "<?php\n").unwrap();
        let facts = analyze(&tree).unwrap();
        assert_eq!(facts.get("docroot").as_deref(), Some("."));
        assert!(facts.start.is_none());
        std::fs::create_dir(dir.path().join("public")).unwrap();
        std::fs::write(dir.path().join("public/index.php"), "<?php\n").unwrap();
        assert_eq!(
            analyze(&tree).unwrap().get("docroot").as_deref(),
            Some("public")
        );
        std::fs::remove_file(dir.path().join("public/index.php")).unwrap();
        std::fs::write(dir.path().join("artisan"), "<?php\n").unwrap();
        let laravel = analyze(&tree).unwrap();
        assert_eq!(laravel.framework.as_deref(), Some("laravel"));
        assert_eq!(laravel.get("docroot").as_deref(), Some("public"));
    }
}
