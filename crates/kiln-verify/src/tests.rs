//! Checks on synthetic images: layers made of host files (as Kiln's own layers are) and of tar
//! blobs (as base layers are), with real host binaries (`/bin/true`: dynamic, needs `libc.so.6`;
//! `/usr/bin/busybox`: static) and tiny ELF files written here (any `DT_NEEDED`/`RUNPATH`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_oci::layer::{Entry, EntryKind};
use kiln_oci::spec::ImageConfig;

use crate::{verify, Error, ImageFs};

const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const BUSYBOX: &str = "/usr/bin/busybox";
const TRUE: &str = "/bin/true";

/// A scratch directory for host files, layer blobs and spooled copies.
struct Scratch {
    dir: tempfile::TempDir,
    n: usize,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            n: 0,
        }
    }

    fn image(&self) -> ImageFs {
        ImageFs::new(self.dir.path())
    }

    /// A host file holding `bytes`.
    fn host_file(&mut self, bytes: &[u8]) -> PathBuf {
        self.n += 1;
        let path = self.dir.path().join(format!("host-{}", self.n));
        fs::write(&path, bytes).unwrap();
        path
    }

    /// A file entry at `path` of a built layer, holding `bytes`.
    fn file(&mut self, path: &str, bytes: &[u8], mode: u32) -> Entry {
        let host = self.host_file(bytes);
        Entry {
            path: path.into(),
            kind: EntryKind::file(host, bytes.len() as u64),
            mode,
        }
    }

    /// A gzip, zstd or plain layer blob with these tar entries; returns (path, media type).
    fn blob(&mut self, entries: &[TarEntry], compression: &str) -> (PathBuf, String) {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_path(entry.path).unwrap();
            header.set_mode(entry.mode);
            let data: Vec<u8> = match &entry.kind {
                TarKind::File(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    bytes.clone()
                }
                TarKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    Vec::new()
                }
                TarKind::Symlink(target) | TarKind::Hardlink(target) => {
                    header.set_entry_type(if matches!(entry.kind, TarKind::Symlink(_)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    header.set_link_name(target).unwrap();
                    Vec::new()
                }
            };
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data.as_slice()).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let (bytes, media_type) = match compression {
            "gzip" => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar).unwrap();
                (gz.finish().unwrap(), kiln_oci::spec::MEDIA_TYPE_LAYER_GZIP)
            }
            "zstd" => (
                zstd::encode_all(tar.as_slice(), 1).unwrap(),
                kiln_oci::spec::MEDIA_TYPE_LAYER_ZSTD,
            ),
            _ => (tar, kiln_oci::spec::MEDIA_TYPE_LAYER_TAR),
        };
        (self.host_file(&bytes), media_type.to_owned())
    }
}

struct TarEntry {
    path: &'static str,
    kind: TarKind,
    mode: u32,
}

