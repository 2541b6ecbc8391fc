//! Registry flags are checked when parsed: a malformed one is a usage error (exit 2) naming the
//! value, before anything is built.

mod support;

use support::*;

#[test]
fn insecure_registry_with_a_bad_port_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.tar");
    let src = fixture("procfile-static");
    for (command, bad) in [("build", "host:notaport"), ("rebase", "host:70000")] {
        let args: Vec<&str> = match command {
            "build" => vec![
                "build",
                src.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
            _ => vec![
                "rebase",
                "oci-archive:app.tar",
                "--run-image",
                "scratch",
                "--output",
                out.to_str().unwrap(),
            ],
        };
        let result = kiln(&[&args[..], &["--insecure-registry", bad]].concat());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid registry \"{bad}\"")) && stderr.contains("port"),
            "{command}: {stderr}"
        );
        assert!(!out.exists());
    }
}
