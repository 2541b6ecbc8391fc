//! Registries end to end, against a real distribution registry (`docker-registry`) started on
//! 127.0.0.1 by each test: push/pull round trips, blob skipping and cross-repository mounts,
//! skopeo interop, runc, basic auth and credentials, `--cache-image`, rebase, and clear errors.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::Value;
use support::registry::{faulty_proxy, start_with_token_auth, Fault, Registry};
use support::*;

const TOOLS: &[&str] = &["docker-registry", "skopeo", "busybox"];

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).expect("--json prints one JSON object")
}

/// Runs kiln with extra environment, returning (success, stdout, stderr).
fn kiln_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = kiln_cmd()
        .args(args)
        .env_remove("KILN_REGISTRY_USER")
        .env_remove("KILN_REGISTRY_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("kiln runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn layer_digests(inspect: &Value) -> Vec<String> {
    inspect["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn push_pull_round_trip_skips_and_mounts_blobs_and_runs_under_runc() {
    if !require_tools(&[TOOLS, &["umoci", "runc"]].concat()) {
        return;
    }
    let registry = Registry::start();
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let busybox = tmp.path().join("busybox.tar");
    busybox_base_image(&busybox);
    registry.skopeo_push(&busybox, "base/busybox:1", None);

    let out = tmp.path().join("app.tar");
    let cache = tmp.path().join("cache");
    let target = format!("{host}/team/app:1");
    let run_image = format!("docker://{host}/base/busybox:1");
    let build = |cache: &Path| {
        json_of(&kiln_ok(&[
            "build",
            "--json",
            fixture("procfile-static").to_str().unwrap(),
            "--run-image",
            &run_image,
            "--output",
            out.to_str().unwrap(),
            "--publish",
            &target,
            "--cache-dir",
            cache.to_str().unwrap(),
        ]))
    };
    let started = std::time::Instant::now();
    let first = build(&cache);
    eprintln!("first build + pull + push: {:?}", started.elapsed());
    let digest = first["manifest_digest"].as_str().unwrap().to_owned();
    // The base came from the registry: manifest, config and its layer.
    assert_eq!(first["pull"]["blobs_downloaded"], 3, "{first}");
    assert_eq!(first["push"]["manifest_digest"], digest.as_str());
    // The base layer is mounted from base/busybox; config and app layer are uploaded.
    assert_eq!(first["push"]["blobs_mounted"], 1, "{first}");
    assert_eq!(first["push"]["blobs_uploaded"], 2, "{first}");
    assert_eq!(first["push"]["blobs_skipped"], 0, "{first}");

    // Second build on the same base with the same cache: nothing downloaded, nothing uploaded.
    let started = std::time::Instant::now();
    let second = build(&cache);
    eprintln!("second build + pull + push: {:?}", started.elapsed());
    assert_eq!(second["manifest_digest"], digest.as_str());
    assert_eq!(second["pull"]["blobs_downloaded"], 0, "{second}");
    assert_eq!(second["push"]["blobs_uploaded"], 0, "{second}");
    assert_eq!(second["push"]["blobs_mounted"], 0, "{second}");
    assert_eq!(second["push"]["blobs_skipped"], 3, "{second}");

    // skopeo reads what Kiln pushed, with the same digest as the archive written alongside.
    let inspected = json_of(&run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ])));
    assert_eq!(inspected["Digest"], digest.as_str());
    let archive = json_of(&run_ok(
        Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", out.display())]),
    ));
    assert_eq!(archive["Digest"], digest.as_str());

    // Pulled back by Kiln: same manifest, same layers.
    let pulled = json_of(&kiln_ok(&[
        "inspect",
        "--json",
        &format!("docker://{target}"),
    ]));
    assert_eq!(pulled["manifest_digest"], digest.as_str());
    assert_eq!(pulled["base"]["name"], run_image.as_str());
    let local = json_of(&kiln_ok(&["inspect", "--json", out.to_str().unwrap()]));
    assert_eq!(layer_digests(&pulled), layer_digests(&local));

    // The image built on the registry base runs.
    serve_procfile_static(&out);
}

