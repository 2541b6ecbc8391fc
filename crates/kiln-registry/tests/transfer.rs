//! Registries that misbehave on the wire, played by a tiny HTTP server in the test (a std
//! `TcpListener` thread): one that trickles a blob, one that never answers a blob request, one
//! that never answers at all, and a plain-HTTP server reached over TLS. Each pull must fail, with
//! the limits the test sets, naming the registry and what it was fetching; none may hang.
//!
//! Not timed: the limits are small so the pulls end quickly, and the deadline below only keeps a
//! regression from hanging the suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use kiln_oci::digest::Digest;
use kiln_oci::reference::Reference;
use kiln_oci::spec::{Descriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST};
use kiln_oci::store::BlobStore;
use kiln_registry::{Client, ClientOptions, RegistryHost};

/// Far beyond what any of these transfers needs with the limits below.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Serves the manifest and config, then sends the layer one byte every 20 ms.
    TrickleLayer,
    /// Serves the manifest and config, then never answers the layer request.
    SilentOnLayer,
    /// Reads every request and never answers any.
    Silent,
    /// Opens upload sessions, then never reads the blob sent into one.
    SwallowUpload,
}

struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
}

impl Image {
    fn new() -> Image {
        let layer: Vec<u8> = (0..64 << 10).map(|i: u32| (i * 7919 % 251) as u8).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"diff").to_string()]},
        }))
        .unwrap();
        let descriptor = |media_type: &str, bytes: &[u8]| {
            serde_json::json!({
                "mediaType": media_type,
                "digest": Digest::of(bytes).to_string(),
                "size": bytes.len(),
            })
        };
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": descriptor(MEDIA_TYPE_CONFIG, &config),
            "layers": [descriptor(MEDIA_TYPE_LAYER_GZIP, &layer)],
        }))
        .unwrap();
        Image {
            manifest,
            config,
            layer,
        }
    }
}

/// Starts the server on `bind` (`127.0.0.1:0`), returning its port. It runs until the test
/// process ends.
fn serve(bind: &str, behaviour: Behaviour) -> u16 {
    let listener = TcpListener::bind(bind).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || answer(stream, behaviour));
        }
    });
    port
}

/// Answers the requests of one connection (keep-alive) until the client goes away.
fn answer(stream: TcpStream, behaviour: Behaviour) {
    let image = Image::new();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    // A TLS handshake (record type 0x16) gets what a plain-HTTP server answers to one.
    if reader.fill_buf().is_ok_and(|b| b.first() == Some(&0x16)) {
        let _ = out.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let wants = |bytes: &[u8]| path.ends_with(Digest::of(bytes).as_str());
        let silent = behaviour == Behaviour::Silent
            || (behaviour == Behaviour::SilentOnLayer && wants(&image.layer));
        if silent {
            // Hold the connection open without a word until the client gives up.
            let _ = reader.read(&mut [0u8; 1]);
            return;
        }
        if behaviour == Behaviour::SwallowUpload {
            match method {
                "POST" => {
                    let _ = out.write_all(
                        b"HTTP/1.1 202 Accepted\r\nLocation: /v2/test/app/blobs/uploads/1\r\n\
                          Content-Length: 0\r\n\r\n",
                    );
                    continue;
                }
                "PATCH" | "PUT" => {
                    // Neither read the body nor answer: the client's writes back up.
                    std::thread::sleep(DEADLINE);
                    return;
                }
                _ => {}
            }
        }
        let (content_type, body) = if path.ends_with("/manifests/1") || wants(&image.manifest) {
            (MEDIA_TYPE_MANIFEST, &image.manifest)
        } else if wants(&image.config) {
            (MEDIA_TYPE_CONFIG, &image.config)
        } else if wants(&image.layer) {
            ("application/octet-stream", &image.layer)
        } else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Docker-Content-Digest: {}\r\n\r\n",
            body.len(),
            Digest::of(body)
        );
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method == "HEAD" {
            continue;
        }
        if behaviour == Behaviour::TrickleLayer && body == &image.layer {
            for byte in body {
                std::thread::sleep(Duration::from_millis(20));
                if out.write_all(&[*byte]).is_err() {
                    return;
                }
            }
        } else if out.write_all(body).is_err() {
            return;
        }
    }
}

/// Small limits, so a stall is detected within about a second.
fn options() -> ClientOptions {
    ClientOptions {
        low_speed_limit: 1000,
        low_speed_time: Duration::from_millis(500),
        progress_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(10),
        ..ClientOptions::default()
    }
}

/// Runs `f` on a thread, failing the test if it has not returned by the deadline.
fn in_time<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("still running after {DEADLINE:?}"))
}