enum TarKind {
    File(Vec<u8>),
    Dir,
    Symlink(&'static str),
    Hardlink(&'static str),
}

fn tar_file(path: &'static str, bytes: Vec<u8>, mode: u32) -> TarEntry {
    TarEntry {
        path,
        kind: TarKind::File(bytes),
        mode,
    }
}

fn tar_dir(path: &'static str) -> TarEntry {
    TarEntry {
        path,
        kind: TarKind::Dir,
        mode: 0o755,
    }
}

fn tar_link(path: &'static str, target: &'static str) -> TarEntry {
    TarEntry {
        path,
        kind: TarKind::Symlink(target),
        mode: 0o777,
    }
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry {
        path: path.into(),
        kind: EntryKind::Symlink {
            target: target.into(),
        },
        mode: 0o777,
    }
}

fn host(path: &str) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{path} is needed by this test: {e}"))
}

/// A config starting `argv` with `PATH` and working directory `/workspace`.
fn config(argv: &[&str], path: &str) -> ImageConfig {
    let mut config = ImageConfig::for_host();
    config.architecture = "amd64".into();
    config.config.set_env_var("PATH", path);
    config.config.working_dir = Some("/workspace".into());
    config.config.entrypoint = Some(argv.iter().map(|s| s.to_string()).collect());
    config
}

/// The problems verification finds (none when it passes).
fn problems(fs: &mut ImageFs, config: &ImageConfig) -> Vec<String> {
    match verify(fs, config) {
        Ok(()) => Vec::new(),
        Err(Error::WontStart { problems, .. }) => problems,
        Err(other) => panic!("verification failed to run: {other}"),
    }
}

fn assert_one_problem(found: &[String], parts: &[&str]) {
    assert_eq!(found.len(), 1, "{found:#?}");
    for part in parts {
        assert!(found[0].contains(part), "{:?} lacks {part:?}", found[0]);
    }
}

/// A minimal x86-64 ELF shared object / PIE: one load segment mapping the whole file, with an
/// optional `PT_INTERP`, and a dynamic segment with these `DT_NEEDED`, `DT_RUNPATH`, `DT_RPATH`.
fn tiny_elf(
    interp: Option<&str>,
    needed: &[&str],
    runpath: Option<&str>,
    rpath: Option<&str>,
) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let phnum = 2 + usize::from(interp.is_some());
    let interp_at = EHDR + PHDR * phnum;
    let mut tail = Vec::new();
    if let Some(interp) = interp {
        tail.extend_from_slice(interp.as_bytes());
        tail.push(0);
    }
    let strtab_at = interp_at + tail.len();
    let mut strtab = vec![0u8];
    let mut string = |s: &str| {
        let at = strtab.len() as u64;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        at
    };
    let mut dynamic: Vec<(i64, u64)> = needed.iter().map(|n| (1, string(n))).collect();
    if let Some(runpath) = runpath {
        dynamic.push((29, string(runpath)));
    }
    if let Some(rpath) = rpath {
        dynamic.push((15, string(rpath)));
    }
    dynamic.push((5, strtab_at as u64));
    dynamic.push((10, strtab.len() as u64));
    dynamic.push((0, 0));
    tail.extend_from_slice(&strtab);
    while !(interp_at + tail.len()).is_multiple_of(8) {
        tail.push(0);
    }
    let dynamic_at = interp_at + tail.len();
    for (tag, value) in &dynamic {
        tail.extend_from_slice(&tag.to_le_bytes());
        tail.extend_from_slice(&value.to_le_bytes());
    }
    let total = (interp_at + tail.len()) as u64;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF\x02\x01\x01");
    out.resize(16, 0);
    out.extend_from_slice(&3u16.to_le_bytes()); // ET_DYN
    out.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // entry
    out.extend_from_slice(&(EHDR as u64).to_le_bytes()); // phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // shoff
    out.extend_from_slice(&0u32.to_le_bytes());
    for half in [EHDR, PHDR, phnum, 64, 0, 0] {
        out.extend_from_slice(&(half as u16).to_le_bytes());
    }
    let mut phdr = |kind: u32, offset: u64, size: u64| {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes()); // PF_R
        for field in [offset, offset, offset, size, size, 8] {
            out.extend_from_slice(&field.to_le_bytes());
        }
    };
    phdr(1, 0, total); // PT_LOAD
    if let Some(interp) = interp {
        phdr(3, interp_at as u64, interp.len() as u64 + 1);
    }
    phdr(2, dynamic_at as u64, (dynamic.len() * 16) as u64);
    out.extend_from_slice(&tail);
    assert_eq!(out.len() as u64, total);
    out
}

#[test]
fn a_program_missing_from_path_is_named_with_the_path() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    fs.add_entries("base", vec![s.file("bin/busybox", &host(BUSYBOX), 0o755)]);
    let found = problems(
        &mut fs,
        &config(&["server", "--port", "80"], "/usr/bin:/bin"),
    );
    assert_one_problem(
        &found,
        &[
            "`server`",
            "not on the image's PATH (/usr/bin:/bin)",
            "--run-image",
        ],
    );
}

#[test]
fn a_static_program_on_path_through_a_relative_symlink_passes() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    fs.add_entries(
        "base",
        vec![
            s.file("bin/busybox", &host(BUSYBOX), 0o755),
            symlink("bin/sh", "busybox"),
        ],
    );
    assert_eq!(
        problems(&mut fs, &config(&["sh"], "/bin")),
        Vec::<String>::new()
    );
}

