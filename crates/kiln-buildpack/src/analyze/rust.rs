//! Rust: the toolchain (`rust-toolchain.toml`, `rust-toolchain`, `rust-version`), workspaces, and
//! which binary the image runs (`default-run`, the package, a single `src/bin/*`; in a virtual
//! workspace, the member the user chose, else the only member with a binary, else the only one
//! among `default-members`), and how it links: against the stack's glibc when `Cargo.lock` has a
//! `-sys` crate that links a system library ([`SYSTEM_LIBRARIES`]), else statically.

use super::workspace::invalid_choice;
use super::{first_version, toml_str, version_text, Facts, Tree, Workspaces};
use crate::error::Result;

/// `app`: the workspace member the user chose (`kiln.toml` `app` / `KILN_APP`), with its source;
/// `link`: the linking the user chose (`kiln.toml` `build.link` / `KILN_LINK`).
pub(super) fn analyze(
    tree: &Tree,
    app: Option<&(String, String)>,
    link: Option<&(String, String)>,
) -> Result<Facts> {
    let mut facts = Facts::default();
    let cargo = tree.toml("Cargo.toml")?.unwrap_or_default();
    check_manifest(tree, &cargo)?;
    let toolchain = tree.toml("rust-toolchain.toml")?;

    let rust_version = toml_str(&cargo, "package.rust-version")
        .or_else(|| toml_str(&cargo, "workspace.package.rust-version"))
        .map(|v| format!(">={v}"));
    facts.version = first_version(vec![
        (
            toolchain
                .as_ref()
                .and_then(|t| toml_str(t, "toolchain.channel"))
                .map(str::to_owned),
            "rust-toolchain.toml toolchain.channel".into(),
        ),
        (
            tree.text("rust-toolchain")?
                .as_deref()
                .and_then(version_text),
            "rust-toolchain".into(),
        ),
        (rust_version, "Cargo.toml package.rust-version".into()),
    ]);

    facts.package_manager = Some(super::PackageManager {
        name: "cargo".into(),
        version: None,
        from: "Cargo.toml".into(),
    });
    if tree.is_file("Cargo.lock") {
        facts.set("lockfile", "Cargo.lock");
    }
    linking(tree, link, &mut facts)?;

    if let Some(members) = cargo
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
    {
        facts.workspaces = Some(Workspaces {
            tool: "cargo".into(),
            members: members
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect(),
            orchestrator: None,
        });
    }

    // The package to install: the chosen member, else the root's, else the workspace's binary.
    let (package, bin) = match (app, facts.workspaces.as_ref()) {
        (Some(choice), Some(ws)) => chosen_binary(tree, ws, choice)?,
        (None, _) if cargo.contains_key("package") => {
            (".".to_owned(), binary(tree, ".", &cargo, &mut facts.notes)?)
        }
        (app, ws) => {
            if let Some((_, from)) = app {
                facts.notes.push(format!(
                    "{from} not used: Cargo.toml declares no [workspace]"
                ));
            }
            match ws {
                Some(ws) => workspace_binary(tree, ws, &cargo, &mut facts.notes)?,
                None => (".".to_owned(), None),
            }
        }
    };
    if let Some((name, from)) = bin {
        facts.set("bin", name);
        facts.set("bin_from", from);
        facts.set("package_path", package);
    }
    Ok(facts)
}

/// The binary of the package in `dir` (`.` or a workspace member), with where it was found.
fn binary(
    tree: &Tree,
    dir: &str,
    cargo: &toml::Table,
    notes: &mut Vec<String>,
) -> Result<Option<(String, String)>> {
    let at = |rel: &str| {
        if dir == "." {
            rel.to_owned()
        } else {
            format!("{dir}/{rel}")
        }
    };
    let manifest = at("Cargo.toml");
    let bins: Vec<String> = tree
        .list(&at("src/bin"), false)?
        .into_iter()
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_owned))
        .collect();
    let found = if let Some(run) = toml_str(cargo, "package.default-run") {
        Some((run.to_owned(), format!("{manifest} package.default-run")))
    } else if let Some(name) =
        toml_str(cargo, "package.name").filter(|_| tree.is_file(&at("src/main.rs")))
    {
        Some((name.to_owned(), format!("{manifest} package.name")))
    } else if bins.len() == 1 {
        Some((bins[0].clone(), at("src/bin/")))
    } else if let Some(name) = cargo
        .get("bin")
        .and_then(|b| b.as_array())
        .filter(|b| b.len() == 1)
        .and_then(|b| b[0].get("name"))
        .and_then(|n| n.as_str())
    {
        Some((name.to_owned(), format!("{manifest} [[bin]]")))
    } else {
        if bins.len() > 1 {
            notes.push(format!(
                "several binaries in {} ({}); set package.default-run",
                at("src/bin"),
                bins.join(", ")
            ));
        } else if dir == "." {
            notes.push(
                "no binary: no src/main.rs, src/bin/*.rs or single [[bin]] (a library?)".into(),
            );
        }
        None
    };
    Ok(found)
}

