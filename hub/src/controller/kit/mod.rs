//! The pieces every controller is made of, kept out of the controllers themselves so that the
//! code of one kind is only what is specific to it:
//! - [`cache`]: reads of other objects from the watch caches, and wake-ups of waiting objects;
//! - [`runner`]: running a kube-rs controller with the cleanup finalizer, metrics and a
//!   resync limited to the cluster that reconnected;
//! - [`status`]: the `Ready` condition and phase, computed then applied as one merge patch;
//! - [`events`]: Kubernetes Events, typed by [`super::reason::Reason`];
//! - [`claims`]: one server object, one owning resource across namespaces;
//! - [`consent`]: what a resource may use outside its namespace (tenancy);
//! - [`instance`]: resolving the instance a resource lives on, and the cluster serving it
//!   ([`resolved`]: what that yields, shared with [`consent`]);
//! - [`privileges`]: privileges and accounts a tenant's spec may not have without the
//!   instance's allowance;
//! - [`dispatch`]: building intents and sending them to an agent;
//! - [`operation`]: starting or re-attaching to a long operation and following it;
//! - [`drift`]: what to ask an agent for (apply, detect, correct) and what was applied last;
//! - [`policy`]: the DatabasePolicy check before anything is sent to an agent.

/// Finalizer that holds a resource until its cleanup (drop, revoke, artifact deletion, or the
/// deletion policy's decision to keep it) has been carried out.
pub const FINALIZER: &str = "dbops.dbprovision.io/cleanup";

pub mod adoption;
pub mod audit;
pub mod cache;
pub mod claims;
pub mod consent;
pub mod dispatch;
pub mod drift;
pub mod events;
pub mod instance;
pub mod operation;
pub mod policy;
pub mod privileges;
pub mod resolved;
pub mod runner;
pub mod scoped;
pub mod status;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The current time, as Kubernetes writes it.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
