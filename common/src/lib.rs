//! Code both dbprov binaries need.

pub mod grpc;
pub mod metrics;
pub mod telemetry;
pub mod tls;
