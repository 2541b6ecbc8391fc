//! The HTTP side: one [`Client`] per run (credentials and tokens cached per registry), and
//! [`Repo`], a repository on a registry that requests are made against.
//!
//! Every request goes through [`Repo::send`], which answers authentication challenges (basic, or
//! the bearer-token flow of the distribution spec), retries bounded times with backoff on
//! connection errors and 5xx answers when the request is safe to repeat, and turns failures into
//! errors naming the registry, repository and status.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use kiln_oci::reference::{valid_domain, Reference};
use kiln_oci::spec::Platform;

use crate::auth::{self, Challenge, Credentials};
use crate::error::{Error, Result};
use crate::watch::{self, is_timeout, secs, Report, Stalled, Watched};

/// How a client behaves; [`ClientOptions::default`] suits CI.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries reached over plain HTTP. `localhost` and `127.0.0.1` always are; everything
    /// else uses TLS.
    pub insecure_registries: Vec<RegistryHost>,
    /// Which image of a multi-platform index to pull.
    pub platform: Platform,
    /// Blobs uploaded at once.
    pub max_concurrency: usize,
    /// Blobs up to this size go up in one request; larger ones in chunks of this size.
    pub chunk_size: u64,
    /// Extra attempts after a connection error or 5xx answer.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// How long connecting to a registry may take (each attempt).
    pub connect_timeout: Duration,
    /// A transfer moving fewer bytes per second than this over `low_speed_time` is aborted, as
    /// with curl's `--speed-limit` (0: no minimum rate).
    pub low_speed_limit: u64,
    /// The window `low_speed_limit` is measured over; also the longest wait for an answer or
    /// for the next bytes. A stalled transfer is not retried: it already had a whole window.
    pub low_speed_time: Duration,
    /// While a blob is transferred, a progress line (bytes so far) goes to the log this often.
    pub progress_interval: Duration,
    /// The caller's environment, where credentials are looked up (`KILN_REGISTRY_USER` and
    /// `KILN_REGISTRY_PASSWORD`, `DOCKER_CONFIG`, `HOME`); the client reads no other.
    pub env: std::collections::BTreeMap<String, String>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            insecure_registries: Vec::new(),
            platform: Platform::host(),
            max_concurrency: 4,
            chunk_size: 16 << 20,
            retries: 3,
            backoff: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(15),
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(30),
            progress_interval: Duration::from_secs(10),
            env: Default::default(),
        }
    }
}

/// A registry as `HOST[:PORT]` (what `--insecure-registry` takes): host labels of letters,
/// digits and inner `-` as in image references, and a port from 1 to 65535.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost(String);

impl RegistryHost {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RegistryHost {
    type Err = Error;

    fn from_str(s: &str) -> Result<RegistryHost> {
        let invalid = |why: &'static str| Error::InvalidRegistryHost {
            host: s.to_owned(),
            why,
        };
        let host = match s.rsplit_once(':') {
            Some((host, port)) => {
                match port.parse::<u16>() {
                    Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
                    _ => return Err(invalid("the port must be a number from 1 to 65535")),
                }
                host
            }
            None => s,
        };
        if !valid_domain(host) {
            return Err(invalid(
                "the host must be a name or address of letters, digits, '.' and inner '-'",
            ));
        }
        Ok(RegistryHost(s.to_owned()))
    }
}

impl std::fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Client {
    agent: ureq::Agent,
    pub(crate) opts: ClientOptions,
    credentials: Mutex<HashMap<String, Option<Credentials>>>,
    /// `Authorization` values by registry and scope set, reused until the registry refuses one.
    auth: Mutex<HashMap<String, String>>,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        // No single read or write may wait longer than the low-speed window: silence for a
        // whole window is a stall whatever the rate limit (see `watch`). ureq 2 sets these
        // timeouts only on a new connection and clears them when it pools one, so a reused
        // connection would wait forever on a silent registry: every request gets its own.
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(opts.connect_timeout)
            .timeout_read(opts.low_speed_time)
            .timeout_write(opts.low_speed_time)
            .max_idle_connections(0)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
            opts,
            credentials: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
        }
    }

    /// A handle on `reference`'s repository, authorized for `actions` (`pull` or `pull,push`);
    /// `also_pull` names other repositories of the same registry to read from (blob mounts).
    pub(crate) fn repo(
        &self,
        reference: &Reference,
        actions: &str,
        also_pull: &[&str],
    ) -> Repo<'_> {
        let mut scopes = vec![format!("repository:{}:{actions}", reference.repository)];
        scopes.extend(
            also_pull
                .iter()
                .filter(|r| **r != reference.repository)
                .map(|r| format!("repository:{r}:pull")),
        );
        Repo {
            client: self,
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            base: format!(
                "{}://{}",
                self.scheme(&reference.registry),
                api_host(&reference.registry)
            ),
            scopes,
        }
    }

    fn scheme(&self, registry: &str) -> &'static str {
        let host = registry
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(registry, |(host, _)| host);
        let insecure = host == "localhost"
            || host == "127.0.0.1"
            || self
                .opts
                .insecure_registries
                .iter()
                .any(|r| r.as_str() == registry || r.as_str() == host);
        if insecure {
            "http"
        } else {
            "https"
        }
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let mut cache = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = cache.get(registry) {
            return Ok(found.clone());
        }
        let found = auth::lookup(registry, &self.opts.env)?;
        cache.insert(registry.to_owned(), found.clone());
        Ok(found)
    }
}

