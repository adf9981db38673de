//! Rego rules of a DatabasePolicy, evaluated in-process with regorus. A module defines
//! `violation` as a set of objects with a `msg` — the Gatekeeper convention — over
//! `input.review` (`object`, `oldObject`, `operation`, `kind.kind`, `namespace`, `name`) and
//! `input.parameters` (empty), so Gatekeeper rule bodies work unchanged. Rego v1 syntax is read
//! first, then v0 (Gatekeeper's templates are mostly v0).

use std::time::Duration;

use regorus::{Engine, Value};

use super::Subject;

/// A compiled module; evaluation clones the engine (it holds the parsed module only).
#[derive(Debug)]
pub struct CompiledRego {
    name: String,
    engine: Engine,
    rule: String,
}

/// Longest a single evaluation may run: admission must answer within the webhook timeout.
const EVAL_LIMIT: Duration = Duration::from_millis(250);

impl CompiledRego {
    /// Parses `module`; the error says what to fix.
    pub fn compile(name: &str, module: &str) -> Result<CompiledRego, String> {
        let parse = |v0: bool| -> Result<(Engine, String), String> {
            let mut engine = Engine::new();
            engine.set_rego_v0(v0);
            engine.set_strict_builtin_errors(false);
            engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit: EVAL_LIMIT,
                check_interval: std::num::NonZeroU32::MIN,
            });
            let package = engine
                .add_policy(format!("{name}.rego"), module.to_owned())
                .map_err(|e| e.to_string())?;
            Ok((engine, package))
        };
        let (engine, package) = match parse(false) {
            Ok(ok) => ok,
            Err(v1) => match parse(true) {
                Ok(ok) => ok,
                Err(_) => return Err(format!("the Rego module does not parse: {v1}")),
            },
        };
        let rule = format!("{package}.violation");
        let compiled = CompiledRego {
            name: name.to_owned(),
            engine,
            rule,
        };
        // A module without `violation` would enforce nothing: say so now.
        let probe = serde_json::json!({"review": {"object": {}, "operation": "CREATE", "kind": {"kind": ""}}, "parameters": {}});
        compiled
            .run(&probe)
            .map_err(|e| format!("evaluating `violation` on an empty object failed: {e}; the module must define `violation` as a set of objects with `msg` (Gatekeeper convention)"))?;
        Ok(compiled)
    }

    fn run(&self, input: &serde_json::Value) -> Result<Vec<String>, String> {
        let mut engine = self.engine.clone();
        let input = Value::from_json_str(&input.to_string()).map_err(|e| e.to_string())?;
        engine.set_input(input);
        let result = engine
            .eval_rule(self.rule.clone())
            .map_err(|e| e.to_string())?;
        if result == Value::Undefined {
            return Ok(Vec::new());
        }
        let json: serde_json::Value =
            serde_json::from_str(&result.to_json_str().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let items = match json {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Null => Vec::new(),
            other => {
                return Err(format!(
                    "`violation` must be a set of objects with `msg`, not {other}"
                ));
            }
        };
        Ok(items
            .into_iter()
            .map(|v| match v.get("msg").and_then(|m| m.as_str()) {
                Some(m) => m.to_owned(),
                None => v.to_string(),
            })
            .collect())
    }

    /// Violations of `subject` as `(rule, message)`. A module that fails at run time is a
    /// violation of its own: a broken rule must not let everything through.
    pub fn evaluate(&self, subject: &Subject<'_>) -> Vec<(String, String)> {
        let input = serde_json::json!({
            "review": {
                "object": subject.object,
                "oldObject": subject.old_object,
                "operation": subject.operation,
                "kind": {"group": "dbops.dbprovision.io", "version": "v1alpha1", "kind": subject.kind},
                "name": subject.name(),
                "namespace": subject.namespace().unwrap_or_default(),
            },
            "parameters": {},
        });
        let rule = format!("rego/{}", self.name);
        match self.run(&input) {
            Ok(msgs) => msgs.into_iter().map(|m| (rule.clone(), m)).collect(),
            Err(e) => vec![(rule, format!("the Rego rule could not be evaluated: {e}"))],
        }
    }
}
