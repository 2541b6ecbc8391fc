//! `kiln-bench`: benchmark support. [`generate_tree`] writes a deterministic synthetic tree that
//! compresses like a real `node_modules` (JavaScript, JSON, type declarations, source maps,
//! licenses and a few binaries); the binaries in `src/bin` drive Kiln's layer export for the
//! `benches/compare` script.

use std::fs;
use std::io;
use std::path::Path;

/// A small deterministic PRNG (SplitMix64): the tree must be byte-identical on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const KEYWORDS: &[&str] = &[
    "const",
    "let",
    "function",
    "return",
    "if",
    "else",
    "for",
    "while",
    "new",
    "this",
    "typeof",
    "export",
    "import",
    "from",
    "async",
    "await",
    "class",
    "extends",
    "null",
    "undefined",
    "true",
    "false",
    "module.exports",
    "require",
    "throw",
    "try",
    "catch",
    "=>",
    "===",
    "!==",
    "&&",
    "||",
];
const WORDS: &[&str] = &[
    "value", "options", "callback", "result", "error", "buffer", "stream", "node", "index",
    "length", "parse", "format", "config", "handler", "request", "response", "data", "key",
    "items", "state", "props", "context", "path", "resolve", "reject", "promise", "event",
    "listener", "emit", "source", "target", "default", "string", "number", "object", "array",
];
const LICENSE: &str = "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\nof this software and associated documentation files (the \"Software\"), to deal\nin the Software without restriction, including without limitation the rights\nto use, copy, modify, merge, publish, distribute, sublicense, and/or sell\ncopies of the Software, and to permit persons to whom the Software is\nfurnished to do so, subject to the following conditions:\n\nTHE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.\n";

/// An identifier: mostly dictionary words, sometimes random (minified code, hashes).
fn ident(rng: &mut Rng) -> String {
    match rng.below(40) {
        0..=27 => {
            let a = rng.pick(WORDS);
            let b = rng.pick(WORDS);
            format!("{a}{}{}", b[..1].to_uppercase(), &b[1..])
        }
        28..=38 => rng.pick(WORDS).to_owned(),
        _ => format!("_{:x}", rng.next() & 0xffff_ffff),
    }
}

fn javascript(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = String::with_capacity(size + 128);
    let mut depth = 0usize;
    // Real code repeats itself (idioms, boilerplate): most lines echo a recent one.
    let mut recent: Vec<String> = Vec::new();
    while out.len() < size {
        if recent.len() > 16 && rng.below(100) < 62 {
            let line = recent[recent.len() - 1 - rng.below(16) as usize].clone();
            out.push_str(&line);
            continue;
        }
        let before = out.len();
        let indent = "  ".repeat(depth);
        match rng.below(30) {
            0..=3 => {
                out.push_str(&format!(
                    "{indent}function {}({}, {}) {{\n",
                    ident(rng),
                    ident(rng),
                    ident(rng)
                ));
                depth = (depth + 1).min(6);
            }
            4..=7 if depth > 0 => {
                depth -= 1;
                out.push_str(&format!("{}}}\n", "  ".repeat(depth)));
            }
            8..=11 => out.push_str(&format!(
                "{indent}// {} {} {} {}\n",
                rng.pick(WORDS),
                rng.pick(WORDS),
                rng.pick(KEYWORDS),
                rng.pick(WORDS)
            )),
            12..=16 => out.push_str(&format!(
                "{indent}if ({} {} {}) {{ return {}; }}\n",
                ident(rng),
                rng.pick(&["===", "!==", "<", ">"]),
                rng.below(1000),
                ident(rng)
            )),
            17 => out.push_str(&format!(
                "{indent}var {} = \"{:x}\";\n",
                ident(rng),
                rng.next()
            )),
            _ => out.push_str(&format!(
                "{indent}{} {} = {}.{}({}, {});\n",
                rng.pick(&["const", "let", "var"]),
                ident(rng),
                ident(rng),
                ident(rng),
                ident(rng),
                rng.below(100)
            )),
        }
        recent.push(out[before..].to_owned());
    }
    out.into_bytes()
}