/// Docker Hub's API is not served at `docker.io` itself.
fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// A request body that can be produced again for a retry.
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of the file at `path` starting at `offset`.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

pub(crate) struct Req<'a> {
    pub method: &'static str,
    /// A path under the registry (`/v2/…`) or an absolute URL (upload locations).
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body<'a>,
    /// Whether repeating the request after a failure is harmless. Upload-session requests are
    /// not: the session's state after a failed PATCH is unknown, so pushes retry a whole blob.
    pub retry: bool,
}

impl<'a> Req<'a> {
    pub fn new(method: &'static str, url: impl Into<String>) -> Req<'a> {
        Req {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Body::Empty,
            retry: true,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Req<'a> {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: Body<'a>) -> Req<'a> {
        self.body = body;
        self
    }

    pub fn no_retry(mut self) -> Req<'a> {
        self.retry = false;
        self
    }
}

pub(crate) struct Repo<'c> {
    client: &'c Client,
    pub registry: String,
    pub repository: String,
    /// `https://ghcr.io`
    base: String,
    scopes: Vec<String>,
}

impl Repo<'_> {
    pub fn opts(&self) -> &ClientOptions {
        &self.client.opts
    }

    /// `/v2/<repository>/<rest>` as an absolute URL.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.repository)
    }

    /// Resolves an upload `Location`, which may be relative to the registry.
    pub fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    pub fn error(&self, why: impl Into<String>) -> Error {
        Error::Protocol {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            why: why.into(),
        }
    }

    fn auth_key(&self) -> String {
        format!("{} {}", self.registry, self.scopes.join(" "))
    }

    /// Sends `req`; `what` says what it is for in errors ("pulling manifest v1"). Success is any
    /// 2xx answer; anything else is an error carrying the status.
    pub fn send(&self, req: &Req<'_>, what: &str) -> Result<ureq::Response> {
        let url = if req.url.starts_with('/') {
            format!("{}{}", self.base, req.url)
        } else {
            req.url.clone()
        };
        let attempts = if req.retry {
            1 + self.client.opts.retries
        } else {
            1
        };
        let mut challenged = false;
        let mut attempt = 0;
        loop {
            let result = self.send_once(req, &url, what);
            let retryable = match &result {
                Ok(_) => false,
                Err(ureq::Error::Status(status, _)) => *status >= 500,
                Err(ureq::Error::Transport(t)) => self.stall_reason(t).is_none(),
            };
            if retryable && attempt + 1 < attempts {
                std::thread::sleep(self.client.opts.backoff * 2u32.saturating_pow(attempt));
                attempt += 1;
                continue;
            }
            match result {
                Ok(response) => return Ok(response),
                Err(ureq::Error::Status(401, response)) if !challenged => {
                    challenged = true;
                    let header = response.header("www-authenticate").map(str::to_owned);
                    self.authenticate(header.as_deref(), what)?;
                }
                Err(ureq::Error::Status(status @ (401 | 403), response)) => {
                    let why = if self.client.credentials(&self.registry)?.is_some() {
                        "the registry refused the credentials"
                    } else {
                        "no credentials configured (Docker config.json or \
                         KILN_REGISTRY_USER/KILN_REGISTRY_PASSWORD)"
                    };
                    return Err(Error::Auth {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        what: what.to_owned(),
                        status,
                        why: format!("{why}{}", self.error_detail(response)),
                    });
                }
                Err(ureq::Error::Status(status, response)) => {
                    return Err(Error::Status {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        what: what.to_owned(),
                        status,
                        detail: self.error_detail(response),
                    })
                }
                Err(ureq::Error::Transport(t)) => {
                    if let Some(why) = self.stall_reason(&t) {
                        return Err(self.transfer_error(what, &why));
                    }
                    let message = transport_message(&t);
                    let hint = self.tls_hint(&message);
                    return Err(Error::Unreachable {
                        registry: self.registry.clone(),
                        url: strip_query(&url).to_owned(),
                        why: format!("{what}: {message}{hint}"),
                    });
                }
            }
        }
    }

    /// `reader` (a body coming from this registry) read within the client's low-speed limits,
    /// with progress lines about `label` to `report`.
    pub fn watch<'a, R: Read>(
        &'a self,
        reader: R,
        label: &'a str,
        total: Option<u64>,
        report: Report<'a>,
    ) -> Watched<'a, R> {
        Watched::new(reader, &self.client.opts, label, total, report)
    }

    /// A transfer of `what` that broke off (`why`: a stall, or the connection's error).
    pub fn transfer_error(&self, what: &str, why: &str) -> Error {
        Error::Transfer {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            what: what.to_owned(),
            why: why.to_owned(),
        }
    }

    /// Why `t` is a stall, if it is one: a request body [`Watched`] aborted, or a read or write
    /// on an established connection that timed out. Connection attempts time out as
    /// unreachable (and are retried) instead.
    fn stall_reason(&self, t: &ureq::Transport) -> Option<String> {
        let io = std::error::Error::source(t)?.downcast_ref::<std::io::Error>()?;
        if let Some(stalled) = io.get_ref().and_then(|e| e.downcast_ref::<Stalled>()) {
            return Some(stalled.to_string());
        }
        (t.kind() == ureq::ErrorKind::Io && is_timeout(io)).then(|| {
            format!(
                "stalled: no progress for {} (the low-speed time)",
                secs(self.client.opts.low_speed_time)
            )
        })
    }

    /// rustls meeting a plain-HTTP answer where a TLS handshake should be reports a "corrupt
    /// message"; the usual cause is a registry serving HTTP only.
    fn tls_hint(&self, message: &str) -> String {
        if self.base.starts_with("https://") && message.contains("corrupt message") {
            format!(
                " (if {0} serves plain HTTP, not TLS, pass --insecure-registry {0})",
                self.registry
            )
        } else {
            String::new()
        }
    }

    // ureq's own error type (it carries the response); it lives only until `send` classifies it.
    #[allow(clippy::result_large_err)]
    fn send_once(
        &self,
        req: &Req<'_>,
        url: &str,
        what: &str,
    ) -> Result<ureq::Response, ureq::Error> {
        let mut request = self.client.agent.request(req.method, url);
        for (name, value) in &req.headers {
            request = request.set(name, value);
        }
        // Registry credentials go only to the registry itself, never to a storage backend an
        // upload location or redirect may point at.
        if url.starts_with(&format!("{}/", self.base)) {
            let cached = self
                .client
                .auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&self.auth_key())
                .cloned();
            if let Some(value) = cached {
                request = request.set("Authorization", &value);
            }
        }
        match &req.body {
            Body::Empty => {
                if matches!(req.method, "PUT" | "POST" | "PATCH") {
                    request.set("Content-Length", "0").call()
                } else {
                    request.call()
                }
            }
            Body::Bytes(bytes) => request.send_bytes(bytes),
            Body::File { path, offset, len } => {
                let mut file = std::fs::File::open(path).map_err(|e| io_transport(what, e))?;
                file.seek(SeekFrom::Start(*offset))
                    .map_err(|e| io_transport(what, e))?;
                // ureq reads the body as fast as the registry takes it, so the low-speed limits
                // apply to uploads through the same reader.
                let body = self.watch(file.take(*len), what, Some(*len), &watch::silent);
                request.set("Content-Length", &len.to_string()).send(body)
            }
        }
    }

    /// Answers a 401's challenge: basic credentials, or a bearer token from the named realm.
    fn authenticate(&self, header: Option<&str>, what: &str) -> Result<()> {
        let refused = |why: String| Error::Auth {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            what: what.to_owned(),
            status: 401,
            why,
        };
        let challenge = header
            .and_then(auth::parse_challenge)
            .ok_or_else(|| refused("unsupported or missing WWW-Authenticate challenge".into()))?;
        let credentials = self.client.credentials(&self.registry)?;
        let value = match challenge {
            Challenge::Basic => match &credentials {
                Some(c) => c.basic_header(),
                None => return Err(refused(
                    "the registry wants a user and password, and no credentials are configured \
                         (Docker config.json or KILN_REGISTRY_USER/KILN_REGISTRY_PASSWORD)"
                        .into(),
                )),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut scopes = self.scopes.clone();
                if let Some(scope) = scope.filter(|s| !scopes.contains(s)) {
                    scopes.push(scope);
                }
                let token =
                    self.fetch_token(&realm, service.as_deref(), &scopes, credentials, what)?;
                format!("Bearer {token}")
            }
        };
        self.client
            .auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.auth_key(), value);
        Ok(())
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        credentials: Option<Credentials>,
        what: &str,
    ) -> Result<String> {
        let mut request = self.client.agent.get(realm);
        if let Some(service) = service {
            request = request.query("service", service);
        }
        for scope in scopes {
            request = request.query("scope", scope);
        }
        if let Some(c) = &credentials {
            request = request.set("Authorization", &c.basic_header());
        }
        let refused = |status: u16, why: String| Error::Auth {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            what: what.to_owned(),
            status,
            why,
        };
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                let who = if credentials.is_some() {
                    "the token service refused the credentials"
                } else {
                    "the token service refused anonymous access"
                };
                return Err(refused(
                    status,
                    format!(
                        "{who} ({}){}",
                        strip_query(realm),
                        self.error_detail(response)
                    ),
                ));
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(Error::Unreachable {
                    registry: self.registry.clone(),
                    url: strip_query(realm).to_owned(),
                    why: format!("fetching a token: {}", transport_message(&t)),
                })
            }
        };
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = response.into_reader().take(1 << 20);
        let answer: TokenAnswer =
            serde_json::from_reader(self.watch(body, realm, None, &watch::silent)).map_err(
                |e| self.error(format!("token service {realm} sent no token JSON: {e}")),
            )?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.error(format!("token service {realm} sent an empty token")))
    }

    /// The registry's own explanation of an error (`{"errors":[{"code":…,"message":…}]}`), if any.
    fn error_detail(&self, response: ureq::Response) -> String {
        #[derive(serde::Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<ErrorEntry>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorEntry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let mut body = Vec::new();
        let reader = response.into_reader().take(64 << 10);
        let what = "reading an error answer";
        if self
            .watch(reader, what, None, &watch::silent)
            .read_to_end(&mut body)
            .is_err()
        {
            return String::new();
        }
        match serde_json::from_slice::<Errors>(&body) {
            Ok(e) if !e.errors.is_empty() => {
                let parts: Vec<String> = e
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .collect();
                format!(" ({})", parts.join("; "))
            }
            _ => String::new(),
        }
    }
}

