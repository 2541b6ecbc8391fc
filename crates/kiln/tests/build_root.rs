//! Hermetic builds: with nothing of the host's toolchains in reach (an empty `PATH`), each
//! language builds in a Debian build root inside the sandbox and its image answers HTTP under
//! runc. Needs the Debian mirror, the npm registry (Node), skopeo, umoci and runc.

mod support;

use std::path::Path;

use support::run_image::{kiln_hermetic, require_debian_mirror};
use support::{fixture, free_port, require_tools, Container};

/// Builds `fixture` hermetically (`--isolation sandbox --build-root debian`, no `--run-image`),
/// starts it with `PORT` set and returns the report, the container and the port.
fn serve_hermetic(name: &str, dir: &Path, args: &[&str]) -> (serde_json::Value, Container, u16) {
    serve_hermetic_in(name, dir, &dir.join("cache"), args)
}

/// [`serve_hermetic`] with the Kiln cache at `cache`.
fn serve_hermetic_in(
    name: &str,
    dir: &Path,
    cache: &Path,
    args: &[&str],
) -> (serde_json::Value, Container, u16) {
    let out = dir.join("app.tar");
    let output = kiln_hermetic(&dir.join("home"))
        .args(["build", fixture(name).to_str().unwrap(), "--output"])
        .arg(&out)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--isolation", "sandbox", "--build-root", "debian", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // pnpm's store and node-gyp's headers are passed so that npm never sees a config it does
    // not know (`npm warn Unknown env config "store-dir"`).
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains("Unknown env config"), "{name}: {log}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.display()),
        &[("PORT", &port.to_string())],
    );
    (report, container, port)
}

fn ready() -> bool {
    require_tools(&["skopeo", "umoci", "runc"]) && require_debian_mirror()
}

/// Builds `name` hermetically, asserts that `GET path` answers `hello from kiln NAME at PATH`
/// and that the build root holds `requested`; returns the report and the running container
/// (with the directory that must outlive it) for further checks.
fn assert_greets(
    name: &str,
    path: &str,
    requested: &[&str],
) -> (tempfile::TempDir, serde_json::Value, Container) {
    assert_greets_with(name, path, requested, &[])
}

/// The build root named in the report holds what was asked for (`None`: the plan has no steps,
/// so no build root is assembled); no host path of the cache, working copy or source is in any
/// file of the image.
fn assert_hermetic(
    report: &serde_json::Value,
    requested: Option<&[&str]>,
    dir: &Path,
    rootfs: &Path,
) {
    assert_hermetic_on("debian-13", report, requested, dir, rootfs)
}

fn assert_hermetic_on(
    distro: &str,
    report: &serde_json::Value,
    requested: Option<&[&str]>,
    dir: &Path,
    rootfs: &Path,
) {
    let root = &report["build_root"];
    let Some(requested) = requested else {
        assert!(root.is_null(), "{report:#}");
        return assert_no_host_paths(dir, rootfs);
    };
    assert_eq!(root["distro"], distro, "{report:#}");
    for package in requested {
        assert!(
            root["requested"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == package),
            "{package} not in {root}"
        );
    }
    assert_no_host_paths(dir, rootfs);
}

fn assert_no_host_paths(dir: &Path, rootfs: &Path) {
    let fixtures = fixture("");
    let needles = [dir.to_str().unwrap(), fixtures.to_str().unwrap()];
    for entry in walkdir::WalkDir::new(rootfs).into_iter().flatten() {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            for needle in needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} holds the host path {needle}",
                    entry.path().display(),
                );
            }
        }
    }
}

#[test]
fn ruby_app_builds_with_bundler_from_the_build_root_and_runs_on_ruby_from_the_stack() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("ruby-plain", dir.path(), &[]);
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert!(body.starts_with("hello from ruby 3."), "{body}");
    assert!(body.ends_with(": /kiln\n"), "{body}");
    assert_hermetic(
        &report,
        Some(&["ruby", "ruby-bundler", "ruby-dev"]),
        dir.path(),
        &container.rootfs(),
    );
}

