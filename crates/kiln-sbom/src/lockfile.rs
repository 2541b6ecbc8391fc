//! Application dependencies from the lockfiles Kiln's analyzers recognize. The analyzers in
//! `kiln-buildpack` only read which lockfile there is and a few header fields; the package lists
//! are read here, from text the caller read (so this module never touches the filesystem).

use serde_json::Value;

use crate::{Component, Ecosystem};

/// Every lockfile [`read`] understands, relative to the app root.
pub const LOCKFILES: &[&str] = &[
    "package-lock.json",
    "npm-shrinkwrap.json",
    "pnpm-lock.yaml",
    "yarn.lock",
    "bun.lock",
    "requirements.txt",
    "uv.lock",
    "poetry.lock",
    "Cargo.lock",
    "go.sum",
    "Gemfile.lock",
    "composer.lock",
];

#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct Error {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// The packages `text`, the contents of lockfile `file` (one of [`LOCKFILES`]), pins.
pub fn read(file: &str, text: &str) -> Result<Vec<Component>, Error> {
    let fail = |line: Option<usize>, message: String| Error {
        file: file.to_owned(),
        line,
        message,
    };
    let mut found = match file {
        "package-lock.json" | "npm-shrinkwrap.json" => {
            let lock: Value =
                serde_json::from_str(text).map_err(|e| fail(Some(e.line()), e.to_string()))?;
            npm_lock(&lock)
        }
        "bun.lock" => {
            let lock: Value = json5::from_str(text).map_err(|e| fail(None, e.to_string()))?;
            bun_lock(&lock)
        }
        "composer.lock" => {
            let lock: Value =
                serde_json::from_str(text).map_err(|e| fail(Some(e.line()), e.to_string()))?;
            composer_lock(&lock)
        }
        "uv.lock" | "poetry.lock" | "Cargo.lock" => {
            let lock: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                let line = e
                    .span()
                    .map(|span| text[..span.start].lines().count().max(1));
                fail(line, e.message().to_owned())
            })?;
            let ecosystem = if file == "Cargo.lock" {
                Ecosystem::Cargo
            } else {
                Ecosystem::PyPI
            };
            toml_packages(&lock, ecosystem)
        }
        "pnpm-lock.yaml" => pnpm_lock(text),
        "yarn.lock" => yarn_lock(text),
        "requirements.txt" => requirements(text),
        "go.sum" => go_sum(text),
        "Gemfile.lock" => gemfile_lock(text),
        other => return Err(fail(None, format!("{other} is not a lockfile Kiln reads"))),
    };
    found.sort();
    found.dedup();
    Ok(found)
}

/// npm lockfile v2/v3 `packages` (keyed by install path), else v1's nested `dependencies`.
fn npm_lock(lock: &Value) -> Vec<Component> {
    let mut found = Vec::new();
    if let Some(packages) = lock["packages"].as_object() {
        for (path, entry) in packages {
            let Some(name) = path.rsplit_once("node_modules/").map(|(_, name)| name) else {
                continue; // "" is the project itself; other keys are workspace folders.
            };
            if entry["link"].as_bool() == Some(true) {
                continue;
            }
            if let Some(version) = entry["version"].as_str() {
                found.push(Component::new(Ecosystem::Npm, name, version));
            }
        }
    } else {
        npm_lock_v1(&lock["dependencies"], &mut found);
    }
    found
}

fn npm_lock_v1(dependencies: &Value, found: &mut Vec<Component>) {
    for (name, entry) in dependencies.as_object().into_iter().flatten() {
        if let Some(version) = entry["version"].as_str() {
            found.push(Component::new(Ecosystem::Npm, name, version));
        }
        npm_lock_v1(&entry["dependencies"], found);
    }
}

/// Splits `name@version`, where a scoped name starts with `@`.
fn split_at_version(spec: &str) -> Option<(&str, &str)> {
    let at = spec[1..].find('@')? + 1;
    Some((&spec[..at], &spec[at + 1..]))
}

/// bun.lock: `"packages": { "ms": ["ms@2.1.3", …] }`; workspace members are `name@workspace:`.
fn bun_lock(lock: &Value) -> Vec<Component> {
    lock["packages"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, entry)| {
            let (name, version) = split_at_version(entry[0].as_str()?)?;
            let registry_version = !version.contains(':');
            registry_version.then(|| Component::new(Ecosystem::Npm, name, version))
        })
        .collect()
}

fn composer_lock(lock: &Value) -> Vec<Component> {
    lock["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|package| {
            let name = package["name"].as_str()?;
            let version = package["version"].as_str()?;
            Some(Component::new(Ecosystem::Composer, name, version))
        })
        .collect()
}