#[test]
fn several_publish_references_each_get_the_same_image() {
    if !require_tools(TOOLS) {
        return;
    }
    let registry = Registry::start();
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let busybox = tmp.path().join("busybox.tar");
    busybox_base_image(&busybox);
    let targets = [
        format!("{host}/team/app:1.2"),
        format!("{host}/team/app:latest"),
        format!("{host}/other/app:1.2"),
    ];
    let report = json_of(&kiln_ok(&[
        "build",
        "--json",
        fixture("procfile-static").to_str().unwrap(),
        "--run-image",
        &format!("oci-archive:{}", busybox.display()),
        "--publish",
        &targets[0],
        "--publish",
        &targets[1],
        "--publish",
        &targets[2],
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
        "--no-verify",
    ]));
    let digest = report["manifest_digest"].as_str().unwrap();
    let pushes = report["pushes"].as_array().unwrap();
    assert_eq!(pushes.len(), 3, "{report}");
    assert_eq!(report["push"], pushes[0]);
    for (push, target) in pushes.iter().zip(&targets) {
        assert_eq!(push["manifest_digest"], digest, "{push}");
        let inspected = json_of(&run_ok(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ])));
        assert_eq!(inspected["Digest"], digest, "{target}");
    }
    // The second tag of a repository has every blob already.
    assert_eq!(pushes[1]["blobs_uploaded"], 0, "{report}");
}

#[test]
fn sboms_are_attached_to_each_published_image_as_referrers() {
    if !require_tools(TOOLS) {
        return;
    }
    let registry = Registry::start();
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let busybox = tmp.path().join("busybox.tar");
    busybox_base_image(&busybox);
    let sbom_dir = tmp.path().join("sbom");
    let targets = [
        format!("{host}/team/app:1.2"),
        format!("{host}/other/app:1"),
    ];
    let build = |cache: &str| {
        json_of(&kiln_ok(&[
            "build",
            "--json",
            fixture("procfile-static").to_str().unwrap(),
            "--run-image",
            &format!("oci-archive:{}", busybox.display()),
            "--publish",
            &targets[0],
            "--publish",
            &targets[1],
            "--sbom-dir",
            sbom_dir.to_str().unwrap(),
            "--cache-dir",
            tmp.path().join(cache).to_str().unwrap(),
            "--no-verify",
        ]))
    };
    let report = build("cache");
    let image = report["manifest_digest"].as_str().unwrap();
    let client = kiln_registry::Client::new(kiln_registry::ClientOptions::default());
    let documents = [
        ("application/spdx+json", "sbom.spdx.json"),
        ("application/vnd.cyclonedx+json", "sbom.cdx.json"),
    ];
    let pushes = report["pushes"].as_array().unwrap();
    for (push, target) in pushes.iter().zip(&targets) {
        // distribution 2.8 has no referrers API: the fallback tag lists the artifacts.
        let referrers = push["referrers"].as_array().unwrap();
        assert_eq!(referrers.len(), 2, "{push}");
        for (referrer, (artifact_type, _)) in referrers.iter().zip(&documents) {
            assert_eq!(referrer["artifact_type"], *artifact_type, "{push}");
            assert_eq!(referrer["subject"], image, "{push}");
            assert_eq!(referrer["via"], "fallback-tag", "{push}");
            assert_eq!(
                referrer["tag"],
                format!("sha256-{}", image.trim_start_matches("sha256:"))
            );
        }
        let reference = kiln_oci::reference::Reference::parse(target).unwrap();
        let subject = kiln_oci::digest::Digest::parse(image).unwrap();
        for (artifact_type, file) in documents {
            let listed =
                kiln_registry::referrers(&client, &reference, &subject, Some(artifact_type))
                    .unwrap();
            assert_eq!(listed.len(), 1, "{target} {artifact_type}: {listed:?}");
            let artifact = format!(
                "docker://{}@{}",
                target.rsplit_once(':').unwrap().0,
                listed[0].digest
            );
            let manifest = json_of(&run_ok(Command::new("skopeo").args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &artifact,
            ])));
            assert_eq!(manifest["artifactType"], artifact_type, "{manifest}");
            assert_eq!(manifest["subject"]["digest"], image, "{manifest}");
            assert_eq!(
                manifest["config"]["mediaType"],
                "application/vnd.oci.empty.v1+json"
            );
            // The attached document is the very one written to --sbom-dir.
            let layer = &manifest["layers"][0];
            let written = std::fs::read(sbom_dir.join(file)).unwrap();
            assert_eq!(layer["mediaType"], artifact_type);
            assert_eq!(
                layer["digest"],
                format!(
                    "sha256:{}",
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&written))
                )
            );
            assert_eq!(layer["size"], written.len());
        }
    }
    // The same build from a fresh cache attaches the same artifacts: each listed once still.
    let again = build("cache2");
    assert_eq!(again["manifest_digest"], image);
    assert_eq!(again["pushes"][0]["referrers"], pushes[0]["referrers"]);
    let reference = kiln_oci::reference::Reference::parse(&targets[0]).unwrap();
    let subject = kiln_oci::digest::Digest::parse(image).unwrap();
    let all = kiln_registry::referrers(&client, &reference, &subject, None).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");

    // A rebase refreshes the SBOM and attaches the refreshed documents to the rebased image.
    let v2 = tmp.path().join("v2.tar");
    busybox_v2(&v2);
    let rebased_sbom = tmp.path().join("rebased-sbom");
    let rebased = json_of(&kiln_ok(&[
        "rebase",
        "--json",
        &targets[0],
        "--run-image",
        &format!("oci-archive:{}", v2.display()),
        "--publish",
        &format!("{host}/team/app:1.3"),
        "--sbom-dir",
        rebased_sbom.to_str().unwrap(),
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
    ]));
    let new_image = rebased["manifest_digest"].as_str().unwrap();
    assert_ne!(new_image, image);
    let referrers = rebased["push"]["referrers"].as_array().unwrap();
    assert_eq!(referrers.len(), 2, "{rebased}");
    let new_reference = kiln_oci::reference::Reference::parse(&format!("{host}/team/app:1.3"));
    let new_subject = kiln_oci::digest::Digest::parse(new_image).unwrap();
    for (referrer, (artifact_type, file)) in referrers.iter().zip(&documents) {
        assert_eq!(referrer["subject"], new_image, "{rebased}");
        let listed = kiln_registry::referrers(
            &client,
            new_reference.as_ref().unwrap(),
            &new_subject,
            Some(artifact_type),
        )
        .unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].digest.as_str(), referrer["manifest_digest"]);
        let manifest = json_of(&run_ok(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/team/app@{}", listed[0].digest),
        ])));
        let written = std::fs::read(rebased_sbom.join(file)).unwrap();
        assert_eq!(
            manifest["layers"][0]["digest"],
            format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&written))
            )
        );
    }
}

