//! Blocking HTTP GETs (ureq 2 with rustls) with timeouts; every error names the URL, and HTTP
//! errors their status.

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// Indexes are small (Node's `index.json` is ~300 KB); anything far larger is not an index.
const MAX_INDEX_BYTES: u64 = 64 << 20;

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            // Per read, not for the whole body: a 50 MB runtime on a slow link is fine as long
            // as bytes keep coming.
            .timeout_read(Duration::from_secs(60))
            .build()
    })
}

fn get(url: &str) -> Result<ureq::Response, Error> {
    agent().get(url).call().map_err(|e| Error::Http {
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
pub fn get_bytes(url: &str) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    get(url)?
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

/// Streams the body into `out`, returning its sha256 (lowercase hex).
pub fn download(url: &str, out: &mut impl Write) -> Result<String, Error> {
    let mut reader = get(url)?.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failed(url, e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io(format!("writing the download of {url}"), e))?;
    }
    Ok(hex::encode(hasher.finalize()))
}