#[test]
fn go_app_builds_with_go_from_the_build_root() {
    if !ready() {
        return;
    }
    assert_greets("go-http", "/", &["golang-go"]);
}

#[test]
fn go_workspace_builds_the_module_kiln_toml_names_with_its_workspace_dependency() {
    if !ready() {
        return;
    }
    // The greeting comes from the workspace's `greeting` module; only the api serves HTTP (the
    // other main package prints and exits).
    assert_greets("go-workspace", "/api", &["golang-go"]);
}

#[test]
fn node_app_installs_with_npm_from_the_registry_inside_the_build_root() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("node-express", dir.path(), &[]);
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from kiln node-express at /\n");
    assert_hermetic(&report, Some(&[]), dir.path(), &container.rootfs());
}

/// Python from the stack's distro (the fixture pins 3.11: debian-12's), pip installing from
/// PyPI inside the build root; gunicorn serves the app.
#[test]
fn python_app_builds_and_runs_on_the_distros_python() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) =
        serve_hermetic("python-flask", dir.path(), &["--stack", "debian-12"]);
    assert_eq!(report["runtimes"][0]["provider"], "debian", "{report:#}");
    assert_eq!(report["runtimes"][0]["version"], "3.11", "{report:#}");
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from kiln python-flask at /\n");
    assert_hermetic_on(
        "debian-12",
        &report,
        Some(&["python3", "python3-pip"]),
        dir.path(),
        &container.rootfs(),
    );
}

/// Rust with the distro's Cargo and rustc, linked statically for the static stack.
#[test]
fn rust_app_builds_with_cargo_from_the_build_root() {
    if !ready() {
        return;
    }
    let (_dir, report, _container) = assert_greets("rust-hello", "/kiln", &["cargo"]);
    assert_eq!(report["stack"]["flavour"], "static", "{report:#}");
}

/// Builds a `cpp` fixture with `tool` (`cmake`, `meson`) and Ninja from the build root and
/// checks what the `app` launch layer holds: the executable `exe` in `bin`, which the image runs
/// on the glibc stack (the buildpack's libstdc++ run packages), and none of `absent`.
fn assert_cpp_app(name: &str, path: &str, tool: &str, exe: &str, absent: &[&str]) {
    let (_dir, report, container) = assert_greets(name, path, &[tool, "ninja-build"]);
    assert_eq!(report["stack"]["flavour"], "glibc", "{report:#}");
    let bin = container.rootfs().join("layers/cpp/app/bin");
    assert!(bin.join(exe).is_file(), "{report:#}");
    for other in absent {
        assert!(!bin.join(other).exists(), "{other} installed: {report:#}");
    }
}

/// C++ with CMake: `add_executable` + `install(TARGETS)` names the start command.
#[test]
fn cpp_cmake_app_builds_in_the_build_root_and_runs_its_installed_executable() {
    if !ready() {
        return;
    }
    assert_cpp_app("cpp-cmake-http", "/kiln", "cmake", "hello-server", &[]);
}

/// C with Meson: the installed executable is named by `meson.project_name()`; the uninstalled
/// helper is neither a candidate nor installed.
#[test]
fn cpp_meson_app_builds_in_the_build_root_and_runs_its_installed_executable() {
    if !ready() {
        return;
    }
    assert_cpp_app(
        "cpp-meson-http",
        "/meson",
        "meson",
        "cpp-meson-http",
        &["selftest"],
    );
}

/// pnpm as `packageManager` pins it, fetched from the npm registry by the runtime's npx: no host
/// pnpm. It installs, runs the build script and prunes the dev dependencies.
#[test]
fn pnpm_app_installs_with_the_pinned_pnpm_inside_the_build_root() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sbom = dir.path().join("sbom");
    let (report, container, port) = serve_hermetic(
        "node-pnpm10",
        dir.path(),
        &["--sbom-dir", sbom.to_str().unwrap()],
    );
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(
        body,
        "pnpm10 app: 2 minutes is 120000 ms, built by pnpm run build\n"
    );
    // Installed, built and pruned with pnpm's store in the npm cache layer.
    let ran: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ran"] == true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(ran, ["install", "build", "prune"], "{report:#}");
    assert_sboms(&sbom, &container.rootfs(), &report);
    assert_hermetic(&report, Some(&[]), dir.path(), &container.rootfs());
}