#[test]
fn a_program_that_is_not_executable_is_refused() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    fs.add_entries(
        "app",
        vec![s.file("workspace/server", &host(BUSYBOX), 0o644)],
    );
    let found = problems(&mut fs, &config(&["./server"], "/bin"));
    assert_one_problem(&found, &["/workspace/server is not executable (mode 0644)"]);
    // Found on PATH but not executable: said so, rather than "not on PATH".
    let found = problems(&mut fs, &config(&["server"], "/workspace"));
    assert_one_problem(&found, &["/workspace/server is not executable (mode 0644)"]);
}

#[test]
fn a_file_that_is_neither_elf_nor_script_cannot_run() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    fs.add_entries("app", vec![s.file("workspace/run", b"echo hi\n", 0o755)]);
    let found = problems(&mut fs, &config(&["./run"], "/bin"));
    assert_one_problem(
        &found,
        &["/workspace/run is neither an ELF executable nor a script"],
    );
}

#[test]
fn a_shebang_to_a_missing_interpreter_is_named() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    fs.add_entries(
        "app",
        vec![
            s.file("bin/busybox", &host(BUSYBOX), 0o755),
            symlink("bin/sh", "busybox"),
            s.file("workspace/run", b"#!/bin/bash\necho hi\n", 0o755),
            s.file("workspace/dos", b"#!/bin/sh\r\necho hi\r\n", 0o755),
            s.file("workspace/ok", b"#!/bin/sh\necho hi\n", 0o755),
        ],
    );
    let found = problems(&mut fs, &config(&["./run"], "/bin"));
    assert_one_problem(
        &found,
        &["\"/bin/bash\", the #! interpreter of /workspace/run: /bin/bash does not exist"],
    );
    let found = problems(&mut fs, &config(&["/workspace/dos"], "/bin"));
    assert_one_problem(&found, &["\"/bin/sh\\r\"", "Windows line endings"]);
    assert_eq!(
        problems(&mut fs, &config(&["./ok"], "/bin")),
        Vec::<String>::new()
    );
}

#[test]
fn env_shebangs_need_their_program_on_the_image_path() {
    let mut s = Scratch::new();
    let mut base = vec![
        s.file("bin/busybox", &host(BUSYBOX), 0o755),
        symlink("usr/bin/env", "/bin/busybox"),
    ];
    let script = s.file(
        "workspace/server.js",
        b"#!/usr/bin/env node\nconsole.log(1)\n",
        0o755,
    );
    let mut fs = s.image();
    fs.add_entries("base", base.clone());
    fs.add_entries("app", vec![script.clone()]);
    let path = "/layers/nodejs/runtime/bin:/usr/bin:/bin";
    let found = problems(&mut fs, &config(&["./server.js"], path));
    assert_one_problem(
        &found,
        &[
            "`node`, which /workspace/server.js runs through /usr/bin/env,",
            "not on the image's PATH (/layers/nodejs/runtime/bin:/usr/bin:/bin)",
        ],
    );

    base.push(s.file("layers/nodejs/runtime/bin/node", &host(BUSYBOX), 0o755));
    let mut fs = s.image();
    fs.add_entries("base", base);
    fs.add_entries("app", vec![script]);
    assert_eq!(
        problems(&mut fs, &config(&["./server.js"], path)),
        Vec::<String>::new()
    );
    // On the image but not on its PATH: the hint says where it is.
    let found = problems(&mut fs, &config(&["./server.js"], "/usr/bin:/bin"));
    assert_one_problem(
        &found,
        &["the image has /layers/nodejs/runtime/bin/node (from base), which is not on PATH"],
    );
}

#[test]
fn a_dynamic_elf_on_an_empty_image_misses_its_loader_and_libc() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    fs.add_entries("app", vec![s.file("workspace/true", &host(TRUE), 0o755)]);
    let found = problems(&mut fs, &config(&["./true"], "/bin"));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with(&format!("{LOADER}, the ELF interpreter (dynamic loader) of /workspace/true: {LOADER} does not exist in the image")),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("link the program statically"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with(
            "libc.so.6 needed by /workspace/true: not found in the image's library paths \
             (/lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib, /lib64, /usr/lib64)"
        ),
        "{}",
        found[1]
    );
    assert!(found[1].contains("\"libc6\""), "{}", found[1]);
}

