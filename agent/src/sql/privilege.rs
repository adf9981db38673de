//! Privilege keywords: normalised spelling and expansion of `ALL PRIVILEGES`, shared by both
//! dialects.

use crate::{error::OpError, sql::invalid};

/// Upper-case, single-spaced; `ALL` → `ALL PRIVILEGES`, `TEMP` → `TEMPORARY`.
pub(crate) fn normalize(privilege: &str) -> String {
    let p = privilege
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    match p.as_str() {
        "ALL" => "ALL PRIVILEGES".into(),
        "TEMP" => "TEMPORARY".into(),
        _ => p,
    }
}

/// The privileges of `list` for a target whose valid privileges are `valid` (`ALL PRIVILEGES`
/// expands to all of them), or an error naming the one that does not apply.
pub(crate) fn expand(list: &[String], valid: &[&str], what: &str) -> Result<Vec<String>, OpError> {
    let mut out = Vec::new();
    for raw in list {
        let p = normalize(raw);
        if p == "ALL PRIVILEGES" {
            out.extend(valid.iter().map(|v| (*v).to_owned()));
        } else if valid.contains(&p.as_str()) {
            out.push(p);
        } else {
            return Err(invalid(format!(
                "privilege {raw:?} does not apply to {what}; use one of {} or ALL PRIVILEGES",
                valid.join(", ")
            )));
        }
    }
    Ok(out)
}
