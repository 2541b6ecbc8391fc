//! What a git checkout says about the source, read from `.git` without running git: the commit
//! checked out (`HEAD`, loose refs, `packed-refs`) and the `origin` remote's URL (`config`),
//! for the image's `org.opencontainers.image.revision` and `.source` labels.
//!
//! Only what is needed, defensively: files are read with a size cap, symbolic refs are followed
//! a few times at most and only to names under `refs/` without `..` or empty components (so a
//! crafted `HEAD` cannot make Kiln read outside the git directory), a `.git` file (a worktree or
//! submodule) is followed through its `gitdir:` line to a directory that must hold a `HEAD`, and
//! its `commondir` likewise. Anything unexpected means "no git information", never an error: a
//! build does not fail because of its checkout.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Files larger than this are not git metadata Kiln reads.
const MAX_FILE: u64 = 4 << 20;
/// How many symbolic refs (`ref: …`) are followed from `HEAD`.
const MAX_SYMREF_DEPTH: usize = 5;
/// How many parent directories of the source are searched for `.git`.
const MAX_PARENTS: usize = 64;

/// The checkout a source directory belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitInfo {
    /// The commit `HEAD` resolves to (hex; `None` on an unborn branch).
    pub revision: Option<String>,
    /// `remote.origin.url`, credentials removed; `None` when absent or a local path.
    pub origin: Option<String>,
}

/// Reads the git checkout `src` is in (`src` or a parent holding `.git`); `None` outside one.
pub fn read(src: &Path) -> Option<GitInfo> {
    let (git_dir, common_dir) = find_git_dir(src)?;
    let revision = resolve_head(&git_dir, &common_dir);
    let origin = read_small(&common_dir.join("config"))
        .and_then(|text| origin_url(&text))
        .and_then(|url| public_url(&url));
    Some(GitInfo { revision, origin })
}

/// `(git dir, common dir)` for the checkout holding `src`.
fn find_git_dir(src: &Path) -> Option<(PathBuf, PathBuf)> {
    let start = fs::canonicalize(src).ok()?;
    for dir in start.ancestors().take(MAX_PARENTS) {
        let dot_git = dir.join(".git");
        let Ok(meta) = fs::symlink_metadata(&dot_git) else {
            continue;
        };
        let git_dir = if meta.is_dir() {
            dot_git
        } else if meta.is_file() {
            // `gitdir: PATH`, PATH absolute or relative to the directory holding `.git`.
            let text = read_small(&dot_git)?;
            let target = text.lines().next()?.strip_prefix("gitdir:")?.trim();
            if target.is_empty() {
                return None;
            }
            dir.join(target)
        } else {
            return None;
        };
        if !is_git_dir(&git_dir) {
            return None;
        }
        // A worktree's refs and config are in the main repository's git dir.
        let common = match read_small(&git_dir.join("commondir")) {
            Some(text) => {
                let common = git_dir.join(text.trim());
                if !is_git_dir(&common) {
                    return None;
                }
                common
            }
            None => git_dir.clone(),
        };
        return Some((git_dir, common));
    }
    None
}

/// A directory (followed through symlinks: git's own layouts use none, but a user's may) that
/// holds a `HEAD` file.
fn is_git_dir(dir: &Path) -> bool {
    fs::metadata(dir).is_ok_and(|m| m.is_dir())
        && fs::metadata(dir.join("HEAD")).is_ok_and(|m| m.is_file())
}

/// The commit `HEAD` names: detached, or through its branch (the worktree's own `HEAD`, the
/// branch from the common dir's loose refs, else `packed-refs`).
fn resolve_head(git_dir: &Path, common_dir: &Path) -> Option<String> {
    let mut text = read_small(&git_dir.join("HEAD"))?;
    for _ in 0..MAX_SYMREF_DEPTH {
        let line = text.lines().next()?.trim().to_owned();
        let Some(name) = line.strip_prefix("ref:").map(str::trim) else {
            return is_object_id(&line).then_some(line);
        };
        if !is_safe_ref_name(name) {
            return None;
        }
        match read_small(&common_dir.join(name)) {
            Some(next) => text = next,
            None => return packed_ref(common_dir, name),
        }
    }
    None
}

