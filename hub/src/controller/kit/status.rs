//! Status writes: one `Ready` condition (its transition time moves only when its status
//! does), the phase, `observedGeneration`, `message`, `lastReconcileTime` and whatever a kind
//! adds — computed as a value first ([`StatusUpdate::patch`], pure and unit-tested), then
//! applied as one merge patch of the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Map, Value};

use super::scoped::Scoped;
use crate::controller::{Context, Error, reason::Reason};

/// One status write.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    /// None: the phase is left as it is.
    phase: Option<Value>,
    ready: bool,
    reason: Reason,
    message: String,
    extra: Map<String, Value>,
}

impl StatusUpdate {
    /// Ready=True with `reason`, in the reason's phase.
    pub fn ready(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(true, reason, message)
    }

    /// Ready=False with `reason`, in the reason's phase.
    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(false, reason, message)
    }

    fn new(ready: bool, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            phase: serde_json::to_value(reason.phase()).ok(),
            ready,
            reason,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Shows `phase` instead of the reason's (kinds with phases of their own).
    pub fn phase(mut self, phase: impl serde::Serialize) -> Self {
        self.phase = serde_json::to_value(phase).ok();
        self
    }

    /// Leaves the phase as it is (e.g. an instance waiting to be deleted stays Ready).
    pub fn keep_phase(mut self) -> Self {
        self.phase = None;
        self
    }

    /// Also writes `status.<key>`.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.extra.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// Also writes every field of `fields` (an object) into status.
    pub fn with_all(mut self, fields: Value) -> Self {
        if let Value::Object(fields) = fields {
            self.extra.extend(fields);
        }
        self
    }

    /// The reason.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether Ready is True.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The merge patch for an object at `generation` whose Ready condition was `previous`.
    pub fn patch(
        &self,
        previous: Option<&[Condition]>,
        generation: Option<i64>,
        now: Time,
    ) -> Value {
        let status = if self.ready { "True" } else { "False" };
        let previous = previous.into_iter().flatten().find(|c| c.type_ == "Ready");
        let condition = Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: self.reason.as_str().into(),
            message: self.message.clone(),
            last_transition_time: previous
                .filter(|p| p.status == status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone()),
            observed_generation: generation,
        };
        let mut out = Map::new();
        if let Some(phase) = &self.phase {
            out.insert("phase".into(), phase.clone());
        }
        out.insert(
            "conditions".into(),
            serde_json::to_value([condition]).unwrap_or(Value::Null),
        );
        out.insert("observedGeneration".into(), generation.into());
        out.insert("message".into(), self.message.clone().into());
        out.insert(
            "lastReconcileTime".into(),
            serde_json::to_value(now).unwrap_or(Value::Null),
        );
        out.extend(self.extra.clone());
        serde_json::json!({ "status": out })
    }

    /// Writes this status to `obj`, whose current conditions are `previous`.
    pub async fn apply<K: Scoped>(
        &self,
        ctx: &Context,
        obj: &K,
        previous: Option<&[Condition]>,
    ) -> Result<(), Error> {
        let patch = self.patch(previous, obj.meta().generation, super::now());
        K::api_for(&ctx.client, obj)
            .patch_status(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }
}

/// Merges `fields` (an object) into the status of `obj`, without touching its condition.
pub async fn merge<K: Scoped>(ctx: &Context, obj: &K, fields: Value) -> Result<(), Error> {
    K::api_for(&ctx.client, obj)
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": fields })),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::OperationPhase;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn ready_since(status: &str, t: i64) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "Synced".into(),
            message: String::new(),
            last_transition_time: at(t),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn the_transition_time_moves_only_when_the_condition_status_does() {
        let update = StatusUpdate::ready(Reason::Synced, "in sync");
        let kept = update.patch(Some(&[ready_since("True", 100)]), Some(2), at(200));
        assert_eq!(
            kept["status"]["conditions"][0]["lastTransitionTime"],
            serde_json::to_value(at(100)).unwrap()
        );
        let moved = update.patch(Some(&[ready_since("False", 100)]), Some(2), at(200));
        assert_eq!(
            moved["status"]["conditions"][0]["lastTransitionTime"],
            serde_json::to_value(at(200)).unwrap()
        );
        assert_eq!(moved["status"]["observedGeneration"], 2);
        assert_eq!(moved["status"]["phase"], "Ready");
        assert_eq!(moved["status"]["conditions"][0]["reason"], "Synced");
    }

    #[test]
    fn phase_and_extra_fields_are_merged_into_the_same_patch() {
        let update = StatusUpdate::not_ready(Reason::BackupFailed, "dump failed")
            .phase(OperationPhase::Failed)
            .with("backup", serde_json::json!({"path": "a/b"}))
            .with_all(serde_json::json!({"retries": 2}));
        let p = update.patch(None, Some(1), at(5));
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(p["status"]["backup"]["path"], "a/b");
        assert_eq!(p["status"]["retries"], 2);
        assert_eq!(p["status"]["conditions"][0]["status"], "False");
        assert_eq!(p["status"]["message"], "dump failed");
    }

    #[test]
    fn blocked_reasons_show_their_phase() {
        let p = StatusUpdate::not_ready(Reason::InstanceNotReady, "waiting").patch(
            None,
            Some(1),
            at(1),
        );
        assert_eq!(p["status"]["phase"], "Pending");
        let p = StatusUpdate::not_ready(Reason::SQLError, "no").patch(None, Some(1), at(1));
        assert_eq!(p["status"]["phase"], "Failed");
    }
}
