//! DatabasePolicy password rules (`passwordRules` of ENSURE_USER and ROTATE_PASSWORD, merged
//! by the hub from every policy that applies to the user). The agent alone sees passwords, so
//! it applies them: generated passwords are made to meet them (`password::generate_for`), a
//! supplied one (`existingPasswordSecret`) that does not is refused before anything reaches
//! the server. Messages name the policies and the rules broken, never the password.
//!
//! What the rules mean here: `minLength` counts characters (not bytes); a special character
//! is one that is neither a letter (of any alphabet) nor a digit `0-9`; upper- and lower-case
//! are Unicode's; `forbiddenPatterns` are RE2 expressions (the `regex` crate: RE2 syntax, no
//! backreferences or look-around, linear-time matching) matched case-insensitively anywhere
//! in the password.

use dbprov_contract::user::PasswordRules;
use dbprov_proto::agent::v1::ErrorCode;
use regex::{Regex, RegexBuilder};

use crate::error::OpError;

/// Largest compiled form of one forbidden pattern (a policy's pattern is at most 256
/// characters, but counted repetitions multiply).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The rules with their forbidden patterns compiled.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: PasswordRules,
    patterns: Vec<Regex>,
}

/// A forbidden pattern that is not a valid RE2 expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{policies}: forbiddenPatterns[{index}] {pattern:?} is not a valid RE2 expression ({reason}); fix the policy"
)]
pub struct PatternError {
    /// `DatabasePolicy <name>` / `DatabasePolicies <a>, <b>`.
    pub policies: String,
    /// Index in the merged `forbiddenPatterns`.
    pub index: usize,
    /// The pattern (policy text, not a secret).
    pub pattern: String,
    /// What the parser said.
    pub reason: String,
}

impl From<PatternError> for OpError {
    fn from(e: PatternError) -> Self {
        OpError::new(ErrorCode::Invalid, e.to_string(), false)
    }
}

/// The one line of a `regex` error that says what is wrong (its syntax errors span several
/// lines, drawing the pattern with a caret).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

/// Whether `c` counts as a special character: neither a letter nor a digit `0-9`.
pub fn is_special(c: char) -> bool {
    !c.is_alphabetic() && !c.is_ascii_digit()
}

