//! `gen-tree DIR [SCALE]`: writes the synthetic benchmark tree (see `kiln_bench::generate_tree`);
//! `gen-tree DIR --small-files N`: N small files instead (`kiln_bench::generate_small_files_tree`).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: gen-tree DIR [SCALE | --small-files N]");
        return std::process::ExitCode::from(2);
    };
    let root = std::path::Path::new(dir);
    let generated = if args.get(1).map(String::as_str) == Some("--small-files") {
        let Some(files) = args.get(2).and_then(|s| s.parse().ok()) else {
            eprintln!("usage: gen-tree DIR --small-files N");
            return std::process::ExitCode::from(2);
        };
        kiln_bench::generate_small_files_tree(root, files)
    } else {
        let scale = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
        kiln_bench::generate_tree(root, scale)
    };
    match generated {
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