/// The SBOMs `--sbom-dir` wrote are the image's (`/layers/kiln/sbom`, same bytes), the
/// CycloneDX one valid against the CycloneDX 1.5 schema, and both list the app's `ms@2.1.3`
/// (from pnpm-lock.yaml), the stack's `libc6` and the Node runtime with its sha256.
fn assert_sboms(dir: &Path, rootfs: &Path, report: &serde_json::Value) {
    let read = |name: &str| -> serde_json::Value {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let carried = std::fs::read(rootfs.join("layers/kiln/sbom").join(name)).unwrap();
        assert_eq!(bytes, carried, "{name} in the image differs");
        serde_json::from_slice(&bytes).unwrap()
    };
    let cdx = read("sbom.cdx.json");
    let errors = kiln_sbom::schema::cyclonedx_errors(&cdx);
    assert!(errors.is_empty(), "{errors:#?}");
    let purls: Vec<&str> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    assert!(purls.contains(&"pkg:npm/ms@2.1.3"), "{purls:#?}");
    let libc = report["stack"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "libc6")
        .expect("libc6 in the stack");
    assert!(
        purls.iter().any(|p| p.starts_with(&format!(
            "pkg:deb/debian/libc6@{}",
            libc["version"].as_str().unwrap().replace('+', "%2B")
        ))),
        "{purls:#?}"
    );
    let node = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "node")
        .expect("the node runtime");
    assert_eq!(node["version"], report["runtimes"][0]["version"]);
    let spdx = read("sbom.spdx.json");
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    let names: Vec<&str> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in ["ms", "libc6", "node"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
}

/// A Node-API addon compiled by npm's node-gyp at install time, against the runtime's own
/// headers (offline) with the build root's compiler and Python; it runs in the image.
#[test]
fn node_native_addon_compiles_against_the_runtime_headers_in_the_build_root() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("node-native-addon", dir.path(), &[]);
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from a native addon at /kiln\n");
    assert_hermetic(&report, Some(&["python3"]), dir.path(), &container.rootfs());
}

/// A C extension pip compiles (PEP 517, setuptools from PyPI) against the distro Python's
/// headers in the build root; debian-13's Python 3.13 serves `requires-python = ">=3.9"`.
#[test]
fn python_c_extension_compiles_against_the_distros_headers() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("python-c-extension", dir.path(), &[]);
    assert_eq!(report["runtimes"][0]["provider"], "debian", "{report:#}");
    assert_eq!(report["runtimes"][0]["version"], "3.13", "{report:#}");
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from a C extension at /kiln\n");
    assert_hermetic(
        &report,
        Some(&["python3-dev"]),
        dir.path(),
        &container.rootfs(),
    );
}

/// `GET path` with `headers`, returning the whole response head (status line and headers,
/// lowercased) and the body bytes.
fn raw_get(port: u16, path: &str, headers: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    (head, response[split + 4..].to_vec())
}

/// Builds the site `name` hermetically and checks that Caddy serves it: `GET /` holds
/// `heading`, and (for a single-page app, `route`) a client-router path gets the same
/// index.html. Returns the report, the running container, its port and the index.
fn assert_caddy_serves(
    name: &str,
    heading: &str,
    route: Option<&str>,
) -> (tempfile::TempDir, serde_json::Value, Container, u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic(name, dir.path(), &[]);
    assert_eq!(report["processes"][0]["command"][0], "caddy", "{report:#}");
    let (status, index) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert!(index.contains(heading), "{index}");
    if let Some(route) = route {
        let (status, routed) = container.http_get(port, route);
        assert!(status.contains("200"), "{route}: {status}");
        assert_eq!(routed, index, "{route}");
    }
    (dir, report, container, port, index)
}