impl Rules {
    /// The rules of an intent (`None`: no rules, every password passes).
    pub fn compile(rules: Option<&PasswordRules>) -> Result<Self, PatternError> {
        let Some(rules) = rules else {
            return Ok(Self::default());
        };
        let patterns = rules
            .forbidden_patterns
            .iter()
            .enumerate()
            .map(|(index, p)| {
                RegexBuilder::new(p)
                    .case_insensitive(true)
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| PatternError {
                        policies: rules.describe_policies(),
                        index,
                        pattern: p.clone(),
                        reason: regex_reason(&e),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            rules: rules.clone(),
            patterns,
        })
    }

    /// The rules as sent.
    pub fn rules(&self) -> &PasswordRules {
        &self.rules
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `DatabasePolicy <name>` / `DatabasePolicies <a>, <b>`.
    pub fn policies(&self) -> String {
        self.rules.describe_policies()
    }

    /// The rules `password` breaks, by name (`minLength 24`, `requireSpecialChars`,
    /// `requireUppercase`, `requireLowercase`, `requireDigits`, `forbiddenPatterns[1]`) —
    /// never anything of the password itself.
    pub fn check(&self, password: &str) -> Result<(), Vec<String>> {
        let r = &self.rules;
        let mut broken = Vec::new();
        if let Some(min) = r.min_length
            && password.chars().count() < min as usize
        {
            broken.push(format!("minLength {min}"));
        }
        let classes = [
            (
                r.require_special,
                "requireSpecialChars",
                is_special as fn(char) -> bool,
            ),
            (r.require_uppercase, "requireUppercase", char::is_uppercase),
            (r.require_lowercase, "requireLowercase", char::is_lowercase),
            (r.require_digits, "requireDigits", |c: char| {
                c.is_ascii_digit()
            }),
        ];
        for (required, name, member) in classes {
            if required && !password.chars().any(member) {
                broken.push(name.to_owned());
            }
        }
        for (i, p) in self.patterns.iter().enumerate() {
            if p.is_match(password) {
                broken.push(format!("forbiddenPatterns[{i}]"));
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(broken)
        }
    }

    /// Where the first forbidden pattern that matches `password` matches, in characters.
    pub fn forbidden_match(&self, password: &str) -> Option<std::ops::Range<usize>> {
        let m = self.patterns.iter().find_map(|p| p.find(password))?;
        let start = password[..m.start()].chars().count();
        Some(start..start + m.as_str().chars().count())
    }

    /// Refuses a supplied password (`existingPasswordSecret`, read from Secret `ns/name` key
    /// `key`) that breaks the rules: `POLICY_VIOLATION`, not retryable (the Secret has to
    /// change), naming the policies and rules, never the password.
    pub fn refuse_supplied(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        password: &str,
    ) -> Result<(), OpError> {
        self.check(password).map_err(|broken| {
            OpError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "the password in Secret {ns}/{name} key {key} (spec.existingPasswordSecret) does not meet {}: {}; set a password that does in that Secret, or remove spec.existingPasswordSecret to have dbprov generate one",
                    self.policies(),
                    broken.join(", ")
                ),
                false,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: PasswordRules) -> Rules {
        Rules::compile(Some(&r)).unwrap()
    }

    fn strict() -> Rules {
        rules(PasswordRules {
            min_length: Some(24),
            require_special: true,
            require_uppercase: true,
            require_lowercase: true,
            require_digits: true,
            forbidden_patterns: vec!["password".into(), "(acme|contoso)".into()],
            policies: vec!["prod-passwords".into()],
        })
    }

    #[test]
    fn check_names_every_rule_broken() {
        let r = strict();
        assert_eq!(r.check("Xy7-abcdefghijklmnopqrstu"), Ok(()));
        assert_eq!(
            r.check("short"),
            Err(vec![
                "minLength 24".to_owned(),
                "requireSpecialChars".into(),
                "requireUppercase".into(),
                "requireDigits".into()
            ])
        );
        // Patterns are case-insensitive and match anywhere.
        assert_eq!(
            r.check("My-ACME-PassWord-2026-abcdef"),
            Err(vec![
                "forbiddenPatterns[0]".to_owned(),
                "forbiddenPatterns[1]".into()
            ])
        );
        // Characters, not bytes: 24 non-ASCII letters are 24 characters.
        let r = rules(PasswordRules {
            min_length: Some(24),
            ..PasswordRules::default()
        });
        assert_eq!(r.check(&"é".repeat(24)), Ok(()));
        assert_eq!(r.check(&"é".repeat(12)), Err(vec!["minLength 24".into()]));
        // No rules: everything passes.
        assert_eq!(Rules::compile(None).unwrap().check(""), Ok(()));
    }

    #[test]
    fn character_classes() {
        for c in ['-', '.', '_', '!', ' ', '€', '٣'] {
            assert!(is_special(c), "{c}");
        }
        for c in ['a', 'Z', '0', '9', 'é', 'Ж'] {
            assert!(!is_special(c), "{c}");
        }
        let r = rules(PasswordRules {
            require_uppercase: true,
            require_lowercase: true,
            ..PasswordRules::default()
        });
        assert_eq!(r.check("Жж"), Ok(()));
        assert_eq!(
            r.check("12-.__"),
            Err(vec!["requireUppercase".into(), "requireLowercase".into()])
        );
    }

    #[test]
    fn a_pattern_that_is_not_re2_is_reported_with_its_policy_and_index() {
        for (pattern, says) in [
            ("(abc", "unclosed group"),
            // RE2 has no backreferences.
            ("(.)\\1{3}", "backreferences are not supported"),
            ("(?=x)", "look-around"),
        ] {
            let err = Rules::compile(Some(&PasswordRules {
                forbidden_patterns: vec!["ok".into(), pattern.into()],
                policies: vec!["a".into(), "b".into()],
                ..PasswordRules::default()
            }))
            .unwrap_err();
            assert_eq!(err.index, 1);
            let m = err.to_string();
            assert!(
                m.starts_with(&format!(
                    "DatabasePolicies a, b: forbiddenPatterns[1] {pattern:?} is not a valid RE2 expression ("
                )) && m.contains(says)
                    && !m.contains('\n'),
                "{m}"
            );
            let op: OpError = err.into();
            assert_eq!(op.code, ErrorCode::Invalid);
        }
        // A pattern whose compiled form is absurdly large is refused, not built.
        let err = Rules::compile(Some(&PasswordRules {
            forbidden_patterns: vec!["\\w{1000}{1000}".into()],
            ..PasswordRules::default()
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("DatabasePolicy (unnamed)"),
            "{err}"
        );
    }

    #[test]
    fn a_weak_supplied_password_is_refused_naming_policy_and_rules_never_the_password() {
        let r = strict();
        for weak in [
            "hunter2",
            "xPASSWORDx-Jq7-zzzzzzzzzzzzzz",
            "Zq-acme-Zq-acme-Zq-acme-9",
        ] {
            let err = r
                .refuse_supplied("team-a", "app-pw", "password", weak)
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::PolicyViolation);
            assert!(!err.retryable);
            let m = &err.message;
            assert!(
                m.starts_with(
                    "the password in Secret team-a/app-pw key password (spec.existingPasswordSecret) does not meet DatabasePolicy prod-passwords: "
                ) && m.contains("set a password that does"),
                "{m}"
            );
            assert!(!m.contains(weak), "{m}");
            // Nor any run of four characters of it.
            let chars: Vec<char> = weak.chars().collect();
            for w in chars.windows(4) {
                let piece: String = w.iter().collect();
                assert!(!m.contains(&piece), "{piece:?} of the password in: {m}");
            }
        }
        let m = r
            .refuse_supplied("team-a", "app-pw", "password", "hunter2")
            .unwrap_err()
            .message;
        assert!(
            m.contains(
                ": minLength 24, requireSpecialChars, requireUppercase; set a password that does"
            ),
            "{m}"
        );
        let m = r
            .refuse_supplied("t", "s", "k", "xPASSWORDx-Jq7-zzzzzzzzzzzzzz")
            .unwrap_err()
            .message;
        assert!(m.contains(": forbiddenPatterns[0]; "), "{m}");
        assert_eq!(
            r.refuse_supplied("t", "s", "k", "Xy7-abcdefghijklmnopqrstu"),
            Ok(())
        );
    }
}
