//! Attaching artifacts to an image and listing them, against a small in-memory registry (a std
//! `TcpListener` thread) played two ways: one with the referrers API (it answers a manifest push
//! with `OCI-Subject` and serves `GET /v2/<name>/referrers/<digest>`) and one without (404 for
//! that route, as distribution 2.x), where the client must keep the fallback-tag index. The
//! fallback against a real distribution registry is covered by the CLI's registry tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use kiln_oci::digest::Digest;
use kiln_oci::json;
use kiln_oci::reference::Reference;
use kiln_oci::spec::{
    Descriptor, ImageIndex, ImageManifest, EMPTY_JSON, MEDIA_TYPE_EMPTY, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
};
use kiln_oci::store::BlobStore;
use kiln_registry::{Client, ClientOptions, Listed};

/// Blobs by digest and manifests by tag or digest, with their media types.
#[derive(Default)]
struct Registry {
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<String, (String, Vec<u8>)>,
    /// PUTs of a manifest by tag (the fallback index is one).
    tag_puts: Vec<String>,
}

type Shared = Arc<Mutex<Registry>>;

fn serve(referrers_api: bool) -> (u16, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Shared::default();
    let shared = state.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let state = shared.clone();
            std::thread::spawn(move || answer(stream, &state, referrers_api));
        }
    });
    (port, state)
}

/// Answers the requests of one connection until the client closes it.
fn answer(stream: TcpStream, state: &Shared, referrers_api: bool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, url) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let rest = path.strip_prefix("/v2/test/app/").unwrap_or("");
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        let reply = handle(
            &mut state.lock().unwrap(),
            referrers_api,
            (method, rest, query),
            &content_type,
            body,
        );
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}

fn handle(
    r: &mut Registry,
    referrers_api: bool,
    (method, rest, query): (&str, &str, &str),
    content_type: &str,
    body: Vec<u8>,
) -> Vec<u8> {
    let response = |status: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    };
    let not_found = response("404 Not Found", &[], b"");
    match (method, rest.split_once('/')) {
        ("HEAD", Some(("blobs", digest))) => match r.blobs.get(digest) {
            Some(_) => response("200 OK", &[], b""),
            None => not_found,
        },
        ("POST", Some(("blobs", "uploads/"))) => response(
            "202 Accepted",
            &[("Location", "/v2/test/app/blobs/uploads/session".into())],
            b"",
        ),
        ("PUT", Some(("blobs", "uploads/session"))) => {
            let digest = query.strip_prefix("digest=").unwrap().to_owned();
            assert_eq!(Digest::of(&body).as_str(), digest, "uploaded blob");
            r.blobs.insert(digest, body);
            response("201 Created", &[], b"")
        }
        ("PUT", Some(("manifests", name))) => {
            let digest = Digest::of(&body).to_string();
            let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for blob in manifest["layers"].as_array().into_iter().flatten() {
                let blob = blob["digest"].as_str().unwrap();
                assert!(r.blobs.contains_key(blob), "blob {blob} pushed first");
            }
            if !name.starts_with("sha256:") {
                r.tag_puts.push(name.to_owned());
            }
            let stored = (content_type.to_owned(), body);
            r.manifests.insert(name.to_owned(), stored.clone());
            r.manifests.insert(digest.clone(), stored);
            let mut headers = vec![("Docker-Content-Digest", digest)];
            if let (true, Some(subject)) = (referrers_api, manifest["subject"]["digest"].as_str()) {
                headers.push(("OCI-Subject", subject.to_owned()));
            }
            response("201 Created", &headers, b"")
        }
        ("GET", Some(("manifests", name))) => match r.manifests.get(name) {
            Some((media_type, bytes)) => {
                response("200 OK", &[("Content-Type", media_type.clone())], bytes)
            }
            None => not_found,
        },
        ("GET", Some(("referrers", subject))) if referrers_api => {
            let mut manifests: Vec<Descriptor> = Vec::new();
            for (name, (_, bytes)) in &r.manifests {
                let Ok(m) = serde_json::from_slice::<ImageManifest>(bytes) else {
                    continue;
                };
                if name.starts_with("sha256:")
                    && m.subject.is_some_and(|s| s.digest.as_str() == subject)
                {
                    manifests.push(Descriptor {
                        media_type: MEDIA_TYPE_MANIFEST.into(),
                        digest: Digest::parse(name).unwrap(),
                        size: bytes.len() as u64,
                        annotations: m.annotations,
                        platform: None,
                        artifact_type: m.artifact_type,
                    });
                }
            }
            manifests.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
            let index = ImageIndex {
                schema_version: 2,
                media_type: MEDIA_TYPE_INDEX.into(),
                manifests,
                annotations: Default::default(),
            };
            let body = json::to_canonical_vec(&index);
            response(
                "200 OK",
                &[("Content-Type", MEDIA_TYPE_INDEX.into())],
                &body,
            )
        }
        _ => not_found,
    }
}