/// Pulls `reference`, returning the error it ends with and the pull's log.
fn failed_pull(opts: ClientOptions, reference: &str) -> (String, String) {
    let reference = Reference::parse(reference).unwrap();
    let (result, log) = in_time(move || {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let log = std::sync::Mutex::new(String::new());
        let progress = |t: &kiln_registry::Transfer<'_>| {
            log.lock().unwrap().push_str(&format!("{t}\n"));
        };
        let result = kiln_registry::pull(&Client::new(opts), &reference, &store, &progress);
        (
            result.map(|_| ()).map_err(|e| e.to_string()),
            log.into_inner().unwrap(),
        )
    });
    (result.expect_err("the pull succeeded"), log)
}

#[test]
fn a_trickling_blob_is_aborted_naming_registry_and_digest_with_progress_logged() {
    let port = serve("127.0.0.1:0", Behaviour::TrickleLayer);
    let layer = Digest::of(&Image::new().layer);
    let (err, log) = failed_pull(options(), &format!("127.0.0.1:{port}/test/app:1"));
    assert!(err.contains(&format!("registry 127.0.0.1:{port}")), "{err}");
    assert!(err.contains(layer.as_str()), "{err}");
    assert!(
        err.contains("below the minimum of 1000 bytes/s over 0.5 s"),
        "{err}"
    );
    // Progress lines say how far the transfer got.
    let progress: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(layer.as_str()) && l.contains(" of 65536 bytes"))
        .collect();
    assert!(!progress.is_empty(), "no progress line in the log:\n{log}");
}

#[test]
fn a_blob_request_never_answered_fails_naming_registry_and_digest() {
    let port = serve("127.0.0.1:0", Behaviour::SilentOnLayer);
    let layer = Digest::of(&Image::new().layer);
    // One blob at a time: the layer is asked for after the config, on the connection the config
    // came over if connections were reused.
    let opts = ClientOptions {
        max_concurrency: 1,
        ..options()
    };
    let (err, _) = failed_pull(opts, &format!("127.0.0.1:{port}/test/app:1"));
    assert!(err.contains(&format!("registry 127.0.0.1:{port}")), "{err}");
    assert!(err.contains(layer.as_str()), "{err}");
    assert!(err.contains("stalled: no progress for 0.5 s"), "{err}");
}

#[test]
fn a_registry_never_answering_fails_naming_registry_and_manifest() {
    let port = serve("127.0.0.1:0", Behaviour::Silent);
    let (err, _) = failed_pull(options(), &format!("127.0.0.1:{port}/test/app:1"));
    assert!(err.contains(&format!("registry 127.0.0.1:{port}")), "{err}");
    assert!(err.contains("resolving manifest 1"), "{err}");
    assert!(err.contains("stalled: no progress for 0.5 s"), "{err}");
}

#[test]
fn an_upload_the_registry_stops_reading_fails_naming_registry_and_blob() {
    let port = serve("127.0.0.1:0", Behaviour::SwallowUpload);
    let target = Reference::parse(&format!("127.0.0.1:{port}/test/app:1")).unwrap();
    // Far more than the kernel's socket buffers take in before the writes back up.
    let blob: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&blob);
    let err = in_time(move || {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (digest, size) = store.put_reader(&blob[..], None).unwrap();
        let layer = Descriptor {
            media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
            digest,
            size,
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        };
        kiln_registry::push_manifest(
            &Client::new(options()),
            &store,
            &target,
            b"{}",
            MEDIA_TYPE_MANIFEST,
            &[layer],
            None,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .expect_err("the push succeeded");
    assert!(err.contains(&format!("registry 127.0.0.1:{port}")), "{err}");
    assert!(err.contains(&format!("uploading blob {digest}")), "{err}");
    assert!(err.contains("stalled: no progress for 0.5 s"), "{err}");
}

#[test]
fn tls_to_a_plain_http_registry_hints_at_insecure_registry() {
    // 127.0.0.2 is loopback too, but not one of the names Kiln reaches over plain HTTP itself.
    let port = serve("127.0.0.2:0", Behaviour::TrickleLayer);
    let registry = format!("127.0.0.2:{port}");
    let (err, _) = failed_pull(options(), &format!("{registry}/test/app:1"));
    assert!(err.contains("--insecure-registry 127.0.0.2"), "{err}");

    // Named as insecure, the same registry is reached over HTTP (and then trickles).
    let opts = ClientOptions {
        insecure_registries: vec![registry.parse::<RegistryHost>().unwrap()],
        ..options()
    };
    let (err, _) = failed_pull(opts, &format!("{registry}/test/app:1"));
    assert!(err.contains("below the minimum"), "{err}");
}

#[test]
fn registry_hosts_are_validated() {
    for good in ["localhost", "build.internal:5000", "10.0.0.1:443", "my-reg"] {
        let host: RegistryHost = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(host.to_string(), good);
    }
    for bad in [
        "host:notaport",
        "host:",
        "host:0",
        "host:65536",
        ":5000",
        "",
        "a/b",
        "http://host",
        "-bad.host",
    ] {
        let err = bad.parse::<RegistryHost>().unwrap_err().to_string();
        assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
    }
}
