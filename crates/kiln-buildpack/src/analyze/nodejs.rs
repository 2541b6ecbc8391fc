//! Node.js: package manager (corepack `packageManager`, else the lockfile and its flavour),
//! the Node version requirement with its source, install flavour, build script, start command
//! (scripts, framework defaults, `main`, `index.js`) and workspaces.

use serde_json::Value;

use super::workspace::invalid_choice;
use super::{json_str, version_text, Facts, PackageManager, Sourced, Tree, Workspaces};
use crate::error::{Error, Result};
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

pub(super) fn analyze(tree: &Tree, chosen: Option<&(String, String)>) -> Result<Facts> {
    let mut facts = Facts::default();
    let pkg = package_json(tree, "")?.unwrap_or(Value::Null);

    facts.version = node_version(tree, &pkg, &mut facts.notes)?;
    let (pm, installer, lockfile) = package_manager(tree, &pkg)?;
    facts.set("installer", installer);
    if let Some(lockfile) = lockfile {
        facts.set("lockfile", lockfile);
        if installer == "npm-ci" {
            npm_lock_in_sync(tree, &pkg, lockfile)?;
        }
    }
    let pm_name = pm.name.clone();
    // What `npx` fetches from the npm registry to run pnpm or Yarn: the version the project
    // asks for, never whatever the build host has (pnpm 9 cannot read a pnpm 10 lockfile).
    // Yarn 2+ is published as `@yarnpkg/cli-dist` (the `yarn` package is Yarn 1 only).
    let package = match installer {
        "yarn-berry" => "@yarnpkg/cli-dist",
        _ => pm.name.as_str(),
    };
    facts.set(
        "package_manager_spec",
        match &pm.version {
            Some(version) => format!("{package}@{version}"),
            None => package.to_owned(),
        },
    );
    if installer == "bun" {
        // A Bun project builds and runs on Bun (the runtime layer), not Node: its version is
        // the runtime requirement.
        facts.set("runtime", "bun");
        facts.version = bun_version(tree, &pkg, &pm)?;
    }
    facts.package_manager = Some(pm);

    let root_script = |name: &str| json_str(&pkg, &format!("scripts.{name}")).map(str::to_owned);
    if root_script("build").is_some() {
        facts.set("build_script", "build");
    }
    facts.workspaces = workspaces(tree, &pkg, &pm_name)?;
    if let Some(ws) = facts
        .workspaces
        .as_ref()
        .filter(|ws| !ws.members.is_empty())
    {
        // Members' own node_modules are not in the cached `modules` layer: the install runs.
        facts.set("workspace", ws.tool.clone());
    }
    let member = match &facts.workspaces {
        Some(ws) => workspace_app(tree, &pkg, ws, chosen, &mut facts.notes)?,
        None => match chosen {
            Some((dir, from)) => {
                return Err(Error::Template(format!(
                    "{from} = {dir:?}: {}package.json declares no workspaces (`workspaces`, or \
                     pnpm-workspace.yaml), so there is no member to choose",
                    tree.prefix
                )))
            }
            None => None,
        },
    };

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

    let static_output = match &member {
        Some(member) => {
            let member_tree = Tree {
                src: &tree.src.join(&member.dir),
                prefix: &format!("{}{}/", tree.prefix, member.dir),
            };
            facts.set("app_dir", member.dir.clone());
            facts.set("app_from", member.from.clone());
            if let Some(name) = &member.name {
                facts.set("app_name", name.clone());
            }
            // The root's build (turbo, nx, a script over every member) builds the app and what
            // it depends on; without one, the app's own build does.
            if root_script("build").is_none() && json_str(&member.pkg, "scripts.build").is_some() {
                facts.set("build_script", MEMBER_BUILD);
            }
            app_start(&member_tree, &member.pkg, Some(&member.dir), &mut facts)?
        }
        None => app_start(tree, &pkg, None, &mut facts)?,
    };
    if installer == "bun" {
        on_bun(&mut facts);
    }
    let no_start = facts.start.is_none();
    if let Some(server) = server.filter(|_| no_start) {
        facts.notes.push(format!(
            "assets for the app of {server}: no Node start command"
        ));
    } else if let Some(out) = static_output.filter(|_| no_start) {
        let out = match &member {
            Some(member) => format!("{}/{out}", member.dir),
            None => out,
        };
        facts.notes.push(format!(
            "static site: the build writes {out}/, served by Caddy from the stack"
        ));
        facts.set("static_output", out);
    }

    if facts.workspaces.is_some() && no_start && member.is_none() {
        facts.notes.push(
            "workspace root without a start command: name the app with `app = \"apps/web\"` in \
             kiln.toml or KILN_APP=apps/web, have the root start script name it (`pnpm --filter \
             web start`), or set `web` in kiln.toml [processes]"
                .to_owned(),
        );
    } else if no_start
        && server.is_none()
        && !facts.values.contains_key("static_output")
        && facts.values.remove("start_explained").is_none()
    {
        facts.notes.push(format!(
            "no start command: package.json has no scripts.start or main, no framework with a \
             server, and none of {} exists",
            ENTRY_FILES.join(", ")
        ));
    }
    Ok(facts)
}

