//! Audit records: queue, shippers and sinks (docs/audit.md).

pub mod config;
pub mod pipeline;
pub mod queue;
pub mod sink;

pub use pipeline::{AuditLog, Shipping};
pub use queue::WhenFull;