/// A plain site: Caddy from the stack serves it on `$PORT` with MIME types, compression for
/// clients that ask, clean URLs (`/about` is `about.html`) and a 404 for a missing file (no
/// single-page-app fallback).
#[test]
fn static_site_is_served_by_caddy_with_mime_types_compression_and_404() {
    if !ready() {
        return;
    }
    let (_dir, _, _container, port, _) =
        assert_caddy_serves("static-site", "<h1>kiln static-site</h1>", None);
    let (head, css) = raw_get(port, "/style.css", "Accept-Encoding: gzip\r\n");
    assert!(head.contains("content-type: text/css"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&css[..]), &mut plain).unwrap();
    assert!(plain.contains("font-family: sans-serif"), "{plain}");
    let (head, about) = raw_get(port, "/about", "");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&about).contains("<h1>about kiln static-site</h1>"));
    for missing in ["/missing.html", "/missing"] {
        let (head, _) = raw_get(port, missing, "");
        assert!(head.starts_with("http/1.1 404"), "{missing}: {head}");
    }
}

/// A single-page app (`Staticfile` `pushstate: enabled`, `root: dist`): a client-router path
/// gets `index.html`, assets are served as they are.
#[test]
fn single_page_app_falls_back_to_index_html_for_client_routes() {
    if !ready() {
        return;
    }
    let (_dir, _, _container, port, _) = assert_caddy_serves(
        "static-spa",
        "<h1>kiln static-spa</h1>",
        Some("/users/42/settings"),
    );
    let (head, script) = raw_get(port, "/assets/app.js", "");
    assert!(head.contains("javascript"), "{head}");
    assert!(String::from_utf8_lossy(&script).contains("location.pathname"));
}

/// A Vite single-page app: `npm ci` + `vite build` in the build root, then Caddy from the stack
/// serves dist/ with the index.html fallback for client routes. Node served the build only: the
/// image holds neither its runtime nor node_modules nor any app file but the built site.
#[test]
fn vite_app_builds_to_a_static_site_caddy_serves_with_the_spa_fallback() {
    if !ready() {
        return;
    }
    let (dir, report, container, port, index) = assert_caddy_serves(
        "node-vite-spa",
        "<h1>hello from kiln node-vite-spa</h1>",
        Some("/about"),
    );
    // The bundle Vite wrote (a hashed name under /assets/) holds the router's pages.
    let script = index
        .split('"')
        .find(|part| part.starts_with("/assets/") && part.ends_with(".js"))
        .unwrap_or_else(|| panic!("no bundle in {index}"));
    let (head, bundle) = raw_get(port, script, "");
    assert!(head.contains("javascript"), "{head}");
    assert!(String::from_utf8_lossy(&bundle).contains("about this app"));
    let rootfs = container.rootfs();
    assert!(rootfs.join("workspace/dist/index.html").is_file());
    for unshipped in [
        "workspace/node_modules",
        "workspace/package.json",
        "workspace/src",
        "layers/nodejs/runtime",
    ] {
        assert!(!rootfs.join(unshipped).exists(), "{unshipped} shipped");
    }
    let layers: Vec<&str> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    // nodejs/web is the Caddyfile.
    assert_eq!(layers, ["base", "base", "base", "nodejs/web", "app"]);
    assert_hermetic(&report, Some(&["python3"]), dir.path(), &rootfs);
}

// ---- PHP: php-fpm behind Caddy, both from the stack ----

/// The PHP web process: Kiln's start script, which runs php-fpm and `exec`s Caddy.
fn assert_php_fpm_behind_caddy(report: &serde_json::Value) {
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!(["sh", "/layers/php/web/start.sh"]),
        "{report:#}"
    );
}