/// The package manifest in directory `dir` (`""` or `"apps/web/"`): `package.json`, else pnpm's
/// `package.json5`, read the same way.
fn package_json(tree: &Tree, dir: &str) -> Result<Option<Value>> {
    match tree.json(&format!("{dir}package.json"))? {
        Some(pkg) => Ok(Some(pkg)),
        None => tree.json5(&format!("{dir}package.json5")),
    }
}

/// The `build_script` fact when the chosen workspace member has a build script and the root has
/// none: its build runs (with the workspace dependencies it names, where the package manager
/// can select them) instead of a root build.
const MEMBER_BUILD: &str = "workspace-app";

/// The `build_script` fact when the project has no build script and its framework's build
/// command (fact `framework_build`: `react-scripts build`, `ng build`, `expo export`) writes the
/// static site.
const FRAMEWORK_BUILD: &str = "framework";

/// Framework and start command of the app in `tree` (the root, or the workspace member `dir`),
/// into `facts`. Returns the directory (relative to the app) of a static site's files when the
/// build writes a site and nothing starts a server.
fn app_start(
    tree: &Tree,
    pkg: &Value,
    dir: Option<&str>,
    facts: &mut Facts,
) -> Result<Option<String>> {
    let script = |name: &str| json_str(pkg, &format!("scripts.{name}")).map(str::to_owned);
    let dep = |name: &str| dependency(pkg, name).is_some();
    let framework = [
        ("next", "nextjs"),
        ("nuxt", "nuxt"),
        ("@remix-run/serve", "remix"),
        ("@remix-run/node", "remix"),
        ("@react-router/serve", "react-router"),
        ("@nestjs/core", "nestjs"),
        ("astro", "astro"),
        ("@sveltejs/kit", "sveltekit"),
        ("expo", "expo"),
        ("@angular/core", "angular"),
        ("react-scripts", "create-react-app"),
        ("vite", "vite"),
        ("express", "express"),
        ("fastify", "fastify"),
    ]
    .into_iter()
    .find(|(dep_name, _)| dep(dep_name))
    .map(|(_, name)| name);
    facts.framework = framework.map(str::to_owned);
    let at = |file: &str| match dir {
        Some(dir) => format!("{dir}/{file}"),
        None => file.to_owned(),
    };
    let build = script("build").unwrap_or_default();
    let server = framework_server(tree, framework, pkg, &build, &at)?;
    facts.notes.extend(server.notes.iter().cloned());
    if !server.notes.is_empty() {
        // Said why there is no start: the generic "no start command" note would repeat it.
        facts.set("start_explained", "true");
    }
    if let Some(output) = &server.next_output {
        facts.set("next_output", output.clone());
    }
    prisma(tree, pkg, dir, facts);

    // Start: the app's own start script (unless it runs the framework's CLI where its server
    // build is what runs in production), then the framework's server build, then `main`, then
    // a conventional entry file. A member's file names are relative to its directory.
    let start_script = script("start");
    let dev_server = start_script.as_deref().and_then(dev_server);
    let replaced = start_script
        .as_deref()
        .filter(|s| server.replaces(s))
        .map(str::to_owned);
    if let Some(start) = start_script
        .as_deref()
        .filter(|_| dev_server.is_none() && replaced.is_none())
    {
        facts.start(start_command(start, dir), at("package.json scripts.start"));
    } else if let Some((command, from)) = &server.start {
        let command = match dir {
            // Through PATH: a workspace member's binaries may be hoisted to the root.
            Some(_) => start_command(command.trim_start_matches("node_modules/.bin/"), dir),
            None => command.clone(),
        };
        facts.start(command, from.clone());
    } else if server.static_output.is_some() {
        // A static site: nothing to start.
    } else if let Some(main) = json_str(pkg, "main").filter(|m| tree.is_file(m)) {
        facts.start(
            start_command(&format!("node {main}"), dir),
            at("package.json main"),
        );
    } else if let Some(entry) = ENTRY_FILES.into_iter().find(|f| tree.is_file(f)) {
        facts.start(start_command(&format!("node {entry}"), dir), at(entry));
    }
    if let (Some(script), true) = (&replaced, facts.start.is_some()) {
        facts.notes.push(format!(
            "{} ({script}) is replaced by the framework's server build",
            at("package.json scripts.start")
        ));
    }
    if let Some(tool) = dev_server {
        facts.notes.push(format!(
            "{} runs a development server ({tool}), which is never an image's start \
             command{}",
            match dir {
                Some(dir) => format!("{dir}/package.json scripts.start"),
                None => "scripts.start".to_owned(),
            },
            if facts.start.is_some() {
                "; the framework's production server is started instead"
            } else {
                ""
            }
        ));
    }
    let static_output = server.static_output.filter(|_| facts.start.is_none());
    if static_output.is_some() && server.spa {
        facts.set("spa", "true");
    }
    // No build script of the project's own: the framework's build writes the site (a workspace
    // member's build is the root's or its own, chosen by the caller).
    if let Some(command) = server.build.filter(|_| {
        static_output.is_some() && dir.is_none() && !facts.values.contains_key("build_script")
    }) {
        facts.set("build_script", FRAMEWORK_BUILD);
        facts.set("framework_build", command);
    }
    Ok(static_output)
}

