//! A real OCI distribution registry (Debian's `docker-registry`) on a free 127.0.0.1 port, with a
//! generated config and a temporary storage directory; killed on drop. Its access log (stderr)
//! is kept for assertions and failure messages.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;

use super::{free_port, run_ok};

pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Registry {
        Registry::start_with("")
    }

    /// A registry with htpasswd (bcrypt) basic auth for `user`/`password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let line = run_ok(Command::new("htpasswd").args(["-Bbn", user, password]));
        std::fs::write(&htpasswd, line).unwrap();
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
            htpasswd.display()
        );
        Registry::start_in(dir, &auth)
    }

    /// A registry with `auth` (a YAML `auth:` section) in its config.
    pub fn start_with(auth: &str) -> Registry {
        Registry::start_in(tempfile::tempdir().unwrap(), auth)
    }

    fn start_in(dir: tempfile::TempDir, auth: &str) -> Registry {
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {port}:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes an oci-archive to `REPO:TAG` of this registry with skopeo.
    pub fn skopeo_push(&self, archive: &Path, target: &str, creds: Option<&str>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(creds) = creds {
            cmd.args(["--dest-creds", creds]);
        }
        run_ok(cmd.args([
            &format!("oci-archive:{}", archive.display()),
            &format!("docker://{}/{target}", self.host()),
        ]));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`faulty_proxy`] does wrong.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Pass the first N bytes clients send, then cut every connection and refuse new ones: a
    /// push interrupted mid-way.
    CutAfterBytes(usize),
    /// Answer the first N connections with `503 Service Unavailable`, then behave.
    Unavailable(usize),
}

/// A TCP proxy in front of the registry on `target` that misbehaves as `fault` says. Runs until
/// the test process ends; returns its port.
pub fn faulty_proxy(target: u16, fault: Fault) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for (i, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { continue };
            let budget = match fault {
                Fault::CutAfterBytes(budget) if sent.load(Ordering::SeqCst) >= budget => {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                Fault::CutAfterBytes(budget) => budget,
                Fault::Unavailable(n) if i < n => {
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
                          Connection: close\r\n\r\n",
                    );
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                Fault::Unavailable(_) => usize::MAX,
            };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let sent = sent.clone();
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    let n = match c_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sent.fetch_add(n, Ordering::SeqCst).saturating_add(n) > budget {
                        break;
                    }
                    if s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_read.shutdown(Shutdown::Both);
                let _ = s_write.shutdown(Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
                let _ = c_write.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

/// A registry with the distribution spec's bearer-token auth, and the token service it trusts:
/// a small server in the test that checks `user`/`password` (basic auth on the token request)
/// and issues ES256-signed JWTs granting whatever scopes were asked for. Its key and certificate
/// come from `openssl`; the registry verifies tokens through the certificate in the `x5c` header.
pub fn start_with_token_auth(user: &str, password: &str) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (key, cert, pkcs8, cert_der) = (
        path("key.pem"),
        path("cert.pem"),
        path("key.p8"),
        path("cert.der"),
    );
    let openssl = |args: &str| run_ok(Command::new("openssl").args(args.split(' ')));
    openssl(&format!(
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
         -subj /CN=kiln-test-token -keyout {key} -out {cert}"
    ));
    openssl(&format!(
        "pkcs8 -topk8 -nocrypt -outform DER -in {key} -out {pkcs8}"
    ));
    openssl(&format!("x509 -outform DER -in {cert} -out {cert_der}"));
    let issuer = TokenIssuer {
        pkcs8: std::fs::read(&pkcs8).unwrap(),
        cert_der: std::fs::read(&cert_der).unwrap(),
        basic: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let token_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            issuer.answer(stream);
        }
    });
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: kiln-test\n\
         \x20   issuer: kiln-test-issuer\n    rootcertbundle: {cert}\n"
    );
    Registry::start_in(dir, &auth)
}

struct TokenIssuer {
    pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    /// The `Authorization` value a token request must carry.
    basic: String,
}

impl TokenIssuer {
    fn answer(&self, mut stream: TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let authorized = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("authorization") && v.trim() == self.basic
            })
        });
        let (status, body) = if authorized {
            let scopes: Vec<String> = target
                .split_once('?')
                .map(|(_, q)| q)
                .unwrap_or_default()
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(percent_decode)
                .collect();
            let token = self.token(&scopes);
            ("200 OK", format!(r#"{{"token":"{token}"}}"#))
        } else {
            (
                "401 Unauthorized",
                r#"{"details":"bad credentials"}"#.to_owned(),
            )
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn token(&self, scopes: &[String]) -> String {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({
                    "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
                }))
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({
            "alg": "ES256", "typ": "JWT", "x5c": [STANDARD.encode(&self.cert_der)]
        });
        let claims = serde_json::json!({
            "iss": "kiln-test-issuer", "sub": "kiln", "aud": "kiln-test",
            "iat": now - 10, "nbf": now - 10, "exp": now + 600,
            "jti": format!("{now}-{}", access.len()), "access": access
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.pkcs8,
            &rng,
        )
        .unwrap();
        let signature = key.sign(&rng, signing_input.as_bytes()).unwrap();
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