#[test]
fn basic_auth_credentials_from_env_docker_config_and_helpers() {
    if !require_tools(&[TOOLS, &["htpasswd"]].concat()) {
        return;
    }
    let registry = Registry::start_with_basic_auth("kiln", "s3cret-pw");
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let publish = |repo: &str, env: &[(&str, &str)]| {
        kiln_env(
            &[
                "build",
                "--json",
                fixture("procfile-static").to_str().unwrap(),
                "--publish",
                &format!("{host}/{repo}:1"),
                "--cache-dir",
                cache.to_str().unwrap(),
                // procfile-static's httpd is not on scratch: only the push is tested.
                "--no-verify",
            ],
            env,
        )
    };

    // No credentials: refused, saying so.
    let (ok, _, stderr) = publish("auth/none", &[("DOCKER_CONFIG", "/nonexistent")]);
    assert!(!ok);
    assert!(
        stderr.contains("authentication failed")
            && stderr.contains(&host)
            && stderr.contains("auth/none")
            && stderr.contains("no credentials"),
        "{stderr}"
    );

    // Wrong password: refused, never echoed.
    let (ok, _, stderr) = publish(
        "auth/wrong",
        &[
            ("KILN_REGISTRY_USER", "kiln"),
            ("KILN_REGISTRY_PASSWORD", "not-the-pw"),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("authentication failed") && stderr.contains("refused the credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-pw"), "{stderr}");

    // From the environment.
    let (ok, stdout, stderr) = publish(
        "auth/env",
        &[
            ("KILN_REGISTRY_USER", "kiln"),
            ("KILN_REGISTRY_PASSWORD", "s3cret-pw"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("s3cret-pw") && !stdout.contains("s3cret-pw"));

    // Build steps never see registry credentials: a step that fails when its environment holds
    // the password lets the publish succeed.
    let bps = buildpacks_dir(
        tmp.path(),
        "probe",
        "[buildpack]\nid = \"probe\"\nversion = \"1\"\n[detect]\nall = [\"Procfile\"]\n\
         [[build.steps]]\nname = \"env\"\ncommand = \"sh\"\n\
         args = [\"-c\", \"env; ! env | grep -q s3cret-pw\"]\n\
         [[processes]]\ntype = \"web\"\ncommand = \"true\"\n",
    );
    let (ok, _, stderr) = kiln_env(
        &[
            "build",
            fixture("procfile-static").to_str().unwrap(),
            "--buildpacks",
            bps.to_str().unwrap(),
            "--publish",
            &format!("{host}/auth/probe:1"),
            "--cache-dir",
            cache.to_str().unwrap(),
            // The probe's `true` is not on scratch: the image is pushed, never run.
            "--no-verify",
        ],
        &[
            ("KILN_REGISTRY_USER", "kiln"),
            ("KILN_REGISTRY_PASSWORD", "s3cret-pw"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("PATH="),
        "the probe step did not run: {stderr}"
    );
    // The probe does catch it when the caller explicitly passes the variable on.
    let (ok, _, stderr) = kiln_env(
        &[
            "build",
            fixture("procfile-static").to_str().unwrap(),
            "--buildpacks",
            bps.to_str().unwrap(),
            "--env",
            "KILN_REGISTRY_PASSWORD",
            "-o",
            tmp.path().join("probe.tar").to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            // Not run either; without this the build would fail at verification whatever the
            // step saw.
            "--no-verify",
        ],
        &[("KILN_REGISTRY_PASSWORD", "s3cret-pw")],
    );
    assert!(!ok, "the probe step missed a password in its environment");
    assert!(
        stderr.contains("step probe/env failed") && stderr.contains("exited with code 1"),
        "the build failed, but not in the probe step: {stderr}"
    );

    // From Docker's config.json `auths`.
    let docker = tmp.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("kiln:s3cret-pw");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let (ok, _, stderr) = publish(
        "auth/config",
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    assert!(ok, "{stderr}");

    // From a credential helper named in `credHelpers`.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-kilntest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\necho \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"kiln\\\",\\\"Secret\\\":\\\"s3cret-pw\\\"}\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{host}": "kilntest"}}}}"#),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let (ok, _, stderr) = publish(
        "auth/helper",
        &[
            ("DOCKER_CONFIG", docker.to_str().unwrap()),
            ("PATH", path.as_str()),
        ],
    );
    assert!(ok, "{stderr}");
    // What was pushed with credentials is readable with them.
    run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        "kiln:s3cret-pw",
        &format!("docker://{host}/auth/helper:1"),
    ]));
}

#[test]
fn missing_tag_unreachable_registry_interrupted_push_and_flaky_registry() {
    if !require_tools(TOOLS) {
        return;
    }
    let registry = Registry::start();
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    let src = fixture("procfile-static");
    let src = src.to_str().unwrap();
    let out = tmp.path().join("x.tar");
    let out = out.to_str().unwrap();

    // A tag the registry does not have.
    let missing = format!("docker://{host}/no/such:tag");
    let (ok, _, stderr) = kiln_env(
        &[
            "build",
            src,
            "-o",
            out,
            "--run-image",
            &missing,
            "--cache-dir",
            cache,
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("HTTP 404") && stderr.contains(&host) && stderr.contains("no/such"),
        "{stderr}"
    );

    // Nothing listens there.
    let dead = format!("127.0.0.1:{}", free_port());
    let (ok, _, stderr) = kiln_env(
        &[
            "build",
            src,
            "--publish",
            &format!("{dead}/a/b:1"),
            "--cache-dir",
            cache,
            // procfile-static's httpd is not on scratch: only the push is tested.
            "--no-verify",
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("cannot connect") && stderr.contains(&dead),
        "{stderr}"
    );

    // A push cut off mid-way (after 64 KiB of a ~1 MB busybox layer) fails and leaves no tag.
    let busybox = tmp.path().join("busybox.tar");
    busybox_base_image(&busybox);
    let proxy = faulty_proxy(registry.port, Fault::CutAfterBytes(64 << 10));
    let (ok, _, stderr) = kiln_env(
        &[
            "build",
            src,
            "--run-image",
            &format!("oci-archive:{}", busybox.display()),
            "--publish",
            &format!("127.0.0.1:{proxy}/cut/app:1"),
            "--cache-dir",
            cache,
        ],
        &[],
    );
    assert!(!ok, "push through a cutting proxy succeeded");
    assert!(stderr.contains("cut/app"), "{stderr}");
    let (ok, _, stderr) = kiln_env(&["inspect", &format!("docker://{host}/cut/app:1")], &[]);
    assert!(!ok && stderr.contains("HTTP 404"), "{stderr}");

    // A registry answering 503 twice before it recovers: the retries absorb it.
    let proxy = faulty_proxy(registry.port, Fault::Unavailable(2));
    let (ok, _, stderr) = kiln_env(
        &[
            "build",
            src,
            "--publish",
            &format!("127.0.0.1:{proxy}/flaky/app:1"),
            "--cache-dir",
            cache,
            // procfile-static's httpd is not on scratch: only the push is tested.
            "--no-verify",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    kiln_ok(&["inspect", &format!("docker://{host}/flaky/app:1")]);
}

#[test]
fn cache_image_lets_a_fresh_cache_reuse_dependency_layers() {
    if !require_tools(&[TOOLS, &["go"]].concat()) {
        return;
    }
    let registry = Registry::start();
    let cache_ref = format!("{}/cache/go-http:ci", registry.host());
    let tmp = tempfile::tempdir().unwrap();
    let build = |cache: &str| {
        json_of(&kiln_ok(&[
            "build",
            "--json",
            fixture("go-http").to_str().unwrap(),
            "--output",
            tmp.path().join("out.tar").to_str().unwrap(),
            "--cache-dir",
            tmp.path().join(cache).to_str().unwrap(),
            "--cache-image",
            &cache_ref,
        ]))
    };
    let first = build("runner-a");
    assert_eq!(first["cache_image"]["imported_records"], 0, "{first}");
    assert!(first["cache_image"]["exported_records"].as_u64().unwrap() >= 1);
    // Every `cache = true` layer of the go buildpack (at least its go-cache).
    let kept = first["cache_image"]["exported_layers"].as_u64().unwrap();
    assert!(kept >= 1, "{first}");

    // A second runner with an empty cache directory.
    let second = build("runner-b");
    assert_eq!(second["cache_image"]["imported_layers"], kept, "{second}");
    assert!(second["cache_image"]["imported_records"].as_u64().unwrap() >= 1);
    // The shared download/build cache, and the app's own kept binary layer.
    assert!(tmp.path().join("runner-b/shared/go/go-cache").is_dir());
    let projects: Vec<_> = std::fs::read_dir(tmp.path().join("runner-b/projects"))
        .unwrap()
        .map(|e| e.unwrap().path().join("layers/go/bin"))
        .collect();
    assert!(projects.len() == 1 && projects[0].is_dir(), "{projects:?}");
    let bin = &second["layers"][0];
    assert_eq!(bin["name"], "go/bin");
    assert_eq!(bin["reused"], true, "{second}");
    assert_eq!(second["manifest_digest"], first["manifest_digest"]);
}

/// A busybox base like [`busybox_base_image`] plus a marker file, with a different layer.
fn busybox_v2(out: &Path) {
    use kiln_oci::layer::{normalize, write_layer, Entry, EntryKind, LayerOptions};
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("version");
    std::fs::write(&marker, "2\n").unwrap();
    let busybox = Path::new("/usr/bin/busybox");
    let mut entries = vec![
        Entry {
            path: "bin/busybox".into(),
            kind: EntryKind::file(
                busybox.to_path_buf(),
                std::fs::metadata(busybox).unwrap().len(),
            ),
            mode: 0o755,
        },
        Entry {
            path: "etc/base-version".into(),
            kind: EntryKind::file(marker, 2),
            mode: 0o644,
        },
    ];
    for applet in ["sh", "httpd", "cat"] {
        entries.push(Entry {
            path: format!("bin/{applet}"),
            kind: EntryKind::Symlink {
                target: "busybox".into(),
            },
            mode: 0o777,
        });
    }
    let store = kiln_oci::store::BlobStore::open(dir.path().join("store")).unwrap();
    let layer = write_layer(
        &store,
        &normalize(entries).unwrap(),
        &LayerOptions::default(),
    )
    .unwrap();
    let mut config = kiln_oci::spec::ImageConfig::for_host();
    config.config.set_env_var("PATH", "/bin");
    config.config.set_env_var("BASE_VERSION", "2");
    let image = kiln_oci::image::assemble(&store, config, &[layer], BTreeMap::new()).unwrap();
    kiln_oci::archive::write_oci_archive(&store, &image, None, out).unwrap();
}

#[test]
fn rebase_swaps_base_layers_and_keeps_app_layers() {
    if !require_tools(&[TOOLS, &["umoci", "runc"]].concat()) {
        return;
    }
    let registry = Registry::start();
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let v1 = tmp.path().join("v1.tar");
    let v2 = tmp.path().join("v2.tar");
    busybox_base_image(&v1);
    busybox_v2(&v2);
    registry.skopeo_push(&v2, "base/busybox:2", None);
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    let app = tmp.path().join("app.tar");
    kiln_ok(&[
        "build",
        fixture("procfile-static").to_str().unwrap(),
        "--run-image",
        &format!("oci-archive:{}", v1.display()),
        "--publish",
        &format!("{host}/team/app:v1"),
        "--output",
        app.to_str().unwrap(),
        "--cache-dir",
        cache,
    ]);
    let before = json_of(&kiln_ok(&["inspect", "--json", app.to_str().unwrap()]));

    // Local archive in, local archive out, new base from the registry.
    let rebased = tmp.path().join("rebased.tar");
    let report = json_of(&kiln_ok(&[
        "rebase",
        "--json",
        app.to_str().unwrap(),
        "--run-image",
        &format!("docker://{host}/base/busybox:2"),
        "--output",
        rebased.to_str().unwrap(),
        "--cache-dir",
        cache,
    ]));
    let after = json_of(&kiln_ok(&["inspect", "--json", rebased.to_str().unwrap()]));
    let (old, new) = (layer_digests(&before), layer_digests(&after));
    assert_eq!(old.len(), 2);
    assert_eq!(new.len(), 2);
    assert_ne!(old[0], new[0], "base layer not swapped");
    assert_eq!(old[1], new[1], "app layer changed");
    assert_eq!(report["app_layers"][0], old[1].as_str());
    assert_eq!(
        after["base"]["name"],
        format!("docker://{host}/base/busybox:2")
    );
    assert!(after["env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("BASE_VERSION=2")));
    assert_eq!(after["processes"], before["processes"]);

    // Registry image in, registry images out (each --publish, in order): same result.
    let pushed = json_of(&kiln_ok(&[
        "rebase",
        "--json",
        &format!("{host}/team/app:v1"),
        "--run-image",
        &format!("oci-archive:{}", v2.display()),
        "--publish",
        &format!("{host}/team/app:v2"),
        "--publish",
        &format!("{host}/team/copy:v2"),
        "--cache-dir",
        cache,
    ]));
    assert_eq!(pushed["push"]["blobs_uploaded"], 1 + 1, "{pushed}");
    let pushes = pushed["pushes"].as_array().unwrap();
    assert_eq!(pushes.len(), 2, "{pushed}");
    assert_eq!(pushes[0], pushed["push"]);
    assert_eq!(pushes[1]["reference"], format!("{host}/team/copy:v2"));
    assert_eq!(pushes[1]["manifest_digest"], pushed["manifest_digest"]);
    let copy = json_of(&kiln_ok(&[
        "inspect",
        "--json",
        &format!("{host}/team/copy:v2"),
    ]));
    assert_eq!(copy["manifest_digest"], pushed["manifest_digest"]);
    // Without --json: one line per push.
    let text = kiln_ok(&[
        "rebase",
        &format!("{host}/team/app:v1"),
        "--run-image",
        &format!("oci-archive:{}", v2.display()),
        "--publish",
        &format!("{host}/team/app:v2"),
        "--publish",
        &format!("{host}/team/copy:v2"),
        "--cache-dir",
        cache,
    ]);
    let digest = pushed["manifest_digest"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("pushed ")).collect();
    assert_eq!(
        lines,
        [
            format!("pushed {host}/team/app:v2@{digest}"),
            format!("pushed {host}/team/copy:v2@{digest}"),
        ],
        "{text}"
    );

    // The rebased image runs on the new base.
    let container = serve_procfile_static(&rebased);
    assert_eq!(
        std::fs::read_to_string(container.rootfs().join("etc/base-version")).unwrap(),
        "2\n"
    );

    // An image Kiln did not build cannot be rebased.
    let out = kiln(&[
        "rebase",
        v1.to_str().unwrap(),
        "--run-image",
        &format!("oci-archive:{}", v2.display()),
        "-o",
        tmp.path().join("x.tar").to_str().unwrap(),
        "--cache-dir",
        cache,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not built by Kiln"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bearer_token_auth_push_pull_and_mount() {
    if !require_tools(&[TOOLS, &["openssl"]].concat()) {
        return;
    }
    let registry = start_with_token_auth("kiln", "tok-pw");
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let busybox = tmp.path().join("busybox.tar");
    busybox_base_image(&busybox);
    let creds = [
        ("KILN_REGISTRY_USER", "kiln"),
        ("KILN_REGISTRY_PASSWORD", "tok-pw"),
    ];
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    let src = fixture("procfile-static");
    let src = src.to_str().unwrap();
    let base = format!("oci-archive:{}", busybox.display());
    let (ok, _, stderr) = kiln_env(
        &[
            "build",
            src,
            "--run-image",
            &base,
            "--publish",
            &format!("{host}/base/app:1"),
            "--cache-dir",
            cache,
        ],
        &creds,
    );
    assert!(ok, "{stderr}\n{}", registry.log());

    // Pull from one repository, push to another: the base layer is mounted (pull scope on the
    // source repository is part of the token request).
    let (ok, stdout, stderr) = kiln_env(
        &[
            "build",
            "--json",
            src,
            "--run-image",
            &format!("docker://{host}/base/app:1"),
            "--publish",
            &format!("{host}/team/app:1"),
            "--cache-dir",
            cache,
        ],
        &creds,
    );
    assert!(ok, "{stderr}");
    let report = json_of(&stdout);
    assert!(
        report["push"]["blobs_mounted"].as_u64().unwrap() >= 1,
        "{report}"
    );

    let (ok, stdout, stderr) = kiln_env(
        &["inspect", "--json", &format!("docker://{host}/team/app:1")],
        &creds,
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        json_of(&stdout)["manifest_digest"],
        report["manifest_digest"]
    );

    // Wrong password: the token service refuses, and the error says so without the secret.
    let (ok, _, stderr) = kiln_env(
        &["inspect", &format!("docker://{host}/team/app:1")],
        &[
            ("KILN_REGISTRY_USER", "kiln"),
            ("KILN_REGISTRY_PASSWORD", "nope-pw"),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("token service refused the credentials") && stderr.contains(&host),
        "{stderr}"
    );
    assert!(!stderr.contains("nope-pw"), "{stderr}");
}

/// The library directly: chunked uploads (64 KiB chunks for a ~1 MB layer), then a pull into an
/// empty store gives back the same manifest and blobs; indexes select the platform.
#[test]
fn chunked_upload_round_trip_and_platform_selection_through_the_library() {
    if !require_tools(TOOLS) {
        return;
    }
    use kiln_oci::source::{load_image, ImageSource};
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let busybox = tmp.path().join("busybox.tar");
    busybox_base_image(&busybox);
    let store = kiln_oci::store::BlobStore::open(tmp.path().join("a")).unwrap();
    let image = load_image(
        &ImageSource::OciArchive {
            path: busybox,
            reference: None,
        },
        &store,
    )
    .unwrap();
    let manifest_digest = image.manifest_digest.clone().unwrap();
    let manifest = store.read_verified(&manifest_digest).unwrap();
    let parsed: kiln_oci::spec::ImageManifest = serde_json::from_slice(&manifest).unwrap();
    let blobs: Vec<_> = std::iter::once(parsed.config.clone())
        .chain(parsed.layers.iter().cloned())
        .collect();
    assert!(blobs[1].size > 256 << 10, "layer too small to need chunks");
    let client = kiln_registry::Client::new(kiln_registry::ClientOptions {
        chunk_size: 64 << 10,
        max_concurrency: 2,
        ..Default::default()
    });
    let target =
        kiln_oci::reference::Reference::parse(&format!("{}/lib/chunked:1", registry.host()))
            .unwrap();
    let started = std::time::Instant::now();
    let pushed = kiln_registry::push_manifest(
        &client,
        &store,
        &target,
        &manifest,
        &parsed.media_type,
        &blobs,
        None,
    )
    .unwrap();
    eprintln!(
        "chunked push of {} bytes: {:?}",
        pushed.stats.bytes_uploaded,
        started.elapsed()
    );
    assert_eq!(pushed.manifest_digest, manifest_digest);
    assert_eq!(pushed.stats.blobs_uploaded, 2);

    let fresh = kiln_oci::store::BlobStore::open(tmp.path().join("b")).unwrap();
    let started = std::time::Instant::now();
    let (pulled, stats) =
        kiln_registry::pull(&client, &target, &fresh, &kiln_registry::silent).unwrap();
    eprintln!(
        "pull of {} bytes: {:?}",
        stats.bytes_downloaded,
        started.elapsed()
    );
    assert_eq!(pulled.manifest_digest, Some(manifest_digest));
    assert_eq!(pulled.layers, image.layers);
    assert_eq!(stats.blobs_downloaded, 3);
    // Again into the same store: nothing is downloaded.
    let (_, again) = kiln_registry::pull(&client, &target, &fresh, &kiln_registry::silent).unwrap();
    assert_eq!(again.blobs_downloaded, 0, "{again:?}");

    // An index naming the image for two platforms: the pull picks the asked-for platform, and a
    // platform the index lacks is a clear error, from the library and from `--platform`.
    let entry = |arch: &str| {
        serde_json::json!({
            "mediaType": parsed.media_type, "digest": pushed.manifest_digest.to_string(),
            "size": manifest.len(), "platform": {"os": "linux", "architecture": arch}
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": kiln_oci::spec::MEDIA_TYPE_INDEX,
        "manifests": [entry("arm64"), entry("amd64")]
    }))
    .unwrap();
    store.put_bytes(&index).unwrap();
    let multi =
        kiln_oci::reference::Reference::parse(&format!("{}/lib/chunked:multi", registry.host()))
            .unwrap();
    kiln_registry::push_manifest(
        &client,
        &store,
        &multi,
        &index,
        kiln_oci::spec::MEDIA_TYPE_INDEX,
        &[],
        None,
    )
    .unwrap();
    let arm = kiln_registry::Client::new(kiln_registry::ClientOptions {
        platform: kiln_oci::spec::Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        },
        ..Default::default()
    });
    let (picked, _) = kiln_registry::pull(&arm, &multi, &fresh, &kiln_registry::silent).unwrap();
    assert_eq!(picked.layers, image.layers);
    let out = kiln(&[
        "build",
        fixture("procfile-static").to_str().unwrap(),
        "-o",
        tmp.path().join("x.tar").to_str().unwrap(),
        "--cache-dir",
        tmp.path().join("cache").to_str().unwrap(),
        "--platform",
        "linux/s390x",
        "--run-image",
        &format!("docker://{multi}"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no image for linux/s390x") && stderr.contains("linux/arm64, linux/amd64"),
        "{stderr}"
    );
}