/// The binary of the member the user chose; a choice that is not a member with a binary is an
/// error naming the setting.
fn chosen_binary(
    tree: &Tree,
    ws: &Workspaces,
    choice: &(String, String),
) -> Result<(String, Option<(String, String)>)> {
    ws.check_choice(choice)?;
    let (dir, from) = choice;
    let manifest = format!("{dir}/Cargo.toml");
    let cargo = tree
        .toml(&manifest)?
        .ok_or_else(|| invalid_choice(choice, format!("{}{manifest} not found", tree.prefix)))?;
    let mut notes = Vec::new();
    let Some((name, found)) = binary(tree, dir, &cargo, &mut notes)? else {
        let why = notes.pop().unwrap_or_else(|| {
            "no binary: no src/main.rs, src/bin/*.rs or single [[bin]]".to_owned()
        });
        return Err(invalid_choice(choice, why));
    };
    Ok((dir.clone(), Some((name, format!("{found} ({from})")))))
}

/// A workspace's app when the user chose none: the only member with a binary, else the only
/// binary member among `workspace.default-members` (what a bare `cargo build` builds). Members
/// are the listed paths and `dir/*` globs (one directory level) minus `workspace.exclude`, each
/// read as its own `Cargo.toml`.
fn workspace_binary(
    tree: &Tree,
    ws: &Workspaces,
    cargo: &toml::Table,
    notes: &mut Vec<String>,
) -> Result<(String, Option<(String, String)>)> {
    let listed = |key: &str| -> Vec<String> {
        cargo
            .get("workspace")
            .and_then(|w| w.get(key))
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str())
                    .map(|m| m.trim_start_matches("./").trim_end_matches('/').to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let excluded = listed("exclude");
    let members: Vec<String> = ws
        .member_dirs(tree, notes)?
        .into_iter()
        .filter(|m| !excluded.contains(m))
        .collect();
    let mut found = Vec::new();
    for member in &members {
        let Some(cargo) = tree.toml(&format!("{member}/Cargo.toml"))? else {
            continue;
        };
        if let Some(bin) = binary(tree, member, &cargo, &mut Vec::new())? {
            found.push((member.clone(), bin));
        }
    }
    if found.len() > 1 {
        let defaults = listed("default-members");
        let mut default_bins: Vec<_> = found.iter().filter(|(m, _)| defaults.contains(m)).collect();
        if default_bins.len() == 1 {
            let (member, (name, _)) = default_bins.remove(0);
            return Ok((
                member.clone(),
                Some((
                    name.clone(),
                    "Cargo.toml workspace.default-members".to_owned(),
                )),
            ));
        }
    }
    match found.len() {
        1 => {
            let (member, (name, from)) = found.remove(0);
            Ok((member, Some((name, from))))
        }
        0 => {
            notes.push(if members.is_empty() {
                "virtual workspace with no binary member (no member directories found)".to_owned()
            } else {
                format!(
                    "virtual workspace with no binary member (looked in {})",
                    members.join(", ")
                )
            });
            Ok((".".into(), None))
        }
        _ => {
            let names: Vec<String> = found
                .iter()
                .map(|(member, (bin, _))| format!("{bin} in {member}"))
                .collect();
            notes.push(format!(
                "workspace with several binary members ({}): choose one with `app = \"{}\"` in \
                 kiln.toml or KILN_APP={}",
                names.join(", "),
                found[0].0,
                found[0].0
            ));
            Ok((".".into(), None))
        }
    }
}

/// What cargo itself would refuse before building anything: a manifest with neither `[package]`
/// nor `[workspace]` (an empty file among them), or a `[package]` without a string `name`.
fn check_manifest(tree: &Tree, cargo: &toml::Table) -> Result<()> {
    let package = cargo.get("package");
    if package.is_none() && !cargo.contains_key("workspace") {
        let what = if cargo.is_empty() {
            "empty"
        } else {
            "no [package] or [workspace] table"
        };
        return Err(tree.malformed(
            "Cargo.toml",
            None,
            format!("{what}: cargo needs [package] (a crate) or [workspace]"),
        ));
    }
    if package.is_some() && toml_str(cargo, "package.name").is_none() {
        let text = tree.text("Cargo.toml")?.unwrap_or_default();
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("[package]"))
            .map(|i| (i + 1, 1));
        return Err(tree.malformed(
            "Cargo.toml",
            line,
            "[package] has no name (a string): cargo needs one".to_owned(),
        ));
    }
    Ok(())
}

