//! Generated passwords: from the operating system's CSPRNG, with the length and character
//! classes the DatabaseUser asks for, and at least one character of every enabled class.

use rand::{Rng, rngs::OsRng, seq::SliceRandom};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// Punctuation that survives URLs, shells and connection strings better than the rest is
/// not a goal here: `excludeChars` is how users drop characters their clients mishandle.
const SPECIAL: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";

/// Why a password cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than the number of required classes, or absurd.
    #[error("password length {0} is out of range (8-128)")]
    Length(usize),
    /// `excludeChars` removed a whole class.
    #[error("excludeChars removes every character of a required class ({0})")]
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
