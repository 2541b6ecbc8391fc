//! Blocking HTTP GETs (ureq 2 with rustls) with timeouts; every error names the URL, and HTTP
//! errors their status. Trusted roots are the bundled Mozilla ones, plus a PEM bundle when the
//! request names one (npm's `cafile`, for networks behind a TLS-inspecting proxy).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::pki_types::{pem::PemObject as _, CertificateDer};
use sha2::{Digest as _, Sha256, Sha512};

use crate::Error;

/// Indexes are small (Node's `index.json` is ~300 KB, the npm registry's `npm` document a few
/// MB); anything far larger is not an index.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// What a GET sends besides the URL, and which extra roots it trusts.
#[derive(Clone, Copy, Default)]
pub struct Ask<'a> {
    pub accept: Option<&'a str>,
    /// Sent as `Authorization: Bearer …`; ureq drops it on redirects.
    pub bearer: Option<&'a str>,
    /// A PEM bundle trusted besides the bundled roots.
    pub cafile: Option<&'a Path>,
}

/// One agent per extra CA bundle (most processes only ever use the `None` one).
fn agent(cafile: Option<&Path>) -> Result<ureq::Agent, Error> {
    static AGENTS: OnceLock<Mutex<HashMap<Option<PathBuf>, ureq::Agent>>> = OnceLock::new();
    let agents = AGENTS.get_or_init(Default::default);
    let key = cafile.map(Path::to_path_buf);
    if let Some(agent) = agents.lock().ok().and_then(|a| a.get(&key).cloned()) {
        return Ok(agent);
    }
    let mut builder = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        // Per read, not for the whole body: a 50 MB runtime on a slow link is fine as long
        // as bytes keep coming.
        .timeout_read(Duration::from_secs(60));
    if let Some(cafile) = cafile {
        builder = builder.tls_config(Arc::new(tls_with(cafile)?));
    }
    let agent = builder.build();
    if let Ok(mut agents) = agents.lock() {
        agents.insert(key, agent.clone());
    }
    Ok(agent)
}

/// ureq's own TLS setup (ring, TLS 1.2 and 1.3, Mozilla roots) with `cafile`'s certificates
/// added.
fn tls_with(cafile: &Path) -> Result<rustls::ClientConfig, Error> {
    let what = || format!("reading the CA bundle {}", cafile.display());
    let pem = std::fs::read(cafile).map_err(|e| Error::io(what(), e))?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io(what(), std::io::Error::other(e.to_string())))?;
    let (added, _unparsable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::io(
            what(),
            std::io::Error::other("no usable PEM certificate in it"),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
    .map_err(|e| Error::io(what(), std::io::Error::other(e.to_string())))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

fn get(url: &str, ask: Ask) -> Result<ureq::Response, Error> {
    let mut request = agent(ask.cafile)?.get(url);
    if let Some(accept) = ask.accept {
        request = request.set("Accept", accept);
    }
    if let Some(token) = ask.bearer {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    request.call().map_err(|e| Error::Http {
        url: url.to_owned(),
        why: match e {
            ureq::Error::Status(code, resp) => format!("HTTP {code} {}", resp.status_text()),
            ureq::Error::Transport(t) => t.to_string(),
        },
    })
}

fn read_failed(url: &str, e: std::io::Error) -> Error {
    Error::Http {
        url: url.to_owned(),
        why: format!("reading the body: {e}"),
    }
}

/// The whole body of a small document.
pub fn get_bytes(url: &str, ask: Ask) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    get(url, ask)?
        .into_reader()
        .take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| read_failed(url, e))?;
    if body.len() as u64 > MAX_INDEX_BYTES {
        return Err(Error::Http {
            url: url.to_owned(),
            why: format!("larger than {MAX_INDEX_BYTES} bytes: not an index"),
        });
    }
    Ok(body)
}

/// The digests of a downloaded body.
pub struct Digests {
    /// Lowercase hex.
    pub sha256: String,
    /// When asked for (npm integrity); not computed otherwise, as it doubles the hashing.
    pub sha512: Option<[u8; 64]>,
}

/// Streams the body into `out`, returning its sha256 and, if `with_sha512`, its sha512.
pub fn download(
    url: &str,
    ask: Ask,
    with_sha512: bool,
    out: &mut impl Write,
) -> Result<Digests, Error> {
    let mut reader = get(url, ask)?.into_reader();
    let mut sha256 = Sha256::new();
    let mut sha512 = with_sha512.then(Sha512::new);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failed(url, e)),
        };
        sha256.update(&buf[..n]);
        if let Some(h) = &mut sha512 {
            h.update(&buf[..n]);
        }
        out.write_all(&buf[..n])
            .map_err(|e| Error::io(format!("writing the download of {url}"), e))?;
    }
    Ok(Digests {
        sha256: hex::encode(sha256.finalize()),
        sha512: sha512.map(|h| h.finalize().into()),
    })
}
