//! Node.js: package manager (corepack `packageManager`, else the lockfile and its flavour),
//! the Node version requirement with its source, install flavour, build script, start command
//! (scripts, framework defaults, `main`, `index.js`) and workspaces.

use serde_json::Value;

use super::{json_str, version_text, Facts, PackageManager, Sourced, Tree, Workspaces};
use crate::error::Result;
use crate::plan::{needs_shell, APP_DIR};

/// Node LTS code names and their major versions (`.nvmrc` `lts/iron`).
const LTS_NAMES: &[(&str, &str)] = &[
    ("argon", "4"),
    ("boron", "6"),
    ("carbon", "8"),
    ("dubnium", "10"),
    ("erbium", "12"),
    ("fermium", "14"),
    ("gallium", "16"),
    ("hydrogen", "18"),
    ("iron", "20"),
    ("jod", "22"),
    ("krypton", "24"),
];

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let pkg = tree.json("package.json")?.unwrap_or(Value::Null);

    facts.version = node_version(tree, &pkg, &mut facts.notes)?;
    let (pm, installer, lockfile) = package_manager(tree, &pkg)?;
    facts.set("installer", installer);
    if let Some(lockfile) = lockfile {
        facts.set("lockfile", lockfile);
    }
    let pm_name = pm.name.clone();
    // What `npx` fetches from the npm registry to run pnpm or Yarn 1: the version the project
    // asks for, never whatever the build host has (pnpm 9 cannot read a pnpm 10 lockfile).
    facts.set(
        "package_manager_spec",
        match &pm.version {
            Some(version) => format!("{}@{version}", pm.name),
            None => pm.name.clone(),
        },
    );
    facts.package_manager = Some(pm);

    let script = |name: &str| json_str(&pkg, &format!("scripts.{name}")).map(str::to_owned);
    if script("build").is_some() {
        facts.set("build_script", "build");
    }
    let dep = |name: &str| {
        ["dependencies", "devDependencies"]
            .iter()
            .any(|section| pkg.get(section).and_then(|d| d.get(name)).is_some())
    };
    let framework = [
        ("next", "nextjs"),
        ("nuxt", "nuxt"),
        ("@remix-run/serve", "remix"),
        ("@remix-run/node", "remix"),
        ("@nestjs/core", "nestjs"),
        ("astro", "astro"),
        ("@sveltejs/kit", "sveltekit"),
        ("vite", "vite"),
        ("express", "express"),
        ("fastify", "fastify"),
    ]
    .into_iter()
    .find(|(dep_name, _)| dep(dep_name))
    .map(|(_, name)| name);
    facts.framework = framework.map(str::to_owned);

    // Start: the app's own start script, then framework defaults, then `main`, then a
    // conventional entry file.
    let start_script = script("start");
    let dev_server = start_script.as_deref().and_then(dev_server);
    if let Some(start) = start_script.as_deref().filter(|_| dev_server.is_none()) {
        facts.start(start_command(start), "package.json scripts.start");
    } else if let Some((command, from)) = framework_start(framework, dep("@astrojs/node")) {
        facts.start(command, from);
    } else if let Some(main) = json_str(&pkg, "main").filter(|m| tree.is_file(m)) {
        facts.start(format!("node {main}"), "package.json main");
    } else if let Some(entry) = ENTRY_FILES.into_iter().find(|f| tree.is_file(f)) {
        facts.start(format!("node {entry}"), entry.to_owned());
    }
    if let Some(tool) = dev_server {
        facts.notes.push(format!(
            "scripts.start runs a development server ({tool}), which is never an image's start \
             command{}",
            if facts.start.is_some() {
                "; the framework's production server is started instead"
            } else {
                ""
            }
        ));
    }
    // In a mixed tree the server is another language's; Node only builds its assets.
    let server = [
        "composer.json",
        "Gemfile",
        "requirements.txt",
        "pyproject.toml",
        "manage.py",
        "mix.exs",
    ]
    .into_iter()
    .find(|f| tree.is_file(f));
    let no_start = facts.start.is_none();
    let static_site = matches!(framework, Some("astro" | "vite"));
    if let Some(server) = server.filter(|_| no_start) {
        facts.notes.push(format!(
            "assets for the app of {server}: no Node start command"
        ));
    } else if static_site && no_start {
        facts.set("static_output", "dist");
        facts.notes.push(
            "static site: the build writes dist/; serve it with a static file server".to_owned(),
        );
    }

    facts.workspaces = workspaces(tree, &pkg, &pm_name)?;
    if facts.workspaces.is_some() && no_start {
        facts.notes.push(
            "workspace root without a start command: set `web` in kiln.toml [processes], or \
             point Kiln at one member"
                .to_owned(),
        );
    } else if no_start && server.is_none() && !static_site {
        facts.notes.push(format!(
            "no start command: package.json has no scripts.start or main, no framework with a \
             server, and none of {} exists",
            ENTRY_FILES.join(", ")
        ));
    }
    Ok(facts)
}

