//! A suite's `InRelease`: the Release file with an inline OpenPGP signature. Its signature is
//! verified against the Debian archive keyring before a single field is read, and only the
//! signed text is parsed. Expired (`Valid-Until` in the past) releases are refused.
//!
//! OpenPGP is `pgp` (rpgp): pure Rust (RustCrypto RSA and EdDSA), MIT/Apache-2.0 like this
//! workspace, and it builds here without a C toolchain; `sequoia-openpgp` is LGPL and its
//! default backend links Nettle.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::packet::Signature;
use pgp::types::KeyDetails;
use sha2::{Digest as _, Sha256};

use crate::control;
use crate::error::{Error, Result};

/// The Debian archive keys for bookworm and trixie (main archive, security archive, stable
/// release), copied from the `debian-archive-keyring` package: see `keys/README.md`.
const EMBEDDED_KEYS: &[(&str, &[u8])] = &[
    (
        "debian-archive-bookworm-automatic",
        include_bytes!("../keys/debian-archive-bookworm-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-security-automatic",
        include_bytes!("../keys/debian-archive-bookworm-security-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-stable",
        include_bytes!("../keys/debian-archive-bookworm-stable.gpg"),
    ),
    (
        "debian-archive-trixie-automatic",
        include_bytes!("../keys/debian-archive-trixie-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-security-automatic",
        include_bytes!("../keys/debian-archive-trixie-security-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-stable",
        include_bytes!("../keys/debian-archive-trixie-stable.gpg"),
    ),
];

/// The public keys an InRelease may be signed with.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    /// Where the keys came from, for messages.
    pub origin: String,
    /// sha256 (hex) of the key material as read: what a recorded verification is keyed by.
    digest: String,
}

impl Keyring {
    /// The keys built into Kiln.
    pub fn embedded() -> Result<Keyring> {
        let mut keys = Vec::new();
        let mut digest = Sha256::new();
        for (name, bytes) in EMBEDDED_KEYS {
            keys.extend(parse_keys(bytes, name)?);
            // Length-prefixed, so no two different key sets hash the same bytes.
            for field in [name.as_bytes(), bytes] {
                digest.update((field.len() as u64).to_le_bytes());
                digest.update(field);
            }
        }
        Ok(Keyring {
            keys,
            origin: "Kiln's embedded Debian archive keys".to_owned(),
            digest: hex::encode(digest.finalize()),
        })
    }

    /// The keys of a binary (`.gpg`) or ASCII-armored (`.asc`) keyring file, such as
    /// `/usr/share/keyrings/debian-archive-keyring.gpg`.
    pub fn from_file(path: &Path) -> Result<Keyring> {
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {what}"), e))?;
        let keys = if bytes.starts_with(b"-----BEGIN PGP") {
            SignedPublicKey::from_armor_many(Cursor::new(&bytes))
                .map_err(|e| keyring_error(&what, e))?
                .0
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| keyring_error(&what, e))?
        } else {
            parse_keys(&bytes, &what)?
        };
        if keys.is_empty() {
            return Err(Error::Keyring {
                what,
                why: "contains no public keys".to_owned(),
            });
        }
        Ok(Keyring {
            keys,
            origin: what,
            digest: hex::encode(Sha256::digest(&bytes)),
        })
    }

    /// sha256 (hex) of the keys as read (the embedded set, or the keyring file's bytes).
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

fn keyring_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Keyring {
        what: what.to_owned(),
        why: e.to_string(),
    }
}

fn parse_keys(bytes: &[u8], what: &str) -> Result<Vec<SignedPublicKey>> {
    SignedPublicKey::from_bytes_many(Cursor::new(bytes))
        .map_err(|e| keyring_error(what, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| keyring_error(what, e))
}

/// Size and sha256 of one file listed in a Release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSum {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// The verified content of an InRelease.
#[derive(Debug, Clone)]
pub struct Release {
    /// What was asked for (`trixie`, `trixie-security`).
    pub suite: String,
    pub codename: String,
    /// The `Suite` field (`stable`, `oldstable-security`).
    pub archive: String,
    /// `Date`, as written, and as seconds since the epoch.
    pub date: String,
    pub date_unix: i64,
    pub valid_until_unix: Option<i64>,
    /// `SHA256` section: path relative to `dists/SUITE/` → size and hash.
    pub files: BTreeMap<String, FileSum>,
    /// sha256 (hex) of the InRelease bytes as fetched: what a lock records.
    pub inrelease_sha256: String,
    /// Fingerprint of the key whose signature verified.
    pub signed_by: String,
}

impl Release {
    /// The entry for `path` (`main/binary-amd64/Packages.xz`), or an error naming the suite.
    pub fn file(&self, path: &str) -> Result<&FileSum> {
        self.files.get(path).ok_or_else(|| Error::Parse {
            what: format!("{} Release", self.suite),
            why: format!("does not list {path}"),
        })
    }
}

/// What a good signature on an InRelease vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signed text with LF line ends: the Release file.
    pub text: String,
    /// Fingerprint of the key whose signature verified.
    pub signed_by: String,
}

/// Verifies `bytes` (an InRelease fetched from `url` for `suite`) with `keyring` and parses the
/// signed text. `now` is seconds since the epoch (a parameter so tests can pin it).
pub fn verify_inrelease(
    bytes: &[u8],
    keyring: &Keyring,
    url: &str,
    suite: &str,
    now: i64,
) -> Result<Release> {
    let signed = verify_signature(bytes, keyring, url, now)?;
    release_of(
        &signed,
        &hex::encode(Sha256::digest(bytes)),
        url,
        suite,
        now,
    )
}

/// The signature half of [`verify_inrelease`]: whether a signature in `bytes` verifies with a
/// key of `keyring` that was valid when it signed, and what it signed. The answer depends on
/// nothing but `bytes` and the keys (and on `now` only to refuse signatures from more than a
/// day in the future, which a later `now` refuses no more), so a caller may record it per
/// InRelease digest and keyring digest; [`release_of`] must still run on every use.
pub fn verify_signature(bytes: &[u8], keyring: &Keyring, url: &str, now: i64) -> Result<Signed> {
    let refuse = |why: String| Error::Release {
        url: url.to_owned(),
        why,
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| refuse("not a UTF-8 cleartext-signed message".to_owned()))?;
    let (message, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| refuse(format!("not an OpenPGP cleartext-signed message: {e}")))?;
    let signed = message.signed_text();
    let signed_by = message
        .signatures()
        .iter()
        .find_map(|sig| verifying_key(sig, signed.as_bytes(), keyring, now))
        .ok_or_else(|| {
            refuse(format!(
                "no signature verifies with {} ({} signature(s) present)",
                keyring.origin,
                message.signatures().len()
            ))
        })?;
    // What was hashed uses CRLF line ends (RFC 9580 §7.1); the Release itself uses LF.
    Ok(Signed {
        text: signed.replace("\r\n", "\n"),
        signed_by,
    })
}

/// The Release of `signed` (the verified text of the InRelease whose sha256 is
/// `inrelease_sha256`), checked against what is asked now: that it is `suite`'s, and not past
/// its `Valid-Until` at `now`.
pub fn release_of(
    signed: &Signed,
    inrelease_sha256: &str,
    url: &str,
    suite: &str,
    now: i64,
) -> Result<Release> {
    let refuse = |why: String| Error::Release {
        url: url.to_owned(),
        why,
    };
    let mut release = parse_release(&signed.text, url, suite)?;
    // A mirror serving another suite's (validly signed) Release under this name is a
    // downgrade or mix-up, not this suite.
    if release.codename != suite && release.archive != suite {
        return Err(refuse(format!(
            "is the Release of {:?} (Codename) / {:?} (Suite), not of {suite:?}",
            release.codename, release.archive
        )));
    }
    if let Some(until) = release.valid_until_unix {
        if now > until {
            return Err(refuse(format!(
                "expired: Valid-Until is {} seconds in the past; the mirror is stale (or this machine's clock is wrong)",
                now - until
            )));
        }
    }
    inrelease_sha256.clone_into(&mut release.inrelease_sha256);
    signed.signed_by.clone_into(&mut release.signed_by);
    Ok(release)
}

/// The fingerprint of a key (primary or subkey) in `keyring` that `sig` verifies with, where
/// the key is not revoked, a subkey's binding signature verifies with its primary key, and the
/// key had not expired when the signature was made. (Whole-key `verify_bindings` is not used:
/// Debian's keys carry third-party certifications that cannot be checked without the
/// certifiers' keys, and the keyring itself is the trust anchor.)
fn verifying_key(sig: &Signature, data: &[u8], keyring: &Keyring, now: i64) -> Option<String> {
    let created = sig.created().map(|t| i64::from(t.as_secs()))?;
    if created > now + 24 * 3600 {
        return None;
    }
    for key in &keyring.keys {
        if !key.details.revocation_signatures.is_empty() {
            continue;
        }
        let own_id = key.primary_key.legacy_key_id();
        let primary_expiry = key
            .details
            .users
            .iter()
            .flat_map(|u| &u.signatures)
            .filter(|s| s.issuer_key_id().contains(&&own_id))
            .filter_map(|s| s.key_expiration_time().map(|d| d.as_secs()))
            .max();
        if alive(&key.primary_key, primary_expiry, created)
            && sig.verify(&key.primary_key, data).is_ok()
        {
            return Some(key.primary_key.fingerprint().to_string());
        }
        for sub in &key.public_subkeys {
            if sub.verify_bindings(&key.primary_key).is_err() {
                continue;
            }
            let expiry = sub
                .signatures
                .iter()
                .filter_map(|s| s.key_expiration_time().map(|d| d.as_secs()))
                .max();
            if alive(&sub.key, expiry, created) && sig.verify(&sub.key, data).is_ok() {
                return Some(sub.key.fingerprint().to_string());
            }
        }
    }
    None
}

/// Whether a key created at `key.created_at()` and valid for `expiry` seconds (0 or none:
/// forever) was valid at `at`. The newest self-signature's expiry counts (keys get extended).
fn alive(key: &impl KeyDetails, expiry: Option<u32>, at: i64) -> bool {
    let born = i64::from(key.created_at().as_secs());
    at >= born && expiry.is_none_or(|d| d == 0 || at <= born + i64::from(d))
}

/// Parses Release text (already verified).
pub fn parse_release(text: &str, url: &str, suite: &str) -> Result<Release> {
    let what = format!("{url} (Release)");
    let stanzas = control::parse(text, &what)?;
    let stanza = stanzas.first().ok_or_else(|| Error::Parse {
        what: what.clone(),
        why: "empty Release".to_owned(),
    })?;
    let bad = |why: String| Error::Parse {
        what: what.clone(),
        why,
    };
    let date = stanza.require("Date", &what)?.to_owned();
    let date_unix = parse_date(&date).map_err(|e| bad(format!("Date: {e}")))?;
    let valid_until_unix = stanza
        .get("Valid-Until")
        .map(parse_date)
        .transpose()
        .map_err(|e| bad(format!("Valid-Until: {e}")))?;
    let mut files = BTreeMap::new();
    for line in stanza.require("SHA256", &what)?.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts[..] {
            [] => {}
            [sha256, size, path] => {
                let size = size
                    .parse()
                    .map_err(|_| bad(format!("SHA256 line {line:?}: size is not a number")))?;
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!("SHA256 line {line:?}: not a sha256")));
                }
                files.insert(
                    path.to_owned(),
                    FileSum {
                        size,
                        sha256: sha256.to_ascii_lowercase(),
                    },
                );
            }
            _ => {
                return Err(bad(format!(
                    "SHA256 line {line:?}: expected `hash size path`"
                )))
            }
        }
    }
    Ok(Release {
        suite: suite.to_owned(),
        codename: stanza.get("Codename").unwrap_or_default().to_owned(),
        archive: stanza.get("Suite").unwrap_or_default().to_owned(),
        date,
        date_unix,
        valid_until_unix,
        files,
        inrelease_sha256: String::new(),
        signed_by: String::new(),
    })
}

