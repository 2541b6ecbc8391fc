//! PHP: `composer.json` (malformed is an error), the PHP version (`require.php`), Laravel and the
//! start command.

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
        facts.start(
            "php artisan serve --host=0.0.0.0 --port=8080",
            "Laravel artisan",
        );
    } else {
        let docroot = if tree.is_file("public/index.php") {
            "public"
        } else {
            "."
        };
        facts.start(
            format!("php -S 0.0.0.0:8080 -t {docroot}"),
            format!("{docroot}/index.php"),
        );
    }
    Ok(facts)
}
