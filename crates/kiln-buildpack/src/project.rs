//! The project's own `kiln.toml` at the source root (optional), with what other tools' project
//! files (`project.toml`, `railpack.json`, `nixpacks.toml`; [`foreign`]) say where it is silent.
//!
//! ```toml
//! app = "apps/web"              # the workspace member to build and start (KILN_APP wins)
//!
//! [project]
//! name = "web"                   # identifies the app's own build cache (default: image name or path)
//!
//! [build]
//! exclude = ["docs/", "*.log"]   # .dockerignore syntax; kept out of the working copy and image
//! env = { GOFLAGS = "-tags=prod" } # added to every build step
//!
//! [stack]                        # the run image Kiln assembles from Debian packages
//! distro = "debian-12"           # default debian-13; KILN_STACK / --stack win
//! mirror = "http://…/debian"     # else KILN_DEBIAN_MIRROR, else the host's apt sources
//!
//! [packages]
//! run = ["libpq5"]               # extra run packages, a layer of their own (KILN_RUN_PACKAGES wins)
//! build = ["libpq-dev"]          # extra build-root packages (KILN_BUILD_PACKAGES wins)
//!
//! [image]
//! port = 3000                    # the image's PORT and ExposedPorts (default 8080)
//! user = "root"                  # processes run as root (default on Kiln's stacks: nonroot, 65532)
//!
//! [env]                          # runtime env in the image config (unlike [build.env])
//! LOG_LEVEL = "info"
//!
//! [labels]                       # image config labels (over the git-derived ones; --label wins)
//! "org.opencontainers.image.title" = "web"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::foreign::{self, Mapped};
use crate::manifest::{self, check_env_names, invalid};

/// The project file's name at the source root.
pub const FILE_NAME: &str = "kiln.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The app to build and start in a monorepo: a workspace member's directory relative to the
    /// source root (`apps/web`); `KILN_APP` wins.
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub project: ProjectMeta,
    #[serde(default)]
    pub build: ProjectBuild,
    /// Buildpack ids to run, in this order, instead of detecting (`KILN_BUILDPACKS` wins).
    #[serde(default)]
    pub buildpacks: Option<Vec<String>>,
    /// Version requirements by buildpack id (`nodejs = "22"`), over the detected ones.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// Process command lines by type (`web = "node server.js"`), over every buildpack's.
    #[serde(default)]
    pub processes: BTreeMap<String, String>,
    /// Download mirrors by runtime (`node = "https://mirror.example/node/dist"`); the
    /// `KILN_MIRROR_<RUNTIME>` variables win.
    #[serde(default)]
    pub mirrors: BTreeMap<String, String>,
    #[serde(default)]
    pub stack: ProjectStack,
    #[serde(default)]
    pub packages: ProjectPackages,
    #[serde(default)]
    pub image: ProjectImage,
    /// Runtime environment for the image config, over the buildpacks' launch env.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Image config labels, over the ones Kiln derives from a git checkout; `--label` wins.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Settings taken from another tool's project file, by key (`build.start`), with that
    /// file's key (`railpack.json deploy.startCommand`); see [`ProjectConfig::source_of`].
    #[serde(skip)]
    pub sources: BTreeMap<String, String>,
    /// Keys of other tools' project files that have no Kiln equivalent, each naming the key.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Label keys Kiln writes itself: a project cannot set them.
pub const RESERVED_LABEL_PREFIX: &str = "dev.kiln.";

/// Why `key` cannot be an image label set by a project or `--label`: empty, containing
/// whitespace, `=` or control characters, or in Kiln's own `dev.kiln.` namespace.
pub fn check_label_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err("is empty".into());
    }
    if key
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '=')
    {
        return Err("must not contain whitespace, control characters or '='".into());
    }
    if key.starts_with(RESERVED_LABEL_PREFIX) {
        return Err(format!(
            "is reserved: {RESERVED_LABEL_PREFIX}* labels are Kiln's own"
        ));
    }
    Ok(())
}

