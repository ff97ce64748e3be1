//! Random identifiers, API keys and JWT signing secrets.
//!
//! Everything random here comes from the operating system's CSPRNG
//! (`getrandom`) and is encoded as unpadded base64url, so it is URL-safe.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Prefix of every API key; lets the host tell a key from a JWT
/// (which starts with `eyJ`) without a lookup.
pub const API_KEY_PREFIX: &str = "qlk_";
/// Characters of a key shown in listings to identify it (prefix included).
pub const API_KEY_DISPLAY_CHARS: usize = 12;
/// Random bytes in an API key (256 bits).
const API_KEY_BYTES: usize = 32;
/// Characters of an API key's random part (32 bytes in base64url).
const API_KEY_BODY_CHARS: usize = 43;
/// Characters of an API key's checksum: 48 bits of HMAC-SHA256 of the
/// prefix and random part, in base64url.
const API_KEY_CHECK_CHARS: usize = 8;
/// Bytes of the checksum.
const API_KEY_CHECK_BYTES: usize = 6;
/// Length of a key issued before keys carried a checksum (prefix and
/// random part only).
pub const LEGACY_API_KEY_LEN: usize = API_KEY_PREFIX.len() + API_KEY_BODY_CHARS;
/// Length of a key issued now (with its checksum).
pub const API_KEY_LEN: usize = LEGACY_API_KEY_LEN + API_KEY_CHECK_CHARS;
/// Random bytes in an id (128 bits; SPEC asks for at least 64).
const ID_BYTES: usize = 16;
/// Shortest JWT secret accepted (HS256 wants a key of at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Random bytes in a generated JWT secret.
const GENERATED_SECRET_BYTES: usize = 64;

/// `N` bytes from the OS CSPRNG.
///
/// # Panics
/// If the operating system's random number generator fails, which on the
/// supported platforms only happens when it is absent: there is nothing
/// safe to fall back to for ids and keys.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("the operating system's random number generator failed: {e}");
    }
    buf
}

/// A new opaque id for a user, model or API key: 128 random bits as 22
/// characters of unpadded base64url. Unguessable and not countable, unlike
/// sequential integers.
///
/// # Panics
/// Only if the OS random number generator fails.
pub fn new_id() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<ID_BYTES>())
}

/// A new API key and its display prefix.
///
/// The key is `qlk_`, 43 characters of unpadded base64url (32 random
/// bytes, 256 bits), then an 8-character checksum: the first 48 bits of
/// HMAC-SHA256 under `check_key` (a secret of the deployment) of what
/// precedes it. [`api_key_form`] checks it, so a made-up or mistyped key is
/// refused without a storage read, and one cannot make up keys that pass
/// without the secret. Show the key to the user once and store only
/// [`hash_api_key`] of it; the display prefix (its first 12 characters)
/// may be stored and listed so users can tell their keys apart.
///
/// # Panics
/// Only if the OS random number generator fails.
pub fn generate_api_key(check_key: &[u8]) -> (String, String) {
    let mut key = format!(
        "{API_KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<API_KEY_BYTES>())
    );
    let check = URL_SAFE_NO_PAD.encode(key_check(check_key, &key).finalize().into_bytes());
    key.push_str(&check[..API_KEY_CHECK_CHARS]);
    let display = key.chars().take(API_KEY_DISPLAY_CHARS).collect();
    (key, display)
}

/// The HMAC of a key's prefix and random part under `check_key`.
fn key_check(check_key: &[u8], body: &str) -> hmac::Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(check_key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body.as_bytes());
    mac
}

/// What an API key's form says, before any lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyForm {
    /// The current form with a checksum that matches: worth looking up.
    Checked,
    /// The form of keys issued before keys carried a checksum
    /// (`LEGACY_API_KEY_LEN` characters): still valid, looked up.
    Legacy,
    /// Neither: a wrong checksum, a wrong length or a character outside
    /// base64url. No such key was ever issued; refuse it without a lookup.
    Invalid,
}

/// Checks the form of `token` (which starts with [`API_KEY_PREFIX`]) and,
/// for a current key, its checksum under `check_key` (compared in constant
/// time).
pub fn api_key_form(token: &str, check_key: &[u8]) -> KeyForm {
    let Some(rest) = token.strip_prefix(API_KEY_PREFIX) else {
        return KeyForm::Invalid;
    };
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return KeyForm::Invalid;
    }
    match token.len() {
        LEGACY_API_KEY_LEN => KeyForm::Legacy,
        API_KEY_LEN => {
            let (body, check) = token.split_at(LEGACY_API_KEY_LEN);
            let mut tag = [0u8; API_KEY_CHECK_BYTES];
            let decoded = URL_SAFE_NO_PAD.decode_slice(check.as_bytes(), &mut tag);
            if decoded != Ok(API_KEY_CHECK_BYTES)
                || key_check(check_key, body)
                    .verify_truncated_left(&tag)
                    .is_err()
            {
                return KeyForm::Invalid;
            }
            KeyForm::Checked
        }
        _ => KeyForm::Invalid,
    }
}

/// The value stored for (and looked up by) an API key: SHA-256, lowercase
/// hex.
///
/// A fast hash is right here, unlike for passwords: a key carries 256 random
/// bits, so nobody can guess it or brute-force the hash, and a slow hash
/// would only make every authenticated request slower. The hash being
/// deterministic is what lets the host find the key with one indexed
/// lookup; a leaked database still does not reveal usable keys.
pub fn hash_api_key(key: &str) -> String {
    to_hex(&Sha256::digest(key.as_bytes()))
}

