//! Build roots: the `/` build steps run in, assembled from Debian packages of the stack's
//! distro, and unpacked once into a directory of the cache (content-addressed by the exact
//! packages, written to a temporary path and renamed, never changed afterwards).
//!
//! A build root is one layer: the packages every build needs ([`BASE_BUILD_PACKAGES`]: Debian's
//! `Essential: yes` tools, `build-essential`, `pkgconf`, `git`, `curl`, `ca-certificates`, …)
//! plus the buildpacks' and the project's build packages, each with its whole dependency
//! closure. As in run stacks, maintainer scripts are not run; their effects that builds rely
//! on are generated (`cc` and `awk` alternatives from `postinst`, the CA bundle), and
//! [`materialize`] adds the build user (uid [`BUILD_UID`]) and the empty files and
//! directories the sandbox mounts over (`/etc/resolv.conf`, `/home/kiln`).
//!
//! Most of every root is the same toolchain (`build-essential`, Perl, Python for some), so a
//! root's regular files are hard links to one shared copy per (content, mode) in
//! [`FILES_DIR`]: ten roots cost about one on disk. Files [`materialize`] edits afterwards
//! (`/etc/passwd`, `/etc/group`) are replaced, never written through, and the sandbox mounts
//! roots read-only, so one root never changes another.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use kiln_oci::layer::{Entry, EntryKind};

use crate::error::{Error, IoContext, Result};
use crate::lock::Lock;
use crate::stack::{followed_layer, Distro, LayerRequest, Layered, StackLayer};

/// The build root's one layer (and its name in `kiln.lock`).
pub const BUILD_LAYER: &str = "build";

/// The uid/gid build steps run as inside the sandbox (`kiln-sandbox`'s `BUILD_UID`).
pub const BUILD_UID: u32 = 1000;
/// The build user's home inside the sandbox.
pub const BUILD_HOME: &str = "home/kiln";

/// Bump when the way roots are unpacked changes, so old directories are not reused.
const RECIPE: &str = "kiln-build-root/v2";

/// The shared file copies below the roots directory: `FILES_DIR/<mode>/<sha256>`. Its name
/// starts with `.`, which no root's name does.
pub const FILES_DIR: &str = ".files";

/// What every build root has. `Essential: yes` packages are never named as dependencies, so
/// they are listed; the rest follow from `build-essential` and the named tools.
pub const BASE_BUILD_PACKAGES: &[&str] = &[
    // Debian's Essential set (what maintainers and build scripts may assume).
    "base-files",
    "bash",
    "bsdutils",
    "coreutils",
    "dash",
    "debianutils",
    "diffutils",
    "findutils",
    "grep",
    "gzip",
    "hostname",
    "libc-bin",
    "mawk",
    "ncurses-bin",
    "perl-base",
    "sed",
    "tar",
    "util-linux",
    // Building.
    "build-essential",
    "pkgconf | pkg-config",
    "git",
    "curl",
    "ca-certificates",
    "xz-utils",
    "bzip2",
    "unzip",
    "netbase",
    "tzdata",
];

/// A build root for `distro` with `packages` besides the base ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRootRequest {
    pub distro: Distro,
    pub packages: Vec<String>,
}

impl Layered for BuildRootRequest {
    fn distro(&self) -> Distro {
        self.distro
    }

    fn layers(&self) -> Vec<LayerRequest> {
        let all: Vec<String> = BASE_BUILD_PACKAGES
            .iter()
            .map(|p| (*p).to_owned())
            .chain(self.packages.iter().cloned())
            .collect();
        vec![followed_layer(BUILD_LAYER, &all)]
    }
}

/// The directory name of the root of `lock`: its recipe, architecture and exact packages.
pub fn root_key(lock: &Lock) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{RECIPE}\n{}\n{}\n", lock.distro, lock.arch));
    for p in lock.packages() {
        hasher.update(format!("{} {} {}\n", p.name, p.version, p.sha256));
    }
    hex::encode(hasher.finalize())
}

/// The unpacked root of `lock` under `roots_dir`, unpacking `layers` (from
/// [`crate::stack::assemble`]) first when it is not there yet. Returns its path.
pub fn materialize(roots_dir: &Path, lock: &Lock, layers: &[StackLayer]) -> Result<PathBuf> {
    let dir = roots_dir.join(root_key(lock));
    if dir.is_dir() {
        return Ok(dir);
    }
    fs::create_dir_all(roots_dir).ctx(|| format!("creating {}", roots_dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(roots_dir)
        .ctx(|| format!("creating a temporary directory in {}", roots_dir.display()))?;
    let mut symlinks = BTreeSet::new();
    let files = SharedFiles::new(roots_dir);
    for layer in layers {
        for entry in &layer.entries {
            write_entry(tmp.path(), entry, &files, &mut symlinks)?;
        }
    }
    add_build_user(tmp.path())?;
    let unpacked = tmp.keep();
    match fs::rename(&unpacked, &dir) {
        Ok(()) => Ok(dir),
        // Another build unpacked the same root meanwhile: the same packages, so the same root.
        Err(_) if dir.is_dir() => {
            let _ = remove_tree(&unpacked);
            Ok(dir)
        }
        Err(e) => {
            let _ = remove_tree(&unpacked);
            Err(e).ctx(|| format!("renaming {} to {}", unpacked.display(), dir.display()))
        }
    }
}

/// Removes an unpacked root (whose directories may lack the owner's write bit).
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
        }
    }
    fs::remove_dir_all(dir)
}

