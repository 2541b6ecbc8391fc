//! What maintainer scripts would have made, since none are run: the CA bundle
//! (`update-ca-certificates`), `update-alternatives` links, `/etc/nsswitch.conf` (base-files'
//! postinst), PHP's enabled modules and `php.ini` (`phpenmod`, `ucf`), users and groups, and
//! dpkg's record of what is installed (`status.d`).

use std::collections::BTreeMap;

use crate::deb::Alternative;
use crate::error::Result;
use crate::root::{Node, Root};
use kiln_oci::store::BlobStore;

/// The non-root user every stack has. uid/gid 65532 is distroless's `nonroot`: images and
/// Kubernetes policies written for distroless work unchanged, and it is far from the range
/// Debian gives to packages' system users (100–999) and to people (1000+), so nothing
/// installed later can collide with it.
pub const NONROOT_UID: u32 = 65532;
pub const NONROOT_USER: &str = "nonroot";

pub const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
pub const GROUP: &str = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n";

/// `update-alternatives` links, created when `package` is in the stack and the link is not
/// shipped: `(package, link, target)`, `{arch}` being the Debian architecture (`amd64`), as the
/// JVM packages name their directories. Only the links runtime images need.
pub const ALTERNATIVES: &[(&str, &str, &str)] = &[
    // (dash ships `/bin/sh` itself in bookworm and trixie: no entry needed.)
    (
        "openjdk-17-jre-headless",
        "usr/bin/java",
        "/usr/lib/jvm/java-17-openjdk-{arch}/bin/java",
    ),
    (
        "openjdk-21-jre-headless",
        "usr/bin/java",
        "/usr/lib/jvm/java-21-openjdk-{arch}/bin/java",
    ),
    (
        "openjdk-25-jre-headless",
        "usr/bin/java",
        "/usr/lib/jvm/java-25-openjdk-{arch}/bin/java",
    ),
];

const OWNER: &str = "kiln (generated)";

fn put_file(root: &mut Root, store: &BlobStore, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let digest = store.put_bytes(bytes)?;
    let path = root.redirect(path);
    root.place(
        &path,
        Node::File {
            sha256: digest.hex().to_owned(),
            size: bytes.len() as u64,
            group: None,
        },
        mode,
        OWNER,
    )
}

/// Users, groups, `/tmp`, home directories and merged-`/usr` links: the skeleton of the first
/// layer. Called before any package is placed, so packages' files land through the links.
pub fn skeleton(root: &mut Root) -> Result<()> {
    for dir in ["bin", "lib", "lib64", "sbin"] {
        root.place(&format!("usr/{dir}"), Node::Dir, 0o755, OWNER)?;
        root.place(dir, Node::Symlink(format!("usr/{dir}")), 0o777, OWNER)?;
    }
    root.place("tmp", Node::Dir, 0o1777, OWNER)?;
    root.place("root", Node::Dir, 0o700, OWNER)?;
    root.place("home/nonroot", Node::Dir, 0o755, OWNER)?;
    Ok(())
}

/// `/etc/passwd`, `/etc/group` and, from base-files' template, `/etc/nsswitch.conf`.
pub fn accounts(root: &mut Root, store: &BlobStore) -> Result<()> {
    put_file(root, store, "etc/passwd", PASSWD.as_bytes(), 0o644)?;
    put_file(root, store, "etc/group", GROUP.as_bytes(), 0o644)?;
    if root.get("etc/nsswitch.conf").is_none() {
        if let Some(Node::File { sha256, size, .. }) =
            root.get("usr/share/base-files/nsswitch.conf").cloned()
        {
            root.place(
                "etc/nsswitch.conf",
                Node::File {
                    sha256,
                    size,
                    group: None,
                },
                0o644,
                OWNER,
            )?;
        }
    }
    Ok(())
}