/// The image's start command for a `start` script: the script's own command, as Paketo runs it,
/// not `npm start` (the image needs no package manager, and the app gets PID 1's signals). A
/// plain `node …` runs directly (no shell needed); anything else runs through `sh` with
/// `node_modules/.bin` first on `PATH`, as `npm run` would put it, and a simple command is
/// `exec`ed. A workspace member's command (`dir`) runs in its own directory, with its own and the
/// root's `node_modules/.bin` on `PATH`.
fn start_command(script: &str, dir: Option<&str>) -> String {
    let script = script.trim();
    let simple = !needs_shell(script);
    let node = simple && script.split_whitespace().next() == Some("node");
    let exec = if simple { "exec " } else { "" };
    match dir {
        None if node => script.to_owned(),
        None => format!("export PATH=\"{APP_DIR}/node_modules/.bin:$PATH\"; {exec}{script}"),
        Some(dir) if node => format!("cd {APP_DIR}/{dir} && exec {script}"),
        Some(dir) => format!(
            "cd {APP_DIR}/{dir} && export \
             PATH=\"{APP_DIR}/{dir}/node_modules/.bin:{APP_DIR}/node_modules/.bin:$PATH\"; \
             {exec}{script}"
        ),
    }
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

/// The version spec of dependency `name` in any dependency section of `pkg`.
fn dependency<'a>(pkg: &'a Value, name: &str) -> Option<&'a str> {
    ["dependencies", "devDependencies", "optionalDependencies"]
        .iter()
        .find_map(|section| pkg.get(section)?.get(name)?.as_str())
}

/// Conventional entry files, tried in this order when package.json names no start.
const ENTRY_FILES: [&str; 5] = ["index.js", "server.js", "app.js", "main.js", "index.mjs"];

/// What a framework's configuration says the build makes: a server to start, or static files.
#[derive(Default)]
struct Server {
    /// The server build's start command, with where it came from.
    start: Option<(String, String)>,
    /// The directory of a static build's files, relative to the app.
    static_output: Option<String>,
    /// The static build is a single-page app: unknown paths are its client router's.
    spa: bool,
    /// The framework's command that writes the static site, for a project without a build
    /// script.
    build: Option<&'static str>,
    /// Next.js `output` (`standalone`, `export`).
    next_output: Option<String>,
    /// Start-script commands the server build replaces (the framework CLI's `start`, which
    /// needs its devDependency CLI, or does not serve this output).
    replaces: &'static [&'static str],
    notes: Vec<String>,
}

impl Server {
    fn replaces(&self, script: &str) -> bool {
        let words: Vec<&str> = script.split_whitespace().take(2).collect();
        let words = words.join(" ");
        self.replaces.iter().any(|r| words == *r)
    }
}

/// The first of a framework's config files (`svelte.config.js`, `.mjs`, `.ts`, …) that exists.
fn config_text(tree: &Tree, stem: &str) -> Result<Option<(String, String)>> {
    for ext in ["js", "mjs", "ts", "cjs", "mts"] {
        let file = format!("{stem}.{ext}");
        if let Some(text) = tree.text(&file)? {
            return Ok(Some((file, text)));
        }
    }
    Ok(None)
}

/// The quoted string after `key` (`out: 'build'` → `build`), if the text sets one.
fn quoted_after(text: &str, key: &str) -> Option<String> {
    text.match_indices(key).find_map(|(at, _)| {
        let rest = text[at + key.len()..].trim_start();
        let rest = rest.strip_prefix(':')?.trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '\'' | '"' | '`'))?;
        let value = &rest[1..];
        Some(value[..value.find(quote)?].to_owned())
    })
}