/// A plain `public/index.php` app with nothing to build (no step, so no build root): PHP runs
/// under php-fpm (`fpm-fcgi`) behind Caddy, which serves the static files itself (MIME type, a
/// 404 for a missing asset, never the app's dotfiles); when php-fpm dies the container stops
/// rather than answering 502.
#[test]
fn php_app_is_served_by_php_fpm_behind_caddy_from_the_stack() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("php-hello", dir.path(), &[]);
    assert_php_fpm_behind_caddy(&report);
    let (status, body) = container.http_get(port, "/kiln/route");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from php 8.4 (fpm-fcgi): /kiln/route\n");
    let (head, _) = raw_get(port, "/", "");
    assert!(head.contains("server: caddy"), "{head}");
    let (head, css) = raw_get(port, "/style.css", "");
    assert!(head.contains("content-type: text/css"), "{head}");
    assert!(String::from_utf8_lossy(&css).contains("font-family: sans-serif"));
    for missing in [
        "/missing.css",
        "/assets/missing.js",
        "/favicon.ico",
        "/.env",
    ] {
        let (head, _) = raw_get(port, missing, "");
        assert!(head.starts_with("http/1.1 404"), "{missing}: {head}");
    }
    assert_hermetic(&report, None, dir.path(), &container.rootfs());

    // php-fpm's master gone: Caddy (PID 1) is stopped, and the log says why.
    // (php-fpm writes its pid without a newline, so `read` returns 1 at EOF: no `&&`.)
    container.exec(&[
        "sh",
        "-c",
        "read pid < /tmp/kiln-php-fpm.pid; kill \"$pid\"",
    ]);
    assert!(
        container.stops_within(std::time::Duration::from_secs(10)),
        "still running after php-fpm exited:\n{}",
        container.log()
    );
    assert!(
        container
            .log()
            .contains("php-fpm8.4 exited with status 0; stopping Caddy"),
        "{}",
        container.log()
    );
}

/// `index.php` at the app root is the document root: Debian's extensions (opcache, ctype) are
/// enabled and its production php.ini read, the app's `.php.ini.d/*.ini` on top; its dotfiles
/// are not served.
#[test]
fn php_app_at_its_root_runs_with_debians_extensions_production_ini_and_its_own_ini() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("php-root", dir.path(), &[]);
    assert_php_fpm_behind_caddy(&report);
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from kiln php-root at /kiln\n");
    let (_, info) = container.http_get(port, "/info");
    assert_eq!(
        info,
        "sapi=fpm-fcgi\nopcache=loaded\nctype=loaded\ndisplay_errors=''\nmemory_limit=96M\n"
    );
    let (head, _) = raw_get(port, "/.php.ini.d/app.ini", "");
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert_hermetic(&report, None, dir.path(), &container.rootfs());
}

/// A Composer app: `composer install --no-dev --optimize-autoloader` in the build root
/// (Composer and PHP from Debian), `vendor/` in its own layer; public/index.php finds its PSR-4
/// class in src/ through `vendor/autoload.php` under php-fpm.
#[test]
fn php_composer_app_autoloads_its_classes_from_vendor_under_php_fpm() {
    if !ready() {
        return;
    }
    let (_dir, report, container) =
        assert_greets("php-composer", "/kiln/hello", &["php-cli", "composer"]);
    assert_php_fpm_behind_caddy(&report);
    let classmap = container
        .rootfs()
        .join("workspace/vendor/composer/autoload_classmap.php");
    let classmap = std::fs::read_to_string(&classmap).unwrap();
    assert!(classmap.contains("Kiln\\\\Hello\\\\Greeter"), "{classmap}");
}

// ---------------------------------------------------------------------------------------------
// Every Node and Python package manager, hermetically: Yarn 1, Yarn 4, Bun (its own runtime),
// uv, Poetry, and Deno, each from the npm registry or the package index at the version the
// project pins. One Kiln cache for all of them and every run (`target/tmp/kiln-pm`), so the
// runtimes (Node, Bun, Deno) are downloaded once; each build is its own project, so its steps
// run every time.

/// The shared cache's parent and a fresh directory in it for one test (the build's `HOME`,
/// output and project name); both are host paths no image may hold.
fn package_manager_dirs() -> (std::path::PathBuf, tempfile::TempDir) {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-pm");
    std::fs::create_dir_all(&shared).unwrap();
    let dir = tempfile::tempdir_in(&shared).unwrap();
    (shared, dir)
}