/// The image's start command for a `start` script: the script's own command, as Paketo runs it,
/// not `npm start` (the image needs no package manager, and the app gets PID 1's signals). A
/// plain `node …` runs directly (no shell needed); anything else runs through `sh` with
/// `node_modules/.bin` first on `PATH`, as `npm run` would put it, and a simple command is
/// `exec`ed.
fn start_command(script: &str) -> String {
    let script = script.trim();
    let simple = !needs_shell(script);
    if simple && script.split_whitespace().next() == Some("node") {
        return script.to_owned();
    }
    let bin = format!("{APP_DIR}/node_modules/.bin");
    let exec = if simple { "exec " } else { "" };
    format!("export PATH=\"{bin}:$PATH\"; {exec}{script}")
}

/// The development server a `start` script runs, if it is one (`vite`, `next dev`,
/// `react-scripts start`, `ng serve`, …): those are never an image's start command.
fn dev_server(script: &str) -> Option<&'static str> {
    let words: Vec<&str> = script
        .split_whitespace()
        .skip_while(|w| w.contains('='))
        .collect();
    let first = words.first().map(|w| w.rsplit('/').next().unwrap_or(w))?;
    let second = words.get(1).copied();
    Some(match (first, second) {
        ("vite", None | Some("dev" | "serve")) => "vite",
        ("vite", Some(w)) if w.starts_with('-') => "vite",
        ("react-scripts", Some("start")) => "react-scripts start",
        ("ng", Some("serve")) => "ng serve",
        ("next", Some("dev")) => "next dev",
        ("nuxt" | "nuxi", Some("dev")) => "nuxt dev",
        ("astro", Some("dev")) => "astro dev",
        ("expo", Some("start")) => "expo start",
        ("webpack-dev-server", _) => "webpack-dev-server",
        ("webpack", Some("serve")) => "webpack serve",
        _ => return None,
    })
}

/// Conventional entry files, tried in this order when package.json names no start.
const ENTRY_FILES: [&str; 5] = ["index.js", "server.js", "app.js", "main.js", "index.mjs"];

/// A framework's own server entry; `astro_node` says Astro has its Node adapter (without it an
/// Astro build is a static site).
fn framework_start(
    framework: Option<&str>,
    astro_node: bool,
) -> Option<(&'static str, &'static str)> {
    let (command, from) = match framework? {
        "nextjs" => ("node_modules/.bin/next start", "Next.js default"),
        "nuxt" => ("node .output/server/index.mjs", "Nuxt default (.output)"),
        "remix" => (
            "node_modules/.bin/remix-serve build/server/index.js",
            "Remix default",
        ),
        "nestjs" => ("node dist/main.js", "NestJS default (dist/main.js)"),
        "sveltekit" => ("node build/index.js", "SvelteKit adapter-node default"),
        "astro" if astro_node => ("node dist/server/entry.mjs", "Astro node adapter default"),
        _ => return None,
    };
    Some((command, from))
}

