//! Compiles `proto/**/*.proto` with protox (pure Rust: no system `protoc` needed) and
//! generates tonic/prost code plus a descriptor set for gRPC reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/dbprov/agent/v1/agent.proto",
    "proto/dbprov/admin/v1/admin.proto",
    "proto/dbprov/bootstrap/v1/bootstrap.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    fs::write(out_dir.join("dbprov_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The RPC is named `Connect`, which would clash with the generated
        // `AgentHubClient::connect(endpoint)` constructor; clients use `new(channel)`.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
