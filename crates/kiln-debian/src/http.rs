//! Blocking HTTP GETs (ureq 2 with rustls, as in kiln-registry and kiln-runtime). Plain-HTTP
//! mirrors are fine: every byte is checked against a signature or a signed checksum.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::Error;

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            // Per read, not per body: a large .deb on a slow link is fine while bytes come.
            .timeout_read(Duration::from_secs(60))
            .build()
    })
}

/// What went wrong with a GET: `gone` is true for HTTP 404/410 (the file is not on the
/// mirror), false for transport errors and other statuses (the mirror may be unreachable).
#[derive(Debug)]
pub struct Failure {
    pub gone: bool,
    pub error: Error,
}

pub fn get(url: &str) -> std::result::Result<Box<dyn Read + Send + Sync>, Failure> {
    match agent().get(url).call() {
        Ok(response) => Ok(response.into_reader()),
        Err(ureq::Error::Status(code, response)) => Err(Failure {
            gone: code == 404 || code == 410,
            error: Error::Http {
                url: url.to_owned(),
                why: format!("HTTP {code} {}", response.status_text()),
            },
        }),
        Err(ureq::Error::Transport(t)) => Err(Failure {
            gone: false,
            error: Error::Http {
                url: url.to_owned(),
                why: t.to_string(),
            },
        }),
    }
}

/// The whole body, refusing more than `max` bytes (the caller knows the expected size).
pub fn get_bytes(url: &str, max: u64) -> std::result::Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    get(url)?
        .take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| Failure {
            gone: false,
            error: read_failed(url, e),
        })?;
    if body.len() as u64 > max {
        return Err(Failure {
            gone: false,
            error: Error::Http {
                url: url.to_owned(),
                why: format!("larger than the {max} bytes expected"),
            },
        });
    }
    Ok(body)
}

pub fn read_failed(url: &str, e: std::io::Error) -> Error {
    Error::Http {
        url: url.to_owned(),
        why: format!("reading the body: {e}"),
    }
}