/// RFC 2822-style dates as Release files write them: `Sat, 21 Nov 2026 09:15:44 UTC`.
pub fn parse_date(s: &str) -> std::result::Result<i64, String> {
    let bad = || format!("{s:?} is not a date like `Sat, 21 Nov 2026 09:15:44 UTC`");
    let rest = s.split_once(',').map_or(s, |(_, r)| r).trim();
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, zone] = parts[..] else {
        return Err(bad());
    };
    if !matches!(zone, "UTC" | "GMT" | "+0000" | "Z") {
        return Err(format!("{s:?}: only UTC dates are supported"));
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month).ok_or_else(bad)? as i64 + 1;
    let day: i64 = day.parse().map_err(|_| bad())?;
    let year: i64 = year.parse().map_err(|_| bad())?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<std::result::Result<_, _>>()?;
    let [h, m, sec] = hms[..] else {
        return Err(bad());
    };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC").unwrap(), 0);
        assert_eq!(
            parse_date("Sat, 21 Nov 2026 09:15:44 UTC").unwrap(),
            1_795_252_544
        );
        assert_eq!(
            parse_date("Tue, 29 Feb 2028 12:00:00 UTC").unwrap(),
            1_835_438_400
        );
        assert!(parse_date("Sat, 21 Nov 2026 09:15:44 CET").is_err());
        assert!(parse_date("yesterday").is_err());
    }

    #[test]
    fn parses_the_sha256_list() {
        let text = "Origin: Debian\nCodename: trixie\nDate: Sat, 21 Nov 2026 09:15:44 UTC\nSHA256:\n 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 9679304 main/binary-amd64/Packages.xz\n";
        let release = parse_release(text, "u", "trixie").unwrap();
        assert_eq!(release.codename, "trixie");
        assert_eq!(
            release.file("main/binary-amd64/Packages.xz").unwrap().size,
            9679304
        );
        assert!(release.file("main/binary-arm64/Packages.xz").is_err());
        assert!(release.valid_until_unix.is_none());
    }

    #[test]
    fn embedded_keys_parse() {
        let keyring = Keyring::embedded().unwrap();
        assert_eq!(keyring.keys.len(), 6);
        // Every signing subkey is bound to its primary key.
        for key in &keyring.keys {
            for sub in &key.public_subkeys {
                sub.verify_bindings(&key.primary_key).unwrap();
            }
        }
    }

    #[test]
    fn a_keyring_file_can_replace_the_embedded_keys() {
        let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys");
        let file = keys.join("debian-archive-trixie-stable.gpg");
        let keyring = Keyring::from_file(&file).unwrap();
        assert_eq!(keyring.keys.len(), 1);
        assert_eq!(keyring.origin, file.display().to_string());
        let err = Keyring::from_file(&keys.join("README.md"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "OpenPGP keyring {}",
                keys.join("README.md").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_refused() {
        let keyring = Keyring::embedded().unwrap();
        let err = verify_inrelease(
            b"Date: x\n",
            &keyring,
            "http://m/dists/trixie/InRelease",
            "trixie",
            0,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("http://m/dists/trixie/InRelease: refused: not an OpenPGP"),
            "{err}"
        );
    }
}