/// `[[package]]` tables of Cargo.lock, uv.lock and poetry.lock. A package without a registry
/// `source` is the project's own (a Cargo workspace member, uv's editable or virtual root).
fn toml_packages(lock: &toml::Table, ecosystem: Ecosystem) -> Vec<Component> {
    let packages = lock.get("package").and_then(|p| p.as_array());
    packages
        .into_iter()
        .flatten()
        .filter_map(|package| {
            let name = package.get("name")?.as_str()?;
            let version = package.get("version")?.as_str()?;
            let own = match (ecosystem, package.get("source")) {
                (Ecosystem::Cargo, source) => source.is_none(),
                (_, Some(source)) => ["editable", "virtual", "directory"]
                    .iter()
                    .any(|kind| source.get(kind).is_some()),
                (_, None) => false,
            };
            (!own).then(|| Component::new(ecosystem, name, version))
        })
        .collect()
}

/// pnpm-lock.yaml's `packages:` keys, in every lockfile version: `/ms/2.1.3` (5),
/// `/ms@2.1.3(peer@1)` (6), `ms@2.1.3` (9). Read line by line: only the keys are needed.
fn pnpm_lock(text: &str) -> Vec<Component> {
    let mut found = Vec::new();
    let mut in_packages = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_packages = line.trim_end() == "packages:";
            continue;
        }
        let Some(key) = line.strip_prefix("  ").and_then(|k| k.strip_suffix(':')) else {
            continue;
        };
        if !in_packages || key.starts_with(' ') {
            continue;
        }
        let key = key.trim_matches(|c| c == '\'' || c == '"');
        let key = key.strip_prefix('/').unwrap_or(key);
        let key = key.split('(').next().unwrap_or(key);
        let spec = match split_at_version(key) {
            Some(spec) => Some(spec),
            // Version 5: the version is the last path segment, a peer suffix after `_`.
            None => key
                .rsplit_once('/')
                .map(|(name, version)| (name, version.split('_').next().unwrap_or(version))),
        };
        if let Some((name, version)) = spec {
            found.push(Component::new(Ecosystem::Npm, name, version));
        }
    }
    found
}

/// yarn.lock, classic (`version "2.1.3"`) and berry (`version: 2.1.3`); berry's workspace and
/// `__metadata` entries are not dependencies.
fn yarn_lock(text: &str) -> Vec<Component> {
    let mut found = Vec::new();
    let mut name: Option<&str> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') && !line.starts_with('#') {
            let first = line.trim_end_matches(':').split(", ").next().unwrap_or("");
            let first = first.trim_matches('"');
            name = split_at_version(first)
                .filter(|(_, range)| !range.starts_with("workspace:"))
                .map(|(name, _)| name);
            continue;
        }
        let version = line
            .strip_prefix("  version ")
            .or_else(|| line.strip_prefix("  version: "));
        if let (Some(package), Some(version)) = (name, version) {
            found.push(Component::new(
                Ecosystem::Npm,
                package,
                version.trim().trim_matches('"'),
            ));
            name = None;
        }
    }
    found
}

/// `name==version` pins; ranges, URLs and options are no inventory and are left out.
fn requirements(text: &str) -> Vec<Component> {
    text.lines()
        .filter_map(|line| {
            let line = line
                .split(" #")
                .next()?
                .trim()
                .trim_end_matches('\\')
                .trim();
            let (name, rest) = line.split_once("==")?;
            let name = name.split('[').next()?.trim();
            let version = rest.split([';', ' ']).next()?.trim();
            (!name.is_empty() && !name.starts_with('-') && !version.is_empty())
                .then(|| Component::new(Ecosystem::PyPI, name, version))
        })
        .collect()
}

/// go.sum's module lines; `/go.mod`-only lines name modules whose code is not in the build.
fn go_sum(text: &str) -> Vec<Component> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (module, version) = (fields.next()?, fields.next()?);
            (!version.ends_with("/go.mod"))
                .then(|| Component::new(Ecosystem::Golang, module, version))
        })
        .collect()
}