/// The Node version requirement: `engines.node`, `.nvmrc`, `.node-version`, then mise's
/// `mise.toml` or asdf's `.tool-versions`.
fn node_version(tree: &Tree, pkg: &Value, notes: &mut Vec<String>) -> Result<Option<Sourced>> {
    if let Some(v) = json_str(pkg, "engines.node") {
        return Ok(Some(Sourced {
            version: v.trim().to_owned(),
            from: "package.json engines.node".to_owned(),
        }));
    }
    for file in [".nvmrc", ".node-version"] {
        if let Some(v) = tree.text(file)?.as_deref().and_then(version_text) {
            return Ok(Some(Sourced {
                version: normalize_alias(&v, notes),
                from: file.to_owned(),
            }));
        }
    }
    if let (Some(v), from) = tree.tool_manager_version(&["node", "nodejs"])? {
        return Ok(Some(Sourced {
            version: normalize_alias(&v, notes),
            from,
        }));
    }
    Ok(None)
}

/// `lts/iron` → `20`, `lts/*` → `lts`, `node`/`latest`/`current` → `latest`. Anything else is
/// kept as written: an unknown future version is a valid requirement, not an error.
pub(super) fn normalize_alias(v: &str, notes: &mut Vec<String>) -> String {
    let lower = v.to_ascii_lowercase();
    if let Some(name) = lower.strip_prefix("lts/") {
        if name == "*" {
            return "lts".to_owned();
        }
        if let Some((_, major)) = LTS_NAMES.iter().find(|(n, _)| *n == name) {
            return (*major).to_owned();
        }
        notes.push(format!(
            "unknown LTS code name {v:?}: kept as written for the runtime resolver"
        ));
        return v.to_owned();
    }
    match lower.as_str() {
        "node" | "latest" | "current" | "stable" => "latest".to_owned(),
        "lts" => "lts".to_owned(),
        _ => v.to_owned(),
    }
}

/// `(package manager, installer flavour, lockfile)`.
fn package_manager(
    tree: &Tree,
    pkg: &Value,
) -> Result<(PackageManager, &'static str, Option<&'static str>)> {
    let lockfile = [
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lock",
        "bun.lockb",
    ]
    .into_iter()
    .find(|f| tree.is_file(f));
    let berry = || -> Result<bool> {
        Ok(tree.is_file(".yarnrc.yml")
            || tree
                .text("yarn.lock")?
                .is_some_and(|t| t.contains("__metadata:")))
    };

    if let Some(field) = json_str(pkg, "packageManager") {
        // Corepack form: `pnpm@9.1.0` or `yarn@4.1.0+sha512.…`.
        let (name, version) = field.split_once('@').unwrap_or((field, ""));
        let version = version.split('+').next().unwrap_or("").to_owned();
        let installer = match name {
            "yarn" if version.starts_with('1') => "yarn-classic",
            "yarn" => "yarn-berry",
            "pnpm" => "pnpm",
            "bun" => "bun",
            _ if lockfile.is_some() => "npm-ci",
            _ => "npm-install",
        };
        let pm = PackageManager {
            name: name.to_owned(),
            version: (!version.is_empty()).then_some(version),
            from: "package.json packageManager".to_owned(),
        };
        return Ok((pm, installer, lockfile));
    }
    let (name, version, installer) = match lockfile {
        Some("package-lock.json" | "npm-shrinkwrap.json") => ("npm", None, "npm-ci"),
        Some("yarn.lock") if berry()? => ("yarn", Some(">=2".to_owned()), "yarn-berry"),
        Some("yarn.lock") => ("yarn", Some("1".to_owned()), "yarn-classic"),
        Some("pnpm-lock.yaml") => ("pnpm", pnpm_version(tree)?, "pnpm"),
        Some(_) => ("bun", None, "bun"),
        None => ("npm", None, "npm-install"),
    };
    let mut from = match lockfile {
        Some("yarn.lock") if installer == "yarn-berry" => "yarn.lock (berry)".to_owned(),
        Some(lock) => lock.to_owned(),
        None => "default (no lockfile)".to_owned(),
    };
    // `engines.pnpm` / `engines.yarn` say which versions the project works with, more exactly
    // than a lockfile format does.
    let engines = json_str(pkg, &format!("engines.{name}")).map(|v| v.trim().to_owned());
    let version = match engines.filter(|v| !v.is_empty()) {
        Some(range) if name != "npm" => {
            from = format!("package.json engines.{name}");
            Some(range)
        }
        _ => version,
    };
    let pm = PackageManager {
        name: name.to_owned(),
        version,
        from,
    };
    Ok((pm, installer, lockfile))
}

