//! Python: package manager (uv, Poetry, PDM, Hatch, Pipenv, pip), the Python version requirement
//! with its source, framework (Django, FastAPI, Flask) and the start command.

use super::{
    between, first_version, mentions_package, toml_str, version_text, Facts, PackageManager, Tree,
    PORT,
};
use crate::error::Result;

pub(super) fn analyze(tree: &Tree) -> Result<Facts> {
    let mut facts = Facts::default();
    let pyproject = tree.toml("pyproject.toml")?;
    let pipfile = tree.toml("Pipfile")?;
    let requirements = tree.text("requirements.txt")?;

    let has_tool = |name: &str| {
        pyproject
            .as_ref()
            .and_then(|t| t.get("tool"))
            .and_then(|t| t.get(name))
            .is_some()
    };
    let backend = pyproject
        .as_ref()
        .and_then(|t| toml_str(t, "build-system.build-backend"))
        .unwrap_or("");
    // Installer flavour, most specific evidence first.
    let (name, installer, from) = if tree.is_file("uv.lock") {
        ("uv", "uv", "uv.lock")
    } else if tree.is_file("poetry.lock") || has_tool("poetry") {
        let from = if tree.is_file("poetry.lock") {
            "poetry.lock"
        } else {
            "pyproject.toml [tool.poetry]"
        };
        // A lockfile is honoured (see the `export` step); without one pip builds the project.
        let installer = if tree.is_file("poetry.lock") {
            "poetry"
        } else {
            "pip-project"
        };
        ("poetry", installer, from)
    } else if tree.is_file("pdm.lock") || has_tool("pdm") {
        (
            "pdm",
            "pip-project",
            if tree.is_file("pdm.lock") {
                "pdm.lock"
            } else {
                "pyproject.toml [tool.pdm]"
            },
        )
    } else if tree.is_file("Pipfile") {
        ("pipenv", "pipenv", "Pipfile")
    } else if requirements.is_some() {
        ("pip", "pip-requirements", "requirements.txt")
    } else if has_tool("hatch") || backend.starts_with("hatchling") {
        ("hatch", "pip-project", "pyproject.toml (hatchling)")
    } else if pyproject.is_some() {
        ("pip", "pip-project", "pyproject.toml")
    } else if tree.is_file("setup.py") {
        ("pip", "pip-project", "setup.py")
    } else {
        ("pip", "none", "default (no dependency manifest)")
    };
    // uv and Poetry themselves are installed by pip into the `tools` layer at the version the
    // project asks for (the plan shows it with its source).
    let tool_version = match installer {
        "uv" | "poetry" => tool_requirement(tree, pyproject.as_ref(), installer)?,
        _ => None,
    };
    if let Some(tool) = ["uv", "poetry"].into_iter().find(|t| *t == installer) {
        let spec = match &tool_version {
            Some((version, _)) => format!("{tool}{}", pep440(version)),
            None => tool.to_owned(),
        };
        facts.set("package_manager_spec", spec);
    }
    facts.package_manager = Some(PackageManager {
        name: name.to_owned(),
        version: tool_version.as_ref().map(|(v, _)| v.clone()),
        from: match &tool_version {
            Some((_, source)) => format!("{from}; version from {source}"),
            None => from.to_owned(),
        },
    });
    facts.set("installer", installer);

    let pipfile_python = pipfile.as_ref().and_then(|p| {
        toml_str(p, "requires.python_version")
            .or_else(|| toml_str(p, "requires.python_full_version"))
    });
    let pyproject_key = |key: &str| {
        pyproject
            .as_ref()
            .and_then(|p| toml_str(p, key))
            .map(str::to_owned)
    };
    facts.version = first_version(vec![
        (
            tree.text(".python-version")?
                .as_deref()
                .and_then(version_text),
            ".python-version".into(),
        ),
        (
            tree.text("runtime.txt")?
                .as_deref()
                .and_then(version_text)
                .map(|v| v.strip_prefix("python-").unwrap_or(&v).to_owned()),
            "runtime.txt".into(),
        ),
        (
            pipfile_python.map(str::to_owned),
            "Pipfile requires.python_version".into(),
        ),
        (
            pyproject_key("project.requires-python"),
            "pyproject.toml project.requires-python".into(),
        ),
        (
            pyproject_key("tool.poetry.dependencies.python"),
            "pyproject.toml tool.poetry.dependencies.python".into(),
        ),
        tree.tool_manager_version(&["python"])?,
    ]);

    // Dependencies as text: enough to recognise a framework by distribution name.
    let mut deps = requirements.unwrap_or_default();
    for file in ["pyproject.toml", "Pipfile", "setup.py"] {
        if let Some(text) = tree.text(file)? {
            deps.push('\n');
            deps.push_str(&text);
        }
    }
    let entry = ["main.py", "app.py", "server.py", "wsgi.py", "bot.py"]
        .into_iter()
        .find(|f| tree.is_file(f));
    let module = entry.map(|e| e.trim_end_matches(".py"));

    let has = |package: &str| mentions_package(&deps, package);
    // Servers honour $PORT (8080 when unset): gunicorn reads it itself, the others are told.
    if tree.is_file("manage.py") && (has("django") || deps.is_empty()) {
        facts.framework = Some("django".into());
        match django_wsgi(tree)? {
            Some(package) => {
                if has("gunicorn") {
                    facts.start(
                        format!("python -m gunicorn {package}.wsgi"),
                        format!("Django: manage.py + {package}/wsgi.py, gunicorn"),
                    );
                } else {
                    facts.start(
                        format!("exec python manage.py runserver 0.0.0.0:{PORT}"),
                        "Django: manage.py runserver (no gunicorn in the dependencies)",
                    );
                    facts.notes.push(
                        "Django's development server starts the app: add gunicorn to the \
                         dependencies for a production server"
                            .into(),
                    );
                }
                let settings = tree.text(&format!("{package}/settings.py"))?;
                if settings.is_some_and(|s| s.contains("STATIC_ROOT")) {
                    facts.set("django_collectstatic", "manage.py");
                }
            }
            None => facts.notes.push(
                "Django project without a <package>/wsgi.py next to manage.py: no start command"
                    .into(),
            ),
        }
    } else if let Some((framework, marker)) = [
        ("fastapi", "FastAPI("),
        ("python-fasthtml", "fast_app("),
        ("starlette", "Starlette("),
    ]
    .into_iter()
    .find(|(package, _)| has(package))
    {
        let name = framework.trim_start_matches("python-");
        facts.framework = Some(name.into());
        let module = asgi_module(tree, module, marker)?;
        facts.start(
            format!("exec python -m uvicorn {module}:app --host 0.0.0.0 --port {PORT}"),
            format!("{name}: uvicorn"),
        );
    } else if has("flask") {
        facts.framework = Some("flask".into());
        let module = asgi_module(tree, module, "Flask(")?;
        if has("gunicorn") {
            facts.start(
                format!("python -m gunicorn {module}:app"),
                "Flask: gunicorn",
            );
        } else {
            facts.start(
                format!("exec python -m flask --app {module} run --host 0.0.0.0 --port {PORT}"),
                "Flask: flask run (no gunicorn in the dependencies)",
            );
            facts.notes.push(
                "Flask's development server starts the app: add gunicorn to the dependencies \
                 for a production server"
                    .into(),
            );
        }
    } else if let Some(entry) = entry.filter(|e| *e != "wsgi.py") {
        facts.start(format!("python {entry}"), entry);
    } else if entry == Some("wsgi.py") {
        facts.start("python -m gunicorn wsgi", "wsgi.py: gunicorn");
    }
    if let Some(start) = &facts.start {
        if start.command.contains("gunicorn") && !mentions_package(&deps, "gunicorn") {
            facts
                .notes
                .push("the start command uses gunicorn, which is not a declared dependency".into());
        }
        if start.command.contains("uvicorn") && !mentions_package(&deps, "uvicorn") {
            facts
                .notes
                .push("the start command uses uvicorn, which is not a declared dependency".into());
        }
    }
    Ok(facts)
}

