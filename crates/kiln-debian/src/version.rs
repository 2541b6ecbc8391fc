//! Debian version numbers, `[epoch:]upstream[-revision]`, compared as Debian Policy §5.6.12
//! and dpkg's `verrevcmp` say: epochs numerically; then upstream and revision each as
//! alternating non-digit parts (compared character by character, letters before non-letters,
//! `~` before everything, even the end of the part) and digit parts (compared numerically).
//! A small tested implementation: the `debversion` crate brings a regex engine for this.

use std::cmp::Ordering;
use std::fmt;

/// A parsed version; equality and order follow Debian's rules (`1.0` == `1.0-0`, `01` == `1`).
#[derive(Debug, Clone)]
pub struct Version {
    pub epoch: u64,
    pub upstream: String,
    /// Empty when the version has no `-revision`.
    pub revision: String,
}

impl Version {
    /// Parses `s`; an error says what is wrong (Policy: the upstream part is mandatory and starts
    /// with a digit; only alphanumerics and `.+-~:` (and `-`/`:` only where allowed)).
    pub fn parse(s: &str) -> Result<Version, String> {
        let s = s.trim();
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => (
                e.parse::<u64>()
                    .map_err(|_| format!("version {s:?}: epoch {e:?} is not a number"))?,
                rest,
            ),
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "version {s:?}: the upstream part must start with a digit"
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".+~-:".contains(c);
        if let Some(bad) = upstream.chars().find(|c| !allowed(*c)) {
            return Err(format!("version {s:?}: character {bad:?} is not allowed"));
        }
        if let Some(bad) = revision
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ".+~".contains(*c)))
        {
            return Err(format!(
                "version {s:?}: character {bad:?} is not allowed in the revision"
            ));
        }
        if rest.contains('-') && revision.is_empty() {
            return Err(format!("version {s:?}: empty revision after '-'"));
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.to_owned(),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(&self.upstream, &other.upstream))
            .then_with(|| compare_part(&self.revision, &other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// The weight of one character in a non-digit part; `None` is the end of the part.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`.
fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit prefix, character by character.
        loop {
            let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
            let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let order = weight(ca).cmp(&weight(cb));
            if order != Ordering::Equal {
                return order;
            }
            a = &a[1..];
            b = &b[1..];
        }
        // Digit run, numerically (leading zeros ignored, any length).
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (na, nb) = (digits(a), digits(b));
        let trim = |s: &'_ [u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
        let (da, db) = (&a[..na], &b[..nb]);
        let (da, db) = (&da[trim(da)..], &db[trim(db)..]);
        let order = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if order != Ordering::Equal {
            return order;
        }
        a = &a[na..];
        b = &b[nb..];
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn compares_as_dpkg_does() {
        // Each pair checked with `dpkg --compare-versions A lt B` on a Debian host.
        let ascending = [
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0", "1.0a"),
            ("1.0a", "1.0+"),
            ("1.0", "1.0.1"),
            ("1.0-1", "1.0-2"),
            ("1.0-9", "1.0-10"),
            ("2.36-9+deb12u14", "2.36-9+deb12u15"),
            ("3.0.20-1~deb12u2", "3.0.20-1"),
            ("1:0.1", "2:0.0"),
            ("9.9", "1:0.1"),
            ("1.2.13.dfsg-1", "1.3.dfsg+really1.3.1-1+deb13u1"),
            ("1.0-1", "1.0.1-0"),
            ("0.5.12-2", "0.5.12-12"),
        ];
        for (a, b) in ascending {
            assert!(v(a) < v(b), "{a} < {b}");
            assert!(v(b) > v(a), "{b} > {a}");
        }
        for (a, b) in [
            ("1.0", "1.0-0"),
            ("01", "1"),
            ("0:1.0", "1.0"),
            ("1.00", "1.0"),
        ] {
            assert_eq!(v(a), v(b), "{a} == {b}");
        }
    }

    #[test]
    fn parses_parts_and_rejects_bad_versions() {
        let parsed = v("1:1.3.dfsg+really1.3.1-1+deb13u1");
        assert_eq!(parsed.epoch, 1);
        assert_eq!(parsed.upstream, "1.3.dfsg+really1.3.1");
        assert_eq!(parsed.revision, "1+deb13u1");
        assert_eq!(parsed.to_string(), "1:1.3.dfsg+really1.3.1-1+deb13u1");
        // The revision is after the last hyphen.
        assert_eq!(v("1.0-beta-3").upstream, "1.0-beta");
        for bad in ["", "a1.0", "x:1.0", "1.0-", "1.0 1", "1.0-a_b"] {
            assert!(Version::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