/// `[image]`: how the built image presents itself to runtimes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectImage {
    /// The port the app listens on: the image's `PORT` and its `ExposedPorts` entry.
    pub port: Option<u16>,
    /// Who the image's processes run as: `nonroot` (uid/gid 65532, the default on Kiln's
    /// stacks; the app directory is owned by it) or `root`. `None`: the default, which on a
    /// user-supplied run image keeps that image's own `User`.
    #[serde(default)]
    pub user: Option<String>,
}

/// `[image] user` values.
pub const IMAGE_USERS: &[&str] = &["nonroot", "root"];

/// `[stack]`: which Debian stack Kiln's own run image is assembled from, and from where.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectStack {
    /// `debian-13` or `debian-12`.
    pub distro: Option<String>,
    /// The Debian archive mirror root (`…/debian`).
    pub mirror: Option<String>,
    /// The security archive root (`…/debian-security`).
    pub security_mirror: Option<String>,
}

/// `[packages]`: Debian packages to add to the run image and to the build root.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectPackages {
    #[serde(default)]
    pub run: Vec<String>,
    /// Extra build-root packages (`libpq-dev`); `KILN_BUILD_PACKAGES` wins.
    #[serde(default)]
    pub build: Vec<String>,
}

/// `[project]`: who the app is, independent of where it is checked out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectMeta {
    /// Names the app's own build cache (its cache layers and step records) in a cache directory
    /// shared with other apps; see `kiln_build::cache::ProjectId`.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectBuild {
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// If given, only these paths (`.dockerignore` patterns) reach the working copy.
    #[serde(default)]
    pub include: Vec<String>,
    /// Shell command lines replacing the main buildpack's `install` / `build` steps (added
    /// when it plans none); `KILN_INSTALL_CMD` / `KILN_BUILD_CMD` win.
    #[serde(default)]
    pub install: Option<String>,
    #[serde(default)]
    pub build: Option<String>,
    /// The `web` process command line, like `[processes] web` (which wins over it);
    /// `KILN_START_CMD` / `KILN_START_COMMAND` win over both.
    #[serde(default)]
    pub start: Option<String>,
    /// How the rust buildpack links the app's binary: `static` (`+crt-static`, runs on the
    /// static stack) or `glibc` (against the stack's glibc and system libraries), over what
    /// `Cargo.lock` implies; `KILN_LINK` wins.
    #[serde(default)]
    pub link: Option<String>,
}

impl ProjectBuild {
    /// `exclude` with `include` folded in, as `.dockerignore` patterns: everything is excluded,
    /// then each include is re-included (`!pattern`), then the excludes apply.
    pub fn exclude_patterns(&self) -> Vec<String> {
        let mut patterns = Vec::new();
        if !self.include.is_empty() {
            patterns.push("**".to_owned());
            // A re-included directory brings what is below it.
            for p in &self.include {
                let p = p.trim_end_matches('/');
                patterns.push(format!("!{p}"));
                patterns.push(format!("!{p}/**"));
            }
        }
        patterns.extend(self.exclude.iter().cloned());
        patterns
    }
}

impl ProjectConfig {
    /// Reads `<src>/kiln.toml` (absent means the default), then fills what it leaves unset from
    /// other tools' project files ([`foreign::FILES`], in that order), recording each value's
    /// source and a warning for every key that does not map. Errors name the file and line.
    pub fn load(src: &Path) -> Result<ProjectConfig> {
        let mut config = match manifest::read_project_file(src, FILE_NAME)? {
            Some(text) => ProjectConfig::parse(&text, &src.join(FILE_NAME))?,
            None => ProjectConfig::default(),
        };
        for mapped in foreign::read_all(src)? {
            config.fill_from(mapped);
        }
        Ok(config)
    }

    /// Where setting `key` (`build.start`, `versions.nodejs`, `buildpacks`, …) came from:
    /// `kiln.toml KEY` unless another tool's file supplied it.
    pub fn source_of(&self, key: &str) -> String {
        self.sources
            .get(key)
            .cloned()
            .unwrap_or_else(|| format!("kiln.toml {key}"))
    }