/// The version of `tool` (`uv`, `poetry`) the project asks for, with where it says so:
/// `[tool.uv] required-version` / `[tool.poetry] requires-poetry`, Poetry's lockfile header
/// (`@generated by Poetry 2.1.3`), mise / asdf.
fn tool_requirement(
    tree: &Tree,
    pyproject: Option<&toml::Table>,
    tool: &str,
) -> Result<Option<(String, String)>> {
    let key = match tool {
        "uv" => "tool.uv.required-version",
        _ => "tool.poetry.requires-poetry",
    };
    if let Some(v) = pyproject.and_then(|p| toml_str(p, key)) {
        return Ok(Some((v.trim().to_owned(), format!("pyproject.toml {key}"))));
    }
    if tool == "poetry" {
        let header = tree
            .text("poetry.lock")?
            .and_then(|t| between(&t, "@generated by Poetry ", " "));
        if let Some(v) = header.filter(|v| v.starts_with(|c: char| c.is_ascii_digit())) {
            return Ok(Some((v, "poetry.lock header".to_owned())));
        }
    }
    let (version, from) = tree.tool_manager_version(&[tool])?;
    Ok(version.map(|v| (v, from)))
}

/// A version as a pip requirement's specifier: `0.5.11` → `==0.5.11`; `>=0.5`, `~=2.1` as
/// written.
fn pep440(version: &str) -> String {
    let version = version.trim();
    if version.starts_with(|c: char| c.is_ascii_digit()) {
        format!("=={version}")
    } else {
        version.replace(' ', "")
    }
}

/// The Django project package: the one directory next to `manage.py` holding a `wsgi.py`,
/// preferring the one `manage.py` names in `DJANGO_SETTINGS_MODULE`.
fn django_wsgi(tree: &Tree) -> Result<Option<String>> {
    if let Some(settings) = tree
        .text("manage.py")?
        .and_then(|t| between(&t, "DJANGO_SETTINGS_MODULE\", \"", "\""))
    {
        let package = settings.split('.').next().unwrap_or("").to_owned();
        if tree.is_file(&format!("{package}/wsgi.py")) {
            return Ok(Some(package));
        }
    }
    let candidates: Vec<String> = tree
        .list(".", true)?
        .into_iter()
        .filter(|d| tree.is_file(&format!("{d}/wsgi.py")))
        .collect();
    Ok(candidates.into_iter().next())
}

/// The module defining the app object: the entry file that constructs it, else the first entry.
fn asgi_module(tree: &Tree, fallback: Option<&str>, marker: &str) -> Result<String> {
    for file in [
        "main.py",
        "app.py",
        "server.py",
        "app/main.py",
        "src/main.py",
    ] {
        if tree.text(file)?.is_some_and(|t| t.contains(marker)) {
            return Ok(file.trim_end_matches(".py").replace('/', "."));
        }
    }
    Ok(fallback.unwrap_or("main").to_owned())
}