#[test]
fn a_dynamic_elf_with_the_hosts_glibc_in_the_image_passes() {
    let mut s = Scratch::new();
    let triplet = "/lib/x86_64-linux-gnu";
    let mut fs = s.image();
    fs.add_entries(
        "base",
        vec![
            // The loader at its real path, reached from PT_INTERP's through an absolute link.
            s.file(
                "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                &host(&format!("{triplet}/ld-linux-x86-64.so.2")),
                0o755,
            ),
            symlink(
                "lib64/ld-linux-x86-64.so.2",
                "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
            s.file(
                "lib/x86_64-linux-gnu/libc.so.6",
                &host(&format!("{triplet}/libc.so.6")),
                0o755,
            ),
        ],
    );
    fs.add_entries("app", vec![s.file("workspace/true", &host(TRUE), 0o755)]);
    assert_eq!(
        problems(&mut fs, &config(&["./true"], "/bin")),
        Vec::<String>::new()
    );
}

#[test]
fn absolute_symlinks_resolve_against_the_image_root_not_the_host() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    // /usr/bin/true exists on the host, not in the image.
    assert!(Path::new("/usr/bin/true").exists());
    fs.add_entries(
        "app",
        vec![
            symlink("workspace/run", "/usr/bin/true"),
            symlink("workspace/up", "../../../../usr/bin/true"),
        ],
    );
    let found = problems(&mut fs, &config(&["./run"], "/bin"));
    assert_one_problem(
        &found,
        &["/workspace/run does not exist in the image (/usr does not exist)"],
    );
    // `..` stops at the image root.
    let found = problems(&mut fs, &config(&["./up"], "/bin"));
    assert_one_problem(
        &found,
        &["/workspace/up does not exist in the image (/usr does not exist)"],
    );
    // A chain of links inside the image is followed to the file.
    fs.add_entries(
        "more",
        vec![
            s.file("opt/bb/busybox", &host(BUSYBOX), 0o755),
            symlink("usr/bin", "/opt/bb"),
            symlink("opt/bb/true", "busybox"),
        ],
    );
    assert_eq!(
        problems(&mut fs, &config(&["./run"], "/bin")),
        Vec::<String>::new()
    );
    fs.add_entries(
        "loop",
        vec![symlink("workspace/a", "b"), symlink("workspace/b", "a")],
    );
    let found = problems(&mut fs, &config(&["./a"], "/bin"));
    assert_one_problem(&found, &["too many levels of symbolic links"]);
}

#[test]
fn needed_libraries_resolve_through_runpath_origin() {
    let mut s = Scratch::new();
    let app = tiny_elf(Some(LOADER), &["libgreet.so.1"], Some("$ORIGIN/lib"), None);
    let base = vec![s.file("lib64/ld-linux-x86-64.so.2", &host(BUSYBOX), 0o755)];
    let mut fs = s.image();
    fs.add_entries("base", base.clone());
    fs.add_entries("app", vec![s.file("workspace/app", &app, 0o755)]);
    let found = problems(&mut fs, &config(&["./app"], "/bin"));
    assert_one_problem(
        &found,
        &[
            "libgreet.so.1 needed by /workspace/app: not found in the image's library paths \
             (/workspace/lib, /lib/x86_64-linux-gnu,",
            "probably \"libgreet1\"",
        ],
    );

    let lib = tiny_elf(None, &[], None, None);
    let mut fs = s.image();
    fs.add_entries("base", base.clone());
    fs.add_entries(
        "app",
        vec![
            s.file("workspace/app", &app, 0o755),
            s.file("workspace/lib/libgreet.so.1", &lib, 0o644),
        ],
    );
    assert_eq!(
        problems(&mut fs, &config(&["./app"], "/bin")),
        Vec::<String>::new()
    );

    // Elsewhere in the image: the hint names it and its layer.
    let mut fs = s.image();
    fs.add_entries("base", base);
    fs.add_entries(
        "python/deps",
        vec![
            s.file("workspace/app", &app, 0o755),
            s.file("opt/other/libgreet.so.1", &lib, 0o644),
        ],
    );
    let found = problems(&mut fs, &config(&["./app"], "/bin"));
    assert_one_problem(
        &found,
        &["the image has /opt/other/libgreet.so.1 (from python/deps): add that directory to LD_LIBRARY_PATH"],
    );
}

