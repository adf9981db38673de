//! Audit records of the operations this agent runs (docs/audit.md).
//!
//! Every operation runs inside a [`Trail`] scope (a task-local): the SQL layer reports each
//! statement that changes something ([`statement`]), operations report effects outside SQL
//! ([`effect`]: Secrets written, artifacts written or deleted, migrations applied). When the
//! operation ends, [`record`] makes one [`AuditRecord`] of it — if it changed something or
//! failed; an ensure that found everything as desired leaves no record — and the executor
//! sends it with the intent's Result, so it shares the Result's delivery: kept (and journaled,
//! for journaled operations) until the hub acknowledges it.

use std::sync::{Arc, Mutex};

use dbprov_contract::{
    Engine,
    audit::{
        AuditContext, AuditOutcome, AuditRecord, AuditResource, MAX_EFFECTS, MAX_STATEMENT_CHARS,
        MAX_STATEMENTS,
    },
};
use dbprov_proto::agent::v1::{self as pb, ErrorCode, Intent, Operation};
use sha2::{Digest, Sha256};

use crate::sql::scrub::REDACTED;

/// What one operation did, gathered while it runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trail {
    /// Redacted statements, at most [`MAX_STATEMENTS`].
    pub statements: Vec<String>,
    /// Every statement run.
    pub statements_total: u32,
    /// Effects outside SQL, at most [`MAX_EFFECTS`].
    pub effects: Vec<String>,
    /// The engine of the last statement (records say which engine the operation ran on).
    pub engine: Option<Engine>,
}

tokio::task_local! {
    static TRAIL: Arc<Mutex<Trail>>;
}

/// Runs `fut` with a fresh trail and returns its output and what it did.
pub async fn scoped<F: Future>(fut: F) -> (F::Output, Trail) {
    let trail = Arc::new(Mutex::new(Trail::default()));
    let out = TRAIL.scope(trail.clone(), fut).await;
    let trail = trail.lock().map(|t| t.clone()).unwrap_or_default();
    (out, trail)
}

fn with_trail(f: impl FnOnce(&mut Trail)) {
    // Outside a scope (CLI tools, unit tests) nothing is recorded.
    let _ = TRAIL.try_with(|t| {
        if let Ok(mut t) = t.lock() {
            f(&mut t);
        }
    });
}

/// Records a statement the SQL layer runs (literals are redacted here, before it is kept).
pub fn statement(engine: Engine, sql: &str) {
    with_trail(|t| {
        t.statements_total = t.statements_total.saturating_add(1);
        t.engine = Some(engine);
        if t.statements.len() < MAX_STATEMENTS {
            t.statements.push(redact(engine, sql));
        }
    });
}

/// Records an effect outside SQL, e.g. `secret team-a/app written`. Never a secret value.
pub fn effect(text: impl Into<String>) {
    let text = text.into();
    with_trail(|t| {
        if t.effects.len() < MAX_EFFECTS && !t.effects.contains(&text) {
            t.effects.push(text);
        }
    });
}