/// `/etc/ssl/certs/ca-certificates.crt`: every `usr/share/ca-certificates/**.crt`, in path
/// order, concatenated — what `update-ca-certificates` writes with all certificates enabled
/// (the default `/etc/ca-certificates.conf`). No-op without certificates.
pub fn ca_bundle(root: &mut Root, store: &BlobStore) -> Result<()> {
    let certs: Vec<String> = root
        .paths()
        .filter(|(path, _)| {
            path.starts_with("usr/share/ca-certificates/") && path.ends_with(".crt")
        })
        .filter_map(|(_, node)| match node {
            Node::File { sha256, .. } => Some(sha256.clone()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Ok(());
    }
    let mut bundle = Vec::new();
    for sha in certs {
        let digest = kiln_oci::Digest::parse(&format!("sha256:{sha}"))?;
        let mut pem = store.read_verified(&digest)?;
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        bundle.extend_from_slice(&pem);
    }
    put_file(
        root,
        store,
        "etc/ssl/certs/ca-certificates.crt",
        &bundle,
        0o644,
    )
}

/// [`ALTERNATIVES`] links for the packages in `names`.
pub fn alternatives<'a>(
    root: &mut Root,
    names: impl IntoIterator<Item = &'a str>,
    arch: &str,
) -> Result<()> {
    let names: Vec<&str> = names.into_iter().collect();
    for (package, link, target) in ALTERNATIVES {
        if names.contains(package) {
            let path = root.redirect(link);
            if root.get(&path).is_none() {
                root.place(
                    &path,
                    Node::Symlink(target.replace("{arch}", arch)),
                    0o777,
                    OWNER,
                )?;
            }
        }
    }
    Ok(())
}

/// The links `update-alternatives` would have made for `alternatives` (from the packages'
/// `postinst`s): per alternative name the highest priority wins (the first on a tie), and a
/// link is made only where the package did not ship one and its target is in the root (a
/// slave link to a dropped man page is not).
pub fn postinst_alternatives(root: &mut Root, alternatives: &[&Alternative]) -> Result<()> {
    let mut best: BTreeMap<&str, &Alternative> = BTreeMap::new();
    for alt in alternatives {
        match best.get(alt.name.as_str()) {
            Some(chosen) if chosen.priority >= alt.priority => {}
            _ => {
                best.insert(&alt.name, alt);
            }
        }
    }
    for alt in best.values() {
        let link = root.redirect(&alt.link);
        let target = root.redirect(alt.path.trim_start_matches('/'));
        if root.get(&link).is_none() && root.get(&target).is_some() {
            root.place(&link, Node::Symlink(alt.path.clone()), 0o777, OWNER)?;
        }
    }
    Ok(())
}

/// What PHP's `postinst`s would have made, so PHP runs as on Debian: with its extensions
/// (opcache, ctype, pdo, …) loaded and production settings, not with none and PHP's
/// compiled-in development defaults. Per PHP version `V` in the root:
/// - each module's ini, which packages ship as `usr/share/phpV-PKG/DIR/MODULE.ini` and
///   `postinst` copies with ucf, at `/etc/php/V/mods-available/MODULE.ini`;
/// - every module of `mods-available` enabled for every SAPI the root has
///   (`usr/lib/php/V/sapi/SAPI`), as `phpenmod` does: `/etc/php/V/SAPI/conf.d/PRIO-MODULE.ini`
///   linking to it, `PRIO` from the ini's `; priority=NN` line (default 20), which orders
///   dependent modules (mysqlnd before mysqli) since PHP reads `conf.d` in name order;
/// - the SAPI's `php.ini`, Debian's `usr/lib/php/V/php.ini-production` (`.cli` for the CLI).
///
/// Nothing a package ships or an earlier layer has is replaced, so this can run after every
/// layer. No-op without PHP.
pub fn php_config(root: &mut Root, store: &BlobStore) -> Result<()> {
    let mut shipped = Vec::new();
    let mut sapis = Vec::new();
    for (path, node) in root.paths() {
        let parts: Vec<&str> = path.split('/').collect();
        match (parts.as_slice(), node) {
            (["usr", "share", package, _, ini], Node::File { .. }) if ini.ends_with(".ini") => {
                if let Some((version, _)) = php_versioned(package) {
                    shipped.push((version.to_owned(), (*ini).to_owned(), unlinked(node)));
                }
            }
            (["usr", "lib", "php", version, "sapi", sapi], Node::File { .. }) => {
                sapis.push(((*version).to_owned(), (*sapi).to_owned()));
            }
            _ => {}
        }
    }
    for (version, ini, node) in shipped {
        let available = root.redirect(&format!("etc/php/{version}/mods-available/{ini}"));
        if root.get(&available).is_none() {
            root.place(&available, node, 0o644, OWNER)?;
        }
    }
    for (version, sapi) in sapis {
        let available = format!("etc/php/{version}/mods-available/");
        let modules: Vec<(String, Node)> = root
            .paths()
            .filter_map(|(path, node)| {
                let ini = path.strip_prefix(&available)?;
                (ini.ends_with(".ini") && !ini.contains('/') && matches!(node, Node::File { .. }))
                    .then(|| (ini.to_owned(), node.clone()))
            })
            .collect();
        for (ini, node) in modules {
            let Node::File { sha256, .. } = &node else {
                continue;
            };
            let text =
                store.read_verified(&kiln_oci::Digest::parse(&format!("sha256:{sha256}"))?)?;
            let priority = ini_priority(&String::from_utf8_lossy(&text));
            let link = root.redirect(&format!("etc/php/{version}/{sapi}/conf.d/{priority}-{ini}"));
            if root.get(&link).is_none() {
                let target = format!("/etc/php/{version}/mods-available/{ini}");
                root.place(&link, Node::Symlink(target), 0o777, OWNER)?;
            }
        }
        let production = format!("usr/lib/php/{version}/php.ini-production");
        let cli = format!("{production}.cli");
        let template = if sapi == "cli" && root.get(&cli).is_some() {
            cli
        } else {
            production
        };
        let ini = root.redirect(&format!("etc/php/{version}/{sapi}/php.ini"));
        if let (None, Some(node @ Node::File { .. })) = (root.get(&ini), root.get(&template)) {
            let node = unlinked(node);
            root.place(&ini, node, 0o644, OWNER)?;
        }
    }
    Ok(())
}

/// A copy of a file node outside its hardlink group (a copy may land in another layer).
fn unlinked(node: &Node) -> Node {
    match node {
        Node::File { sha256, size, .. } => Node::File {
            sha256: sha256.clone(),
            size: *size,
            group: None,
        },
        other => other.clone(),
    }
}

/// `php8.4-common` → `("8.4", "common")`: a package directory of a versioned PHP package.
fn php_versioned(package: &str) -> Option<(&str, &str)> {
    let (version, name) = package.strip_prefix("php")?.split_once('-')?;
    let numeric = version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (numeric && version.contains('.') && !name.is_empty()).then_some((version, name))
}

/// A module ini's `; priority=NN` (phpenmod's rule), else 20.
fn ini_priority(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(';'))
        .filter_map(|l| l.trim().strip_prefix("priority"))
        .filter_map(|l| l.trim().strip_prefix('='))
        .map(str::trim)
        .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("20")
        .to_owned()
}