/// The server build (or static output) of `framework`, read from its config where the config
/// decides (SvelteKit's adapter, Next.js `output`, Astro's adapter mode, Nuxt `generate`).
fn framework_server(
    tree: &Tree,
    framework: Option<&str>,
    pkg: &Value,
    build: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<Server> {
    let dep = |name: &str| dependency(pkg, name).is_some();
    let mut server = Server::default();
    let start = |command: &str, from: String| Some((command.to_owned(), from));
    match framework {
        Some("nextjs") => {
            let config = config_text(tree, "next.config")?;
            let output = config
                .as_ref()
                .and_then(|(_, text)| quoted_after(text, "output"));
            let file = config.as_ref().map(|(f, _)| at(f)).unwrap_or_default();
            match output.as_deref() {
                Some("standalone") => {
                    // The standalone server binds HOSTNAME, which container runtimes set to the
                    // container's name: it is told all addresses.
                    server.start = start(
                        "HOSTNAME=0.0.0.0 exec node .next/standalone/server.js",
                        format!("{file} output: 'standalone'"),
                    );
                    server.next_output = Some("standalone".to_owned());
                    server.replaces = &["next start"];
                }
                Some("export") => {
                    server.static_output = Some("out".to_owned());
                    server.next_output = Some("export".to_owned());
                    server.replaces = &["next start"];
                    server.notes.push(format!(
                        "{file} output: 'export': the build writes a static site to {}",
                        at("out/")
                    ));
                }
                _ => server.start = start("node_modules/.bin/next start", "Next.js default".into()),
            }
        }
        Some("nuxt") if build.contains("generate") => {
            server.static_output = Some(".output/public".to_owned());
        }
        Some("nuxt") => {
            server.start = start(
                "node .output/server/index.mjs",
                "Nuxt default (.output)".into(),
            );
            server.replaces = &["nuxt start", "nuxi start", "nuxt preview", "nuxi preview"];
        }
        Some("remix") if dep("@remix-run/serve") => {
            // Remix on Vite writes build/server/; the classic compiler build/index.js.
            let vite = config_text(tree, "vite.config")?.is_some() || build.contains("vite:build");
            let entry = if vite {
                "build/server/index.js"
            } else {
                "build/index.js"
            };
            server.start = Some((
                format!("node_modules/.bin/remix-serve {entry}"),
                "Remix default".to_owned(),
            ));
        }
        Some("remix") => server.notes.push(
            "Remix without @remix-run/serve has its own server: set scripts.start".to_owned(),
        ),
        Some("react-router") => {
            server.start = start(
                "node_modules/.bin/react-router-serve build/server/index.js",
                "React Router default".into(),
            );
        }
        Some("nestjs") => {
            server.start = start("node dist/main.js", "NestJS default (dist/main.js)".into());
        }
        Some("sveltekit") => sveltekit(tree, pkg, &mut server, at)?,
        Some("astro") if dep("@astrojs/node") => {
            let config = config_text(tree, "astro.config")?;
            let file = config
                .as_ref()
                .map(|(f, _)| at(f))
                .unwrap_or_else(|| "package.json".to_owned());
            let mode = config.and_then(|(_, text)| quoted_after(&text, "mode"));
            if mode.as_deref() == Some("middleware") {
                server.notes.push(format!(
                    "{file}: @astrojs/node in middleware mode builds a handler for your own \
                     server: set scripts.start"
                ));
            } else {
                // The standalone server listens on HOST, else localhost: it is told all
                // addresses (and reads PORT itself).
                server.start = start(
                    "HOST=0.0.0.0 exec node ./dist/server/entry.mjs",
                    format!("{file} @astrojs/node (standalone)"),
                );
                server.replaces = &["astro preview"];
            }
        }
        Some("astro") => server.static_output = Some("dist".to_owned()),
        Some("create-react-app") => {
            server.static_output = Some("build".to_owned());
            server.spa = true;
            server.build = Some("react-scripts build");
        }
        Some("angular") => angular(tree, &mut server, at)?,
        Some("expo") => expo(tree, pkg, &mut server, at)?,
        // A Vite app without a server framework is a client-rendered single-page app.
        Some("vite") => {
            server.static_output = Some("dist".to_owned());
            server.spa = true;
        }
        _ => {}
    }
    Ok(server)
}

/// Angular: the site `ng build` writes, from angular.json's application project (`defaultProject`,
/// else the only application, else the first by name, noted): the `application` builder
/// (Angular 17+) writes `<outputPath>/browser` (`outputPath.base`/`.browser` when it is an
/// object), the older `browser` builders `<outputPath>`; default `dist/<project>`. A project
/// with server-side rendering (`ssr`) starts its server instead.
fn angular(tree: &Tree, server: &mut Server, at: &dyn Fn(&str) -> String) -> Result<()> {
    let file = at("angular.json");
    let Some(config) = tree.json("angular.json")? else {
        server
            .notes
            .push(format!("Angular without {file}: no build output to serve"));
        return Ok(());
    };
    let projects = config.get("projects").and_then(Value::as_object);
    let applications: Vec<&String> = projects
        .into_iter()
        .flatten()
        .filter(|(_, p)| json_str(p, "projectType").is_none_or(|t| t == "application"))
        .map(|(name, _)| name)
        .collect();
    let default =
        json_str(&config, "defaultProject").filter(|d| applications.iter().any(|a| a == d));
    let Some(name) = default.or(applications.first().map(|n| n.as_str())) else {
        server.notes.push(format!(
            "{file} has no application project: no build output to serve"
        ));
        return Ok(());
    };
    if default.is_none() && applications.len() > 1 {
        let names: Vec<&str> = applications.iter().map(|n| n.as_str()).collect();
        server.notes.push(format!(
            "{file} has several application projects ({}): serving {name}; set `defaultProject`",
            names.join(", ")
        ));
    }
    let build = projects
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("architect").or_else(|| p.get("targets")))
        .and_then(|a| a.get("build"))
        .cloned()
        .unwrap_or(Value::Null);
    let builder = json_str(&build, "builder").unwrap_or_default();
    let options = build.get("options").cloned().unwrap_or(Value::Null);
    let (base, browser) = match options.get("outputPath") {
        Some(Value::String(path)) => (path.clone(), None),
        Some(path @ Value::Object(_)) => (
            json_str(path, "base").map_or_else(|| format!("dist/{name}"), str::to_owned),
            json_str(path, "browser").map(str::to_owned),
        ),
        _ => (format!("dist/{name}"), None),
    };
    let base = base
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_owned();
    let application = builder.ends_with(":application");
    let ssr = options
        .get("ssr")
        .is_some_and(|s| !matches!(s, Value::Bool(false) | Value::Null));
    if application && ssr {
        server.start = Some((
            format!("node {base}/server/server.mjs"),
            format!("{file} projects.{name} ssr"),
        ));
        return Ok(());
    }
    let site = match browser.as_deref() {
        _ if !application => base,
        Some("") => base,
        Some(browser) => format!("{base}/{browser}"),
        None => format!("{base}/browser"),
    };
    server.notes.push(format!(
        "{file} projects.{name} ({}): the build writes {}",
        if builder.is_empty() {
            "default builder"
        } else {
            builder
        },
        at(&format!("{site}/"))
    ));
    server.static_output = Some(site);
    server.spa = true;
    server.build = Some("ng build");
    Ok(())
}

