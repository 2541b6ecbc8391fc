//! `gen-tree DIR [SCALE]`: writes the synthetic benchmark tree (see `kiln_bench::generate_tree`).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: gen-tree DIR [SCALE]");
        return std::process::ExitCode::from(2);
    };
    let scale = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    match kiln_bench::generate_tree(std::path::Path::new(dir), scale) {
        Ok((files, bytes)) => {
            println!("{files} files, {bytes} bytes");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
