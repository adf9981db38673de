//! Liquibase's context and label expressions (`ExpressionMatcher`): names combined with
//! `and`, `or`, `,` (or), `!`/`not` and parentheses, matched case-insensitively against a set
//! of names. A changeset's `context:` is an expression over the run's contexts; the run's
//! label filter is an expression over a changeset's `labels:`.

use std::collections::BTreeSet;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A name (lower case).
    Name(String),
    /// Negation.
    Not(Box<Expr>),
    /// All of.
    And(Vec<Expr>),
    /// Any of.
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    Not,
    And,
    Or,
    Name(String),
}

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if word.is_empty() {
            return;
        }
        let w = std::mem::take(word).to_lowercase();
        out.push(match w.as_str() {
            "and" => Tok::And,
            "or" => Tok::Or,
            "not" => Tok::Not,
            _ => Tok::Name(w),
        });
    };
    for c in text.chars() {
        match c {
            '(' | ')' | '!' | ',' => {
                flush(&mut word, &mut out);
                out.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    '!' => Tok::Not,
                    _ => Tok::Or,
                });
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            '@' | '"' | '\'' => {
                return Err(format!(
                    "`{c}` is not supported; use names with `and`, `or`, `,`, `!` and parentheses"
                ));
            }
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

impl Expr {
    /// Parses `text`; an empty text is an error (callers treat "no expression" themselves).
    pub fn parse(text: &str) -> Result<Expr, String> {
        let toks = tokens(text)?;
        if toks.is_empty() {
            return Err("the expression is empty".into());
        }
        let mut p = Parser { toks, at: 0 };
        let e = p.or()?;
        if p.at != p.toks.len() {
            return Err("unexpected text after the expression (unbalanced `)`?)".into());
        }
        Ok(e)
    }

    /// Whether the expression holds for `names` (lower case).
    pub fn matches(&self, names: &BTreeSet<String>) -> bool {
        match self {
            Expr::Name(n) => names.contains(n),
            Expr::Not(e) => !e.matches(names),
            Expr::And(es) => es.iter().all(|e| e.matches(names)),
            Expr::Or(es) => es.iter().any(|e| e.matches(names)),
        }
    }
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut all = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            all.push(self.and()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::Or(all)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut all = vec![self.unary()?];
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::And(all)
        })
    }

    fn unary(&mut self) -> Result<Expr, String> {
        let tok = self.peek().cloned();
        self.at += 1;
        match tok {
            Some(Tok::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Tok::Open) => {
                let e = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return Err("missing `)`".into());
                }
                self.at += 1;
                Ok(e)
            }
            Some(Tok::Name(n)) => Ok(Expr::Name(n)),
            Some(_) => Err("a name is missing before or after `and`/`or`/`,`".into()),
            None => Err("the expression ends where a name is expected".into()),
        }
    }
}

/// A comma-separated list of names (the run's contexts, a changeset's labels), lower case.
pub fn name_list(text: &str) -> BTreeSet<String> {
    text.split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The run's contexts (`LiquibaseSettings.contexts`): a list of names, nothing else.
pub fn runtime_contexts(text: &str) -> Result<BTreeSet<String>, String> {
    let names = name_list(text);
    if names
        .iter()
        .any(|n| n.contains(|c: char| c.is_whitespace() || "()!@\"'".contains(c)))
    {
        return Err(
            "liquibase.contexts is a comma-separated list of context names (e.g. \
             `dev,test`); expressions belong in a changeset's `context:`"
                .into(),
        );
    }
    Ok(names)
}

/// Liquibase's rule for a changeset's `context:`: it runs when the run names no context,
/// when it has none, or when its expression holds for the run's contexts.
pub fn context_matches(changeset: Option<&str>, runtime: &BTreeSet<String>) -> bool {
    match changeset {
        None => true,
        Some(_) if runtime.is_empty() => true,
        Some(text) => Expr::parse(text).is_ok_and(|e| e.matches(runtime)),
    }
}

/// Liquibase's rule for labels: a changeset runs when the run has no label filter, when it
/// has no labels, or when the filter holds for its labels.
pub fn labels_match(filter: Option<&Expr>, changeset: Option<&str>) -> bool {
    match (filter, changeset.map(name_list)) {
        (None, _) => true,
        (Some(_), None) => true,
        (Some(_), Some(l)) if l.is_empty() => true,
        (Some(f), Some(l)) => f.matches(&l),
    }
}

/// `CONTEXTS` as Liquibase records it: the changeset's expression as written, in parentheses
/// when it has more than one term.
pub fn contexts_column(context: Option<&str>) -> Option<String> {
    let c = context?.trim();
    if c.is_empty() {
        return None;
    }
    if c.contains([' ', ',']) {
        Some(format!("({c})"))
    } else {
        Some(c.to_owned())
    }
}

/// `LABELS` as Liquibase records it: the names, lower case, in their order, `,`-joined.
pub fn labels_column(labels: Option<&str>) -> Option<String> {
    let names: Vec<String> = labels?
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        None
    } else {
        Some(names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> BTreeSet<String> {
        name_list(s)
    }

    #[test]
    fn expressions() {
        let m = |e: &str, names: &str| Expr::parse(e).unwrap().matches(&set(names));
        assert!(m("a", "a"));
        assert!(!m("a", "b"));
        assert!(m("a,b", "b"));
        assert!(m("a, b", "b"));
        assert!(m("!a", "b"));
        assert!(!m("!a", "a,b"));
        assert!(m("a and b", "a,b"));
        assert!(!m("a and b", "a"));
        assert!(m("a or b", "b"));
        assert!(m("(a or b) and !c", "b"));
        assert!(!m("(a or b) and !c", "b,c"));
        assert!(m("not c", "a"));
        assert!(m("Dev", "dev"));
        assert!(m("a and b or c", "c"));
        assert!(Expr::parse("a and").is_err());
        assert!(Expr::parse("(a").is_err());
        assert!(Expr::parse("@a").is_err());
        assert!(Expr::parse("").is_err());
    }

    #[test]
    fn liquibase_rules_for_empty_sides() {
        assert!(context_matches(Some("dev"), &BTreeSet::new()));
        assert!(context_matches(None, &set("prod")));
        assert!(!context_matches(Some("dev"), &set("prod")));
        assert!(context_matches(Some("!dev"), &set("prod")));
        let f = Expr::parse("x and !y").unwrap();
        assert!(labels_match(Some(&f), None));
        assert!(labels_match(Some(&f), Some("X,z")));
        assert!(!labels_match(Some(&f), Some("x,Y")));
        assert!(runtime_contexts("dev, test").is_ok());
        assert!(runtime_contexts("dev and test").is_err());
    }

    /// As the real Liquibase 4.33 wrote them (`update-sql`).
    #[test]
    fn columns_as_liquibase_writes_them() {
        assert_eq!(contexts_column(Some("dev")).as_deref(), Some("dev"));
        assert_eq!(
            contexts_column(Some("Dev, Test")).as_deref(),
            Some("(Dev, Test)")
        );
        assert_eq!(
            contexts_column(Some("dev,test")).as_deref(),
            Some("(dev,test)")
        );
        assert_eq!(
            contexts_column(Some("!a and b")).as_deref(),
            Some("(!a and b)")
        );
        assert_eq!(contexts_column(Some("!prod")).as_deref(), Some("!prod"));
        assert_eq!(labels_column(Some("B,a")).as_deref(), Some("b,a"));
        assert_eq!(labels_column(Some("x y")).as_deref(), Some("x y"));
        assert_eq!(labels_column(None), None);
    }
}