/// A `-sys` crate that links a system library unless it builds its bundled copy.
struct SystemLibrary {
    /// The crate in `Cargo.lock`.
    krate: &'static str,
    /// The fact set (`lib_NAME = "system"`) that `buildpacks/rust/buildpack.toml`'s
    /// `[[packages]]` turn into the library's Debian packages (headers in the build root, the
    /// shared library in the run image).
    fact: &'static str,
    /// What the library is, for the plan's reason.
    library: &'static str,
    /// A dependency of the crate in `Cargo.lock` that means it builds the bundled copy (the
    /// `vendored`/`bundled` feature pulls it in), so nothing of the system's is linked.
    bundled_by: &'static str,
}

/// The `-sys` crates that link a system library. Cargo.lock records each package's resolved
/// dependencies, so a bundled build shows as its source crate (or `cc`, for libsqlite3-sys,
/// whose only C compile is the bundled SQLite).
const SYSTEM_LIBRARIES: &[SystemLibrary] = &[
    SystemLibrary {
        krate: "openssl-sys",
        fact: "lib_openssl",
        library: "OpenSSL (libssl)",
        bundled_by: "openssl-src",
    },
    SystemLibrary {
        krate: "pq-sys",
        fact: "lib_pq",
        library: "PostgreSQL's libpq",
        bundled_by: "pq-src",
    },
    SystemLibrary {
        krate: "libsqlite3-sys",
        fact: "lib_sqlite3",
        library: "SQLite (libsqlite3)",
        bundled_by: "cc",
    },
    SystemLibrary {
        krate: "mysqlclient-sys",
        fact: "lib_mysqlclient",
        library: "the MySQL/MariaDB client library",
        bundled_by: "mysqlclient-src",
    },
];

