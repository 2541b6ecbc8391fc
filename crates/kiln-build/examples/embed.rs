//! Embedding Kiln: build an image from a source directory and print what was produced.
//!
//! `cargo run -p kiln-build --example embed -- SRC OUTPUT.tar [NAME:TAG]`

use std::process::ExitCode;

fn main() -> ExitCode {
    // Build steps run in sandboxes that this program, re-executed, sets up.
    kiln_sandbox::run_helper_if_requested();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, output, rest @ ..] = args.as_slice() else {
        eprintln!("usage: embed SRC OUTPUT.tar [NAME:TAG]");
        return ExitCode::from(2);
    };
    let mut opts = kiln_build::BuildOptions::new(src, output);
    if let Some(tag) = rest.first() {
        match kiln_oci::reference::Reference::parse(tag) {
            Ok(reference) => opts.tags.push(reference),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match kiln_build::build(&opts, &mut std::io::stderr()) {
        Ok(report) => {
            println!("{} {}", report.manifest_digest, output);
            for layer in &report.layers {
                let how = if layer.reused { "reused" } else { "built" };
                println!(
                    "  {:<10} {} {} bytes ({how})",
                    layer.name, layer.digest, layer.size
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