/// Builds `name` hermetically with the shared cache, asserts that `GET /` answers 200 with a
/// body starting with `prefix` and that no host path is in the image; returns the report and
/// the body.
fn assert_package_manager_app(name: &str, prefix: &str) -> (serde_json::Value, String) {
    let (shared, dir) = package_manager_dirs();
    let project = dir.path().file_name().unwrap().to_str().unwrap().to_owned();
    let (report, container, port) = serve_hermetic_in(
        name,
        dir.path(),
        &shared.join("cache"),
        &["--project", &project],
    );
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert!(body.starts_with(prefix), "{name}: {body:?}\n{report:#}");
    assert_no_host_paths(&shared, &container.rootfs());
    (report, body)
}

/// The provided runtime of the report: from the npm registry, integrity-verified.
fn registry_runtime<'a>(report: &'a serde_json::Value, runtime: &str) -> &'a serde_json::Value {
    let provided = &report["runtimes"][0];
    assert_eq!(provided["runtime"], runtime, "{report:#}");
    assert_eq!(provided["provider"], "npm-registry", "{report:#}");
    assert!(
        provided["integrity"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha512-")),
        "{report:#}"
    );
    provided
}

/// `mise.toml` `[tools] node = "22"` picks the runtime: Node 22 from the npm registry, not the
/// buildpack's default LTS, with the file named as the version's source.
#[test]
fn the_node_version_mise_toml_pins_is_the_one_in_the_image() {
    if !ready() {
        return;
    }
    let (report, _) = assert_package_manager_app("node-mise", "node-mise on node v22.");
    let provided = registry_runtime(&report, "node");
    assert!(
        provided["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("22.")),
        "{report:#}"
    );
    assert_eq!(provided["from"], "mise.toml tools.node", "{report:#}");
}

/// Yarn 1 from the npm registry (`yarn@1`, what a v1 lockfile implies) through the runtime's npx.
#[test]
fn yarn_classic_app_installs_with_yarn_1_from_the_registry() {
    if !ready() {
        return;
    }
    let (report, body) = assert_package_manager_app("node-yarn", "node-yarn on node ");
    assert!(body.ends_with(": an hour is 1h\n"), "{body}");
    registry_runtime(&report, "node");
}

/// Yarn 4 as `packageManager` pins it: the npm registry's `@yarnpkg/cli-dist@4.5.3`, no corepack.
#[test]
fn yarn_berry_app_installs_with_the_pinned_yarn_4_from_the_registry() {
    if !ready() {
        return;
    }
    let (_, body) = assert_package_manager_app("node-yarn-berry", "node-yarn-berry on node ");
    assert!(body.ends_with(": an hour is 1h\n"), "{body}");
}

/// A Bun app builds with Bun and runs on it: Bun 1.4.5 (`packageManager`) from the npm
/// registry's `@oven/bun-linux-x64` package is the runtime layer, and the server says it runs
/// on Bun.
#[test]
fn bun_app_installs_and_runs_on_the_pinned_bun_from_the_registry() {
    if !ready() {
        return;
    }
    let (report, body) = assert_package_manager_app("node-bun", "node-bun on bun 1.4.5: ");
    assert!(body.ends_with("an hour is 1h\n"), "{body}");
    let bun = registry_runtime(&report, "bun");
    assert_eq!(bun["version"], "1.4.5", "{report:#}");
    assert_eq!(bun["from"], "package.json packageManager", "{report:#}");
    assert!(
        bun["source"]
            .as_str()
            .unwrap()
            .contains("/@oven/bun-linux-"),
        "{report:#}"
    );
    assert_eq!(report["processes"][0]["command"][0], "bun", "{report:#}");
}

/// uv from the package index (pip, in the build root, into the `tools` layer) exports uv.lock;
/// pip installs what it pins (six 1.16.0 where 1.17 is allowed).
#[test]
fn uv_project_installs_its_lockfile_with_uv_from_the_package_index() {
    if !ready() {
        return;
    }
    let (report, _) = assert_package_manager_app("python-uv", "six 1.16.0\n");
    assert!(support::step_outcome(&report, "tools").0, "{report:#}");
}

/// Poetry (the version poetry.lock's header names) from the package index exports the lockfile.
#[test]
fn poetry_project_installs_its_lockfile_with_the_pinned_poetry() {
    if !ready() {
        return;
    }
    let (report, _) = assert_package_manager_app("python-poetry", "six 1.16.0\n");
    assert!(support::step_outcome(&report, "tools").0, "{report:#}");
}

/// Deno from the npm registry's `@deno/linux-x64-glibc` package serves a Deno app.
#[test]
fn deno_app_runs_on_deno_from_the_npm_registry() {
    if !ready() {
        return;
    }
    let (report, body) =
        assert_package_manager_app("deno-http", "hello from kiln deno-http at /kiln on deno 2.");
    registry_runtime(&report, "deno");
    assert_eq!(report["processes"][0]["command"][0], "deno", "{report:#}");
    assert!(body.ends_with('\n'), "{body}");
}

// --- Ruby from vendor/cache, Elixir releases, Java (issue 11) ---------------------------------

/// [`assert_greets`] with further `kiln build` arguments.
fn assert_greets_with(
    name: &str,
    path: &str,
    requested: &[&str],
    args: &[&str],
) -> (tempfile::TempDir, serde_json::Value, Container) {
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic(name, dir.path(), args);
    let (status, body) = container.http_get(port, path);
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, format!("hello from kiln {name} at {path}\n"));
    assert_hermetic(&report, Some(requested), dir.path(), &container.rootfs());
    (dir, report, container)
}