/// Expo: the web build `expo export --platform web` writes to `dist/`, as app.json
/// `expo.web.output` asks: `single` (the default) a single-page app, `static` a page per route;
/// `server` builds a server for Expo's server adapters, not a static site. Without
/// react-native-web there is no web build at all (a native app is no container image).
fn expo(tree: &Tree, pkg: &Value, server: &mut Server, at: &dyn Fn(&str) -> String) -> Result<()> {
    if dependency(pkg, "react-native-web").is_none() {
        server.notes.push(format!(
            "Expo app without react-native-web in {}: no web build to serve",
            at("package.json")
        ));
        return Ok(());
    }
    let app = tree.json("app.json")?.unwrap_or(Value::Null);
    let output = json_str(&app, "expo.web.output").unwrap_or("single");
    match output {
        "single" | "static" => {
            server.static_output = Some("dist".to_owned());
            server.spa = output == "single";
            server.build = Some("expo export --platform web");
        }
        other => server.notes.push(format!(
            "{} expo.web.output {other:?} builds a server, not a static site: set \
             scripts.start to run it",
            at("app.json")
        )),
    }
    Ok(())
}

/// SvelteKit: what the adapter the project imports (in `svelte.config.*`, else `vite.config.*`,
/// where SvelteKit 2 projects may configure it) builds. adapter-node a server (`node build`, or
/// its `out` directory), adapter-static a site (`pages`, default `build`); adapter-auto is
/// started as adapter-node's output, with a note; hosting adapters build nothing a container
/// can start.
fn sveltekit(
    tree: &Tree,
    pkg: &Value,
    server: &mut Server,
    at: &dyn Fn(&str) -> String,
) -> Result<()> {
    let mut configs = Vec::new();
    for stem in ["svelte.config", "vite.config"] {
        configs.extend(config_text(tree, stem)?);
    }
    let imported = configs
        .iter()
        .find_map(|(file, text)| Some((file, text, imported_adapter(text)?)));
    let (file, text, adapter) = match imported {
        Some((file, text, adapter)) => (at(file), text.clone(), Some(adapter)),
        None => {
            let file = configs
                .first()
                .map_or("svelte.config.js", |(f, _)| f.as_str());
            (at(file), String::new(), None)
        }
    };
    // Without a config importing one, the only adapter among the dependencies.
    let adapter = adapter.or_else(|| {
        let installed: Vec<&str> = ["node", "static"]
            .into_iter()
            .filter(|a| dependency(pkg, &format!("@sveltejs/adapter-{a}")).is_some())
            .collect();
        (installed.len() == 1).then(|| installed[0].to_owned())
    });
    match adapter.as_deref() {
        Some("node") => {
            let out = adapter_dir(&text, "out");
            server.start = Some((format!("node {out}"), format!("{file} adapter-node")));
        }
        Some("static") => {
            let pages = adapter_dir(&text, "pages");
            let spa = quoted_after(&text, "fallback");
            server.notes.push(format!(
                "{file} adapter-static: the build writes a static site to {}{}",
                at(&format!("{pages}/")),
                match &spa {
                    Some(fallback) => format!(" (single-page app, fallback {fallback})"),
                    None => String::new(),
                }
            ));
            server.spa = spa.is_some();
            server.static_output = Some(pages);
        }
        Some("auto") => {
            server.start = Some(("node build".to_owned(), format!("{file} adapter-auto")));
            server.notes.push(format!(
                "{file} uses adapter-auto, which picks an adapter for the host it builds on and \
                 knows no container host: the image starts adapter-node's output (`node build`); \
                 use @sveltejs/adapter-node in {file} so the build writes it"
            ));
        }
        Some(other) => server.notes.push(format!(
            "{file} uses adapter-{other}, which builds no server a container can start: use \
             @sveltejs/adapter-node (or adapter-static for a static site)"
        )),
        None => server.notes.push(format!(
            "{file} configures no adapter Kiln can start: use @sveltejs/adapter-node (or \
             adapter-static for a static site)"
        )),
    }
    Ok(())
}

