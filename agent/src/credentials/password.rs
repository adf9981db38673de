//! Generated passwords: from the operating system's CSPRNG, with the length and character
//! classes the DatabaseUser asks for, and at least one character of every enabled class.
//!
//! Users put generated passwords raw into URLs (`postgres://u:{{ .Password }}@h/db`, as
//! db-provision-operator's documented templates do), libpq/JDBC/MySQL DSNs and shell
//! variables, so the special characters are the few that mean nothing in any of them, and
//! the first character is never one of them (no leading `-` read as an option). The entropy
//! comes from the length: 32 characters of 65 are about 192 bits.
//!
//! `generate_for` also meets the DatabasePolicy password rules of the intent (`policy`): the
//! length is at least `minLength`, special characters are used when `requireSpecialChars`
//! asks for them (the three classes of letters and digits always are), and where a forbidden
//! pattern matches, the characters of the match are drawn again (from the same alphabet) until
//! none matches — a local redraw, so a pattern such as `\d\d` that most long passwords contain
//! somewhere still finds a password quickly; a pattern nothing avoids fails after a bounded
//! number of draws.

use dbprov_proto::agent::v1::ErrorCode;
use rand::{Rng, rngs::OsRng, seq::SliceRandom};

use super::policy::Rules;
use crate::error::OpError;

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
    /// A policy requires more characters than are ever generated.
    #[error("{policies} requires minLength {min}, longer than the 128 characters dbprov generates")]
    PolicyLength {
        /// The policies.
        policies: String,
        /// Their `minLength`.
        min: u32,
    },
    /// `excludeChars` removed a class a policy requires.
    #[error(
        "excludeChars removes every {class} character dbprov generates ({chars}), and {policies} requires {rule}: leave at least one of them out of excludeChars"
    )]
    PolicyClass {
        /// The policies.
        policies: String,
        /// `special`, `uppercase`, ...
        class: &'static str,
        /// The characters of that class the generator uses.
        chars: &'static str,
        /// The rule: `requireSpecialChars`, ...
        rule: &'static str,
    },
    /// Every password drawn broke a rule (a forbidden pattern matching nearly everything).
    #[error(
        "no password of {length} characters meeting {policies} was found in {attempts} attempts (the last broke {broken}): a forbidden pattern matches nearly every password; fix the policy's forbiddenPatterns (or excludeChars)"
    )]
    Unavoidable {
        /// The policies.
        policies: String,
        /// Fresh passwords drawn (each with its redraws).
        attempts: usize,
        /// Their length.
        length: usize,
        /// The rules the last one broke, by name.
        broken: String,
    },
}

impl PasswordError {
    /// Whether a DatabasePolicy's rules are what cannot be met.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            PasswordError::PolicyLength { .. }
                | PasswordError::PolicyClass { .. }
                | PasswordError::Unavoidable { .. }
        )
    }
}

impl From<PasswordError> for OpError {
    /// `spec.passwordSecret: ...`; `POLICY_VIOLATION` when a policy's rules are what cannot be
    /// met, `INVALID` otherwise; never retryable.
    fn from(e: PasswordError) -> Self {
        let code = if e.is_policy() {
            ErrorCode::PolicyViolation
        } else {
            ErrorCode::Invalid
        };
        OpError::new(code, format!("spec.passwordSecret: {e}"), false)
    }
}

/// A password of `length` characters.
pub fn generate(length: usize, special: bool, exclude: &str) -> Result<String, PasswordError> {
    let alphabet = Alphabet::new(length, special, exclude)?;
    Ok(alphabet.draw(&mut OsRng).into_iter().collect())
}

/// Fresh passwords `generate_for` draws before it gives up on the rules.
pub const ATTEMPTS: usize = 16;