/// [`assert_greets`] with the sandbox's network off (`--network none`), so any download a
/// step tried would fail the build.
fn assert_greets_offline(
    name: &str,
    path: &str,
    requested: &[&str],
) -> (tempfile::TempDir, serde_json::Value, Container) {
    assert_greets_with(name, path, requested, &["--network", "none"])
}

/// A Sinatra app whose gems are committed in vendor/cache (`bundle cache`): `bundle install
/// --local` installs them in the build root without a gem server (rubygems.org is out of
/// reach, and the step has no network), and rackup serves it on WEBrick, on `$PORT`, under Ruby
/// from the stack.
#[test]
fn sinatra_app_installs_its_vendored_gems_offline_and_runs_under_rackup() {
    if !ready() {
        return;
    }
    let (_dir, report, container) =
        assert_greets_offline("ruby-sinatra", "/kiln", &["ruby", "ruby-bundler"]);
    let install = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "install")
        .expect("an install step");
    assert_eq!(install["ran"], true, "{report:#}");
    let gems = container.rootfs().join("layers/ruby/gems/ruby");
    let installed: Vec<String> = std::fs::read_dir(&gems)
        .unwrap()
        .flatten()
        .flat_map(|abi| std::fs::read_dir(abi.path().join("gems")).unwrap())
        .flatten()
        .map(|gem| gem.file_name().to_string_lossy().into_owned())
        .collect();
    for gem in [
        "sinatra-4.1.1",
        "rack-3.1.20",
        "rackup-2.1.0",
        "webrick-1.9.1",
    ] {
        assert!(
            installed.iter().any(|g| g == gem),
            "{gem} not in {installed:?}"
        );
    }
}

/// A gem with a C extension, vendored as a `.gem`: `bundle install --local` compiles it in the
/// build root (gcc, `make`, Debian's Ruby headers) with no network, and the image runs the
/// compiled `.so` under the stack's Ruby. The body is FNV-1a of the path, computed in C.
#[test]
fn native_extension_gem_from_vendor_cache_compiles_in_the_build_root_and_runs() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) =
        serve_hermetic("ruby-native-gem", dir.path(), &["--network", "none"]);
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    // FNV-1a 32 of "/kiln", computed independently.
    assert_eq!(body, "fnv1a(/kiln) = 45b88a3c\n");
    let extension = container.rootfs().join(
        "layers/ruby/gems/ruby/3.3.0/extensions/x86_64-linux-gnu/3.3.0/kiln_fnv-0.1.0/kiln_fnv/kiln_fnv.so",
    );
    let elf = std::fs::read(&extension).unwrap_or_else(|e| panic!("{}: {e}", extension.display()));
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_hermetic(
        &report,
        Some(&["ruby", "ruby-bundler", "ruby-dev"]),
        dir.path(),
        &container.rootfs(),
    );
}