/// The pnpm major implied by `lockfileVersion` (5.4 → 7, 6.x → 8, 9.x → 9 or later).
fn pnpm_version(tree: &Tree) -> Result<Option<String>> {
    let Some(text) = tree.text("pnpm-lock.yaml")? else {
        return Ok(None);
    };
    let Some(line) = text.lines().find(|l| l.starts_with("lockfileVersion:")) else {
        return Ok(None);
    };
    let v = line["lockfileVersion:".len()..]
        .trim()
        .trim_matches(['\'', '"']);
    Ok(match v.split('.').next() {
        Some("5") => Some("7".to_owned()),
        Some("6") => Some("8".to_owned()),
        Some("9") => Some(">=9".to_owned()),
        _ => None,
    })
}

fn workspaces(tree: &Tree, pkg: &Value, pm: &str) -> Result<Option<Workspaces>> {
    let declared = pkg.get("workspaces").and_then(|w| match w {
        Value::Array(items) => Some(items.clone()),
        Value::Object(o) => o.get("packages").and_then(|p| p.as_array()).cloned(),
        _ => None,
    });
    let mut members: Vec<String> = declared
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut tool = pm.to_owned();
    if let Some(text) = tree.text("pnpm-workspace.yaml")? {
        tool = "pnpm".to_owned();
        // `packages:` followed by `  - 'glob'` lines.
        members.extend(
            text.lines()
                .skip_while(|l| !l.starts_with("packages:"))
                .skip(1)
                .take_while(|l| l.starts_with(' ') || l.starts_with('-'))
                .filter_map(|l| l.trim().strip_prefix('-'))
                .map(|m| m.trim().trim_matches(['\'', '"']).to_owned()),
        );
    }
    let orchestrator = [
        ("turbo.json", "turborepo"),
        ("nx.json", "nx"),
        ("lerna.json", "lerna"),
    ]
    .into_iter()
    .find(|(file, _)| tree.is_file(file))
    .map(|(_, name)| name.to_owned());
    if members.is_empty() && orchestrator.is_none() {
        return Ok(None);
    }
    Ok(Some(Workspaces {
        tool,
        members,
        orchestrator,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_scripts_run_directly_without_a_package_manager() {
        assert_eq!(start_command("node server.js"), "node server.js");
        assert_eq!(
            start_command("next start"),
            "export PATH=\"/workspace/node_modules/.bin:$PATH\"; exec next start"
        );
        // Compound scripts keep their shape: `exec` would cut off what follows.
        assert_eq!(
            start_command("prisma migrate deploy && node dist/main.js"),
            "export PATH=\"/workspace/node_modules/.bin:$PATH\"; \
             prisma migrate deploy && node dist/main.js"
        );
    }

    #[test]
    fn development_servers_are_recognised() {
        for (script, tool) in [
            ("vite", "vite"),
            ("vite --host", "vite"),
            ("react-scripts start", "react-scripts start"),
            ("ng serve", "ng serve"),
            ("next dev -p 3000", "next dev"),
            ("NODE_ENV=development nuxt dev", "nuxt dev"),
            ("expo start --web", "expo start"),
            ("node_modules/.bin/astro dev", "astro dev"),
        ] {
            assert_eq!(dev_server(script), Some(tool), "{script}");
        }
        for script in ["node server.js", "next start", "vite preview", "nuxt start"] {
            assert_eq!(dev_server(script), None, "{script}");
        }
    }

    #[test]
    fn lts_aliases() {
        let mut notes = Vec::new();
        assert_eq!(normalize_alias("lts/iron", &mut notes), "20");
        assert_eq!(normalize_alias("lts/Krypton", &mut notes), "24");
        assert_eq!(normalize_alias("lts/*", &mut notes), "lts");
        assert_eq!(normalize_alias("node", &mut notes), "latest");
        assert_eq!(normalize_alias("25.1.0", &mut notes), "25.1.0");
        assert!(notes.is_empty());
        assert_eq!(normalize_alias("lts/zeta", &mut notes), "lts/zeta");
        assert_eq!(notes.len(), 1);
    }
}