/// The SvelteKit adapter a config file imports (`import adapter from '@sveltejs/adapter-node'`,
/// `require("@sveltejs/adapter-static")`, `await import(…)`): `node`, `static`, `auto`, … A
/// mention anywhere else (a comment, a string) is not an import.
fn imported_adapter(text: &str) -> Option<String> {
    const PACKAGE: &str = "@sveltejs/adapter-";
    text.match_indices(PACKAGE).find_map(|(at, _)| {
        let before = text[..at].strip_suffix(['\'', '"', '`'])?.trim_end();
        let imports = before.ends_with("from")
            || before.ends_with("require(")
            || before.ends_with("import(")
            || before.ends_with("import");
        let rest = &text[at + PACKAGE.len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))?;
        imports.then(|| rest[..end].to_owned())
    })
}

/// A SvelteKit adapter's output directory option (`out`, `pages`), default `build`, as a plain
/// relative path.
fn adapter_dir(config: &str, option: &str) -> String {
    let dir = quoted_after(config, option).unwrap_or_else(|| "build".to_owned());
    dir.trim_start_matches("./")
        .trim_end_matches('/')
        .to_owned()
}

/// Prisma: `prisma generate` runs at build (facts `prisma_spec`, `prisma_schema`) when
/// `prisma` or `@prisma/client` is a dependency and the schema is found (package.json
/// `prisma.schema`, `prisma/schema.prisma`, `schema.prisma`, or the `prisma/schema/` folder),
/// with the CLI version the project declares (the client's when only it is declared).
fn prisma(tree: &Tree, pkg: &Value, dir: Option<&str>, facts: &mut Facts) {
    let Some(version) = dependency(pkg, "prisma").or_else(|| dependency(pkg, "@prisma/client"))
    else {
        return;
    };
    let at = |file: &str| match dir {
        Some(dir) => format!("{dir}/{file}"),
        None => file.to_owned(),
    };
    let schema = json_str(pkg, "prisma.schema")
        .map(str::to_owned)
        .or_else(|| {
            ["prisma/schema.prisma", "schema.prisma"]
                .into_iter()
                .find(|f| tree.is_file(f))
                .map(str::to_owned)
        })
        .or_else(|| {
            tree.is_dir("prisma/schema")
                .then(|| "prisma/schema".to_owned())
        });
    match schema {
        Some(schema) => {
            facts.set("prisma_spec", format!("prisma@{}", version.trim()));
            facts.set("prisma_schema", at(&schema));
        }
        None => facts.notes.push(format!(
            "Prisma is a dependency but no schema was found ({}): prisma generate does not run",
            at("prisma/schema.prisma")
        )),
    }
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

/// Bun's version requirement: `packageManager` `bun@1.2.3`, `engines.bun`, `.bun-version`,
/// mise / asdf; `None` leaves the buildpack's default (the newest release).
fn bun_version(tree: &Tree, pkg: &Value, pm: &PackageManager) -> Result<Option<Sourced>> {
    if let Some(version) = pm
        .version
        .as_ref()
        .filter(|_| pm.from.contains("packageManager"))
    {
        return Ok(Some(Sourced {
            version: version.clone(),
            from: pm.from.clone(),
        }));
    }
    if let Some(v) = json_str(pkg, "engines.bun")
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        return Ok(Some(Sourced {
            version: v.to_owned(),
            from: "package.json engines.bun".to_owned(),
        }));
    }
    if let Some(v) = tree.text(".bun-version")?.as_deref().and_then(version_text) {
        return Ok(Some(Sourced {
            version: v,
            from: ".bun-version".to_owned(),
        }));
    }
    let (version, from) = tree.tool_manager_version(&["bun"])?;
    Ok(version.map(|version| Sourced { version, from }))
}

