//! `kiln-sandbox run`: runs the [`kiln_sandbox::SandboxSpec`] read as JSON from stdin, with this
//! binary as its helper, and exits as the command did. For the crate's tests and benchmark, and
//! for trying a spec by hand; Kiln itself uses the library.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;

use kiln_sandbox::{Helper, Sandbox, SandboxSpec};

fn main() {
    kiln_sandbox::run_helper_if_requested();
    if std::env::args().nth(1).as_deref() != Some("run") {
        eprintln!("usage: kiln-sandbox run < spec.json");
        std::process::exit(2);
    }
    let mut json = String::new();
    let spec: SandboxSpec = match std::io::stdin()
        .read_to_string(&mut json)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str(&json).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("kiln-sandbox: reading the spec from stdin: {e}");
            std::process::exit(2);
        }
    };
    let status = Sandbox::new(Helper::current_exe())
        .command(&spec)
        .and_then(|command| command.spawn())
        .map(|mut child| child.wait());
    match status {
        Ok(Ok(status)) => {
            if let Some(sig) = status.signal() {
                eprintln!("kiln-sandbox: killed by signal {sig}");
                std::process::exit(128 + sig);
            }
            std::process::exit(status.code().unwrap_or(1));
        }
        Ok(Err(e)) => {
            eprintln!("kiln-sandbox: waiting: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("kiln-sandbox: {e}");
            std::process::exit(1);
        }
    }
}