/// An artifact of `artifact_type` about `subject`, with one blob, stored in `store`.
fn artifact(
    store: &BlobStore,
    subject: &Descriptor,
    artifact_type: &str,
    content: &[u8],
) -> (ImageManifest, Vec<u8>) {
    let blob = |media_type: &str, bytes: &[u8]| Descriptor {
        media_type: media_type.into(),
        digest: store.put_bytes(bytes).unwrap(),
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST.into(),
        config: blob(MEDIA_TYPE_EMPTY, EMPTY_JSON),
        layers: vec![blob(artifact_type, content)],
        annotations: [("org.opencontainers.image.created".into(), "2020".into())].into(),
        artifact_type: Some(artifact_type.into()),
        subject: Some(subject.clone()),
    };
    let bytes = json::to_canonical_vec(&manifest);
    (manifest, bytes)
}

fn attach_two_and_list(referrers_api: bool) -> Shared {
    let (port, state) = serve(referrers_api);
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let client = Client::new(ClientOptions {
        retries: 0,
        ..Default::default()
    });
    let repository = Reference::parse(&format!("127.0.0.1:{port}/test/app:v1")).unwrap();
    let image = b"{\"schemaVersion\":2}";
    let subject = Descriptor {
        media_type: MEDIA_TYPE_MANIFEST.into(),
        digest: Digest::of(image),
        size: image.len() as u64,
        annotations: Default::default(),
        platform: None,
        artifact_type: None,
    };
    let (spdx, spdx_bytes) = artifact(&store, &subject, "application/spdx+json", b"{\"spdx\":1}");
    let (cdx, cdx_bytes) = artifact(&store, &subject, "application/vnd.cyclonedx+json", b"{}");
    let mut reports = Vec::new();
    for (manifest, bytes) in [
        (&spdx, &spdx_bytes),
        (&cdx, &cdx_bytes),
        (&spdx, &spdx_bytes),
    ] {
        reports.push(kiln_registry::attach(&client, &store, &repository, manifest, bytes).unwrap());
    }
    let expected = if referrers_api {
        Listed::ReferrersApi
    } else {
        Listed::FallbackTag {
            tag: format!("sha256-{}", subject.digest.hex()),
        }
    };
    for report in &reports {
        assert_eq!(report.listed, expected);
        assert_eq!(report.subject, subject.digest);
    }
    assert_eq!(reports[0].manifest_digest, Digest::of(&spdx_bytes));
    assert_eq!(
        reports[0].reference,
        format!("127.0.0.1:{port}/test/app@{}", Digest::of(&spdx_bytes))
    );

    let all = kiln_registry::referrers(&client, &repository, &subject.digest, None).unwrap();
    let mut listed: Vec<(Digest, Option<String>)> = all
        .iter()
        .map(|d| (d.digest.clone(), d.artifact_type.clone()))
        .collect();
    listed.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut want = vec![
        (
            Digest::of(&spdx_bytes),
            Some("application/spdx+json".to_owned()),
        ),
        (
            Digest::of(&cdx_bytes),
            Some("application/vnd.cyclonedx+json".to_owned()),
        ),
    ];
    want.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    assert_eq!(listed, want, "each artifact listed once, with its type");
    assert!(all
        .iter()
        .all(|d| d.annotations.get("org.opencontainers.image.created") == Some(&"2020".into())));
    let spdx_only = kiln_registry::referrers(
        &client,
        &repository,
        &subject.digest,
        Some("application/spdx+json"),
    )
    .unwrap();
    assert_eq!(spdx_only.len(), 1);
    assert_eq!(spdx_only[0].digest, Digest::of(&spdx_bytes));
    let other = Digest::of(b"another image");
    assert!(kiln_registry::referrers(&client, &repository, &other, None)
        .unwrap()
        .is_empty());
    state
}

#[test]
fn a_registry_with_the_referrers_api_indexes_artifacts_itself() {
    let state = attach_two_and_list(true);
    assert_eq!(
        state.lock().unwrap().tag_puts,
        Vec::<String>::new(),
        "no fallback index written"
    );
}

#[test]
fn without_the_referrers_api_the_fallback_tag_index_lists_each_artifact_once() {
    let state = attach_two_and_list(false);
    let state = state.lock().unwrap();
    // The third attach found its artifact listed already and left the index alone.
    assert_eq!(state.tag_puts.len(), 2, "{:?}", state.tag_puts);
    let (media_type, _) = &state.manifests[&state.tag_puts[0]];
    assert_eq!(media_type, MEDIA_TYPE_INDEX);
}