/// Writes one normalized entry below `root`. Entries never pass through a symlink: every
/// path's parents must be directories this function made (the stack's [`crate::root::Root`]
/// already redirected paths through links, so this only guards against a bug there).
fn write_entry(
    root: &Path,
    entry: &Entry,
    files: &SharedFiles,
    symlinks: &mut BTreeSet<String>,
) -> Result<()> {
    let escapes = entry.path.split('/').any(|c| c == ".." || c.is_empty())
        || (1..entry.path.len())
            .filter(|&i| entry.path.as_bytes()[i] == b'/')
            .any(|i| symlinks.contains(&entry.path[..i]));
    if escapes {
        return Err(Error::Stack(format!(
            "build root: {} would be written through a symlink or outside the root",
            entry.path
        )));
    }
    let path = root.join(&entry.path);
    let io = |what: &str| format!("build root: {what} {}", path.display());
    match &entry.kind {
        EntryKind::Dir => {
            fs::create_dir_all(&path).ctx(|| io("creating"))?;
            // Owner-writable, so the root can be removed; the sandbox mounts it read-only.
            fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode | 0o700))
                .ctx(|| io("setting the mode of"))?;
        }
        EntryKind::File { source, .. } => {
            // No set-id bits: nothing in the sandbox may gain privileges.
            files
                .place(source, entry.mode & 0o1777, &path)
                .ctx(|| io("writing"))?;
        }
        EntryKind::Symlink { target } => {
            symlink(target, &path).ctx(|| io("creating the symlink"))?;
            symlinks.insert(entry.path.clone());
        }
        EntryKind::Hardlink { target } => {
            fs::hard_link(root.join(target), &path).ctx(|| io("creating the hardlink"))?;
        }
    }
    Ok(())
}

/// The build user in `/etc/passwd` and `/etc/group`, its home, and the files the sandbox
/// binds over (bind mounts need an existing mount point in a read-only root).
fn add_build_user(root: &Path) -> Result<()> {
    let user = format!("kiln:x:{BUILD_UID}:{BUILD_UID}:Kiln build user:/{BUILD_HOME}:/bin/sh\n");
    let group = format!("kiln:x:{BUILD_UID}:\n");
    append(&root.join("etc/passwd"), &user)?;
    append(&root.join("etc/group"), &group)?;
    let home = root.join(BUILD_HOME);
    fs::create_dir_all(&home).ctx(|| format!("creating {}", home.display()))?;
    for file in ["etc/resolv.conf", "etc/hosts"] {
        let path = root.join(file);
        if fs::symlink_metadata(&path).is_err() {
            fs::write(&path, "").ctx(|| format!("creating {}", path.display()))?;
        }
    }
    Ok(())
}

/// Appends `line` to `path` in a new file that replaces it: the old one may be a hard link
/// shared with other roots.
fn append(path: &Path, line: &str) -> Result<()> {
    let ctx = || format!("appending to {}", path.display());
    let (mut content, mode) = match fs::read(path) {
        Ok(content) => {
            let mode = fs::symlink_metadata(path).ctx(ctx)?.permissions().mode();
            (content, mode & 0o7777)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0o644),
        Err(e) => return Err(e).ctx(ctx),
    };
    content.extend_from_slice(line.as_bytes());
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).ctx(ctx)?;
    tmp.write_all(&content).ctx(ctx)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode)).ctx(ctx)?;
    tmp.persist(path).map_err(|e| e.error).ctx(ctx)?;
    Ok(())
}

/// The roots' shared file copies ([`FILES_DIR`]).
struct SharedFiles {
    dir: PathBuf,
}

impl SharedFiles {
    fn new(roots_dir: &Path) -> SharedFiles {
        SharedFiles {
            dir: roots_dir.join(FILES_DIR),
        }
    }

    /// Puts the contents of `source` at `path` with `mode`: a hard link to the shared copy
    /// when `source` is a blob of the content-addressed store (named by its sha256, as every
    /// Debian entry's is), else — or where the filesystem refuses the link (another device,
    /// too many links) — a copy.
    fn place(&self, source: &Path, mode: u32, path: &Path) -> std::io::Result<()> {
        if let Some(sha256) = content_name(source) {
            let shared = self.dir.join(format!("{mode:04o}")).join(sha256);
            if !shared.is_file() {
                copy_with_mode(source, mode, &shared)?;
            }
            if fs::hard_link(&shared, path).is_ok() {
                return Ok(());
            }
        }
        copy_with_mode(source, mode, path)
    }
}

