//! Framework conventions end to end (issue 12): an app with no Procfile or start command starts
//! the way its framework expects, on `$PORT`, and answers HTTP under runc.

mod support;

use support::run_image::{build_on_run_image_ok, debian_run_image};
use support::*;

/// FastAPI: uvicorn (a declared dependency) serves `main:app` on `$PORT`, bound to all addresses.
#[test]
fn fastapi_app_starts_under_uvicorn_on_port() {
    if !require_tools(&["python3", "skopeo", "umoci", "runc"]) {
        return;
    }
    let Some(run_image) = debian_run_image() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("app.tar"));
    let report = build_on_run_image_ok(&fixture("python-fastapi"), &run_image, &cache, &out);
    assert_eq!(
        report["processes"][0]["command"],
        serde_json::json!([
            "/bin/sh",
            "-c",
            "exec python -m uvicorn main:app --host 0.0.0.0 --port ${PORT:-8080}"
        ])
    );
    let port = free_port();
    let container = Container::start(
        &format!("oci-archive:{}", out.display()),
        &[("PORT", &port.to_string())],
    );
    let (status, body) = container.http_get(port, "/kiln");
    assert!(status.contains("200"), "{status}\n{}", container.log());
    assert_eq!(body, r#"{"hello":"kiln","served_by":"fastapi"}"#);
}