/// A password of `length` characters (at least the rules' `minLength`), with special
/// characters when `special` or the rules ask for them, meeting `rules`.
pub fn generate_for(
    length: usize,
    special: bool,
    exclude: &str,
    rules: &Rules,
) -> Result<String, PasswordError> {
    let r = rules.rules();
    let mut length = length;
    if let Some(min) = r.min_length {
        if min > 128 {
            return Err(PasswordError::PolicyLength {
                policies: rules.policies(),
                min,
            });
        }
        length = length.max(min as usize);
    }
    let special = special || r.require_special;
    for (required, class, chars, rule) in [
        (r.require_special, "special", SPECIAL, "requireSpecialChars"),
        (r.require_uppercase, "uppercase", UPPER, "requireUppercase"),
        (r.require_lowercase, "lowercase", LOWER, "requireLowercase"),
        (r.require_digits, "digit", DIGITS, "requireDigits"),
    ] {
        if required && chars.chars().all(|c| exclude.contains(c)) {
            return Err(PasswordError::PolicyClass {
                policies: rules.policies(),
                class,
                chars,
                rule,
            });
        }
    }
    let alphabet = Alphabet::new(length, special, exclude)?;
    let mut rng = OsRng;
    let mut broken = Vec::new();
    // Redraws of matched characters per attempt: enough for patterns a password avoids by
    // chance in most places, bounded for those it cannot avoid.
    let redraws = 4 * length + 32;
    for _ in 0..ATTEMPTS {
        let mut chars = alphabet.draw(&mut rng);
        for _ in 0..redraws {
            let password: String = chars.iter().collect();
            let checked = rules.check(&password);
            // A redraw may have taken the last character of a class: start over.
            if !alphabet.complete(&chars) {
                break;
            }
            match checked {
                Ok(()) => return Ok(password),
                Err(b) => broken = b,
            }
            // The characters of a forbidden match are drawn again (a pattern matching the
            // empty string cannot be avoided that way: start over).
            let Some(span) = rules.forbidden_match(&password).filter(|s| !s.is_empty()) else {
                break;
            };
            for i in span {
                chars[i] = alphabet.pick(&mut rng, i == 0);
            }
        }
    }
    Err(PasswordError::Unavoidable {
        policies: rules.policies(),
        attempts: ATTEMPTS,
        length,
        broken: broken.join(", "),
    })
}

/// The characters a password is drawn from.
struct Alphabet {
    length: usize,
    /// One list per class (lowercase, uppercase, digits, and special when asked for).
    classes: Vec<Vec<char>>,
    all: Vec<char>,
    alphanumeric: Vec<char>,
}

impl Alphabet {
    fn new(length: usize, special: bool, exclude: &str) -> Result<Self, PasswordError> {
        if !(8..=128).contains(&length) {
            return Err(PasswordError::Length(length));
        }
        let mut named: Vec<(&'static str, &str)> = vec![
            ("lowercase", LOWER),
            ("uppercase", UPPER),
            ("digits", DIGITS),
        ];
        if special {
            named.push(("special", SPECIAL));
        }
        let mut classes = Vec::new();
        for (name, chars) in named {
            let kept: Vec<char> = chars.chars().filter(|c| !exclude.contains(*c)).collect();
            if kept.is_empty() {
                return Err(PasswordError::EmptyClass(name));
            }
            classes.push(kept);
        }
        let all: Vec<char> = classes.iter().flatten().copied().collect();
        let alphanumeric = all
            .iter()
            .copied()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        Ok(Self {
            length,
            classes,
            all,
            alphanumeric,
        })
    }

    /// One character of every class, the rest from all of them, shuffled, a letter or digit
    /// first.
    fn draw(&self, rng: &mut OsRng) -> Vec<char> {
        let mut out: Vec<char> = self
            .classes
            .iter()
            .map(|chars| chars[rng.gen_range(0..chars.len())])
            .collect();
        while out.len() < self.length {
            out.push(self.all[rng.gen_range(0..self.all.len())]);
        }
        out.shuffle(rng);
        // Start with a letter or digit: a leading `-` reads as an option on command lines.
        if let Some(first) = out.iter().position(char::is_ascii_alphanumeric) {
            out.swap(0, first);
        }
        out
    }

