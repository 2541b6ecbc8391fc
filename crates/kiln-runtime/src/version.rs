//! Versions and version requirements, in the forms Kiln's detection emits and users write:
//! Node style (`20`, `20.x`, `>=20 <21`, `^20.1.0`, `~20.1`, `20 || 22`, `1.2 - 2.3`, `lts`,
//! `lts/iron`, `*`, `latest`, `v20.11.1`) and Python style (`3.11`, `3.11.7`, `>=3.10,<3.13`,
//! `~=3.11`, `==3.11.*`, `!=3.12.1`).
//!
//! A bare or `=`/`==` version is a *prefix* match (`20` = `20.x`, `3.11` = `3.11.x`), which is
//! what `engines.node` and `.python-version` mean in practice. Only release versions
//! (`MAJOR[.MINOR[.PATCH]]`) are modelled: pre-releases in upstream indexes are skipped.

use std::fmt;

/// A release version `MAJOR.MINOR.PATCH`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `20.11.1`, `v20.11.1` or a shorter `3.11` (missing parts are 0). `None` for
    /// anything else, including pre-releases (`3.13.0rc1`).
    pub fn parse(text: &str) -> Option<Version> {
        let p = Partial::parse(text.trim().trim_start_matches('v'))?;
        (!p.wildcard_tail).then(|| p.floor())
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A version with possibly missing trailing parts (`20`, `3.11`, `3.11.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Partial {
    parts: [u64; 3],
    /// How many of `parts` were given (1–3).
    given: usize,
    /// Ended in `x`/`*` (only affects [`Version::parse`], which refuses it).
    wildcard_tail: bool,
}

impl Partial {
    fn parse(text: &str) -> Option<Partial> {
        let mut parts = [0u64; 3];
        let mut given = 0;
        let mut wildcard_tail = false;
        for (i, piece) in text.split('.').enumerate() {
            if i >= 3 || wildcard_tail {
                return None;
            }
            if matches!(piece, "x" | "X" | "*") {
                wildcard_tail = true;
                continue;
            }
            if piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[i] = piece.parse().ok()?;
            given += 1;
        }
        Some(Partial {
            parts,
            given,
            wildcard_tail,
        })
    }

    /// The smallest version the partial covers (`3.11` → 3.11.0).
    fn floor(&self) -> Version {
        Version::new(self.parts[0], self.parts[1], self.parts[2])
    }

    /// The smallest version past everything the partial covers (`3.11` → 3.12.0, `20` →
    /// 21.0.0, `20.1.2` → 20.1.3).
    fn ceiling(&self) -> Version {
        self.bump(self.given.max(1) - 1)
    }

    /// `floor` with part `i` incremented and the later parts zeroed.
    fn bump(&self, i: usize) -> Version {
        let mut p = self.parts;
        p[i] = p[i].saturating_add(1);
        for later in p.iter_mut().skip(i + 1) {
            *later = 0;
        }
        Version::new(p[0], p[1], p[2])
    }

    fn covers(&self, v: &Version) -> bool {
        self.given == 0 || (*v >= self.floor() && *v < self.ceiling())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Comparator {
    /// `20`, `=20.1`, `==3.11.*`: prefix match.
    Prefix(Partial),
    NotPrefix(Partial),
    /// `[lo, hi)`; either end open.
    Range {
        lo: Option<Version>,
        hi: Option<Version>,
        hi_inclusive: bool,
    },
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        match self {
            Comparator::Prefix(p) => p.covers(v),
            Comparator::NotPrefix(p) => !p.covers(v),
            Comparator::Range {
                lo,
                hi,
                hi_inclusive,
            } => {
                lo.is_none_or(|lo| *v >= lo)
                    && hi.is_none_or(|hi| if *hi_inclusive { *v <= hi } else { *v < hi })
            }
        }
    }
}

/// Node's LTS codenames and their majors, for `lts/<codename>` where no index says which
/// release has which codename. Codenames never change, so the table only grows: one newer than
/// it matches nothing without an index (say the major instead).
pub const NODE_LTS_CODENAMES: [(&str, u64); 11] = [
    ("argon", 4),
    ("boron", 6),
    ("carbon", 8),
    ("dubnium", 10),
    ("erbium", 12),
    ("fermium", 14),
    ("gallium", 16),
    ("hydrogen", 18),
    ("iron", 20),
    ("jod", 22),
    ("krypton", 24),
];

/// A parsed version requirement. Keeps the text it was parsed from for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionReq {
    text: String,
    kind: ReqKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReqKind {
    /// `lts`, `lts/*` or `lts/<codename>` (Node): the newest release marked LTS (with that
    /// codename, compared case-insensitively).
    Lts(Option<String>),
    /// Alternatives (`||`), each a conjunction of comparators. `*`/`latest` is one empty set.
    AnyOf(Vec<Vec<Comparator>>),
}

/// A requirement that could not be parsed; the message names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version requirement {text:?}: {why}")]
pub struct ReqError {
    pub text: String,
    pub why: String,
}

impl VersionReq {
    pub fn parse(text: &str) -> Result<VersionReq, ReqError> {
        let err = |why: String| ReqError {
            text: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err("it is empty".to_owned()));
        }
        let lower = trimmed.to_ascii_lowercase();
        let kind = if lower == "lts" || lower == "lts/*" {
            ReqKind::Lts(None)
        } else if let Some(code) = lower.strip_prefix("lts/") {
            if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(err(format!("{code:?} is not an LTS codename")));
            }
            ReqKind::Lts(Some(code.to_owned()))
        } else {
            let mut alternatives = Vec::new();
            for alt in trimmed.split("||") {
                alternatives.push(parse_conjunction(alt.trim()).map_err(err)?);
            }
            ReqKind::AnyOf(alternatives)
        };
        Ok(VersionReq {
            text: trimmed.to_owned(),
            kind,
        })
    }

    /// The text the requirement was parsed from (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether an LTS release is asked for (`lts`, `lts/iron`).
    pub fn wants_lts(&self) -> bool {
        matches!(self.kind, ReqKind::Lts(_))
    }

    /// Whether `v` satisfies the requirement, given its LTS codename if the index says it has
    /// one (Node). Plain ranges ignore `lts`.
    pub fn matches_release(&self, v: &Version, lts: Option<&str>) -> bool {
        match &self.kind {
            ReqKind::Lts(None) => lts.is_some(),
            ReqKind::Lts(Some(code)) => lts.is_some_and(|l| l.eq_ignore_ascii_case(code)),
            ReqKind::AnyOf(alts) => alts.iter().any(|set| set.iter().all(|c| c.matches(v))),
        }
    }

    /// Whether `v` satisfies the requirement. For `lts`, where no index says which releases are
    /// LTS (a host toolchain, the npm registry), even Node majors count: they are the ones that
    /// become LTS. `lts/<codename>` means that codename's major ([`NODE_LTS_CODENAMES`]).
    pub fn matches(&self, v: &Version) -> bool {
        match &self.kind {
            ReqKind::Lts(None) => v.major.is_multiple_of(2),
            ReqKind::Lts(Some(code)) => NODE_LTS_CODENAMES
                .iter()
                .any(|(name, major)| name.eq_ignore_ascii_case(code) && v.major == *major),
            ReqKind::AnyOf(_) => self.matches_release(v, None),
        }
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for VersionReq {
    type Err = ReqError;
    fn from_str(s: &str) -> Result<VersionReq, ReqError> {
        VersionReq::parse(s)
    }
}

/// One `||` alternative: comparators separated by spaces or commas, or a hyphen range.
fn parse_conjunction(text: &str) -> Result<Vec<Comparator>, String> {
    if matches!(text, "*" | "x" | "X" | "latest" | "current" | "node") {
        return Ok(Vec::new());
    }
    if text.is_empty() {
        return Err("an alternative of `||` is empty".to_owned());
    }
    // Operators may be followed by a space (`>= 20`): glue them back to their version.
    let mut tokens: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for raw in text.split(|c: char| c == ',' || c.is_whitespace()) {
        if raw.is_empty() {
            continue;
        }
        if raw.bytes().all(|b| b"<>=~^!".contains(&b)) {
            pending_op.push_str(raw);
            continue;
        }
        tokens.push(format!("{}{raw}", std::mem::take(&mut pending_op)));
    }
    if !pending_op.is_empty() {
        return Err(format!("operator {pending_op:?} has no version after it"));
    }
    if tokens.len() == 3 && tokens[1] == "-" {
        let lo = partial(&tokens[0])?;
        let hi = partial(&tokens[2])?;
        let (hi, hi_inclusive) = if hi.given == 3 {
            (hi.floor(), true)
        } else {
            (hi.ceiling(), false)
        };
        return Ok(vec![Comparator::Range {
            lo: Some(lo.floor()),
            hi: Some(hi),
            hi_inclusive,
        }]);
    }
    tokens.iter().map(|t| parse_comparator(t)).collect()
}

fn partial(text: &str) -> Result<Partial, String> {
    let bare = text.strip_prefix(['v', 'V']).unwrap_or(text);
    match Partial::parse(bare) {
        Some(p) if p.given > 0 || p.wildcard_tail => Ok(p),
        _ => Err(format!(
            "{text:?} is not a version (expected digits like 20, 3.11 or 20.11.1)"
        )),
    }
}

fn range(lo: Option<Version>, hi: Option<Version>, hi_inclusive: bool) -> Comparator {
    Comparator::Range {
        lo,
        hi,
        hi_inclusive,
    }
}

fn parse_comparator(token: &str) -> Result<Comparator, String> {
    // Longest operators first.
    for op in ["~=", "==", "!=", ">=", "<=", ">", "<", "=", "^", "~"] {
        let Some(rest) = token.strip_prefix(op) else {
            continue;
        };
        let p = partial(rest)?;
        let full = p.given == 3;
        return Ok(match op {
            "=" | "==" => Comparator::Prefix(p),
            "!=" => Comparator::NotPrefix(p),
            ">=" => range(Some(p.floor()), None, false),
            // `>20` means past every 20.x.
            ">" if full => range(Some(p.bump(2)), None, false),
            ">" => range(Some(p.ceiling()), None, false),
            "<" => range(None, Some(p.floor()), false),
            "<=" if full => range(None, Some(p.floor()), true),
            "<=" => range(None, Some(p.ceiling()), false),
            // `^`: up to the next change of the first non-zero part given.
            "^" => {
                let given = p.given.max(1);
                let first_nonzero = p.parts[..given].iter().position(|&n| n != 0);
                let i = first_nonzero.unwrap_or(given - 1);
                range(Some(p.floor()), Some(p.bump(i)), false)
            }
            // `~20.1` → <20.2; `~20` → <21.
            "~" => range(
                Some(p.floor()),
                Some(p.bump(p.given.clamp(1, 2) - 1)),
                false,
            ),
            // PEP 440 `~=3.11` → <4; `~=3.11.2` → <3.12.
            "~=" if p.given < 2 => {
                return Err(format!("{token:?}: `~=` needs at least MAJOR.MINOR"));
            }
            _ => range(Some(p.floor()), Some(p.bump(p.given - 2)), false),
        });
    }
    Ok(Comparator::Prefix(partial(token)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parse_and_order() {
        assert_eq!(Version::parse("v20.11.1"), Some(Version::new(20, 11, 1)));
        assert_eq!(Version::parse("3.11"), Some(Version::new(3, 11, 0)));
        assert_eq!(Version::parse("3.13.0rc1"), None);
        assert_eq!(Version::parse("3.x"), None);
        assert!(Version::new(20, 9, 0) < Version::new(20, 10, 0));
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    /// (requirement, versions that match, versions that do not).
    const TABLE: &[(&str, &[&str], &[&str])] = &[
        ("20", &["20.0.0", "20.11.1"], &["19.9.9", "21.0.0"]),
        ("20.x", &["20.0.0", "20.99.0"], &["21.0.0"]),
        ("v20.11.1", &["20.11.1"], &["20.11.2", "20.11.0"]),
        (">=20 <21", &["20.0.0", "20.20.2"], &["21.0.0", "19.0.0"]),
        (">= 20, < 21", &["20.5.0"], &["21.1.0"]),
        ("^20.1.0", &["20.1.0", "20.9.0"], &["20.0.9", "21.0.0"]),
        ("^0.2.3", &["0.2.3", "0.2.9"], &["0.3.0"]),
        ("~20.1", &["20.1.0", "20.1.9"], &["20.2.0", "20.0.9"]),
        ("~20", &["20.9.0"], &["21.0.0"]),
        (">=18", &["18.0.0", "22.3.0"], &["17.9.9"]),
        (">18", &["19.0.0"], &["18.9.9"]),
        (">18.1.0", &["18.1.1"], &["18.1.0"]),
        ("<=20", &["20.9.9"], &["21.0.0"]),
        ("<=20.1.2", &["20.1.2"], &["20.1.3"]),
        ("20 || 22", &["20.1.0", "22.0.0"], &["21.0.0", "23.0.0"]),
        ("18.1 - 20", &["18.1.0", "20.9.9"], &["18.0.9", "21.0.0"]),
        // `engines.node` of npm releases.
        (
            "^20.17.0 || >=22.9.0",
            &["20.17.0", "20.99.0", "22.9.0", "26.1.0"],
            &["20.16.9", "21.9.0", "22.8.9"],
        ),
        (
            "6 >=6.2.0 || 8 || >=9.3.0",
            &["6.2.0", "8.0.0", "9.3.0"],
            &["6.1.9", "7.9.0", "9.2.9"],
        ),
        ("*", &["0.0.1", "99.0.0"], &[]),
        ("latest", &["22.0.0"], &[]),
        ("3.11", &["3.11.0", "3.11.7"], &["3.10.9", "3.12.0"]),
        ("3.11.7", &["3.11.7"], &["3.11.8"]),
        (">=3.10,<3.13", &["3.10.0", "3.12.9"], &["3.9.9", "3.13.0"]),
        ("~=3.11", &["3.11.0", "3.12.0"], &["3.10.9", "4.0.0"]),
        ("~=3.11.2", &["3.11.2", "3.11.9"], &["3.11.1", "3.12.0"]),
        ("==3.11.*", &["3.11.0", "3.11.9"], &["3.12.0"]),
        (
            ">=3.8, !=3.11.*",
            &["3.10.1", "3.12.0"],
            &["3.11.4", "3.7.0"],
        ),
    ];

    #[test]
    fn requirement_table() {
        for (req, yes, no) in TABLE {
            let parsed = VersionReq::parse(req).unwrap_or_else(|e| panic!("{e}"));
            for y in *yes {
                assert!(parsed.matches(&v(y)), "{req:?} should match {y}");
            }
            for n in *no {
                assert!(!parsed.matches(&v(n)), "{req:?} should not match {n}");
            }
        }
    }

    #[test]
    fn lts() {
        let lts = VersionReq::parse("lts").unwrap();
        assert!(lts.wants_lts());
        assert!(lts.matches_release(&v("20.11.1"), Some("Iron")));
        assert!(!lts.matches_release(&v("21.0.0"), None));
        let iron = VersionReq::parse("lts/iron").unwrap();
        assert!(iron.matches_release(&v("20.11.1"), Some("Iron")));
        assert!(!iron.matches_release(&v("18.19.0"), Some("Hydrogen")));
        // Without an index, even majors are the LTS lines, and codenames name their major.
        assert!(lts.matches(&v("20.20.2")) && !lts.matches(&v("21.1.0")));
        assert!(iron.matches(&v("20.20.2")) && !iron.matches(&v("22.1.0")));
        let krypton = VersionReq::parse("lts/Krypton").unwrap();
        assert!(krypton.matches(&v("24.3.0")) && !krypton.matches(&v("20.1.0")));
        assert!(!VersionReq::parse("lts/nosuch")
            .unwrap()
            .matches(&v("20.1.0")));
    }

    #[test]
    fn garbage_is_named() {
        for bad in [
            "", "banana", ">=", "20.x.1", "~=3", "1.2.3.4", "20 ||", ">=abc", "lts/",
        ] {
            let err = VersionReq::parse(bad).expect_err(bad);
            assert_eq!(err.text, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
