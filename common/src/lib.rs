//! Code both dbprov binaries need.

pub mod telemetry;