/// Source maps carry base64-ish VLQ mappings: far less compressible than code.
fn source_map(rng: &mut Rng, size: usize) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = b"{\"version\":3,\"sources\":[\"../src/index.ts\"],\"mappings\":\"".to_vec();
    while out.len() < size {
        for _ in 0..(4 + rng.below(4)) {
            // VLQ segments are short and skewed towards small values.
            out.push(B64[(rng.below(8) * rng.below(8)) as usize % 64]);
        }
        out.push(if rng.below(6) == 0 { b';' } else { b',' });
    }
    out.extend_from_slice(b"\"}\n");
    out
}

/// Writes a tree of `files` small files (100 B – 2 KiB of code-like text, 25 per directory, in
/// packages of 40 directories: a large monorepo or a big `node_modules`) under `root`, which must
/// not exist, and returns (files, bytes). Deterministic like [`generate_tree`].
pub fn generate_small_files_tree(root: &Path, files: u64) -> io::Result<(u64, u64)> {
    let mut rng = Rng(0x736d_616c);
    let mut bytes = 0u64;
    for i in 0..files {
        let (dir, pkg) = (i / 25, i / 1000);
        let path = root
            .join("node_modules")
            .join(format!("pkg{pkg}"))
            .join(format!("d{}", dir % 40))
            .join(format!("{}{i}.js", rng.pick(WORDS)));
        if i % 25 == 0 {
            fs::create_dir_all(path.parent().expect("generated paths have parents"))?;
        }
        let size = 100 + rng.below(1948) as usize;
        let content = javascript(&mut rng, size);
        fs::write(&path, &content)?;
        bytes += content.len() as u64;
    }
    Ok((files, bytes))
}

/// Writes the tree under `root` (which must not exist) and returns (files, bytes).
/// `scale` 1.0 gives about 7,000 files and 80 MB.
pub fn generate_tree(root: &Path, scale: f64) -> io::Result<(u64, u64)> {
    let mut rng = Rng(0x6b69_6c6e);
    let packages = (520.0 * scale).round().max(1.0) as u64;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut write = |path: &Path, content: &[u8]| -> io::Result<()> {
        fs::create_dir_all(path.parent().expect("generated paths have parents"))?;
        fs::write(path, content)?;
        files += 1;
        bytes += content.len() as u64;
        Ok(())
    };
    for p in 0..packages {
        let name = format!("{}-{}{}", rng.pick(WORDS), rng.pick(WORDS), p);
        let dir = root.join("node_modules").join(&name);
        let manifest = format!(
            "{{\n  \"name\": \"{name}\",\n  \"version\": \"{}.{}.{}\",\n  \"main\": \"lib/index.js\",\n  \"license\": \"MIT\",\n  \"dependencies\": {{ \"{}\": \"^{}.0.0\" }}\n}}\n",
            rng.below(10), rng.below(30), rng.below(50), rng.pick(WORDS), rng.below(9) + 1
        );
        write(&dir.join("package.json"), manifest.as_bytes())?;
        write(&dir.join("LICENSE"), LICENSE.as_bytes())?;
        let readme_size = 1500 + rng.below(3000) as usize;
        write(&dir.join("README.md"), &javascript(&mut rng, readme_size))?;
        for f in 0..(3 + rng.below(10)) {
            // Long-tailed sizes: most files a few KB, some tens of KB.
            let size = 1024 + (rng.below(6000) * (1 + rng.below(4)) * (1 + rng.below(3))) as usize;
            write(
                &dir.join(format!("lib/{}{f}.js", ident(&mut rng))),
                &javascript(&mut rng, size),
            )?;
            if rng.below(4) == 0 {
                write(
                    &dir.join(format!("lib/{}{f}.d.ts", ident(&mut rng))),
                    &javascript(&mut rng, size / 4),
                )?;
            }
            if rng.below(12) == 0 {
                write(
                    &dir.join(format!("lib/{f}.js.map")),
                    &source_map(&mut rng, size),
                )?;
            }
        }
        if rng.below(70) == 0 {
            // A native addon or wasm blob: incompressible.
            let blob: Vec<u8> = (0..(64 * 1024 + rng.below(200 * 1024)))
                .map(|_| rng.next() as u8)
                .collect();
            write(&dir.join("build/Release/addon.node"), &blob)?;
        }
    }
    Ok((files, bytes))
}