#[test]
fn libraries_of_libraries_are_checked_and_rpath_is_inherited() {
    let mut s = Scratch::new();
    // The program's RPATH (no RUNPATH) also serves its libraries' own needs.
    let app = tiny_elf(Some(LOADER), &["libone.so.1"], None, Some("/opt/app/lib"));
    let one = tiny_elf(None, &["libtwo.so.2"], None, None);
    let mut layer = vec![
        s.file("lib64/ld-linux-x86-64.so.2", &host(BUSYBOX), 0o755),
        s.file("workspace/app", &app, 0o755),
        s.file("opt/app/lib/libone.so.1", &one, 0o644),
    ];
    let mut fs = s.image();
    fs.add_entries("app", layer.clone());
    let found = problems(&mut fs, &config(&["./app"], "/bin"));
    assert_one_problem(
        &found,
        &["libtwo.so.2 needed by /opt/app/lib/libone.so.1: not found in the image's library paths (/opt/app/lib,"],
    );
    layer.push(s.file(
        "opt/app/lib/libtwo.so.2",
        &tiny_elf(None, &[], None, None),
        0o644,
    ));
    let mut fs = s.image();
    fs.add_entries("app", layer);
    assert_eq!(
        problems(&mut fs, &config(&["./app"], "/bin")),
        Vec::<String>::new()
    );
}

#[test]
fn ld_library_path_and_ld_so_conf_are_library_paths() {
    let mut s = Scratch::new();
    let app = tiny_elf(Some(LOADER), &["libpq.so.5"], None, None);
    let lib = tiny_elf(None, &[], None, None);
    let layer = vec![
        s.file("lib64/ld-linux-x86-64.so.2", &host(BUSYBOX), 0o755),
        s.file("workspace/app", &app, 0o755),
        s.file("opt/pg/lib/libpq.so.5", &lib, 0o644),
    ];
    let mut fs = s.image();
    fs.add_entries("app", layer.clone());
    assert_eq!(problems(&mut fs, &config(&["./app"], "/bin")).len(), 1);
    let mut with_env = config(&["./app"], "/bin");
    with_env
        .config
        .set_env_var("LD_LIBRARY_PATH", "/opt/pg/lib");
    assert_eq!(problems(&mut fs, &with_env), Vec::<String>::new());

    // The same through /etc/ld.so.conf's include of ld.so.conf.d/*.conf, in a tar base layer.
    let (blob, media_type) = s.blob(
        &[
            tar_dir("etc/"),
            tar_file(
                "etc/ld.so.conf",
                b"# comment\ninclude /etc/ld.so.conf.d/*.conf\n".to_vec(),
                0o644,
            ),
            tar_file("etc/ld.so.conf.d/pg.conf", b"/opt/pg/lib\n".to_vec(), 0o644),
            tar_file(
                "etc/ld.so.conf.d/ignored.txt",
                b"/nowhere\n".to_vec(),
                0o644,
            ),
        ],
        "gzip",
    );
    let mut fs = s.image();
    fs.add_blob_layer("the run image", &blob, &media_type, None)
        .unwrap();
    fs.add_entries("app", layer);
    assert_eq!(
        problems(&mut fs, &config(&["./app"], "/bin")),
        Vec::<String>::new()
    );
}

#[test]
fn an_elf_of_another_machine_cannot_run() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    fs.add_entries("app", vec![s.file("workspace/app", &host(BUSYBOX), 0o755)]);
    let mut arm = config(&["./app"], "/bin");
    arm.architecture = "arm64".into();
    let found = problems(&mut fs, &arm);
    assert_one_problem(
        &found,
        &["/workspace/app is an ELF program for x86-64, but the image is for arm64 (AArch64)"],
    );
}