/// `sql` with every string literal replaced by `'<redacted>'` and cut to
/// [`MAX_STATEMENT_CHARS`]. Identifiers (`"…"`, `` `…` ``) are kept: the manifest names them.
/// The agent's statements quote literals with `sql::quote` (`''` doubled; on MySQL also `\`
/// escaped); an unterminated literal hides everything after its quote.
pub fn redact(engine: Engine, sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(MAX_STATEMENT_CHARS));
    let mut chars = sql.chars().peekable();
    let backslash_escapes = !engine.is_postgres();
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' => {
                out.push(c);
                // An identifier: copied through its closing quote (a doubled quote is part
                // of the name).
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == c {
                        if chars.peek() == Some(&c) {
                            if let Some(e) = chars.next() {
                                out.push(e);
                            }
                        } else {
                            break;
                        }
                    }
                }
            }
            '\'' => {
                let mut literal = String::from("'");
                while let Some(d) = chars.next() {
                    literal.push(d);
                    if backslash_escapes && d == '\\' {
                        if let Some(e) = chars.next() {
                            literal.push(e);
                        }
                    } else if d == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                            literal.push('\'');
                        } else {
                            break;
                        }
                    }
                }
                // MySQL names an account as two literals, 'user'@'host': a name, kept
                // (passwords are never written next to an `@`).
                let account = !engine.is_postgres()
                    && literal.len() > 1
                    && literal.ends_with('\'')
                    && (chars.peek() == Some(&'@') || out.ends_with('@'));
                if account {
                    out.push_str(&literal);
                } else {
                    out.push('\'');
                    out.push_str(REDACTED);
                    out.push('\'');
                }
            }
            // PostgreSQL dollar-quoted bodies ($$…$$, $tag$…$tag$) are literals too.
            '$' if engine == Engine::Postgres => {
                let mut tag = String::from("$");
                let mut probe = chars.clone();
                let mut closed = false;
                while let Some(&d) = probe.peek() {
                    if d == '$' {
                        tag.push('$');
                        probe.next();
                        closed = true;
                        break;
                    }
                    if d.is_ascii_alphanumeric() || d == '_' {
                        tag.push(d);
                        probe.next();
                    } else {
                        break;
                    }
                }
                if !closed || tag[1..tag.len() - 1].starts_with(|ch: char| ch.is_ascii_digit()) {
                    // `$1` parameters and a lone `$` are not quotes.
                    out.push('$');
                    continue;
                }
                chars = probe;
                out.push_str(&tag);
                out.push_str(REDACTED);
                out.push_str(&tag);
                let rest: String = chars.clone().collect();
                match rest.find(&tag) {
                    Some(at) => {
                        let skip = rest[..at + tag.len()].chars().count();
                        for _ in 0..skip {
                            chars.next();
                        }
                    }
                    None => {
                        // Unterminated: everything after it is the literal.
                        chars.by_ref().for_each(drop);
                    }
                }
            }
            c => out.push(c),
        }
        if out.len() > MAX_STATEMENT_CHARS {
            break;
        }
    }
    if out.len() > MAX_STATEMENT_CHARS || chars.peek().is_some() {
        let mut cut = MAX_STATEMENT_CHARS.min(out.len());
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The record id of `intent_id`'s execution: a UUID (version 8) derived from it, so a Result
/// re-sent after a reconnect or restart carries the same record id and sinks can drop the
/// copy.
pub fn record_id(intent_id: &str) -> String {
    let digest = Sha256::digest(format!("dbprov-audit/v1/{intent_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default()
}

/// The operation's name in records, e.g. `ensure_user`.
pub fn operation_name(operation: Operation) -> String {
    operation
        .as_str_name()
        .trim_start_matches("OPERATION_")
        .to_ascii_lowercase()
}

/// The record of one finished operation, or `None` when there is nothing to record: a probe
/// (reads only), or a success that changed nothing.
pub fn record(
    cluster: &str,
    intent: &Intent,
    started_ms: i64,
    finished_ms: i64,
    result: &pb::Result,
    trail: Trail,
) -> Option<AuditRecord> {
    let operation = Operation::try_from(intent.operation).unwrap_or(Operation::Unspecified);
    if matches!(operation, Operation::ProbeInstance | Operation::Unspecified) {
        return None;
    }
    let (outcome, reason, message) = match &result.outcome {
        Some(pb::result::Outcome::Error(e)) => (
            AuditOutcome::Failure,
            ErrorCode::try_from(e.code)
                .unwrap_or(ErrorCode::Unspecified)
                .as_str_name()
                .trim_start_matches("ERROR_CODE_")
                .to_owned(),
            e.message.clone(),
        ),
        _ => (AuditOutcome::Success, String::new(), String::new()),
    };
    let context: AuditContext = if intent.audit_json.is_empty() {
        AuditContext::default()
    } else {
        serde_json::from_str(&intent.audit_json).unwrap_or_default()
    };
    if outcome == AuditOutcome::Success && !changed(intent, operation, &context, result, &trail) {
        return None;
    }
    let resource = intent.resource.clone().unwrap_or_default();
    let mut effects = trail.effects;
    if outcome == AuditOutcome::Success
        && context.trigger != "resync"
        && adopted(intent, &observed_of(result))
        && effects.len() < dbprov_contract::audit::MAX_EFFECTS
    {
        let what = if context.object.is_empty() {
            &context.database
        } else {
            &context.object
        };
        effects.push(format!("existing {what} adopted"));
    }
    // The manifest's engine first (it tells MariaDB from MySQL; statements only the dialect).
    let engine = engine_of(&intent.desired_json)
        .or(trail.engine)
        .map(|e| e.to_string())
        .unwrap_or_else(|| context.engine.clone());
    Some(AuditRecord {
        id: record_id(&intent.intent_id),
        time: rfc3339(finished_ms),
        source: "agent".into(),
        cluster: cluster.to_owned(),
        instance: context.instance,
        engine,
        database: context.database,
        // A backup's artifact key is only known once it is written (the hub sends a base).
        object: match observed_of(result)["object"].as_str() {
            Some(key) if operation == Operation::RunBackup && !key.is_empty() => key.to_owned(),
            _ => context.object,
        },
        operation: operation_name(operation),
        outcome,
        reason,
        message,
        duration_ms: u64::try_from(finished_ms.saturating_sub(started_ms)).unwrap_or(0),
        resource: AuditResource {
            kind: resource.kind,
            namespace: resource.namespace,
            name: resource.name,
            uid: resource.uid,
            generation: resource.generation,
        },
        intent_id: intent.intent_id.clone(),
        requested_by: context.requested_by,
        trigger: context.trigger,
        statements: trail.statements,
        statements_total: trail.statements_total,
        effects,
    })
}

/// Whether a successful operation changed something worth a record:
/// - backups, restores, artifact deletions and rotations always do;
/// - migrations when they applied (or repaired) something — a run with nothing pending only
///   sets up its session;
/// - ensures re-sent for a resource already Ready at its generation (`trigger: resync`)
///   assert the whole desired state again (e.g. a user's password), so only what the agent
///   observed as a change counts: an object created, drift corrected, privileges revoked;
/// - anything else when it ran a statement or wrote something.
fn changed(
    intent: &Intent,
    operation: Operation,
    context: &AuditContext,
    result: &pb::Result,
    trail: &Trail,
) -> bool {
    let observed = observed_of(result);
    match operation {
        Operation::RunBackup
        | Operation::DeleteBackup
        | Operation::Restore
        | Operation::RotatePassword => true,
        Operation::ApplyMigrations => {
            observed["applied"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
                || observed["action"] == "repair"
        }
        _ if context.trigger == "resync" => observed_change(&observed),
        _ => trail.statements_total > 0 || !trail.effects.is_empty() || adopted(intent, &observed),
    }
}

/// Whether the first ensure of a resource (generation 1) found its object already in the
/// server and took it over: an adoption changes who manages the object, even when nothing
/// had to be altered. (Later ensures find the object dbprov made; the agent cannot tell
/// those apart from an adoption, so only the first generation counts.)
fn adopted(intent: &Intent, observed: &serde_json::Value) -> bool {
    observed["adopted"].as_bool() == Some(true)
        && intent.resource.as_ref().is_some_and(|r| r.generation <= 1)
}

fn observed_of(result: &pb::Result) -> serde_json::Value {
    match &result.outcome {
        Some(pb::result::Outcome::ObservedJson(json)) => {
            serde_json::from_str::<serde_json::Value>(json).unwrap_or_default()
        }
        _ => serde_json::Value::Null,
    }
}

/// What an ensure's observed state says it changed.
fn observed_change(observed: &serde_json::Value) -> bool {
    let yes = |k: &str| observed[k].as_bool() == Some(true);
    let some = |k: &str| match &observed[k] {
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Number(n) => n.as_u64().is_some_and(|n| n > 0),
        _ => false,
    };
    yes("created") || yes("corrected") || yes("secretDeleted") || some("changes") || some("revoked")
}

/// The engine named in a desired state (`instance.engine`), for records of operations that
/// failed before a statement ran.
fn engine_of(desired_json: &str) -> Option<Engine> {
    let v: serde_json::Value = serde_json::from_str(desired_json).ok()?;
    let engine = v.get("instance")?.get("engine")?.clone();
    serde_json::from_value(engine).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_redacted_identifiers_kept() {
        assert_eq!(
            redact(
                Engine::Postgres,
                r#"ALTER ROLE "app""x" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:a''b' VALID UNTIL 'infinity'"#
            ),
            r#"ALTER ROLE "app""x" WITH LOGIN PASSWORD '<redacted>' VALID UNTIL '<redacted>'"#
        );
        assert_eq!(
            redact(
                Engine::Mysql,
                r"CREATE USER `a``b`@'%' IDENTIFIED BY 's3cr\'et''x' REQUIRE NONE"
            ),
            "CREATE USER `a``b`@'%' IDENTIFIED BY '<redacted>' REQUIRE NONE"
        );
        // An account name is two literals around `@`: kept; the password is not.
        assert_eq!(
            redact(
                Engine::Mysql,
                r"ALTER USER 'cat_app'@'%' IDENTIFIED BY 'p@ss' ; SET PASSWORD FOR 'a'@'h' = 'x'"
            ),
            "ALTER USER 'cat_app'@'%' IDENTIFIED BY '<redacted>' ; SET PASSWORD FOR 'a'@'h' = '<redacted>'"
        );
        // PostgreSQL's backslash is not an escape with standard strings: the literal ends.
        assert_eq!(
            redact(Engine::Postgres, r"COMMENT ON ROLE x IS 'a\' ; SELECT 1"),
            "COMMENT ON ROLE x IS '<redacted>' ; SELECT 1"
        );
    }

    #[test]
    fn dollar_quotes_are_literals_parameters_are_not() {
        assert_eq!(
            redact(
                Engine::Postgres,
                "DO $body$ BEGIN PERFORM 'x'; END $body$; SELECT $1"
            ),
            "DO $body$<redacted>$body$; SELECT $1"
        );
        assert_eq!(
            redact(Engine::Postgres, "SELECT $$secret"),
            "SELECT $$<redacted>$$"
        );
    }

    #[test]
    fn an_unterminated_literal_hides_the_rest_and_long_statements_are_cut() {
        assert_eq!(
            redact(Engine::Mysql, "SET PASSWORD = 'abc"),
            "SET PASSWORD = '<redacted>'"
        );
        let long = format!("GRANT SELECT ON {} TO x", "t,".repeat(2000));
        let r = redact(Engine::Postgres, &long);
        assert!(r.ends_with('…'), "{r}");
        assert!(r.len() <= MAX_STATEMENT_CHARS + '…'.len_utf8());
    }

    #[test]
    fn record_ids_are_stable_uuids() {
        let a = record_id("intent-1");
        assert_eq!(a, record_id("intent-1"));
        assert_ne!(a, record_id("intent-2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    #[tokio::test]
    async fn a_trail_gathers_statements_and_effects_only_inside_its_scope() {
        statement(Engine::Postgres, "CREATE ROLE outside");
        let ((), trail) = scoped(async {
            statement(Engine::Postgres, "CREATE ROLE \"a\" PASSWORD 'pw'");
            effect("secret ns/a written");
            effect("secret ns/a written");
        })
        .await;
        assert_eq!(
            trail.statements,
            vec!["CREATE ROLE \"a\" PASSWORD '<redacted>'"]
        );
        assert_eq!(trail.statements_total, 1);
        assert_eq!(trail.effects, vec!["secret ns/a written"]);
    }

    fn intent(operation: Operation) -> Intent {
        Intent {
            intent_id: "i-1".into(),
            resource: Some(pb::ResourceRef {
                kind: "DatabaseUser".into(),
                namespace: "team-a".into(),
                name: "app".into(),
                uid: "u".into(),
                generation: 3,
            }),
            operation: operation as i32,
            desired_json: r#"{"instance":{"engine":"postgres"}}"#.into(),
            deadline_unix_ms: 0,
            audit_json: r#"{"trigger":"reconcile","instance":"team-a/pg","requestedBy":{"username":"alice"}}"#.into(),
        }
    }

    #[test]
    fn an_adoption_by_a_first_generation_is_recorded_later_ones_are_not() {
        let adopted = pb::Result {
            intent_id: "i-1".into(),
            outcome: Some(pb::result::Outcome::ObservedJson(
                r#"{"adopted":true}"#.into(),
            )),
            audit_json: String::new(),
        };
        let mut first = intent(Operation::EnsureUser);
        first.audit_json = r#"{"trigger":"change","instance":"team-a/pg","object":"app"}"#.into();
        first.resource.as_mut().unwrap().generation = 1;
        let r = record("c", &first, 0, 5, &adopted, Trail::default()).unwrap();
        assert_eq!(r.effects, vec!["existing app adopted"]);
        assert!(r.statements.is_empty());
        // A later generation finds what dbprov made: nothing to record without statements.
        let mut later = first.clone();
        later.resource.as_mut().unwrap().generation = 2;
        assert!(record("c", &later, 0, 5, &adopted, Trail::default()).is_none());
        // A resync asserts state again: an adopted flag alone is no news.
        let mut resync = first.clone();
        resync.audit_json = r#"{"trigger":"resync","object":"app"}"#.into();
        assert!(record("c", &resync, 0, 5, &adopted, Trail::default()).is_none());
    }

    #[test]
    fn no_op_successes_and_probes_leave_no_record_failures_do() {
        let ok = pb::Result {
            intent_id: "i-1".into(),
            outcome: Some(pb::result::Outcome::ObservedJson("{}".into())),
            audit_json: String::new(),
        };
        assert!(
            record(
                "c",
                &intent(Operation::EnsureUser),
                0,
                5,
                &ok,
                Trail::default()
            )
            .is_none()
        );
        assert!(
            record(
                "c",
                &intent(Operation::ProbeInstance),
                0,
                5,
                &ok,
                Trail::default()
            )
            .is_none()
        );
        let failed = pb::Result {
            intent_id: "i-1".into(),
            outcome: Some(pb::result::Outcome::Error(pb::Error {
                code: ErrorCode::Sql as i32,
                message: "permission denied".into(),
                retryable: false,
            })),
            audit_json: String::new(),
        };
        let r = record(
            "c",
            &intent(Operation::EnsureUser),
            1000,
            1250,
            &failed,
            Trail::default(),
        )
        .expect("a failure is recorded");
        assert_eq!(r.outcome, AuditOutcome::Failure);
        assert_eq!(r.reason, "SQL");
        assert_eq!(r.engine, "postgres");
        assert_eq!(r.duration_ms, 250);
        assert_eq!(r.trigger, "reconcile");
        assert_eq!(r.instance, "team-a/pg");
        assert_eq!(r.requested_by.map(|q| q.username), Some("alice".into()));
        assert_eq!(r.resource.generation, 3);
        assert_eq!(r.time, "1970-01-01T00:00:01.250Z");
        let changed = Trail {
            statements: vec!["CREATE ROLE \"app\"".into()],
            statements_total: 1,
            ..Trail::default()
        };
        let r = record(
            "c",
            &intent(Operation::EnsureUser),
            0,
            5,
            &ok,
            changed.clone(),
        )
        .expect("recorded");
        assert_eq!(r.outcome, AuditOutcome::Success);
        // A resync re-asserts the password: no record, unless the agent changed something.
        let mut resync = intent(Operation::EnsureUser);
        resync.audit_json = r#"{"trigger":"resync"}"#.into();
        assert!(record("c", &resync, 0, 5, &ok, changed.clone()).is_none());
        let corrected = pb::Result {
            outcome: Some(pb::result::Outcome::ObservedJson(
                r#"{"corrected":true}"#.into(),
            )),
            ..ok.clone()
        };
        assert!(record("c", &resync, 0, 5, &corrected, changed).is_some());
        assert_eq!(r.operation, "ensure_user");
        assert_eq!(r.id, record_id("i-1"));
    }
}