/// `bytes` as lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether a bearer token looks like an API key (has the `qlk_` prefix)
/// rather than a JWT. Only a routing hint: the key is still looked up.
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

/// Checks a JWT signing secret: at least 32 bytes. The error names
/// `SECRET_KEY` and gives the length, never the secret.
pub fn validate_secret(secret: &[u8]) -> Result<()> {
    if secret.len() >= MIN_SECRET_BYTES {
        Ok(())
    } else {
        Err(Error::field(
            "SECRET_KEY",
            format!(
                "must be at least {MIN_SECRET_BYTES} bytes, got {}",
                secret.len()
            ),
        ))
    }
}

/// A new JWT signing secret for when `SECRET_KEY` is not configured:
/// 64 random bytes (512 bits) as 86 characters of unpadded base64url, so it
/// can be stored as text and used (as its UTF-8 bytes) as the HMAC key.
///
/// # Panics
/// Only if the OS random number generator fails.
pub fn generate_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<GENERATED_SECRET_BYTES>())
}

/// A validated JWT signing secret whose `Debug` output is redacted, so it
/// cannot end up in logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    /// Wraps `bytes` after [`validate_secret`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        validate_secret(&bytes)?;
        Ok(SecretKey(bytes))
    }

    /// A freshly generated secret ([`generate_secret`]'s text as bytes).
    ///
    /// # Panics
    /// Only if the OS random number generator fails.
    pub fn generate() -> Self {
        SecretKey(generate_secret().into_bytes())
    }

    /// The key bytes, for the HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn is_b64url(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn ids_are_22_url_safe_chars_and_distinct() {
        let ids: HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 22);
            assert!(is_b64url(id), "{id}");
            assert_eq!(URL_SAFE_NO_PAD.decode(id).unwrap().len(), 16);
        }
    }

    #[test]
    fn api_keys() {
        let (key, display) = generate_api_key(b"the deployment's check key");
        assert_eq!(key.len(), 4 + 43 + 8);
        assert!(key.starts_with("qlk_") && is_b64url(&key[4..]), "{key}");
        assert_eq!(display.len(), 12);
        assert!(key.starts_with(&display));
        assert!(looks_like_api_key(&key));
        assert!(!looks_like_api_key("eyJhbGciOiJIUzI1NiJ9.e30.sig"));
        assert!(!looks_like_api_key(""));
        let (other, _) = generate_api_key(b"the deployment's check key");
        assert_ne!(key, other);

        let h = hash_api_key(&key);
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(h, hash_api_key(&key));
        assert_ne!(h, hash_api_key(&other));
        // Known vector: SHA-256("abc").
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn api_key_checksums() {
        let ck: &[u8] = b"the deployment's check key";
        for _ in 0..200 {
            let (key, _) = generate_api_key(ck);
            assert_eq!(api_key_form(&key, ck), KeyForm::Checked, "{key}");
            // Another deployment's secret: not this one's key.
            assert_eq!(api_key_form(&key, b"another key"), KeyForm::Invalid);
            // Any one character changed, anywhere after the prefix.
            for i in 4..key.len() {
                let mut b = key.clone().into_bytes();
                b[i] = if b[i] == b'A' { b'B' } else { b'A' };
                let changed = String::from_utf8(b).unwrap();
                assert_eq!(api_key_form(&changed, ck), KeyForm::Invalid, "{changed}");
            }
            // Without its checksum it has the old form.
            assert_eq!(api_key_form(&key[..47], ck), KeyForm::Legacy);
        }
        let legacy = format!("qlk_{}", "x".repeat(43));
        assert_eq!(api_key_form(&legacy, ck), KeyForm::Legacy);
        for bad in [
            "qlk_",
            "qlk_short",
            &format!("qlk_{}", "x".repeat(42)),
            &format!("qlk_{}", "x".repeat(44)),
            &format!("qlk_{}", "x".repeat(51)),
            &format!("qlk_{}", "x".repeat(52)),
            &format!("qlk_{}+", "x".repeat(42)),
            &format!("qlk_{}é", "x".repeat(41)),
            &format!("xlk_{}", "x".repeat(43)),
        ] {
            assert_eq!(api_key_form(bad, ck), KeyForm::Invalid, "{bad}");
        }
    }

    #[test]
    fn secrets() {
        assert!(validate_secret(&[0u8; 32]).is_ok());
        let err = validate_secret(b"too short").unwrap_err().to_string();
        assert!(
            err.contains("SECRET_KEY") && err.contains("32") && !err.contains("too short"),
            "{err}"
        );
        let s = generate_secret();
        assert_eq!(s.len(), 86);
        assert!(is_b64url(&s));
        assert!(validate_secret(s.as_bytes()).is_ok());
        assert_ne!(s, generate_secret());

        let k = SecretKey::new(s.clone()).unwrap();
        assert_eq!(k.as_bytes(), s.as_bytes());
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&s) && dbg.contains("86 bytes"), "{dbg}");
        assert!(SecretKey::new(b"short".to_vec()).is_err());
        assert_eq!(SecretKey::generate().as_bytes().len(), 86);
    }
}
