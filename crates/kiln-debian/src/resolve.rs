//! The closure of a package set over `Pre-Depends` and `Depends`.
//!
//! Rules (what a minimal, distroless-style root needs, not all of apt):
//! - of `a | b`, the first alternative that is already selected, else the first satisfiable one;
//! - a name no package has is a virtual package, satisfied through `Provides` (an unversioned
//!   `Provides` never satisfies a versioned dependency, as Policy §7.5 says); of several
//!   providers, the first by name;
//! - of several versions (a suite, its `-updates` and security suites), the highest that
//!   satisfies;
//! - `:any`/`:native` qualifiers are accepted (one architecture plus `all` is indexed);
//! - `Essential: yes` packages are *not* pulled in unless something depends on them;
//!   `Recommends`, `Suggests`, `Conflicts` and `Breaks` are not considered.
//!
//! Output is sorted by name, so it does not depend on the order work was done in.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::index::Package;
use crate::relation::{Dep, Relation};

/// Every package of the indexes of one stack (a suite, possibly with its updates and security
/// suites).
#[derive(Debug, Clone, Default)]
pub struct Universe {
    packages: Vec<Package>,
    /// Name → indices into `packages`, highest version first.
    by_name: HashMap<String, Vec<usize>>,
    /// Virtual name → indices of packages providing it, by package name.
    providers: HashMap<String, Vec<usize>>,
    /// The suites the packages came from, for messages (`trixie, trixie-updates, trixie-security`).
    pub suites: String,
}

impl Universe {
    pub fn new(suites: &[&str], indexes: Vec<Vec<Package>>) -> Universe {
        let packages: Vec<Package> = indexes.into_iter().flatten().collect();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut providers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            by_name.entry(p.name.clone()).or_default().push(i);
            for provided in &p.provides {
                providers.entry(provided.name.clone()).or_default().push(i);
            }
        }
        for list in by_name.values_mut() {
            list.sort_by(|a, b| packages[*b].version.cmp(&packages[*a].version));
        }
        for list in providers.values_mut() {
            list.sort_by(|a, b| {
                let (a, b) = (&packages[*a], &packages[*b]);
                a.name.cmp(&b.name).then_with(|| b.version.cmp(&a.version))
            });
            list.dedup();
        }
        Universe {
            packages,
            by_name,
            providers,
            suites: suites.join(", "),
        }
    }

    /// The highest version of `name`.
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.by_name.get(name).map(|l| &self.packages[l[0]])
    }

    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// Packages that satisfy `dep`, best first: real packages by version, then providers.
    fn candidates<'a>(&'a self, dep: &'a Dep) -> impl Iterator<Item = &'a Package> + 'a {
        let real = self
            .by_name
            .get(&dep.name)
            .into_iter()
            .flatten()
            .map(|i| &self.packages[*i])
            .filter(|p| dep.constraint.as_ref().is_none_or(|c| c.allows(&p.version)));
        let virtual_ = self
            .providers
            .get(&dep.name)
            .into_iter()
            .flatten()
            .map(|i| &self.packages[*i])
            .filter(|p| provides(p, dep));
        real.chain(virtual_)
    }
}

/// Whether `package` satisfies `dep` by name or through `Provides`.
fn satisfies(package: &Package, dep: &Dep) -> bool {
    (package.name == dep.name
        && dep
            .constraint
            .as_ref()
            .is_none_or(|c| c.allows(&package.version)))
        || provides(package, dep)
}

fn provides(package: &Package, dep: &Dep) -> bool {
    package.provides.iter().any(|p| {
        p.name == dep.name
            && match (&dep.constraint, &p.constraint) {
                (None, _) => true,
                (Some(want), Some(have)) => want.allows(&have.version),
                (Some(_), None) => false,
            }
    })
}

/// Why a package is in the closure: requested, or needed by another through a relation.
#[derive(Debug, Clone)]
enum Reason {
    Requested,
    Needed { by: String, relation: String },
}

/// Resolves `roots` over `universe`. Packages in `base` (lower layers) satisfy dependencies and
/// are not returned again. With `follow` false only the roots themselves are chosen (data
/// packages whose dependencies serve only their maintainer scripts). Returns the new packages
/// sorted by name.
pub fn resolve(
    universe: &Universe,
    roots: &[Relation],
    base: &BTreeMap<String, Package>,
    follow: bool,
) -> Result<Vec<Package>> {
    let mut chosen: BTreeMap<String, Package> = BTreeMap::new();
    let mut reasons: HashMap<String, Reason> = HashMap::new();
    let mut queue: VecDeque<(Relation, Reason)> = roots
        .iter()
        .map(|r| (r.clone(), Reason::Requested))
        .collect();
    while let Some((relation, reason)) = queue.pop_front() {
        let present = |dep: &Dep| {
            base.values()
                .chain(chosen.values())
                .any(|p| satisfies(p, dep))
        };
        if relation.alternatives.iter().any(present) {
            continue;
        }
        let pick = relation.alternatives.iter().find_map(|dep| {
            let mut candidates = universe.candidates(dep);
            candidates.next()
        });
        let Some(package) = pick.cloned() else {
            return Err(missing(universe, &relation, &reason, &reasons));
        };
        if follow {
            for dep in package.pre_depends.iter().chain(&package.depends) {
                queue.push_back((
                    dep.clone(),
                    Reason::Needed {
                        by: package.name.clone(),
                        relation: dep.to_string(),
                    },
                ));
            }
        }
        reasons.insert(package.name.clone(), reason);
        chosen.insert(package.name.clone(), package);
    }
    Ok(chosen.into_values().collect())
}

