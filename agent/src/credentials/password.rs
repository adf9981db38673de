//! Generated passwords: from the operating system's CSPRNG, with the length and character
//! classes the DatabaseUser asks for, and at least one character of every enabled class.
//!
//! Users put generated passwords raw into URLs (`postgres://u:{{ .Password }}@h/db`, as
//! db-provision-operator's documented templates do), libpq/JDBC/MySQL DSNs and shell
//! variables, so the special characters are the few that mean nothing in any of them, and
//! the first character is never one of them (no leading `-` read as an option). The entropy
//! comes from the length: 32 characters of 65 are about 192 bits.

use rand::{Rng, rngs::OsRng, seq::SliceRandom};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// Special characters safe everywhere a password is pasted: RFC 3986 unreserved (literal
/// in a URL's userinfo, path and query), not special to POSIX shells even unquoted (`~`
/// is left out: it expands after `=` and `:`), and no quote, space, `=`, `;`, `@`, `:`, `/`,
/// `?`, `#`, `%` or `&` for DSN and URL parsers to split on.
pub const SPECIAL: &str = "-._";

/// Why a password cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than the number of required classes, or absurd.
    #[error("password length {0} is out of range (8-128)")]
    Length(usize),
    /// `excludeChars` removed a whole class.
    #[error(
        "excludeChars removes every character of a required class ({0}; the special characters are `-._`: set includeSpecialChars: false for letters and digits only)"
    )]
    EmptyClass(&'static str),
}

/// A password of `length` characters.
pub fn generate(length: usize, special: bool, exclude: &str) -> Result<String, PasswordError> {
    if !(8..=128).contains(&length) {
        return Err(PasswordError::Length(length));
    }
    let mut classes: Vec<(&'static str, Vec<char>)> = vec![
        ("lowercase", LOWER.chars().collect()),
        ("uppercase", UPPER.chars().collect()),
        ("digits", DIGITS.chars().collect()),
    ];
    if special {
        classes.push(("special", SPECIAL.chars().collect()));
    }
    for (name, chars) in &mut classes {
        chars.retain(|c| !exclude.contains(*c));
        if chars.is_empty() {
            return Err(PasswordError::EmptyClass(name));
        }
    }
    let mut rng = OsRng;
    let all: Vec<char> = classes
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    let mut out: Vec<char> = classes
        .iter()
        .map(|(_, chars)| chars[rng.gen_range(0..chars.len())])
        .collect();
    while out.len() < length {
        out.push(all[rng.gen_range(0..all.len())]);
    }
    out.shuffle(&mut rng);
    // Start with a letter or digit: a leading `-` reads as an option on command lines.
    if let Some(first) = out.iter().position(char::is_ascii_alphanumeric) {
        out.swap(0, first);
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_present_and_excluded_characters_are_not() {
        for _ in 0..200 {
            let p = generate(12, true, "\"'\\@/:").unwrap();
            assert_eq!(p.chars().count(), 12);
            assert!(p.chars().any(|c| c.is_ascii_lowercase()));
            assert!(p.chars().any(|c| c.is_ascii_uppercase()));
            assert!(p.chars().any(|c| c.is_ascii_digit()));
            assert!(p.chars().any(|c| SPECIAL.contains(c)));
            assert!(!p.chars().any(|c| "\"'\\@/:".contains(c)), "{p}");
        }
        let plain = generate(32, false, "").unwrap();
        assert!(plain.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn default_passwords_are_literal_in_urls_dsns_and_shells() {
        let url_safe = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
        let mut specials = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let p = generate(32, true, "").unwrap();
            assert!(p.chars().all(url_safe), "{p}");
            assert!(p.starts_with(|c: char| c.is_ascii_alphanumeric()), "{p}");
            // Percent-encoding leaves it unchanged: usable raw in a URL.
            let encoded: String =
                percent_encoding::utf8_percent_encode(&p, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let decoded = percent_encoding::percent_decode_str(&encoded)
                .decode_utf8()
                .unwrap();
            assert_eq!(decoded, p);
            specials.extend(p.chars().filter(|c| !c.is_ascii_alphanumeric()));
        }
        // Every special character is used, none outside the set.
        assert_eq!(specials.into_iter().collect::<String>(), "-._");
        // excludeChars still narrows the set; excluding all of it says what to do.
        for _ in 0..200 {
            assert!(!generate(16, true, "-.").unwrap().contains(['-', '.']));
        }
        let err = generate(16, true, "-._").unwrap_err();
        assert_eq!(err, PasswordError::EmptyClass("special"));
        assert!(
            err.to_string().contains("includeSpecialChars: false"),
            "{err}"
        );
    }

    #[test]
    fn passwords_differ() {
        assert_ne!(
            generate(32, true, "").unwrap(),
            generate(32, true, "").unwrap()
        );
    }

    #[test]
    fn impossible_requests_say_why() {
        assert_eq!(generate(4, true, ""), Err(PasswordError::Length(4)));
        assert_eq!(
            generate(16, false, DIGITS),
            Err(PasswordError::EmptyClass("digits"))
        );
    }
}