    /// Whether `chars` has a character of every class.
    fn complete(&self, chars: &[char]) -> bool {
        self.classes
            .iter()
            .all(|class| chars.iter().any(|c| class.contains(c)))
    }

    /// One character, a letter or digit when it goes `first`.
    fn pick(&self, rng: &mut OsRng, first: bool) -> char {
        let from = if first { &self.alphanumeric } else { &self.all };
        from[rng.gen_range(0..from.len())]
    }
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

    use dbprov_contract::user::PasswordRules;
    use rand::{SeedableRng, rngs::StdRng, seq::IteratorRandom};

    fn compile(r: &PasswordRules) -> Rules {
        Rules::compile(Some(r)).unwrap()
    }

    /// Property: over random DatabaseUser requests and random policy rule sets, every password
    /// `generate_for` returns meets the rules (and the request: length, exclusions, special
    /// characters), and it fails only where the rules cannot be met, saying so.
    #[test]
    fn generated_passwords_always_meet_the_rules() {
        const GENERATIONS: usize = 2_000;
        // Patterns a random password can avoid (some often match: `[-._]{2}`, `\d\d`).
        let patterns = [
            "password",
            "qwerty|asdf",
            "(abc|123|xyz)",
            "^[0-9]",
            "[-._]{2}",
            "\\d\\d",
            "(a|e|i|o|u){3}",
            "admin",
            "[xyz]$",
        ];
        let exclude_pool: Vec<char> = "abcxyzABCXYZ0123456789-._\"'@:/".chars().collect();
        let seed = 0x5eed_0019;
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut made, mut refused) = (0, 0);
        for i in 0..GENERATIONS {
            let (n_patterns, n_excluded) = (rng.gen_range(0..=4), rng.gen_range(0..=6));
            let rules = PasswordRules {
                min_length: rng.gen_bool(0.7).then(|| rng.gen_range(8..=128)),
                require_special: rng.gen_bool(0.5),
                require_uppercase: rng.gen_bool(0.5),
                require_lowercase: rng.gen_bool(0.5),
                require_digits: rng.gen_bool(0.5),
                forbidden_patterns: patterns
                    .iter()
                    .map(|p| (*p).to_owned())
                    .choose_multiple(&mut rng, n_patterns),
                policies: vec![format!("p{i}")],
            };
            let length = rng.gen_range(8..=64);
            let special = rng.gen_bool(0.5);
            // Usually a few excluded characters; now and then a whole class.
            let mut exclude: String = exclude_pool
                .iter()
                .copied()
                .choose_multiple(&mut rng, n_excluded)
                .into_iter()
                .collect();
            if rng.gen_bool(0.05) {
                exclude.push_str(SPECIAL);
            }
            if rng.gen_bool(0.02) {
                exclude.push_str(DIGITS);
            }
            let compiled = compile(&rules);
            let context = format!(
                "seed {seed:#x} case {i}: {rules:?} length {length} special {special} exclude {exclude:?}"
            );
            let specials_gone = SPECIAL.chars().all(|c| exclude.contains(c));
            let digits_gone = DIGITS.chars().all(|c| exclude.contains(c));
            match generate_for(length, special, &exclude, &compiled) {
                Ok(p) => {
                    made += 1;
                    assert_eq!(compiled.check(&p), Ok(()), "{context}");
                    let want = length.max(rules.min_length.unwrap_or(0) as usize);
                    assert_eq!(p.chars().count(), want, "{context}");
                    assert!(!p.chars().any(|c| exclude.contains(c)), "{context}");
                    if special || rules.require_special {
                        assert!(p.chars().any(|c| SPECIAL.contains(c)), "{context}");
                    } else {
                        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()), "{context}");
                    }
                    assert!(
                        p.starts_with(|c: char| c.is_ascii_alphanumeric()),
                        "{context}"
                    );
                }
                Err(e) => {
                    refused += 1;
                    // Only when a class is gone.
                    match &e {
                        PasswordError::PolicyClass { rule, policies, .. } => {
                            assert_eq!(policies, &format!("DatabasePolicy p{i}"), "{context}");
                            assert!(
                                (*rule == "requireSpecialChars" && specials_gone)
                                    || (*rule == "requireDigits" && digits_gone),
                                "{e} / {context}"
                            );
                        }
                        PasswordError::EmptyClass(class) => assert!(
                            (*class == "special" && specials_gone && !rules.require_special)
                                || (*class == "digits" && digits_gone && !rules.require_digits),
                            "{e} / {context}"
                        ),
                        other => panic!("{other} / {context}"),
                    }
                }
            }
        }
        assert_eq!(made + refused, GENERATIONS);
        assert!(
            made > GENERATIONS * 9 / 10,
            "{made} made, {refused} refused"
        );
    }

    #[test]
    fn rules_lengthen_and_add_special_characters() {
        let rules = compile(&PasswordRules {
            min_length: Some(40),
            require_special: true,
            policies: vec!["prod".into()],
            ..PasswordRules::default()
        });
        for _ in 0..100 {
            // The spec asks for 16 letters and digits; the policy wins.
            let p = generate_for(16, false, "", &rules).unwrap();
            assert_eq!(p.chars().count(), 40);
            assert!(p.chars().any(|c| SPECIAL.contains(c)), "{p}");
        }
        // A longer spec length stays.
        assert_eq!(generate_for(64, true, "", &rules).unwrap().len(), 64);
        // No rules: as before.
        let none = Rules::compile(None).unwrap();
        assert!(
            generate_for(12, false, "", &none)
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
        // A spec length out of range is still the spec's error.
        assert_eq!(
            generate_for(4, true, "", &none),
            Err(PasswordError::Length(4))
        );
        // A minLength lifts a spec length below 8 into range.
        assert_eq!(
            generate_for(4, true, "", &rules).unwrap().chars().count(),
            40
        );
    }

    #[test]
    fn rules_that_cannot_be_met_say_which_policy_and_what_to_change() {
        let rules = compile(&PasswordRules {
            require_special: true,
            policies: vec!["prod".into(), "pci".into()],
            ..PasswordRules::default()
        });
        let e = generate_for(24, false, "-._", &rules).unwrap_err();
        assert_eq!(
            e.to_string(),
            "excludeChars removes every special character dbprov generates (-._), and DatabasePolicies prod, pci requires requireSpecialChars: leave at least one of them out of excludeChars"
        );
        let op = OpError::from(e);
        assert_eq!(op.code, ErrorCode::PolicyViolation);
        assert!(!op.retryable);
        assert!(op.message.starts_with("spec.passwordSecret: excludeChars"));
        // A pattern every password matches: drawn ATTEMPTS times, then refused.
        let rules = compile(&PasswordRules {
            forbidden_patterns: vec!["ok".into(), "[a-z]".into()],
            policies: vec!["silly".into()],
            ..PasswordRules::default()
        });
        let e = generate_for(16, true, "", &rules).unwrap_err();
        assert!(
            matches!(&e, PasswordError::Unavoidable { broken, attempts: ATTEMPTS, length: 16, .. } if broken == "forbiddenPatterns[1]"),
            "{e}"
        );
        let m = e.to_string();
        assert!(
            m.contains("meeting DatabasePolicy silly was found in 16 attempts (the last broke forbiddenPatterns[1])")
                && m.contains("fix the policy's forbiddenPatterns"),
            "{m}"
        );
        // The spec's own errors are not the policy's.
        let op = OpError::from(PasswordError::Length(200));
        assert_eq!(op.code, ErrorCode::Invalid);
        let e = generate_for(
            16,
            true,
            "",
            &compile(&PasswordRules {
                min_length: Some(129),
                ..PasswordRules::default()
            }),
        )
        .unwrap_err();
        assert!(e.is_policy(), "{e}");
    }
}
