//! Where a Python package index is, as the user configured it for pip: build steps that run
//! pip (and uv) in a build root see none of the build machine's configuration files, so the
//! engine hands them the index this finds ([`PypiIndex::discover`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The environment variable naming the index (it wins over every other source).
pub const PYPI_INDEX_ENV: &str = "KILN_PYPI_INDEX";

/// A package index's simple-API base URL and where it was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PypiIndex {
    /// `https://pypi.example/simple`, without a trailing slash.
    pub url: String,
    /// `PIP_INDEX_URL`, `kiln.toml [mirrors] pypi`, `/etc/pip.conf:2`, …
    pub from: String,
}

impl PypiIndex {
    /// In order: `KILN_PYPI_INDEX`; `kiln.toml` `[mirrors] pypi`; pip's own configuration as
    /// pip reads it: `PIP_INDEX_URL`, then `index-url` in the `[install]` or `[global]` section
    /// of `PIP_CONFIG_FILE`, the user's `pip.conf` (`$XDG_CONFIG_HOME/pip/`, else
    /// `~/.config/pip/`, then `~/.pip/`) and the site-wide ones (`/etc/xdg/pip/pip.conf`,
    /// `/etc/pip.conf`), the most specific first; then uv's `UV_DEFAULT_INDEX` /
    /// `UV_INDEX_URL`. `None` when nothing names one: pip's built-in default is pip's, not
    /// assumed here.
    pub fn discover(
        kiln_toml_mirrors: &BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
    ) -> Option<PypiIndex> {
        let set = |key: &str| {
            env.get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (v.to_owned(), key.to_owned()))
        };
        let found = set(PYPI_INDEX_ENV)
            .or_else(|| {
                let toml = kiln_toml_mirrors.get("pypi").map(|v| v.trim());
                toml.filter(|v| !v.is_empty())
                    .map(|v| (v.to_owned(), "kiln.toml [mirrors] pypi".to_owned()))
            })
            .or_else(|| set("PIP_INDEX_URL"))
            .or_else(|| config_files(env).iter().find_map(|f| index_url_in(f)))
            .or_else(|| set("UV_DEFAULT_INDEX"))
            .or_else(|| set("UV_INDEX_URL"))?;
        Some(PypiIndex {
            url: found.0.trim_end_matches('/').to_owned(),
            from: found.1,
        })
    }
}

/// pip's configuration files, most specific first (pip lets later files override earlier ones
/// in the order global, user, site: the reverse of this list).
fn config_files(env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(file) = env.get("PIP_CONFIG_FILE").filter(|f| !f.is_empty()) {
        files.push(PathBuf::from(file));
    }
    if let Some(home) = env.get("HOME").filter(|h| !h.is_empty()) {
        let config = env
            .get("XDG_CONFIG_HOME")
            .filter(|x| !x.is_empty())
            .map_or_else(|| Path::new(home).join(".config"), PathBuf::from);
        files.push(config.join("pip/pip.conf"));
        files.push(Path::new(home).join(".pip/pip.conf"));
    }
    files.push(PathBuf::from("/etc/xdg/pip/pip.conf"));
    files.push(PathBuf::from("/etc/pip.conf"));
    files
}

/// `index-url` (or `index_url`) of an ini file's `[install]` section, else its `[global]` one:
/// (value, `file:line`).
fn index_url_in(path: &Path) -> Option<(String, String)> {
    let text = fs::read_to_string(path).ok()?;
    let mut section = String::new();
    let mut by_section: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().replace('_', "-");
        if key == "index-url" && !value.trim().is_empty() && !line.starts_with(['#', ';']) {
            by_section.insert(section.clone(), (value.trim().to_owned(), i + 1));
        }
    }
    let (value, line) = by_section
        .remove("install")
        .or_else(|| by_section.remove("global"))?;
    Some((value, format!("{}:{line}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_precedence() {
        let home = tempfile::tempdir().unwrap();
        let conf = home.path().join(".config/pip/pip.conf");
        fs::create_dir_all(conf.parent().unwrap()).unwrap();
        fs::write(
            &conf,
            "[global]\nindex-url = https://global.example/simple/\n[install]\n\
             index_url=https://install.example/simple\n",
        )
        .unwrap();
        let mut env: BTreeMap<String, String> = [
            ("HOME".to_owned(), home.path().display().to_string()),
            (
                "UV_DEFAULT_INDEX".to_owned(),
                "https://uv.example".to_owned(),
            ),
        ]
        .into();
        let none = BTreeMap::new();
        let got = |m: &BTreeMap<String, String>, e: &BTreeMap<String, String>| {
            PypiIndex::discover(m, e).map(|i| (i.url, i.from))
        };
        assert_eq!(
            got(&none, &env),
            Some((
                "https://install.example/simple".to_owned(),
                format!("{}:4", conf.display())
            ))
        );
        env.insert("PIP_INDEX_URL".into(), "https://pip.example/simple".into());
        assert_eq!(got(&none, &env).unwrap().1, "PIP_INDEX_URL");
        let toml: BTreeMap<String, String> =
            [("pypi".into(), "https://toml.example/".into())].into();
        assert_eq!(
            got(&toml, &env).unwrap().0,
            "https://toml.example".to_owned()
        );
        env.insert(PYPI_INDEX_ENV.into(), "https://kiln.example".into());
        assert_eq!(got(&toml, &env).unwrap().1, PYPI_INDEX_ENV);
        env.clear();
        env.insert("UV_INDEX_URL".into(), "https://uv-old.example".into());
        assert_eq!(got(&none, &env).unwrap().1, "UV_INDEX_URL");
    }
}
