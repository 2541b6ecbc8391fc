//! Kiln's own image (`images/kiln`): built by Kiln on its stack from the `kiln` binary, then
//! run under runc as a CI job would run it, where it builds `fixtures/node-express` with its
//! steps in Kiln's sandbox nested in the container; the app image it wrote answers HTTP.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::run_image::{build_on_stack_ok, require_debian_mirror, OneShot};
use support::{fixture, free_port, npm_config, repo_root, require_tools, step_outcome, Container};

/// The uid Kiln runs as in the container: as root without capabilities (what a container
/// gives) the kernel refuses the sandbox's uid map, so Kiln's image is run as a plain user.
const KILN_UID: u32 = 65532;

#[test]
fn kilns_image_builds_an_app_in_its_sandbox_inside_a_container_and_the_app_runs() {
    if !require_tools(&["skopeo", "umoci", "runc", "npm"]) || !require_debian_mirror() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("kiln-image");
    std::fs::create_dir_all(context.join("bin")).unwrap();
    for file in ["Procfile", "kiln.toml"] {
        std::fs::copy(
            repo_root().join("images/kiln").join(file),
            context.join(file),
        )
        .unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), context.join("bin/kiln")).unwrap();
    let image = dir.path().join("kiln-image.tar");
    let report = build_on_stack_ok(&context, &dir.path().join("cache"), &image);
    assert_eq!(report["stack"]["flavour"], "glibc", "{report:#}");

    // What the job mounts: the source read-only, an output directory, a fresh Kiln cache (so
    // the install step runs), Debian downloads the job's user owns (kept between runs, as CI
    // caches are), the host's DNS and trust store.
    let writable = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        path
    };
    let out = writable("out");
    let kiln_cache = writable("kiln-cache");
    let debian_cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-image-debian-cache");
    std::fs::create_dir_all(&debian_cache).unwrap();
    std::os::unix::fs::chown(&debian_cache, Some(KILN_UID), Some(KILN_UID)).unwrap();
    let mirror = kiln_debian::mirror::find(&Default::default(), Path::new("/")).unwrap();
    let registry = npm_config("registry").expect("npm's registry setting");
    let trust = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".to_owned());
    let stdout = OneShot::new(
        &format!("oci-archive:{}", image.display()),
        &[
            "/workspace/bin/kiln",
            "build",
            "/src",
            "--output",
            "/out/app.tar",
            "--cache-dir",
            "/cache/kiln",
            "--isolation",
            "sandbox",
            "--json",
        ],
    )
    .user(KILN_UID, KILN_UID)
    .unmask_proc()
    .bind(&fixture("node-express"), "/src", false)
    .bind(&out, "/out", true)
    .bind(&kiln_cache, "/cache/kiln", true)
    .bind(&debian_cache, "/cache/debian", true)
    .bind(Path::new("/etc/resolv.conf"), "/etc/resolv.conf", false)
    .bind(Path::new(&trust), "/etc/ssl/host-ca.crt", false)
    .env("HOME", "/tmp")
    .env("KILN_DEBIAN_CACHE", "/cache/debian")
    .env("KILN_DEBIAN_MIRROR", &mirror.archive)
    .env("KILN_NPM_REGISTRY", &registry)
    .env("SSL_CERT_FILE", "/etc/ssl/host-ca.crt")
    .env("NODE_EXTRA_CA_CERTS", "/etc/ssl/host-ca.crt")
    .env("npm_config_cafile", "/etc/ssl/host-ca.crt")
    .run();
    let app: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("kiln's --json report: {e}\n{stdout}"));
    let (ran, reason) = step_outcome(&app, "install");
    assert!(ran, "install did not run: {reason}");

    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.join("app.tar").display()),
        &[("PORT", &port.to_string())],
    );
    let (status, body) = container.http_get(port, "/");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, "hello from kiln node-express at /\n");
}
