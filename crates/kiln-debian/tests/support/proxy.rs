//! A tampering HTTP proxy in front of a Debian mirror, for tests: it fetches each requested file
//! from the real mirror and may change its bytes before answering. Shared by `kiln-debian`'s
//! tests and, through `#[path]`, `crates/kiln/tests/stack.rs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use kiln_debian::mirror::Mirror;

/// A proxy in front of the mirror: `/a/…` → archive, `/s/…` → security. `tamper(path, bytes)`
/// may change a response. Serves until the test process ends.
pub fn tampering_proxy(real: &Mirror, tamper: fn(&str, &mut [u8])) -> Mirror {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let archive = real.archive.clone();
    let security = real.security.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let upstream = match (
                path.strip_prefix("/a/"),
                path.strip_prefix("/s/"),
                &security,
            ) {
                (Some(rest), _, _) => format!("{archive}/{rest}"),
                (_, Some(rest), Some(sec)) => format!("{sec}/{rest}"),
                _ => String::new(),
            };
            let response = ureq::get(&upstream).call();
            let (status, mut body) = match response {
                Ok(r) => {
                    let mut body = Vec::new();
                    r.into_reader().read_to_end(&mut body).unwrap();
                    ("200 OK", body)
                }
                Err(_) => ("404 Not Found", Vec::new()),
            };
            tamper(&path, &mut body);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    Mirror {
        archive: format!("http://127.0.0.1:{port}/a"),
        security: real
            .security
            .as_ref()
            .map(|_| format!("http://127.0.0.1:{port}/s")),
        updates: real.updates,
        origin: "test proxy".to_owned(),
    }
}