    /// Takes from `mapped` what this config leaves unset, field by field.
    fn fill_from(&mut self, mapped: Mapped) {
        let Mapped {
            config: other,
            sources,
            warnings,
        } = mapped;
        let record = |key: &str, to: &mut BTreeMap<String, String>| {
            if let Some(from) = sources.get(key) {
                to.insert(key.to_owned(), from.clone());
            }
        };
        if self.buildpacks.is_none() && other.buildpacks.is_some() {
            self.buildpacks = other.buildpacks;
            record("buildpacks", &mut self.sources);
        }
        for (id, version) in other.versions {
            if !self.versions.contains_key(&id) {
                self.versions.insert(id.clone(), version);
                record(&format!("versions.{id}"), &mut self.sources);
            }
        }
        for (step, slot, value) in [
            ("install", &mut self.build.install, other.build.install),
            ("build", &mut self.build.build, other.build.build),
            ("start", &mut self.build.start, other.build.start),
        ] {
            if slot.is_none() && value.is_some() {
                *slot = value;
                record(&format!("build.{step}"), &mut self.sources);
            }
        }
        for (mine, theirs) in [
            (&mut self.build.include, other.build.include),
            (&mut self.build.exclude, other.build.exclude),
            (&mut self.packages.build, other.packages.build),
            (&mut self.packages.run, other.packages.run),
        ] {
            if mine.is_empty() {
                *mine = theirs;
            }
        }
        for (mine, theirs) in [
            (&mut self.build.env, other.build.env),
            (&mut self.env, other.env),
        ] {
            for (name, value) in theirs {
                mine.entry(name).or_insert(value);
            }
        }
        if self.project.name.is_none() {
            self.project.name = other.project.name;
        }
        self.warnings.extend(warnings);
    }

