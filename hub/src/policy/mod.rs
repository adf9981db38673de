//! DatabasePolicy enforcement, free of kube and tonic (docs/policy.md): a policy is compiled
//! once ([`CompiledPolicy::compile`]) and then
//! - evaluated against one resource as JSON ([`CompiledPolicy::evaluate`]) — by the hub's
//!   validating webhook for the rules the apiserver cannot check, and at reconcile time for
//!   every rule;
//! - translated into a ValidatingAdmissionPolicy and its binding ([`cel`]) for the rules CEL
//!   can express, so the apiserver itself refuses violating objects.
//!
//! Both paths start from the same rule list ([`rules`]): each rule knows how to check a
//! resource and, where it can, its CEL expression.

pub mod cel;
mod matching;
mod rego;
pub mod rules;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::policy::{DatabasePolicySpec, EnforcementAction};

pub use matching::describe_match;

/// The resource a policy is checked against.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// Its kind, e.g. `Database`.
    pub kind: &'a str,
    /// The whole object (`metadata`, `spec`).
    pub object: &'a Value,
    /// Its previous version (admission UPDATE), for Rego rules.
    pub old_object: Option<&'a Value>,
    /// `CREATE`, `UPDATE` or `RECONCILE`.
    pub operation: &'a str,
    /// Labels of its namespace (None: cluster-scoped, or not known).
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// The instance it lives on, when known.
    pub instance: Option<&'a InstanceFacts>,
}

impl Subject<'_> {
    /// `metadata.namespace` (None: cluster-scoped).
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
    }
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    /// `spec`.
    pub fn spec(&self) -> &Value {
        &self.object["spec"]
    }
}

/// What the hub knows of the instance a resource lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    /// The ManagedCluster serving it.
    pub cluster: String,
    /// Its engine as written in manifests (`postgres`, `mysql`, ...).
    pub engine: String,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The DatabasePolicy.
    pub policy: String,
    /// The rule, as a path in the policy's spec (`naming.database`, `rego/pii-approval`).
    pub rule: String,
    /// What is wrong and what to do.
    pub message: String,
    /// What the policy does about it.
    pub action: EnforcementAction,
}

impl Violation {
    /// `DatabasePolicy <policy> rule <rule>: <message>`, as admission, status and Events say it.
    pub fn describe(&self) -> String {
        format!(
            "DatabasePolicy {} rule {}: {}",
            self.policy, self.rule, self.message
        )
    }
}

/// A part of a policy that cannot be used; the policy is `Invalid` and enforces nothing of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {problem}")]
pub struct CompileError {
    /// Path in the spec.
    pub field: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// A policy ready to be evaluated.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// The DatabasePolicy's name.
    pub name: String,
    /// Its spec.
    pub spec: DatabasePolicySpec,
    rules: Vec<rules::Rule>,
    rego: Vec<rego::CompiledRego>,
    /// Whether the webhook has anything to check (computed once: asked per review).
    needs_webhook: bool,
}

/// The resource (plural) of a dbprov kind: every kind's plural is its lower-case name + `s`.
pub fn plural(kind: &str) -> String {
    kind.to_lowercase() + "s"
}

impl CompiledPolicy {
    /// Compiles `spec`: every pattern and Rego module is checked; all problems are returned.
    pub fn compile(
        name: &str,
        spec: &DatabasePolicySpec,
    ) -> Result<CompiledPolicy, Vec<CompileError>> {
        let mut errors = Vec::new();
        let rules = rules::compile(spec, &mut errors);
        let mut rego = Vec::new();
        for (i, r) in spec.rego.iter().flatten().enumerate() {
            match rego::CompiledRego::compile(&r.name, &r.module) {
                Ok(c) => rego.push(c),
                Err(problem) => errors.push(CompileError {
                    field: format!("rego[{i}].module"),
                    problem,
                }),
            }
        }
        if let Err(e) = matching::check(spec) {
            errors.extend(e);
        }
        if errors.is_empty() {
            let instance_scoped = spec
                .match_
                .as_ref()
                .is_some_and(|m| m.clusters.is_some() || m.engines.is_some());
            let needs_webhook = !rego.is_empty()
                || instance_scoped
                || rules.iter().any(|r| {
                    matching::ALL_KINDS
                        .iter()
                        .any(|k| r.applies_to(k) && !r.cel_covers(k))
                });
            Ok(CompiledPolicy {
                name: name.to_owned(),
                spec: spec.clone(),
                rules,
                rego,
                needs_webhook,
            })
        } else {
            Err(errors)
        }
    }