/// `requested libpq5 → libpq5 depends on libssl3t64 (>= 3) → …, which trixie does not have`.
fn missing(
    universe: &Universe,
    relation: &Relation,
    reason: &Reason,
    reasons: &HashMap<String, Reason>,
) -> Error {
    let mut chain = Vec::new();
    let mut at = reason.clone();
    // Bounded by the number of chosen packages: each step goes to an earlier-chosen package.
    for _ in 0..=reasons.len() {
        match at {
            Reason::Requested => break,
            Reason::Needed { by, relation } => {
                chain.push(format!("{by} depends on {relation}"));
                match reasons.get(&by) {
                    Some(next) => at = next.clone(),
                    None => break,
                }
            }
        }
    }
    chain.reverse();
    let have: Vec<String> = relation
        .alternatives
        .iter()
        .filter_map(|d| universe.get(&d.name).map(|p| format!("it has {}", p.id())))
        .collect();
    let have = if have.is_empty() {
        String::new()
    } else {
        format!(" ({})", have.join(", "))
    };
    let what = match reason {
        Reason::Requested => format!(
            "package {relation} was requested, but {} does not have it{have}",
            universe.suites
        ),
        Reason::Needed { .. } => format!(
            "{}, which {} does not have{have}",
            chain.join(" → "),
            universe.suites
        ),
    };
    Error::Resolve(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::parse_packages;
    use crate::relation::parse_relations;

    /// Trimmed stanzas recorded from trixie's main/binary-amd64 Packages (plus two invented
    /// ones to exercise constraints: `oldlib`, `needs-new`).
    const PACKAGES: &str = "\
Package: libc6
Version: 2.41-12+deb13u5
Architecture: amd64
Depends: libgcc-s1
Filename: pool/main/g/glibc/libc6_2.41-12+deb13u5_amd64.deb
Size: 2851012
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: libgcc-s1
Version: 14.2.0-19
Architecture: amd64
Provides: libgcc1 (= 1:14.2.0-19)
Depends: gcc-14-base (= 14.2.0-19), libc6 (>= 2.35)
Filename: pool/main/g/gcc-14/libgcc-s1_14.2.0-19_amd64.deb
Size: 72816
SHA256: 2222222222222222222222222222222222222222222222222222222222222222

Package: gcc-14-base
Version: 14.2.0-19
Architecture: amd64
Filename: pool/main/g/gcc-14/gcc-14-base_14.2.0-19_amd64.deb
Size: 50000
SHA256: 3333333333333333333333333333333333333333333333333333333333333333

Package: ca-certificates
Version: 20250419+deb13u1
Architecture: all
Depends: openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0
Filename: pool/main/c/ca-certificates/ca-certificates_20250419+deb13u1_all.deb
Size: 160000
SHA256: 4444444444444444444444444444444444444444444444444444444444444444

Package: openssl
Version: 3.5.9-1~deb13u1
Architecture: amd64
Depends: libc6 (>= 2.34), libssl3t64 (>= 3.5.0)
Filename: pool/main/o/openssl/openssl_3.5.9-1~deb13u1_amd64.deb
Size: 1400000
SHA256: 5555555555555555555555555555555555555555555555555555555555555555

Package: libssl3t64
Version: 3.5.9-1~deb13u1
Architecture: amd64
Provides: libssl3 (= 3.5.9-1~deb13u1)
Depends: libc6 (>= 2.38)
Filename: pool/main/o/openssl/libssl3t64_3.5.9-1~deb13u1_amd64.deb
Size: 2300000
SHA256: 6666666666666666666666666666666666666666666666666666666666666666

Package: cdebconf
Version: 0.280
Architecture: amd64
Provides: debconf-2.0
Pre-Depends: libc6 (>= 2.36)
Filename: pool/main/c/cdebconf/cdebconf_0.280_amd64.deb
Size: 100000
SHA256: 7777777777777777777777777777777777777777777777777777777777777777

Package: dash
Version: 0.5.12-12
Architecture: amd64
Essential: yes
Pre-Depends: libc6 (>= 2.38)
Depends: debianutils (>= 5.6-0.1)
Filename: pool/main/d/dash/dash_0.5.12-12_amd64.deb
Size: 95000
SHA256: 8888888888888888888888888888888888888888888888888888888888888888

Package: debianutils
Version: 5.23.2
Architecture: amd64
Essential: yes
Pre-Depends: libc6 (>= 2.34)
Filename: pool/main/d/debianutils/debianutils_5.23.2_amd64.deb
Size: 90000
SHA256: 9999999999999999999999999999999999999999999999999999999999999999

Package: oldlib
Version: 1.5-1
Architecture: amd64
Filename: pool/main/o/oldlib/oldlib_1.5-1_amd64.deb
Size: 1000
SHA256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa

Package: needs-new
Version: 1.0
Architecture: amd64
Depends: oldlib (>= 2)
Filename: pool/main/n/needs-new/needs-new_1.0_amd64.deb
Size: 1000
SHA256: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
";

    fn universe() -> Universe {
        Universe::new(
            &["trixie"],
            vec![parse_packages(PACKAGES, "trixie", "Packages").unwrap()],
        )
    }

    fn names(packages: &[Package]) -> Vec<&str> {
        packages.iter().map(|p| p.name.as_str()).collect()
    }

    fn closure(roots: &str) -> Result<Vec<Package>> {
        resolve(
            &universe(),
            &parse_relations(roots).unwrap(),
            &BTreeMap::new(),
            true,
        )
    }

    #[test]
    fn pre_depends_and_depends_are_followed_and_sorted() {
        let got = closure("dash").unwrap();
        assert_eq!(
            names(&got),
            ["dash", "debianutils", "gcc-14-base", "libc6", "libgcc-s1"]
        );
    }

    #[test]
    fn essential_packages_are_not_pulled_in_unless_depended_on() {
        // dash and debianutils are `Essential: yes`; nothing here depends on them.
        let got = closure("libc6").unwrap();
        assert_eq!(names(&got), ["gcc-14-base", "libc6", "libgcc-s1"]);
    }

    #[test]
    fn alternatives_fall_back_to_a_virtual_package_through_provides() {
        // `debconf (>= 0.5)` does not exist here; `debconf-2.0` is provided by cdebconf.
        let got = closure("ca-certificates").unwrap();
        assert_eq!(
            names(&got),
            [
                "ca-certificates",
                "cdebconf",
                "gcc-14-base",
                "libc6",
                "libgcc-s1",
                "libssl3t64",
                "openssl"
            ]
        );
    }

    #[test]
    fn versioned_provides_satisfy_versioned_dependencies() {
        let got = closure("libssl3 (>= 3.0.0), libgcc1 (>= 1:4.2)").unwrap();
        assert!(names(&got).contains(&"libssl3t64"));
        assert!(names(&got).contains(&"libgcc-s1"));
        let err = closure("libssl3 (>= 4)").unwrap_err().to_string();
        assert_eq!(
            err,
            "package libssl3 (>= 4) was requested, but trixie does not have it"
        );
    }

    #[test]
    fn version_constraints_are_checked_and_a_missing_dependency_names_the_chain() {
        let err = closure("needs-new").unwrap_err().to_string();
        assert_eq!(
            err,
            "needs-new depends on oldlib (>= 2), which trixie does not have (it has oldlib=1.5-1)"
        );
        let err = closure("nosuchpkg").unwrap_err().to_string();
        assert_eq!(
            err,
            "package nosuchpkg was requested, but trixie does not have it"
        );
    }

    #[test]
    fn base_packages_satisfy_and_are_not_repeated_and_follow_false_takes_roots_only() {
        let all = universe();
        let base: BTreeMap<String, Package> = closure("libc6")
            .unwrap()
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let got = resolve(&all, &parse_relations("dash").unwrap(), &base, true).unwrap();
        assert_eq!(names(&got), ["dash", "debianutils"]);
        let only = resolve(
            &all,
            &parse_relations("ca-certificates, dash").unwrap(),
            &BTreeMap::new(),
            false,
        )
        .unwrap();
        assert_eq!(names(&only), ["ca-certificates", "dash"]);
    }

    #[test]
    fn the_higher_version_across_suites_wins() {
        let security = PACKAGES
            .split("\n\n")
            .find(|s| s.starts_with("Package: libssl3t64"))
            .unwrap()
            .replace("3.5.9-1~deb13u1", "3.5.9-1~deb13u2");
        let all = Universe::new(
            &["trixie", "trixie-security"],
            vec![
                parse_packages(PACKAGES, "trixie", "Packages").unwrap(),
                parse_packages(&security, "trixie-security", "Packages").unwrap(),
            ],
        );
        let got = resolve(
            &all,
            &parse_relations("libssl3t64").unwrap(),
            &BTreeMap::new(),
            false,
        )
        .unwrap();
        assert_eq!(got[0].id(), "libssl3t64=3.5.9-1~deb13u2");
        assert_eq!(got[0].suite, "trixie-security");
    }
}