#[test]
fn a_base_layer_is_read_once_then_from_its_index() {
    let mut s = Scratch::new();
    let app = tiny_elf(Some(LOADER), &["libpq.so.5"], None, None);
    // Big enough to be examined from a temporary file rather than in memory.
    let mut big = app.clone();
    big.resize(9 << 20, 0);
    let (blob, media_type) = s.blob(
        &[
            tar_file("lib64/ld-linux-x86-64.so.2", host(BUSYBOX), 0o755),
            tar_file("usr/bin/app", app, 0o755),
            tar_file("usr/bin/big", big, 0o755),
            tar_file("etc/ld.so.conf", b"/opt/pg/lib\n".to_vec(), 0o644),
            tar_file(
                "opt/pg/lib/libpq.so.5",
                tiny_elf(None, &["libssl.so.3"], None, None),
                0o644,
            ),
        ],
        "gzip",
    );
    let index = s.dir.path().join("index/layer.json");
    let want = |fs: &mut ImageFs| {
        for program in ["app", "big"] {
            let found = problems(fs, &config(&[program], "/usr/bin"));
            assert_one_problem(
                &found,
                &["libssl.so.3 needed by /opt/pg/lib/libpq.so.5: not found in the image's library paths (/opt/pg/lib, "],
            );
        }
    };
    let mut fs = s.image();
    fs.add_blob_layer("the run image", &blob, &media_type, Some(&index))
        .unwrap();
    want(&mut fs);
    assert!(index.is_file());
    // The blob is not read again: the index says everything.
    fs::remove_file(&blob).unwrap();
    let mut fs = s.image();
    fs.add_blob_layer("the run image", &blob, &media_type, Some(&index))
        .unwrap();
    want(&mut fs);
    // An index of another format version is not trusted: the blob is needed again.
    fs::write(&index, br#"{"version":"old","items":[]}"#).unwrap();
    let mut fs = s.image();
    assert!(fs
        .add_blob_layer("the run image", &blob, &media_type, Some(&index))
        .is_err());
}

#[test]
fn base_layer_blobs_are_read_in_every_compression() {
    for compression in ["gzip", "zstd", "none"] {
        let mut s = Scratch::new();
        let (blob, media_type) = s.blob(
            &[
                tar_dir("bin/"),
                tar_file("bin/busybox", host(BUSYBOX), 0o755),
                // A hardlink is the same file: its bytes come from the entry it links to.
                TarEntry {
                    path: "bin/sh",
                    kind: TarKind::Hardlink("bin/busybox"),
                    mode: 0o755,
                },
                tar_file("bin/notes", b"plain text".to_vec(), 0o755),
            ],
            compression,
        );
        let mut fs = s.image();
        fs.add_blob_layer("the run image", &blob, &media_type, None)
            .unwrap();
        assert_eq!(
            problems(&mut fs, &config(&["/bin/sh"], "/bin")),
            Vec::<String>::new(),
            "{compression}"
        );
        let found = problems(&mut fs, &config(&["notes"], "/bin"));
        assert_one_problem(
            &found,
            &["/bin/notes is neither an ELF executable nor a script"],
        );
    }
}

#[test]
fn whiteouts_hide_files_of_lower_layers() {
    let mut s = Scratch::new();
    let (lower, media_type) = s.blob(
        &[
            tar_dir("usr/"),
            tar_dir("usr/bin/"),
            tar_file("usr/bin/app", host(BUSYBOX), 0o755),
            tar_file("usr/bin/other", host(BUSYBOX), 0o755),
        ],
        "gzip",
    );
    let (whiteout, _) = s.blob(
        &[
            tar_dir("usr/bin/"),
            tar_file("usr/bin/.wh.app", Vec::new(), 0o644),
        ],
        "gzip",
    );
    let (opaque, _) = s.blob(
        &[
            tar_dir("usr/bin/"),
            tar_file("usr/bin/.wh..wh..opq", Vec::new(), 0o644),
            tar_file("usr/bin/new", host(BUSYBOX), 0o755),
        ],
        "gzip",
    );
    let path = "/usr/bin";
    let mut fs = s.image();
    fs.add_blob_layer("base 1", &lower, &media_type, None)
        .unwrap();
    assert_eq!(
        problems(&mut fs, &config(&["app"], path)),
        Vec::<String>::new()
    );
    fs.add_blob_layer("base 2", &whiteout, &media_type, None)
        .unwrap();
    assert_one_problem(
        &problems(&mut fs, &config(&["app"], path)),
        &["`app`", "not on the image's PATH"],
    );
    assert_eq!(
        problems(&mut fs, &config(&["other"], path)),
        Vec::<String>::new()
    );
    fs.add_blob_layer("base 3", &opaque, &media_type, None)
        .unwrap();
    assert_one_problem(
        &problems(&mut fs, &config(&["other"], path)),
        &["`other`", "not on the image's PATH"],
    );
    // The opaque directory's own layer keeps what it adds.
    assert_eq!(
        problems(&mut fs, &config(&["new"], path)),
        Vec::<String>::new()
    );
}

#[test]
fn entries_under_a_linked_directory_land_where_the_link_points() {
    let mut s = Scratch::new();
    // A merged-/usr base: /lib is a link to usr/lib.
    let (base, media_type) = s.blob(
        &[
            tar_dir("usr/"),
            tar_dir("usr/lib/"),
            tar_link("lib", "usr/lib"),
        ],
        "gzip",
    );
    let app = tiny_elf(Some(LOADER), &["libgreet.so.1"], None, None);
    let mut fs = s.image();
    fs.add_blob_layer("the run image", &base, &media_type, None)
        .unwrap();
    fs.add_entries(
        "app",
        vec![
            s.file("lib64/ld-linux-x86-64.so.2", &host(BUSYBOX), 0o755),
            s.file("workspace/app", &app, 0o755),
        ],
    );
    // A later layer's file under `lib/` goes through the link into /usr/lib.
    let (upper, _) = s.blob(
        &[tar_file(
            "lib/libgreet.so.1",
            tiny_elf(None, &[], None, None),
            0o644,
        )],
        "gzip",
    );
    fs.add_blob_layer("upper", &upper, &media_type, None)
        .unwrap();
    let mut only_usr_lib = config(&["./app"], "/bin");
    only_usr_lib
        .config
        .set_env_var("LD_LIBRARY_PATH", "/usr/lib");
    assert_eq!(problems(&mut fs, &only_usr_lib), Vec::<String>::new());
}

#[test]
fn a_shell_line_checks_the_shell_and_its_first_program() {
    let mut s = Scratch::new();
    let mut fs = s.image();
    fs.add_entries(
        "base",
        vec![
            s.file("bin/busybox", &host(BUSYBOX), 0o755),
            symlink("bin/sh", "busybox"),
            s.file("workspace/server", &host(BUSYBOX), 0o755),
        ],
    );
    let found = problems(
        &mut fs,
        &config(
            &["/bin/sh", "-c", "exec missing-program --port $PORT"],
            "/bin",
        ),
    );
    assert_one_problem(
        &found,
        &["`missing-program`, the first program of the start command's shell line, is not on the image's PATH (/bin)"],
    );
    let ok = config(
        &[
            "/bin/sh",
            "-c",
            "echo starting && PORT=1 exec ./server --port $PORT",
        ],
        "/bin",
    );
    assert_eq!(problems(&mut fs, &ok), Vec::<String>::new());
    // Nothing is told after `cd`: the shell alone is checked.
    let cd = config(&["/bin/sh", "-c", "cd sub && ./missing"], "/bin");
    assert_eq!(problems(&mut fs, &cd), Vec::<String>::new());
    // Without the shell, that is the problem.
    let mut fs = s.image();
    fs.add_entries(
        "app",
        vec![s.file("workspace/server", &host(BUSYBOX), 0o755)],
    );
    let found = problems(
        &mut fs,
        &config(&["/bin/sh", "-c", "exec ./server --port $PORT"], "/bin"),
    );
    assert_one_problem(
        &found,
        &["the start command's program `/bin/sh`: /bin/sh does not exist in the image"],
    );
}

#[test]
fn an_image_without_entrypoint_has_nothing_to_start() {
    let s = Scratch::new();
    let mut fs = s.image();
    let mut none = config(&[], "/bin");
    none.config.entrypoint = None;
    assert_one_problem(&problems(&mut fs, &none), &["no entrypoint or cmd"]);
}