/// A Bun app's start command runs its entry on Bun: `node server.js` (a start script, `main`,
/// an entry file) becomes `bun server.js`; other commands are left as written (`bun run`
/// gives scripts that call `node` Bun in its place).
fn on_bun(facts: &mut Facts) {
    let Some(start) = &mut facts.start else {
        return;
    };
    let command = &start.command;
    let rewritten = if let Some(rest) = command.strip_prefix("node ") {
        Some(format!("bun {rest}"))
    } else {
        command
            .find("&& exec node ")
            .map(|at| format!("{}&& exec bun {}", &command[..at], &command[at + 13..]))
    };
    if let Some(rewritten) = rewritten {
        start.command = rewritten;
        start.from = format!("{} (on Bun)", start.from);
    }
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

/// An npm lockfile that lacks a dependency package.json declares (added to package.json without
/// `npm install`) is refused before any step, naming the fix: `npm ci` would fail on it, and
/// Kiln never falls back to `npm install`, which would ship versions no lockfile pins. Other
/// drift (a changed range) is left to `npm ci`'s own check, whose message names `npm install`
/// too. Lockfiles before version 2 (no `packages`) are not checked.
fn npm_lock_in_sync(tree: &Tree, pkg: &Value, lockfile: &str) -> Result<()> {
    let Some(lock) = tree.json(lockfile)? else {
        return Ok(());
    };
    let Some(packages) = lock.get("packages").and_then(Value::as_object) else {
        return Ok(());
    };
    let root = packages.get("");
    for section in ["dependencies", "devDependencies", "optionalDependencies"] {
        let Some(deps) = pkg.get(section).and_then(Value::as_object) else {
            continue;
        };
        for name in deps.keys() {
            let recorded = root
                .and_then(|r| r.get(section))
                .and_then(|d| d.get(name))
                .is_some()
                || packages.contains_key(&format!("node_modules/{name}"));
            if !recorded {
                return Err(Error::Manifest {
                    path: format!("{}{lockfile}", tree.prefix).into(),
                    line: None,
                    column: None,
                    message: format!(
                        "out of sync with package.json: {section}.{name} is not in it; run \
                         `npm install` and commit the updated {lockfile}"
                    ),
                });
            }
        }
    }
    Ok(())
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

/// A workspace member chosen as the app.
struct Member {
    /// Its directory relative to the workspace root (`apps/web`).
    dir: String,
    /// Its package.json `name`.
    name: Option<String>,
    pkg: Value,
    /// Why it was chosen, for the plan.
    from: String,
}

/// The app of a workspace: the user's choice (`KILN_APP` / `kiln.toml` `app`), else the member
/// the root `start` (then `build`) script runs (`pnpm --filter web start`, `npm start -w
/// apps/web`, `yarn workspace web start`, `turbo run start --filter=web`, `nx run web:start`),
/// else the only member with a start command. `None` (with a note naming the candidates) when
/// it cannot be told, or when the root's own start script is the app.
fn workspace_app(
    tree: &Tree,
    pkg: &Value,
    ws: &Workspaces,
    chosen: Option<&(String, String)>,
    notes: &mut Vec<String>,
) -> Result<Option<Member>> {
    let read = |dir: &str| package_json(tree, &format!("{dir}/"));
    if let Some(choice) = chosen {
        ws.check_choice(choice)?;
        let (dir, from) = choice;
        let pkg = read(dir)?.ok_or_else(|| {
            invalid_choice(
                choice,
                format!("{}{dir}/package.json not found", tree.prefix),
            )
        })?;
        return Ok(Some(Member {
            dir: dir.clone(),
            name: json_str(&pkg, "name").map(str::to_owned),
            pkg,
            from: from.clone(),
        }));
    }
    let members = members(tree, ws, notes)?;
    for script in ["start", "build"] {
        let Some(line) = json_str(pkg, &format!("scripts.{script}")) else {
            continue;
        };
        if let Some((dir, name, pkg)) = named_member(line, &members) {
            return Ok(Some(Member {
                dir: dir.clone(),
                name: name.clone(),
                pkg: pkg.clone(),
                from: format!("package.json scripts.{script} ({})", line.trim()),
            }));
        }
        if script == "start" {
            // The root's own start script runs the app.
            return Ok(None);
        }
    }
    let startable: Vec<&(String, Option<String>, Value)> = members
        .iter()
        .filter(|(_, _, pkg)| {
            json_str(pkg, "scripts.start").is_some_and(|s| dev_server(s).is_none())
        })
        .collect();
    match startable.as_slice() {
        [(dir, name, pkg)] => Ok(Some(Member {
            dir: dir.clone(),
            name: name.clone(),
            pkg: pkg.clone(),
            from: "the only workspace member with a start script".to_owned(),
        })),
        [] => Ok(None),
        several => {
            let dirs: Vec<&str> = several.iter().map(|(dir, _, _)| dir.as_str()).collect();
            notes.push(format!(
                "several workspace members have a start script ({}): choose one with `app = \
                 \"{}\"` in kiln.toml or KILN_APP",
                dirs.join(", "),
                dirs[0]
            ));
            Ok(None)
        }
    }
}

/// The workspace's members with a package.json: `(dir, name, package.json)`, sorted by dir.
/// Patterns are expanded one level (`apps/*`) or taken as written (`apps/web`); deeper globs
/// (`**`) are not walked (detection never walks the tree) and are noted.
fn members(
    tree: &Tree,
    ws: &Workspaces,
    notes: &mut Vec<String>,
) -> Result<Vec<(String, Option<String>, Value)>> {
    let mut found = Vec::new();
    for dir in ws.member_dirs(tree, notes)? {
        if let Some(pkg) = package_json(tree, &format!("{dir}/"))? {
            let name = json_str(&pkg, "name").map(str::to_owned);
            found.push((dir, name, pkg));
        }
    }
    Ok(found)
}

/// The member a root script runs through the package manager or a task runner: the value of
/// `--filter`/`-F`, `--workspace`/`-w`, `--scope`, `--cwd`/`--dir`/`-C`/`--prefix`, `yarn
/// workspace NAME`, `nx run NAME:…`/`nx start NAME`, matched by package name or directory.
fn named_member<'a>(
    script: &str,
    members: &'a [(String, Option<String>, Value)],
) -> Option<&'a (String, Option<String>, Value)> {
    let words: Vec<&str> = script
        .split_whitespace()
        .map(|w| w.trim_matches(['\'', '"']))
        .collect();
    let mut candidates = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1).copied();
        if let Some((flag, value)) = word.split_once('=') {
            if matches!(
                flag,
                "--filter" | "--workspace" | "--scope" | "--cwd" | "--dir" | "--prefix"
            ) {
                candidates.push(value);
            }
            continue;
        }
        match (*word, next) {
            (
                "--filter" | "-F" | "--workspace" | "-w" | "--scope" | "--cwd" | "--dir" | "-C"
                | "--prefix",
                Some(value),
            ) => candidates.push(value),
            ("workspace", Some(value)) if i > 0 && words[i - 1].ends_with("yarn") => {
                candidates.push(value)
            }
            ("run", Some(value)) if i > 0 && words[i - 1].ends_with("nx") => {
                candidates.push(value.split(':').next().unwrap_or(value))
            }
            ("start" | "serve", Some(value)) if i > 0 && words[i - 1].ends_with("nx") => {
                candidates.push(value)
            }
            _ => {}
        }
    }
    candidates.into_iter().find_map(|value| {
        // pnpm selectors: `web...`, `...web`, `{apps/web}`, `./apps/web`.
        let value = value.trim_matches('.').trim_start_matches('/');
        let value = value.trim_start_matches('{').trim_end_matches('}');
        let value = value.trim_start_matches("./").trim_end_matches('/');
        members
            .iter()
            .find(|(dir, name, _)| name.as_deref() == Some(value) || dir == value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_scripts_run_directly_without_a_package_manager() {
        assert_eq!(start_command("node server.js", None), "node server.js");
        assert_eq!(
            start_command("next start", None),
            "export PATH=\"/workspace/node_modules/.bin:$PATH\"; exec next start"
        );
        // Compound scripts keep their shape: `exec` would cut off what follows.
        assert_eq!(
            start_command("prisma migrate deploy && node dist/main.js", None),
            "export PATH=\"/workspace/node_modules/.bin:$PATH\"; \
             prisma migrate deploy && node dist/main.js"
        );
    }

    #[test]
    fn workspace_members_run_from_their_directory() {
        assert_eq!(
            start_command("node server.js", Some("apps/web")),
            "cd /workspace/apps/web && exec node server.js"
        );
        assert_eq!(
            start_command("next start", Some("apps/web")),
            "cd /workspace/apps/web && export PATH=\"/workspace/apps/web/node_modules/.bin:\
             /workspace/node_modules/.bin:$PATH\"; exec next start"
        );
    }

    #[test]
    fn root_scripts_name_their_workspace_member() {
        let member = |dir: &str, name: &str| (dir.to_owned(), Some(name.to_owned()), Value::Null);
        let members = [member("apps/web", "@acme/web"), member("apps/api", "api")];
        let named = |script: &str| named_member(script, &members).map(|m| m.0.as_str());
        for (script, dir) in [
            ("pnpm --filter @acme/web start", Some("apps/web")),
            ("pnpm -F api start", Some("apps/api")),
            ("pnpm --filter=./apps/web run start", Some("apps/web")),
            ("pnpm --filter '{apps/api}...' build", Some("apps/api")),
            ("npm start -w apps/api", Some("apps/api")),
            ("npm run start --workspace=@acme/web", Some("apps/web")),
            ("yarn workspace api start", Some("apps/api")),
            ("turbo run start --filter=api", Some("apps/api")),
            ("nx run api:serve", Some("apps/api")),
            ("npx nx start @acme/web", Some("apps/web")),
            ("pnpm --filter docs start", None),
            ("turbo run start", None),
            ("node apps/web/server.js", None),
        ] {
            assert_eq!(named(script), dir, "{script}");
        }
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
    fn sveltekit_adapters_are_read_from_imports() {
        for (config, adapter) in [
            (
                "import adapter from '@sveltejs/adapter-node';",
                Some("node"),
            ),
            (
                "import adapter from \"@sveltejs/adapter-static\"",
                Some("static"),
            ),
            (
                "const adapter = require('@sveltejs/adapter-auto');",
                Some("auto"),
            ),
            (
                "const { default: a } = await import('@sveltejs/adapter-node')",
                Some("node"),
            ),
            (
                "// was @sveltejs/adapter-auto\nimport adapter from '@sveltejs/adapter-static';",
                Some("static"),
            ),
            ("// TODO: try @sveltejs/adapter-node", None),
            ("export default { plugins: [sveltekit()] }", None),
        ] {
            assert_eq!(imported_adapter(config).as_deref(), adapter, "{config}");
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