/// Sets `link` (`static` or `glibc`) with `link_from` (why), `crt_static` (rustc's
/// `-Ctarget-feature` for it) and a `lib_*` fact per system library `Cargo.lock` links. The
/// user's choice wins; else any system library means glibc (a static binary cannot load
/// `libssl.so.3`), else static, which runs on the static stack.
fn linking(tree: &Tree, pin: Option<&(String, String)>, facts: &mut Facts) -> Result<()> {
    let mut linked = Vec::new();
    if let Some(lock) = tree.toml("Cargo.lock")? {
        let packages = lock
            .get("package")
            .and_then(|p| p.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for lib in SYSTEM_LIBRARIES {
            let Some(package) = packages
                .iter()
                .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(lib.krate))
            else {
                continue;
            };
            let bundled = package
                .get("dependencies")
                .and_then(|d| d.as_array())
                .is_some_and(|deps| {
                    deps.iter().filter_map(|d| d.as_str()).any(|d| {
                        // `name` or `name version (source)` when two versions are locked.
                        d.split_whitespace().next() == Some(lib.bundled_by)
                    })
                });
            if bundled {
                facts.notes.push(format!(
                    "{} builds its bundled copy of {} ({} in Cargo.lock): nothing of the \
                     system's is linked",
                    lib.krate, lib.library, lib.bundled_by
                ));
                continue;
            }
            facts.set(lib.fact, "system");
            linked.push(lib);
        }
    }
    let (link, from) = match pin {
        Some((link, from)) => match link.as_str() {
            "static" | "glibc" => (link.clone(), from.clone()),
            other => {
                return Err(crate::error::Error::Template(format!(
                    "{from}: unknown link {other:?}: expected static or glibc"
                )))
            }
        },
        None if !linked.is_empty() => {
            let why: Vec<String> = linked
                .iter()
                .map(|lib| format!("{} links {}", lib.krate, lib.library))
                .collect();
            (
                "glibc".to_owned(),
                format!("Cargo.lock: {}", why.join(", ")),
            )
        }
        None if tree.is_file("Cargo.lock") => (
            "static".to_owned(),
            "no crate in Cargo.lock links a system library".to_owned(),
        ),
        None => (
            "static".to_owned(),
            "no Cargo.lock, so no -sys crate is known to link a system library".to_owned(),
        ),
    };
    if link == "static" && !linked.is_empty() {
        facts.notes.push(format!(
            "linked statically ({from}) with system libraries: their static archives must be \
             in the build root, and their -sys crates told to use them (e.g. OPENSSL_STATIC=1 \
             in kiln.toml [build.env])"
        ));
    }
    facts.set(
        "crt_static",
        if link == "static" {
            "+crt-static"
        } else {
            // rustc's default for the gnu targets, said explicitly.
            "-crt-static"
        },
    );
    facts.set("link", link);
    facts.set("link_from", from);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::analyze_files;
    use super::*;

    const MANIFEST: &str = "[package]\nname = \"app\"\nversion = \"0.1.0\"\n";

    fn lock(packages: &[(&str, &[&str])]) -> String {
        packages
            .iter()
            .map(|(name, deps)| {
                let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
                format!(
                    "[[package]]\nname = {name:?}\nversion = \"1.0.0\"\ndependencies = [{}]\n\n",
                    deps.join(", ")
                )
            })
            .collect()
    }

    fn facts(lock: &str, pin: Option<(&str, &str)>) -> Result<Facts> {
        let pin = pin.map(|(l, f)| (l.to_owned(), f.to_owned()));
        analyze_files(
            |tree| analyze(tree, None, pin.as_ref()),
            &[
                ("Cargo.toml", MANIFEST),
                ("src/main.rs", "fn main() {}"),
                ("Cargo.lock", lock),
            ],
        )
    }

    #[test]
    fn a_system_library_in_the_lockfile_links_against_glibc_and_says_why() {
        let lock = lock(&[
            ("app", &["openssl"]),
            ("openssl", &["openssl-sys"]),
            ("openssl-sys", &["cc", "libc", "pkg-config"]),
            ("pq-sys", &["pkg-config"]),
        ]);
        let facts = facts(&lock, None).unwrap();
        assert_eq!(facts.get("link").as_deref(), Some("glibc"));
        assert_eq!(facts.get("crt_static").as_deref(), Some("-crt-static"));
        assert_eq!(
            facts.get("link_from").as_deref(),
            Some("Cargo.lock: openssl-sys links OpenSSL (libssl), pq-sys links PostgreSQL's libpq")
        );
        assert_eq!(facts.get("lib_openssl").as_deref(), Some("system"));
        assert_eq!(facts.get("lib_pq").as_deref(), Some("system"));
        assert_eq!(facts.get("lib_sqlite3"), None);
    }

    #[test]
    fn bundled_copies_and_plain_crates_stay_static() {
        let lock = lock(&[
            ("openssl-sys", &["cc", "openssl-src", "pkg-config"]),
            ("libsqlite3-sys", &["cc 1.2.3", "pkg-config", "vcpkg"]),
            ("serde", &[]),
        ]);
        let facts = facts(&lock, None).unwrap();
        assert_eq!(facts.get("link").as_deref(), Some("static"));
        assert_eq!(facts.get("crt_static").as_deref(), Some("+crt-static"));
        assert_eq!(
            facts.get("link_from").as_deref(),
            Some("no crate in Cargo.lock links a system library")
        );
        assert_eq!(facts.get("lib_openssl"), None);
        assert!(facts.notes[0].starts_with("openssl-sys builds its bundled copy"));
        assert!(
            facts.notes[1].contains("cc in Cargo.lock"),
            "{:?}",
            facts.notes
        );
        // No C compile: libsqlite3-sys links the system's SQLite.
        let lock = self::lock(&[("libsqlite3-sys", &["pkg-config", "vcpkg"])]);
        let facts = self::facts(&lock, None).unwrap();
        assert_eq!(facts.get("lib_sqlite3").as_deref(), Some("system"));
    }

    #[test]
    fn the_users_choice_wins_and_an_unknown_one_is_refused() {
        let with_ssl = lock(&[("openssl-sys", &["cc"])]);
        let facts = facts(&with_ssl, Some(("static", "KILN_LINK"))).unwrap();
        assert_eq!(facts.get("link").as_deref(), Some("static"));
        assert_eq!(facts.get("link_from").as_deref(), Some("KILN_LINK"));
        assert_eq!(facts.get("lib_openssl").as_deref(), Some("system"));
        assert!(
            facts.notes[0].contains("OPENSSL_STATIC=1"),
            "{:?}",
            facts.notes
        );
        let plain = lock(&[("serde", &[])]);
        let facts = self::facts(&plain, Some(("glibc", "kiln.toml build.link"))).unwrap();
        assert_eq!(facts.get("link").as_deref(), Some("glibc"));
        assert_eq!(facts.get("crt_static").as_deref(), Some("-crt-static"));
        let err = self::facts(&plain, Some(("musl", "KILN_LINK"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "KILN_LINK: unknown link \"musl\": expected static or glibc"
        );
    }
}