    /// The kinds the policy matches.
    pub fn kinds(&self) -> Vec<&'static str> {
        matching::kinds(self.spec.match_.as_ref())
    }

    /// The enforcement action.
    pub fn action(&self) -> EnforcementAction {
        self.spec.enforcement_action
    }

    /// Whether the policy applies to `subject` (kinds, namespaces, selectors, cluster, engine).
    /// Scoping by cluster or engine needs the instance: unknown, the policy does not match.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        matching::matches(self.spec.match_.as_ref(), subject)
    }

    /// Whether deciding on a resource needs its instance (cluster or engine scope, allowed
    /// clusters of non-instance kinds): the webhook and the reconcile check then look it up.
    pub fn needs_instance(&self) -> bool {
        let m = self.spec.match_.as_ref();
        m.is_some_and(|m| m.clusters.is_some() || m.engines.is_some())
            || self
                .spec
                .access
                .as_ref()
                .is_some_and(|a| a.allowed_clusters.is_some())
    }

    /// Every rule `subject` breaks (empty when the policy does not match it). `webhook_only`:
    /// only the rules the apiserver does not check itself (its ValidatingAdmissionPolicy).
    pub fn evaluate(&self, subject: &Subject<'_>, webhook_only: bool) -> Vec<Violation> {
        if !self.matches(subject) {
            return Vec::new();
        }
        // Without a ValidatingAdmissionPolicy the webhook checks every rule.
        let skip_cel = webhook_only && !self.needs_cel_off();
        let mut found: Vec<(String, String)> = Vec::new();
        for rule in &self.rules {
            if skip_cel && rule.cel_covers(subject.kind) {
                continue;
            }
            if let Some(message) = rule.check(subject) {
                found.push((rule.id.clone(), message));
            }
        }
        for r in &self.rego {
            found.extend(r.evaluate(subject));
        }
        found
            .into_iter()
            .map(|(rule, message)| Violation {
                policy: self.name.clone(),
                rule,
                message,
                action: self.action(),
            })
            .collect()
    }

    /// True when no ValidatingAdmissionPolicy is made for this policy and the webhook checks
    /// every rule: its scope needs the instance (cluster/engine), which CEL cannot look up.
    pub fn needs_cel_off(&self) -> bool {
        self.spec
            .match_
            .as_ref()
            .is_some_and(|m| m.clusters.is_some() || m.engines.is_some())
    }

    /// Whether the webhook has anything to check for this policy.
    pub fn needs_webhook(&self) -> bool {
        self.needs_webhook
    }

    /// The rules, for the ValidatingAdmissionPolicy.
    pub fn rules(&self) -> &[rules::Rule] {
        &self.rules
    }

    /// The password rules of this policy, as the agent applies them.
    pub fn password_rules(&self) -> Option<dbprov_contract::user::PasswordRules> {
        let p = self.spec.password_policy.as_ref()?;
        let rules = dbprov_contract::user::PasswordRules {
            min_length: p.min_length.and_then(|l| u32::try_from(l).ok()),
            require_special: p.require_special_chars.unwrap_or(false),
            require_uppercase: p.require_uppercase.unwrap_or(false),
            require_lowercase: p.require_lowercase.unwrap_or(false),
            require_digits: p.require_digits.unwrap_or(false),
            forbidden_patterns: p.forbidden_patterns.clone().unwrap_or_default(),
            policies: vec![self.name.clone()],
        };
        Some(rules)
    }
}

/// Every compiled policy, by name.
pub type PolicyMap = BTreeMap<String, std::sync::Arc<CompiledPolicy>>;

/// The violations of `subject` under every policy of `policies`.
pub fn evaluate_all(
    policies: &PolicyMap,
    subject: &Subject<'_>,
    webhook_only: bool,
) -> Vec<Violation> {
    policies
        .values()
        .flat_map(|p| p.evaluate(subject, webhook_only))
        .collect()
}

/// The merged password rules of the `deny` policies matching `subject`, for the agent: it
/// generates passwords meeting them and refuses supplied passwords that do not. (`warn` and
/// `audit` policies never change what the agent does.)
pub fn password_rules(
    policies: &PolicyMap,
    subject: &Subject<'_>,
) -> Option<dbprov_contract::user::PasswordRules> {
    let mut merged: Option<dbprov_contract::user::PasswordRules> = None;
    for p in policies.values() {
        if p.action() != EnforcementAction::Deny || !p.matches(subject) {
            continue;
        }
        if let Some(r) = p.password_rules() {
            match &mut merged {
                Some(m) => m.merge(&r),
                None => merged = Some(r),
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests;