/// An Elixir app with no Hex dependencies: `mix deps.get` and `mix release` run with Debian's
/// Erlang/OTP and Elixir in the build root and no network (so Hex is never fetched); the
/// release bundles ERTS, so the image runs `bin/elixir_http start` with no Erlang package.
#[test]
fn elixir_release_builds_without_hex_and_runs_its_bundled_erts() {
    if !ready() {
        return;
    }
    let (_dir, report, container) =
        assert_greets_offline("elixir-http", "/kiln", &["elixir", "erlang-nox"]);
    assert_eq!(report["stack"]["flavour"], "glibc", "{report:#}");
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!(["/layers/elixir/release/bin/elixir_http", "start"]),
        "{report:#}"
    );
    let rootfs = container.rootfs();
    let release = rootfs.join("layers/elixir/release");
    let erts = std::fs::read_dir(&release)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("erts-"));
    assert!(erts, "no ERTS in the release: {report:#}");
    assert!(
        !rootfs.join("usr/lib/erlang").exists(),
        "Erlang in the image"
    );
}

/// A Maven project with no dependencies: Debian's JDK of the requested major (21) and Maven
/// in the build root, the plugins from Debian's /usr/share/maven-repo (the project's kiln.toml
/// asks for their packages, its .mvn/maven.config makes Maven offline with that repository as
/// the read-only tail of its local one), no network; the jar runs on the matching JRE.
#[test]
fn maven_app_builds_offline_with_debians_plugins_and_runs_on_the_jre() {
    if !ready() {
        return;
    }
    let (_dir, report, container) = assert_greets_offline(
        "java-http",
        "/kiln",
        &[
            "openjdk-21-jdk-headless | default-jdk-headless",
            "maven",
            "libmaven-compiler-plugin-java",
        ],
    );
    assert_eq!(report["stack"]["flavour"], "glibc", "{report:#}");
    let rootfs = container.rootfs();
    assert!(rootfs
        .join("workspace/target/java-http-0.1.0.jar")
        .is_file());
    assert!(
        rootfs
            .join("usr/lib/jvm/java-21-openjdk-amd64/bin/java")
            .exists()
            || rootfs
                .join("usr/lib/jvm/java-21-openjdk-arm64/bin/java")
                .exists(),
        "no JRE 21 in the image"
    );
    // The JRE only: no compiler ships.
    assert!(!rootfs.join("usr/bin/javac").exists(), "javac in the image");
}

// --- Rust against the stack's glibc (issue 11) -------------------------------------------------

/// A Rust app using the `openssl` crate without `vendored`: the analyzer finds openssl-sys in
/// Cargo.lock, so the build root gets libssl-dev, the binary links the build root's glibc and
/// libssl dynamically (openssl-macros, a proc-macro, builds for the host), and the run image is
/// the glibc stack with libssl3t64; the body names the OpenSSL the binary loaded in the image.
#[test]
fn rust_app_linking_openssl_runs_against_the_stacks_glibc_and_libssl() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (report, container, port) = serve_hermetic("rust-openssl", dir.path(), &[]);
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert!(body.starts_with("hello from OpenSSL 3."), "{body}");
    assert_eq!(report["stack"]["flavour"], "glibc", "{report:#}");
    let rootfs = container.rootfs();
    assert_hermetic(&report, Some(&["cargo", "libssl-dev"]), dir.path(), &rootfs);
    let libssl = std::fs::read_dir(rootfs.join("usr/lib"))
        .unwrap()
        .flatten()
        .any(|triplet| triplet.path().join("libssl.so.3").is_file());
    assert!(libssl, "no libssl.so.3 in the image's /usr/lib/<triplet>");
    // Linked dynamically: the binary names libcrypto in its dynamic section and has a loader.
    let binary = std::fs::read(rootfs.join("layers/rust/bin/bin/rust-openssl")).unwrap();
    for needle in ["libcrypto.so.3", "ld-linux"] {
        assert!(
            binary.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the binary does not name {needle}: not linked against the stack's glibc"
        );
    }
}