    /// Parses the text of a `kiln.toml` read from `path` (named in errors).
    fn parse(text: &str, path: &Path) -> Result<ProjectConfig> {
        let config: ProjectConfig = manifest::parse_toml(text, path)?;
        check_env_names(config.build.env.keys(), "[build.env]", path)?;
        check_env_names(config.env.keys(), "[env]", path)?;
        if let Some(user) = &config.image.user {
            if !IMAGE_USERS.contains(&user.as_str()) {
                return Err(invalid(
                    path,
                    format!("[image] user {user:?}: expected \"nonroot\" or \"root\""),
                ));
            }
        }
        for key in config.labels.keys() {
            check_label_key(key).map_err(|why| invalid(path, format!("[labels] {key:?} {why}")))?;
        }
        if let Some(app) = &config.app {
            manifest::check_relative(app)
                .map_err(|why| invalid(path, format!("app {app:?} {why}")))?;
        }
        for (kind, command) in &config.processes {
            if !manifest::is_process_type(kind) || command.trim().is_empty() {
                return Err(invalid(
                    path,
                    format!("[processes] {kind:?}: type must match [A-Za-z0-9_-]+ and the command be non-empty"),
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn absent_is_default() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ProjectConfig::load(dir.path()).unwrap(),
            ProjectConfig::default()
        );
    }

    #[test]
    fn reads_exclude_and_env() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("kiln.toml"),
            "[build]\nexclude = [\"docs/\"]\nenv = { GOFLAGS = \"-tags=prod\" }\n",
        )
        .unwrap();
        let config = ProjectConfig::load(dir.path()).unwrap();
        assert_eq!(config.build.exclude, vec!["docs/"]);
        assert_eq!(config.build.env["GOFLAGS"], "-tags=prod");
    }

    #[test]
    fn reads_labels_and_refuses_kilns_own() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("kiln.toml"),
            "[labels]\n\"org.opencontainers.image.title\" = \"web\"\nteam = \"a\"\n",
        )
        .unwrap();
        let config = ProjectConfig::load(dir.path()).unwrap();
        assert_eq!(config.labels["org.opencontainers.image.title"], "web");
        assert_eq!(config.labels["team"], "a");
        fs::write(
            dir.path().join("kiln.toml"),
            "[labels]\n\"dev.kiln.metadata\" = \"{}\"\n",
        )
        .unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("kiln.toml") && err.contains("reserved"),
            "{err}"
        );
    }

    #[test]
    fn reads_image_port_and_runtime_env() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("kiln.toml"),
            "[image]\nport = 3000\n[env]\nLOG_LEVEL = \"info\"\n",
        )
        .unwrap();
        let config = ProjectConfig::load(dir.path()).unwrap();
        assert_eq!(config.image.port, Some(3000));
        fs::write(dir.path().join("kiln.toml"), "[image]\nuser = \"root\"\n").unwrap();
        assert_eq!(
            ProjectConfig::load(dir.path())
                .unwrap()
                .image
                .user
                .as_deref(),
            Some("root")
        );
        fs::write(dir.path().join("kiln.toml"), "[image]\nuser = \"admin\"\n").unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("kiln.toml") && err.contains("nonroot"),
            "{err}"
        );
        assert_eq!(config.env["LOG_LEVEL"], "info");
    }

    #[test]
    fn rejects_a_bad_runtime_env_name_and_port() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("kiln.toml"), "[env]\n\"A-B\" = \"x\"\n").unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("[env]"), "{err}");
        fs::write(dir.path().join("kiln.toml"), "[image]\nport = 70000\n").unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("kiln.toml"), "{err}");
    }

    #[test]
    fn reads_stack_and_run_and_build_packages() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("kiln.toml"),
            "[stack]\ndistro = \"debian-12\"\nmirror = \"http://m.test/debian\"\n[packages]\nrun = [\"libpq5\"]\nbuild = [\"libpq-dev\"]\n",
        )
        .unwrap();
        let config = ProjectConfig::load(dir.path()).unwrap();
        assert_eq!(config.stack.distro.as_deref(), Some("debian-12"));
        assert_eq!(config.stack.mirror.as_deref(), Some("http://m.test/debian"));
        assert_eq!(config.packages.run, ["libpq5"]);
        assert_eq!(config.packages.build, ["libpq-dev"]);
        fs::write(dir.path().join("kiln.toml"), "[packages]\ndev = []\n").unwrap();
        assert!(ProjectConfig::load(dir.path()).is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("kiln.toml"), "[build]\n\nexclud = []\n").unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        let expected = format!("{}:3:", dir.path().join("kiln.toml").display());
        assert!(err.starts_with(&expected), "{err}");
        assert!(err.contains("exclud"), "{err}");
    }

    #[test]
    fn include_becomes_exclude_everything_then_re_include() {
        let build = ProjectBuild {
            include: vec!["src/".into(), "go.mod".into()],
            exclude: vec!["src/*.log".into()],
            ..ProjectBuild::default()
        };
        assert_eq!(
            build.exclude_patterns(),
            [
                "**",
                "!src",
                "!src/**",
                "!go.mod",
                "!go.mod/**",
                "src/*.log"
            ]
        );
        let only_exclude = ProjectBuild {
            exclude: vec!["docs/".into()],
            ..ProjectBuild::default()
        };
        assert_eq!(only_exclude.exclude_patterns(), ["docs/"]);
    }

    #[test]
    fn app_is_a_relative_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("kiln.toml"), "app = \"apps/web\"\n").unwrap();
        let config = ProjectConfig::load(dir.path()).unwrap();
        assert_eq!(config.app.as_deref(), Some("apps/web"));
        fs::write(dir.path().join("kiln.toml"), "app = \"../web\"\n").unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("app \"../web\" may not contain `..`"), "{err}");
    }

    #[test]
    fn process_overrides_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("kiln.toml"),
            "[processes]\n\"we b\" = \"x\"\n",
        )
        .unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("[processes] \"we b\""), "{err}");
    }

    #[test]
    fn symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("real.toml"), "[build]\n").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("real.toml"),
            dir.path().join("kiln.toml"),
        )
        .unwrap();
        let err = ProjectConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
    }
}
