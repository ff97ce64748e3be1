//! Email address normalization.
//!
//! Deliberately a plausibility check, not RFC 5322 parsing: the address is
//! the login name, so it must be unambiguous (one canonical form per
//! account) and obviously well-formed, nothing more.

use crate::{Error, Result};

/// Shortest accepted address (the shape rules already imply at least 5).
pub const MIN_EMAIL_CHARS: usize = 3;
/// Longest accepted address (the SMTP path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Trims and lowercases `email` and checks its shape: 3 to 254 characters,
/// exactly one `@` with a non-empty local part before it, a domain after it
/// that contains a dot and has no empty labels, and no whitespace or
/// control characters anywhere. Returns the canonical form to store and
/// look up. The error names the field `email`.
pub fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let bad = |msg: &str| Err(Error::field("email", msg));
    let n = e.chars().count();
    if !(MIN_EMAIL_CHARS..=MAX_EMAIL_CHARS).contains(&n) {
        return bad("must be 3 to 254 characters");
    }
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain spaces or control characters");
    }
    let Some((local, domain)) = e.split_once('@') else {
        return bad("must contain an @, like name@example.com");
    };
    if domain.contains('@') {
        return bad("must contain exactly one @");
    }
    if local.is_empty() {
        return bad("must have a name before the @");
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return bad("must have a domain like example.com after the @");
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize_email("  Alice@Example.COM \n").unwrap(),
            "alice@example.com"
        );
        assert_eq!(
            normalize_email("a.b+tag@sub.example.co.uk").unwrap(),
            "a.b+tag@sub.example.co.uk"
        );
        assert_eq!(
            normalize_email("ÉMILE@exemple.fr").unwrap(),
            "émile@exemple.fr"
        );
        let long_ok = format!("{}@example.com", "a".repeat(254 - 12));
        assert!(normalize_email(&long_ok).is_ok());
    }

    #[test]
    fn rejects() {
        let too_long = format!("{}@example.com", "a".repeat(254 - 11));
        for bad in [
            "",
            "  ",
            "a@",
            "@example.com",
            "alice",
            "alice@example",
            "alice@@example.com",
            "a@b@example.com",
            "alice@exa mple.com",
            "al ice@example.com",
            "alice@.example.com",
            "alice@example.com.",
            "alice@example..com",
            "alice@exam\u{0}ple.com",
            too_long.as_str(),
        ] {
            match normalize_email(bad) {
                Err(Error::InvalidField { field, .. }) => assert_eq!(field, "email", "{bad}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
