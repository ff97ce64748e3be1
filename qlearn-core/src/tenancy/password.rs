//! Password rules, hashing and verification.
//!
//! Passwords are hashed with argon2id at OWASP's recommended parameters
//! (m = 19 MiB, t = 2, p = 1) with a random 16-byte salt, stored as a PHC
//! string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), which carries
//! its own parameters so they can be raised later without breaking old
//! hashes (see [`password_needs_rehash`]). Nothing here logs or formats a
//! password.

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::{Error, Result};

/// Fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most characters a password may have (bounds the hashing input).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// argon2id memory cost in KiB (19 MiB, OWASP).
pub const ARGON2_M_COST_KIB: u32 = 19_456;
/// argon2id iterations (OWASP).
pub const ARGON2_T_COST: u32 = 2;
/// argon2id lanes (OWASP).
pub const ARGON2_P_COST: u32 = 1;

/// Bounds on the parameters of a stored hash that [`verify_password`] will
/// evaluate, so a corrupted or planted hash cannot make one login allocate
/// gigabytes or spin for minutes.
const MAX_STORED_M_COST_KIB: u32 = 256 * 1024;
const MAX_STORED_T_COST: u32 = 16;
const MAX_STORED_P_COST: u32 = 8;

const SALT_LEN: usize = 16;

/// The common passwords of at least [`MIN_PASSWORD_CHARS`] characters, one
/// a line, lower-case: the 20,000 most common passwords list that Django
/// ships (`django/contrib/auth/common-passwords.txt.gz`, BSD-3-Clause, from
/// Royce Williams' list of passwords seen in breaches), less the entries our
/// length rule already refuses (8,354 remain).
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// Whether `password` (compared case-insensitively) is on the shipped list of
/// common, breached passwords (OWASP ASVS 2.1.7).
pub fn is_common_password(password: &str) -> bool {
    static SET: OnceLock<std::collections::HashSet<&'static str>> = OnceLock::new();
    let set = SET.get_or_init(|| COMMON_PASSWORDS.lines().collect());
    set.contains(password.to_lowercase().as_str())
}

/// Checks the password rules of a new password: 8 to 1,024 characters
/// (Unicode scalar values), and not one of the common, breached passwords
/// ([`is_common_password`]). Existing passwords are never re-checked at
/// login. The error names the field `password` and the rule, and never
/// contains the password.
pub fn validate_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
        return Err(Error::field(
            "password",
            format!("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters, got {n}"),
        ));
    }
    if is_common_password(password) {
        return Err(Error::field(
            "password",
            "is one of the most common passwords seen in breaches; choose another",
        ));
    }
    Ok(())
}

fn hasher() -> Result<Argon2<'static>> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Validates `password` ([`validate_password`]) and hashes it with argon2id
/// and a fresh random salt; returns the PHC string to store.
///
/// Costs about 20 to 50 ms of CPU: call it off the async executor
/// (e.g. `spawn_blocking`).
pub fn hash_password(password: &str) -> Result<String> {
    validate_password(password)?;
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| Error::Internal(format!("random salt: {e}")))?;
    hasher()?
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// The hash an unknown user's login is verified against, computed once with
/// the same parameters as real hashes so both cost the same.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            hasher()
                .ok()?
                .hash_password_with_salt(b"qlearn: no such user", b"qlearn-dummy-salt")
                .ok()
                .map(|h| h.to_string())
        })
        .as_deref()
}

/// Computes the dummy hash now, so the first login of an unknown user is not
/// slower than later ones. Optional; call once at start.
pub fn prepare_password_hashing() {
    let _ = dummy_hash();
}

/// Verifies `stored` parses as an argon2 PHC hash with sane parameters.
fn parse_stored(stored: &str) -> Option<PasswordHash> {
    let parsed = PasswordHash::new(stored).ok()?;
    let params = Params::try_from(&parsed).ok()?;
    (params.m_cost() <= MAX_STORED_M_COST_KIB
        && params.t_cost() <= MAX_STORED_T_COST
        && params.p_cost() <= MAX_STORED_P_COST)
        .then_some(parsed)
}

fn verify_against(password: &str, hash: &PasswordHash) -> bool {
    hasher().is_ok_and(|h| h.verify_password(password.as_bytes(), hash).is_ok())
}

/// Whether `password` matches the stored PHC hash.
///
/// `stored` is `None` for an unknown user: the password is then verified
/// against a fixed dummy hash with the same parameters and `false` is
/// returned, so unknown and known users cost the same time. A malformed
/// stored hash (or one with absurd parameters) also costs a dummy
/// verification and returns `false`; nothing here panics. The comparison of
/// hash outputs is constant-time.
///
/// Costs about 20 to 50 ms of CPU: call it off the async executor.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    if let Some(hash) = stored.and_then(parse_stored) {
        return verify_against(password, &hash);
    }
    if let Some(hash) = dummy_hash().and_then(parse_stored) {
        let _ = verify_against(password, &hash);
    }
    false
}

