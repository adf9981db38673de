//! Kubernetes Events about dbprov resources. The hub has one recorder
//! ([`crate::controller::Context::recorder`]): it remembers recent events, so a repeated one
//! (same object, type and reason within minutes) becomes a series on one Event object instead
//! of a new object each time.

use kube::{Resource, runtime::events::Event};

use crate::controller::{Context, reason::Reason};

/// Publishes an Event about `obj` with `reason` (its type comes from the reason); a failure
/// to publish is only logged.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    reason: Reason,
    note: impl Into<String>,
) {
    let event = Event {
        type_: reason.event_type(),
        reason: reason.as_str().into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}