/// `name`'s commit in `packed-refs` (`<hex> <name>` lines; `#` and `^` lines skipped).
fn packed_ref(common_dir: &Path, name: &str) -> Option<String> {
    let text = read_small(&common_dir.join("packed-refs"))?;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
        .filter_map(|l| l.split_once(' '))
        .find(|(_, n)| n.trim() == name)
        .map(|(id, _)| id.to_owned())
        .filter(|id| is_object_id(id))
}

/// A full SHA-1 or SHA-256 object name in lowercase hex.
fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `refs/…` with only plain components: never absolute, never `..`, `.` or empty.
fn is_safe_ref_name(name: &str) -> bool {
    name.starts_with("refs/")
        && name.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && !c.bytes().any(|b| b.is_ascii_control() || b == b'\\')
        })
}

/// The text of a regular file no larger than [`MAX_FILE`]; `None` otherwise.
fn read_small(path: &Path) -> Option<String> {
    let file = fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_FILE + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= MAX_FILE).then_some(text)
}

/// `url` of `[remote "origin"]` in a git config: section names are case-insensitive, the
/// subsection is not; keys are case-insensitive; values may be quoted; `#`/`;` start comments.
/// The last `url` in the section wins, as for git's single-valued reads.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    let mut url = None;
    for raw in config.lines() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.split(']').next().unwrap_or_default().trim();
            in_origin = match header.split_once(char::is_whitespace) {
                Some((section, sub)) => {
                    section.eq_ignore_ascii_case("remote") && sub.trim() == "\"origin\""
                }
                // Old-style `[remote.origin]`.
                None => header.eq_ignore_ascii_case("remote.origin"),
            };
            continue;
        }
        if !in_origin {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("url") {
            url = Some(config_value(value.trim()));
        }
    }
    url.filter(|u| !u.is_empty())
}

/// A git config value: double quotes removed, `\"` and `\\` unescaped, an unquoted `#`/`;`
/// ending it.
fn config_value(raw: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(match next {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                }
            }
            '#' | ';' if !quoted => break,
            c => out.push(c),
        }
    }
    out.trim_end().to_owned()
}

