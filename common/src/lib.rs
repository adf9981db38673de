//! Code both dbprov binaries need.

pub mod telemetry;
pub mod tls;