/// Upload locations carry session state in their query; errors show just the path.
fn strip_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(path, _)| path)
}

fn io_transport(what: &str, e: std::io::Error) -> ureq::Error {
    ureq::Error::from(std::io::Error::new(
        e.kind(),
        format!("{what}: reading the local blob: {e}"),
    ))
}

/// ureq's transport message without the URL it may append (already reported separately).
fn transport_message(t: &ureq::Transport) -> String {
    let mut out = t.kind().to_string();
    if let Some(message) = t.message() {
        out.push_str(&format!(": {message}"));
    }
    // The OS-level cause ("Connection refused"), which ureq keeps as the source.
    if let Some(source) = std::error::Error::source(t) {
        out.push_str(&format!(": {source}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_named_registries() {
        let client = Client::new(ClientOptions {
            insecure_registries: vec![
                "build.internal:5000".parse().unwrap(),
                "mirror.lan".parse().unwrap(),
            ],
            ..ClientOptions::default()
        });
        for (registry, scheme) in [
            ("localhost", "http"),
            ("localhost:5000", "http"),
            ("127.0.0.1:5111", "http"),
            ("build.internal:5000", "http"),
            ("build.internal:5001", "https"),
            ("mirror.lan:443", "http"),
            ("ghcr.io", "https"),
            ("docker.io", "https"),
            ("localhost.evil.example", "https"),
        ] {
            assert_eq!(client.scheme(registry), scheme, "{registry}");
        }
        let hub = Reference::parse("ubuntu").unwrap();
        assert_eq!(
            client.repo(&hub, "pull", &[]).url("manifests/latest"),
            "https://registry-1.docker.io/v2/library/ubuntu/manifests/latest"
        );
    }

    #[test]
    fn scopes_cover_mount_sources_and_errors_hide_upload_state() {
        let client = Client::new(ClientOptions::default());
        let target = Reference::parse("localhost:5000/team/app:1").unwrap();
        let repo = client.repo(&target, "pull,push", &["base/busybox", "team/app"]);
        assert_eq!(
            repo.scopes,
            [
                "repository:team/app:pull,push",
                "repository:base/busybox:pull"
            ]
        );
        assert_eq!(
            repo.resolve("/v2/team/app/blobs/uploads/x?_state=secret"),
            "http://localhost:5000/v2/team/app/blobs/uploads/x?_state=secret"
        );
        assert_eq!(strip_query("http://h/v2/x?_state=secret"), "http://h/v2/x");
    }
}