/// Whether a stored hash was made with other parameters than today's
/// (algorithm, version, m, t, p), so the host may re-hash the password after
/// a successful login. A malformed or incomplete hash also needs re-hashing.
pub fn password_needs_rehash(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.salt.is_none()
        || parsed.hash.is_none()
        || parsed.algorithm.as_str() != "argon2id"
        || parsed.version != Some(0x13)
        || params.m_cost() != ARGON2_M_COST_KIB
        || params.t_cost() != ARGON2_T_COST
        || params.p_cost() != ARGON2_P_COST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for p in ["password", "Password1", "QWERTYUIOP", "iloveyou"] {
            let err = validate_password(p).unwrap_err().to_string();
            assert!(
                err.contains("password") && err.contains("common"),
                "{p}: {err}"
            );
            if p != "password" {
                assert!(!err.contains(p), "the message must not echo the password");
            }
        }
        assert!(hash_password("12345678").is_err());
        for p in ["correct horse battery", "long enough", "a new password"] {
            assert!(validate_password(p).is_ok(), "{p}");
        }
        // Every shipped entry is refused, and none is shorter than the length
        // rule (those would be dead weight).
        for line in COMMON_PASSWORDS.lines() {
            assert!(line.chars().count() >= MIN_PASSWORD_CHARS, "{line:?}");
            assert!(is_common_password(line));
        }
        assert!(COMMON_PASSWORDS.lines().count() > 8_000);
    }

    #[test]
    fn length_rule_counts_chars() {
        assert!(validate_password("1234567x").is_ok());
        assert!(validate_password(&"x".repeat(1024)).is_ok());
        // 8 characters, 16 bytes.
        assert!(validate_password("éééééééé").is_ok());
        for bad in ["", "1234567", &"x".repeat(1025)] {
            let err = validate_password(bad).unwrap_err();
            match &err {
                Error::InvalidField { field, message } => {
                    assert_eq!(field, "password");
                    assert!(message.contains("8 to 1024"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        // The message never echoes the password.
        let err = validate_password("hunter2").unwrap_err().to_string();
        assert!(!err.contains("hunter2"));
        // Hashing applies the rule too.
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!password_needs_rehash(&h));
        assert!(verify_password("correct horse battery", Some(&h)));
        assert!(!verify_password("correct horse batterx", Some(&h)));
        // Salts are random: the same password hashes differently.
        let h2 = hash_password("correct horse battery").unwrap();
        assert_ne!(h, h2);
        assert!(verify_password("correct horse battery", Some(&h2)));
    }

    #[test]
    fn unknown_user_and_malformed_hashes_are_false() {
        assert!(!verify_password("whatever password", None));
        assert!(!verify_password("qlearn: no such user", None));
        assert!(dummy_hash().is_some_and(|d| d.starts_with("$argon2id$v=19$m=19456,t=2,p=1$")));
        for bad in [
            "",
            "plaintext",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            "$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$bcrypt$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ] {
            assert!(!verify_password("some password", Some(bad)), "{bad}");
            assert!(password_needs_rehash(bad), "{bad}");
        }
        // Old, weaker parameters still verify but ask for a re-hash.
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password_with_salt(b"old password", b"0123456789abcdef")
        .unwrap()
        .to_string();
        assert!(verify_password("old password", Some(&weak)));
        assert!(password_needs_rehash(&weak));
    }

    #[test]
    fn stored_hashes_past_each_cost_bound_are_refused() {
        // Genuine hashes of the password, cheap to compute (small memory):
        // at each bound they verify, one past any bound they are refused
        // unverified.
        let stored = |m: u32, t: u32, p: u32| {
            Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(m, t, p, None).unwrap(),
            )
            .hash_password_with_salt(b"stored password", b"0123456789abcdef")
            .unwrap()
            .to_string()
        };
        let at_bounds = stored(64, MAX_STORED_T_COST, MAX_STORED_P_COST);
        assert!(verify_password("stored password", Some(&at_bounds)));
        for (m, t, p) in [
            (64, MAX_STORED_T_COST + 1, 1),
            (72, 1, MAX_STORED_P_COST + 1),
        ] {
            let h = stored(m, t, p);
            assert!(!verify_password("stored password", Some(&h)), "{h}");
            assert!(password_needs_rehash(&h), "{h}");
        }
    }
}