/// `/var/lib/dpkg/status.d/NAME`: the package's control stanza with dpkg's `Status` line, one
/// file per package as distroless writes them (Trivy, Grype and Syft read this directory).
pub fn status(root: &mut Root, store: &BlobStore, name: &str, control: &str) -> Result<()> {
    let mut text = String::with_capacity(control.len() + 32);
    let mut inserted = false;
    for line in control.trim_end().lines() {
        if line.starts_with("Status:") {
            continue;
        }
        text.push_str(line);
        text.push('\n');
        if !inserted && line.starts_with("Package:") {
            text.push_str("Status: install ok installed\n");
            inserted = true;
        }
    }
    put_file(
        root,
        store,
        &format!("var/lib/dpkg/status.d/{name}"),
        text.as_bytes(),
        0o644,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gets_a_status_line_after_package() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut root = Root::new();
        status(
            &mut root,
            &store,
            "dash",
            "Package: dash\nVersion: 0.5.12-12\nArchitecture: amd64\n\n",
        )
        .unwrap();
        let Some(Node::File { sha256, .. }) = root.get("var/lib/dpkg/status.d/dash").cloned()
        else {
            panic!("no status file");
        };
        let bytes = store
            .read_verified(&kiln_oci::Digest::parse(&format!("sha256:{sha256}")).unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "Package: dash\nStatus: install ok installed\nVersion: 0.5.12-12\nArchitecture: amd64\n"
        );
    }

    #[test]
    fn alternatives_links_are_made_for_present_packages_unless_shipped() {
        let mut root = Root::new();
        skeleton(&mut root).unwrap();
        alternatives(&mut root, ["openjdk-17-jre-headless", "libc6"], "amd64").unwrap();
        assert_eq!(
            root.get("usr/bin/java"),
            Some(&Node::Symlink(
                "/usr/lib/jvm/java-17-openjdk-amd64/bin/java".into()
            ))
        );
        // A link the packages ship is left alone; absent packages get none.
        let mut root = Root::new();
        root.place(
            "usr/bin/java",
            Node::Symlink("elsewhere".into()),
            0o777,
            "x",
        )
        .unwrap();
        alternatives(&mut root, ["openjdk-21-jre-headless"], "arm64").unwrap();
        assert_eq!(
            root.get("usr/bin/java"),
            Some(&Node::Symlink("elsewhere".into()))
        );
        let mut none = Root::new();
        alternatives(&mut none, ["libc6"], "amd64").unwrap();
        assert!(none.get("usr/bin/java").is_none());
    }

    #[test]
    fn the_ca_bundle_concatenates_certificates_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut root = Root::new();
        for (path, pem) in [
            ("usr/share/ca-certificates/mozilla/B.crt", "B\n"),
            ("usr/share/ca-certificates/mozilla/A.crt", "A"),
            ("usr/share/ca-certificates/mozilla/README", "no"),
        ] {
            put_file(&mut root, &store, path, pem.as_bytes(), 0o644).unwrap();
        }
        ca_bundle(&mut root, &store).unwrap();
        let Some(Node::File { sha256, .. }) =
            root.get("etc/ssl/certs/ca-certificates.crt").cloned()
        else {
            panic!("no bundle");
        };
        let bytes = store
            .read_verified(&kiln_oci::Digest::parse(&format!("sha256:{sha256}")).unwrap())
            .unwrap();
        assert_eq!(bytes, b"A\nB\n");
    }

    #[test]
    fn php_modules_are_enabled_for_each_sapi_by_priority_with_production_ini() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut root = Root::new();
        for (path, text) in [
            (
                "usr/share/php8.4-common/common/pdo.ini",
                "; priority=10\nextension=pdo.so\n",
            ),
            (
                "usr/share/php8.4-mysql/mysql/mysqli.ini",
                "; configuration\nextension=mysqli.so\n",
            ),
            ("usr/share/php8.4-common/README.ini.txt", "no"),
            ("usr/share/phpunit/x/y.ini", "no"),
            ("usr/lib/php/8.4/sapi/fpm", ""),
            ("usr/lib/php/8.4/sapi/cli", ""),
            (
                "usr/lib/php/8.4/php.ini-production",
                "display_errors = Off\n",
            ),
            (
                "usr/lib/php/8.4/php.ini-production.cli",
                "display_errors = STDOUT\n",
            ),
        ] {
            put_file(&mut root, &store, path, text.as_bytes(), 0o644).unwrap();
        }
        // A module ini a package ships in mods-available itself is enabled too.
        put_file(
            &mut root,
            &store,
            "etc/php/8.4/mods-available/redis.ini",
            b"; priority=25\n",
            0o644,
        )
        .unwrap();
        php_config(&mut root, &store).unwrap();
        let text = |root: &Root, path: &str| match root.get(path) {
            Some(Node::File { sha256, .. }) => String::from_utf8(
                store
                    .read_verified(&kiln_oci::Digest::parse(&format!("sha256:{sha256}")).unwrap())
                    .unwrap(),
            )
            .unwrap(),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(
            text(&root, "etc/php/8.4/mods-available/pdo.ini"),
            "; priority=10\nextension=pdo.so\n"
        );
        for sapi in ["cli", "fpm"] {
            for (link, ini) in [
                ("10-pdo.ini", "pdo.ini"),
                ("20-mysqli.ini", "mysqli.ini"),
                ("25-redis.ini", "redis.ini"),
            ] {
                assert_eq!(
                    root.get(&format!("etc/php/8.4/{sapi}/conf.d/{link}")),
                    Some(&Node::Symlink(format!("/etc/php/8.4/mods-available/{ini}"))),
                    "{sapi} {link}"
                );
            }
        }
        assert!(root.get("etc/php/8.4/mods-available/y.ini").is_none());
        assert_eq!(
            text(&root, "etc/php/8.4/fpm/php.ini"),
            "display_errors = Off\n"
        );
        assert_eq!(
            text(&root, "etc/php/8.4/cli/php.ini"),
            "display_errors = STDOUT\n"
        );
        // Run again (after a later layer): nothing changes, nothing is replaced.
        php_config(&mut root, &store).unwrap();
        assert_eq!(
            text(&root, "etc/php/8.4/fpm/php.ini"),
            "display_errors = Off\n"
        );
        let mut none = Root::new();
        php_config(&mut none, &store).unwrap();
        assert_eq!(none.paths().count(), 0);
    }
}