/// `source`'s file name when it is a sha256 in hex (a content-addressed blob).
fn content_name(source: &Path) -> Option<&str> {
    let name = source.file_name()?.to_str()?;
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// Copies `source` to `dest` with `mode` through a temporary file in `dest`'s directory and a
/// rename, so a concurrent reader never sees a partial file.
fn copy_with_mode(source: &Path, mode: u32, dest: &Path) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    fs::copy(source, tmp.path())?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

/// Removes the shared copies no root links to any more (after roots were removed); returns
/// the bytes freed.
pub fn remove_unlinked_files(roots_dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut freed = 0;
    for entry in walkdir::WalkDir::new(roots_dir.join(FILES_DIR))
        .min_depth(2)
        .max_depth(2)
    {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                continue
            }
            Err(e) => return Err(e.into()),
        };
        let meta = entry.metadata()?;
        if meta.is_file() && meta.nlink() == 1 {
            fs::remove_file(entry.path())?;
            freed += meta.len();
        }
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_layer_has_the_base_packages_and_the_requested_ones_once() {
        let request = BuildRootRequest {
            distro: Distro::DEFAULT,
            packages: vec!["ruby".into(), "git".into(), "ruby-dev".into()],
        };
        let layers = request.layers();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].name, BUILD_LAYER);
        let relations = &layers[0].relations;
        assert_eq!(relations.iter().filter(|r| *r == "git").count(), 1);
        assert!(relations.contains(&"ruby-dev".to_owned()));
        assert!(relations.contains(&"build-essential".to_owned()));
        assert!(layers[0].follow.iter().all(|f| *f));
    }

    #[test]
    fn entries_through_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = SharedFiles::new(dir.path());
        let mut links = BTreeSet::new();
        let link = Entry {
            path: "etc".into(),
            kind: EntryKind::Symlink { target: "/".into() },
            mode: 0o777,
        };
        write_entry(dir.path(), &link, &files, &mut links).unwrap();
        let through = Entry {
            path: "etc/x".into(),
            kind: EntryKind::Dir,
            mode: 0o755,
        };
        let err = write_entry(dir.path(), &through, &files, &mut links).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");
        let up = Entry {
            path: "../x".into(),
            kind: EntryKind::Dir,
            mode: 0o755,
        };
        assert!(write_entry(dir.path(), &up, &files, &mut links).is_err());
    }

    #[test]
    fn roots_share_one_copy_per_content_and_mode_and_edits_stay_in_their_root() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blobs").join("ab".repeat(32));
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        fs::write(&blob, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let roots = dir.path().join("roots");
        let files = SharedFiles::new(&roots);
        let entry = |path: &str, mode| Entry {
            path: path.into(),
            kind: EntryKind::file(&blob, 26),
            mode,
        };
        let etc = Entry {
            path: "etc".into(),
            kind: EntryKind::Dir,
            mode: 0o755,
        };
        for root in ["a", "b"] {
            let root = roots.join(root);
            let mut links = BTreeSet::new();
            for e in [
                etc.clone(),
                entry("etc/passwd", 0o644),
                entry("etc/tool", 0o4755),
            ] {
                write_entry(&root, &e, &files, &mut links).unwrap();
            }
        }
        let ino = |p: &str| fs::metadata(roots.join(p)).unwrap().ino();
        assert_eq!(ino("a/etc/passwd"), ino("b/etc/passwd"));
        assert_eq!(ino("a/etc/tool"), ino("b/etc/tool"));
        assert_ne!(ino("a/etc/passwd"), ino("a/etc/tool"));
        // The set-uid bit is dropped; the mode is the shared copy's own.
        let mode = fs::metadata(roots.join("a/etc/tool")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);

        append(
            &roots.join("a/etc/passwd"),
            "kiln:x:1000:1000::/home/kiln:/bin/sh\n",
        )
        .unwrap();
        let a = fs::read_to_string(roots.join("a/etc/passwd")).unwrap();
        let b = fs::read_to_string(roots.join("b/etc/passwd")).unwrap();
        assert!(a.ends_with("kiln:x:1000:1000::/home/kiln:/bin/sh\n"), "{a}");
        assert_eq!(b, "root:x:0:0::/root:/bin/sh\n");
        let mode = fs::metadata(roots.join("a/etc/passwd")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o644);

        // Removing root b leaves root a's links; only copies nothing links to are removed.
        // root a's edited passwd no longer links to it, so b held the last link.
        remove_tree(&roots.join("b")).unwrap();
        assert_eq!(remove_unlinked_files(&roots).unwrap(), 26);
        assert!(roots.join("a/etc/tool").is_file());
        remove_tree(&roots.join("a")).unwrap();
        assert_eq!(remove_unlinked_files(&roots).unwrap(), 26);
        assert!(fs::read_dir(roots.join(FILES_DIR).join("0644"))
            .unwrap()
            .next()
            .is_none());
    }
}
