//! Detection on a 100k-file monorepo: `cargo bench -p kiln-buildpack --bench detect_large_tree`.
//!
//! Generates (once per run, in a temp dir) a Node + Python tree whose `node_modules` holds 90,000
//! files and whose sources hold 10,000 more, then times `detect` + `plan` with the built-in
//! buildpacks. Detection reads fixed paths and bounded listings only, so the time must not grow
//! with the tree: the bench fails if one detect + plan takes longer than a second.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_buildpack::detect::detect;
use kiln_buildpack::plan::plan;
use kiln_buildpack::project::ProjectConfig;
use kiln_buildpack::BuildpackSet;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

fn generate(root: &Path) -> usize {
    write(
        &root.join("package.json"),
        r#"{"name":"mono","workspaces":["packages/*"],"scripts":{"build":"turbo run build","start":"node server.js"}}"#,
    );
    write(&root.join("package-lock.json"), "{}");
    write(&root.join("turbo.json"), "{}");
    write(&root.join("requirements.txt"), "flask\n");
    let mut files = 4;
    for pkg in 0..900 {
        for file in 0..100 {
            write(
                &root.join(format!("node_modules/pkg-{pkg}/lib/f{file}.js")),
                "module.exports = 1;\n",
            );
            files += 1;
        }
    }
    for pkg in 0..100 {
        for file in 0..100 {
            write(
                &root.join(format!("packages/p{pkg}/src/f{file}.ts")),
                "export {};\n",
            );
            files += 1;
        }
    }
    files
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let files = generate(dir.path());
    eprintln!("generated {files} files in {:?}", started.elapsed());

    let set = BuildpackSet::builtin().expect("built-in buildpacks");
    let project = ProjectConfig::load(dir.path()).expect("kiln.toml");
    let runs = 20;
    let mut best = Duration::MAX;
    let mut total = Duration::ZERO;
    for _ in 0..runs {
        let t = Instant::now();
        let detection = detect(&set, dir.path()).expect("detect");
        let planned = plan(&set, &detection, &project, dir.path()).expect("plan");
        let took = t.elapsed();
        assert_eq!(planned.buildpacks.len(), 2);
        best = best.min(took);
        total += took;
    }
    println!(
        "detect+plan on {files} files: best {best:?}, mean {:?} over {runs} runs",
        total / runs
    );
    assert!(
        best < Duration::from_secs(1),
        "detection is walking the tree"
    );
}