/// Gemfile.lock's `GEM` `specs:` entries at four spaces (`    rack (3.1.8)`); deeper lines are
/// their dependency ranges.
fn gemfile_lock(text: &str) -> Vec<Component> {
    let mut found = Vec::new();
    let mut in_gem = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_gem = line.trim_end() == "GEM";
            continue;
        }
        let Some(spec) = line.strip_prefix("    ") else {
            continue;
        };
        if !in_gem || spec.starts_with(' ') {
            continue;
        }
        if let Some((name, version)) = spec.split_once(" (") {
            let version = version.trim_end_matches(')');
            found.push(Component::new(Ecosystem::Gem, name, version));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(file: &str, text: &str) -> Vec<String> {
        read(file, text)
            .unwrap()
            .iter()
            .map(|c| format!("{}@{}", c.name, c.version))
            .collect()
    }

    #[test]
    fn npm_lockfiles_of_every_version() {
        let v3 = r#"{"lockfileVersion":3,"packages":{
            "":{"name":"app","version":"1.0.0"},
            "node_modules/ms":{"version":"2.1.3"},
            "node_modules/a/node_modules/@types/node":{"version":"22.0.0"},
            "node_modules/member":{"resolved":"packages/member","link":true},
            "packages/member":{"version":"0.1.0"}}}"#;
        assert_eq!(
            names("package-lock.json", v3),
            ["@types/node@22.0.0", "ms@2.1.3"]
        );
        let v1 = r#"{"lockfileVersion":1,"dependencies":{"debug":{"version":"2.6.9",
            "dependencies":{"ms":{"version":"2.0.0"}}}}}"#;
        assert_eq!(names("package-lock.json", v1), ["debug@2.6.9", "ms@2.0.0"]);
    }

    #[test]
    fn pnpm_yarn_and_bun_lockfiles() {
        let pnpm9 = "lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies:\n      ms:\n        specifier: 2.1.3\npackages:\n  ms@2.1.3:\n    resolution: {integrity: sha512-x}\n  '@babel/core@7.0.0(supports-color@9.0.0)':\n    resolution: {}\nsnapshots:\n  ms@2.1.3: {}\n";
        assert_eq!(
            names("pnpm-lock.yaml", pnpm9),
            ["@babel/core@7.0.0", "ms@2.1.3"]
        );
        let pnpm5 = "lockfileVersion: 5.4\npackages:\n  /ms/2.1.3:\n    resolution: {}\n  /@types/node/22.0.0_peer:\n    dev: false\n";
        assert_eq!(
            names("pnpm-lock.yaml", pnpm5),
            ["@types/node@22.0.0", "ms@2.1.3"]
        );
        let classic = "# yarn lockfile v1\n\n\"@types/node@^22\", \"@types/node@^22.0\":\n  version \"22.0.0\"\n  resolved \"x\"\n\nms@^2.1.3:\n  version \"2.1.3\"\n";
        assert_eq!(
            names("yarn.lock", classic),
            ["@types/node@22.0.0", "ms@2.1.3"]
        );
        let berry = "__metadata:\n  version: 8\n\n\"app@workspace:.\":\n  version: 0.0.0-use.local\n\n\"ms@npm:^2.1.3\":\n  version: 2.1.3\n";
        assert_eq!(names("yarn.lock", berry), ["ms@2.1.3"]);
        let bun = r#"{ "lockfileVersion": 1, "workspaces": {}, "packages": {
            "ms": ["ms@2.1.3", "", {}, "sha512-x"],
            "member": ["member@workspace:packages/member"], }, }"#;
        assert_eq!(names("bun.lock", bun), ["ms@2.1.3"]);
    }

    #[test]
    fn python_rust_go_ruby_and_php_lockfiles() {
        let uv = "version = 1\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\nsource = { editable = \".\" }\n[[package]]\nname = \"flask\"\nversion = \"3.1.0\"\nsource = { registry = \"https://pypi.org/simple\" }\n";
        assert_eq!(names("uv.lock", uv), ["flask@3.1.0"]);
        let poetry = "[[package]]\nname = \"requests\"\nversion = \"2.32.3\"\n";
        assert_eq!(names("poetry.lock", poetry), ["requests@2.32.3"]);
        let reqs = "# pinned\nflask[async]==3.1.0 ; python_version >= '3.9' \\\n    --hash=sha256:ab\ngunicorn>=22\n-r other.txt\n";
        assert_eq!(names("requirements.txt", reqs), ["flask@3.1.0"]);
        let cargo = "version = 4\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n[[package]]\nname = \"serde\"\nversion = \"1.0.210\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
        assert_eq!(names("Cargo.lock", cargo), ["serde@1.0.210"]);
        let go = "github.com/a/b v1.2.0 h1:x=\ngithub.com/a/b v1.2.0/go.mod h1:y=\ngithub.com/c/d v0.1.0/go.mod h1:z=\n";
        assert_eq!(names("go.sum", go), ["github.com/a/b@v1.2.0"]);
        let gems = "GEM\n  remote: https://rubygems.org/\n  specs:\n    rack (3.1.8)\n    puma (6.4.3)\n      nio4r (~> 2.0)\n\nPLATFORMS\n  ruby\n";
        assert_eq!(names("Gemfile.lock", gems), ["puma@6.4.3", "rack@3.1.8"]);
        let composer = r#"{"packages":[{"name":"monolog/monolog","version":"3.8.0"}],"packages-dev":[{"name":"phpunit/phpunit","version":"11.0.0"}]}"#;
        assert_eq!(names("composer.lock", composer), ["monolog/monolog@3.8.0"]);
    }

    #[test]
    fn malformed_lockfiles_name_the_file_and_line() {
        let err = read("package-lock.json", "{\n  \"packages\": [\n").unwrap_err();
        assert_eq!(err.file, "package-lock.json");
        assert!(err.to_string().starts_with("package-lock.json:3:"), "{err}");
        let err = read("Cargo.lock", "[[package]]\nname = \n").unwrap_err();
        assert!(err.to_string().starts_with("Cargo.lock:2:"), "{err}");
    }
}
