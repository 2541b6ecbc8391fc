//! Where credentials come from and how a registry's challenge is answered.
//!
//! Credentials, first match wins: `KILN_REGISTRY_USER` + `KILN_REGISTRY_PASSWORD` (for every
//! registry: CI jobs usually talk to one), then Docker's `config.json` (`$DOCKER_CONFIG` or
//! `~/.docker`): `credHelpers[registry]`, `credsStore`, `auths[registry]`. Helpers are run as
//! `docker-credential-NAME get` with the server name on stdin, as Docker does.
//!
//! Secrets are held in [`Credentials`], whose `Debug` never prints them, and are only ever sent in
//! `Authorization` headers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};

pub const ENV_USER: &str = "KILN_REGISTRY_USER";
pub const ENV_PASSWORD: &str = "KILN_REGISTRY_PASSWORD";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` value for HTTP basic auth.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Credentials for `registry` (`ghcr.io`, `localhost:5000`), if any are configured.
/// `env` is the caller's environment (`KILN_REGISTRY_*`, `DOCKER_CONFIG`, `HOME`).
pub fn lookup(
    registry: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Option<Credentials>> {
    if let (Some(username), Some(password)) = (env.get(ENV_USER), env.get(ENV_PASSWORD)) {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    let Some(path) = docker_config_path(env) else {
        return Ok(None);
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Credentials {
                registry: registry.to_owned(),
                why: format!("reading {}: {e}", path.display()),
            })
        }
    };
    let config: DockerConfig = serde_json::from_slice(&bytes).map_err(|e| Error::Credentials {
        registry: registry.to_owned(),
        // serde_json's message names the position, never the content.
        why: format!("{} is not valid JSON: {e}", path.display()),
    })?;
    from_config(registry, &config)
}

fn docker_config_path(env: &std::collections::BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(dir) = env.get("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    env.get("HOME")
        .map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The names Docker may have stored `registry` under.
fn config_keys(registry: &str) -> Vec<String> {
    if registry == "docker.io" {
        return vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ];
    }
    vec![
        registry.to_owned(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ]
}

fn from_config(registry: &str, config: &DockerConfig) -> Result<Option<Credentials>> {
    let keys = config_keys(registry);
    let helper = keys
        .iter()
        .find_map(|k| config.cred_helpers.get(k))
        .or(config.creds_store.as_ref());
    if let Some(helper) = helper {
        // The first key is the server name Docker itself passes to helpers.
        return run_helper(registry, helper, &keys[0]);
    }
    let Some(entry) = keys.iter().find_map(|k| config.auths.get(k)) else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = || Error::Credentials {
        registry: registry.to_owned(),
        why: "the `auth` entry in the Docker config is not base64 of USER:PASSWORD".into(),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

fn run_helper(registry: &str, helper: &str, server: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let fail = |why: String| Error::Credentials {
        registry: registry.to_owned(),
        why,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run credential helper {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| fail(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for {program}: {e}")))?;
    if !out.status.success() {
        // Helpers say "credentials not found in native keychain" when they have nothing.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains("not found") || stderr.contains("not found") {
            return Ok(None);
        }
        return Err(fail(format!("{program} get {}", out.status)));
    }
    // Only the parse outcome is reported: the helper's output holds the secret.
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|_| fail(format!("{program} get printed no Username/Secret JSON")))?;
    Ok(Some(Credentials {
        username: answer.username,
        password: answer.secret,
    }))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k="v",k2=v2` with quoted values that may contain commas (scopes do: `pull,push`).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = after.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("Bearer realm=http://x/t,service=s"),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: Some("s".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(r#"Bearer service="s""#), None);
    }

    #[test]
    fn docker_config_auths_and_keys() {
        let config: DockerConfig = serde_json::from_str(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNzOndvcmQ="},
                "ghcr.io": {"username": "u", "password": "p"},
                "bad.example": {"auth": "***"}
            }}"#,
        )
        .unwrap();
        let hub = from_config("docker.io", &config).unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pass:word")
        );
        let ghcr = from_config("ghcr.io", &config).unwrap().unwrap();
        assert_eq!(ghcr.username, "u");
        assert!(from_config("quay.io", &config).unwrap().is_none());
        let err = from_config("bad.example", &config).unwrap_err().to_string();
        assert!(
            err.contains("bad.example") && err.contains("base64"),
            "{err}"
        );
        // Secrets never show in Debug output.
        assert!(!format!("{hub:?}").contains("pass:word"));
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let config: DockerConfig =
            serde_json::from_str(r#"{"credHelpers": {"r.example": "kiln-no-such-helper"}}"#)
                .unwrap();
        let err = from_config("r.example", &config).unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-kiln-no-such-helper") && err.contains("r.example"),
            "{err}"
        );
    }
}