/// A remote URL fit for an image label: an `http(s)://`/`git://`/`ssh://` URL without its
/// credentials (`https://TOKEN@host/…` loses the token; `ssh://git@host` keeps `git`, which is
/// no secret, but never a `user:password`), or an scp-like `git@host:org/repo.git` as is. A
/// local path or `file://` URL names a host path, which never goes into an image: `None`.
pub fn public_url(url: &str) -> Option<String> {
    let url = url.trim();
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme_lower = scheme.to_ascii_lowercase();
        if !matches!(
            scheme_lower.as_str(),
            "http" | "https" | "git" | "ssh" | "git+ssh" | "ssh+git"
        ) {
            return None;
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let host = match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let keep_user = scheme_lower.contains("ssh") && !userinfo.contains(':');
                if keep_user {
                    format!("{userinfo}@{host}")
                } else {
                    host.to_owned()
                }
            }
            None => authority.to_owned(),
        };
        if host.is_empty() || host.starts_with('@') {
            return None;
        }
        return Some(format!("{scheme}://{host}{path}"));
    }
    // scp-like: `[user@]host:path`, with no slash before the colon (else it is a path).
    let (before, _) = url.split_once(':')?;
    if before.is_empty() || before.contains('/') || url.starts_with('.') {
        return None;
    }
    let host = before.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || before.matches('@').count() > 1 {
        return None;
    }
    Some(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn repo(dir: &Path) -> PathBuf {
        let git = dir.join(".git");
        fs::create_dir_all(git.join("refs/heads")).unwrap();
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        git
    }

    #[test]
    fn branch_from_loose_ref_then_packed_refs() {
        let dir = tempfile::tempdir().unwrap();
        let git = repo(dir.path());
        assert_eq!(read(dir.path()).unwrap().revision, None, "unborn branch");
        fs::write(
            git.join("packed-refs"),
            format!("# pack-refs with: peeled\n{B} refs/heads/main\n^{A}\n"),
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap().revision.as_deref(), Some(B));
        fs::write(git.join("refs/heads/main"), format!("{A}\n")).unwrap();
        assert_eq!(read(dir.path()).unwrap().revision.as_deref(), Some(A));
        // Detached.
        fs::write(git.join("HEAD"), format!("{B}\n")).unwrap();
        assert_eq!(read(dir.path()).unwrap().revision.as_deref(), Some(B));
    }

    #[test]
    fn source_below_the_checkout_root_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let git = repo(dir.path());
        fs::write(git.join("refs/heads/main"), format!("{A}\n")).unwrap();
        let app = dir.path().join("apps/web");
        fs::create_dir_all(&app).unwrap();
        assert_eq!(read(&app).unwrap().revision.as_deref(), Some(A));
    }

    #[test]
    fn head_cannot_point_outside_the_git_dir() {
        let dir = tempfile::tempdir().unwrap();
        let git = repo(dir.path());
        fs::write(dir.path().join("outside"), format!("{A}\n")).unwrap();
        for bad in [
            "ref: ../outside",
            "ref: refs/../../outside",
            "ref: /etc/hostname",
            "ref: refs//x",
        ] {
            fs::write(git.join("HEAD"), bad).unwrap();
            assert_eq!(read(dir.path()).unwrap().revision, None, "{bad}");
        }
        // A symref loop ends.
        fs::write(git.join("HEAD"), "ref: refs/heads/a").unwrap();
        fs::write(git.join("refs/heads/a"), "ref: refs/heads/b").unwrap();
        fs::write(git.join("refs/heads/b"), "ref: refs/heads/a").unwrap();
        assert_eq!(read(dir.path()).unwrap().revision, None);
    }

    #[test]
    fn worktree_git_file_reads_its_head_and_the_common_refs_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main");
        let git = repo(&main);
        fs::write(
            git.join("config"),
            "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://ghp_secret@github.com/acme/web.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n",
        )
        .unwrap();
        fs::write(git.join("refs/heads/feature"), format!("{B}\n")).unwrap();
        let wt_git = git.join("worktrees/wt");
        fs::create_dir_all(&wt_git).unwrap();
        fs::write(wt_git.join("HEAD"), "ref: refs/heads/feature\n").unwrap();
        fs::write(wt_git.join("commondir"), "../..\n").unwrap();
        let wt = dir.path().join("wt");
        fs::create_dir_all(&wt).unwrap();
        fs::write(wt.join(".git"), "gitdir: ../main/.git/worktrees/wt\n").unwrap();
        let info = read(&wt).unwrap();
        assert_eq!(info.revision.as_deref(), Some(B));
        assert_eq!(
            info.origin.as_deref(),
            Some("https://github.com/acme/web.git")
        );
        // A gitdir that is not a git directory is no checkout.
        fs::write(wt.join(".git"), "gitdir: ../nowhere\n").unwrap();
        assert_eq!(read(&wt), None);
    }

    #[test]
    fn origin_url_from_config_forms() {
        let config = "[Remote \"upstream\"]\n url = https://x/up\n[remote \"origin\"] # c\n\tURL = \"git@github.com:acme/web.git\" ; note\n[branch \"main\"]\n\turl = nope\n";
        assert_eq!(
            origin_url(config).as_deref(),
            Some("git@github.com:acme/web.git")
        );
        assert_eq!(
            origin_url("[remote.origin]\nurl=https://h/r\n").as_deref(),
            Some("https://h/r")
        );
        assert_eq!(origin_url("[remote \"Origin\"]\nurl=https://h/r\n"), None);
    }

    #[test]
    fn public_urls_lose_credentials_and_local_paths() {
        let cases = [
            (
                "https://user:pass@github.com/a/b.git",
                Some("https://github.com/a/b.git"),
            ),
            (
                "https://TOKEN@gitlab.example:8443/a/b",
                Some("https://gitlab.example:8443/a/b"),
            ),
            ("http://host/a", Some("http://host/a")),
            ("ssh://git@host/a.git", Some("ssh://git@host/a.git")),
            ("ssh://git:pw@host/a.git", Some("ssh://host/a.git")),
            ("git@github.com:a/b.git", Some("git@github.com:a/b.git")),
            ("/srv/git/app.git", None),
            ("../app.git", None),
            ("./x:y", None),
            ("file:///srv/app.git", None),
            ("https://@host/a", Some("https://host/a")),
        ];
        for (url, want) in cases {
            assert_eq!(public_url(url).as_deref(), want, "{url}");
        }
    }
}
