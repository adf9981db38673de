//! dbprov's gRPC protocol, generated at build time from `proto/` (see `build.rs`).

/// `dbprov.agent.v1`: the hub <-> agent stream.
pub mod agent {
    /// Version 1 of the agent protocol.
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        tonic::include_proto!("dbprov.agent.v1");
    }
}

/// `dbprov.admin.v1`: `HubAdmin` and `AgentAdmin`, for people and grpcurl.
pub mod admin {
    /// Version 1 of the admin APIs.
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        tonic::include_proto!("dbprov.admin.v1");
    }
}

/// `dbprov.bootstrap.v1`: how an agent obtains and renews its client certificate.
pub mod bootstrap {
    /// Version 1 of the bootstrap API.
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        tonic::include_proto!("dbprov.bootstrap.v1");
    }
}

/// Encoded `FileDescriptorSet` of every dbprov proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dbprov_descriptor");

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_describes_the_agent_hub_service() {
        // Reflection serves this set: without the service in it grpcurl cannot describe the API.
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "dbprov.agent.v1")
            .expect("dbprov.agent.v1 in the descriptor set");
        let service = file
            .service
            .iter()
            .find(|s| s.name() == "AgentHub")
            .unwrap();
        let connect = service
            .method
            .iter()
            .find(|m| m.name() == "Connect")
            .unwrap();
        assert!(connect.client_streaming() && connect.server_streaming());
    }

    #[test]
    fn messages_round_trip() {
        let hello = agent::v1::AgentMessage {
            kind: Some(agent::v1::agent_message::Kind::Hello(agent::v1::Hello {
                cluster_name: "workload-a".into(),
                agent_version: "0.1.0".into(),
                capabilities: Some(agent::v1::Capabilities {
                    engines: vec!["postgres".into()],
                    ..Default::default()
                }),
                running_operations: vec![],
            })),
        };
        let bytes = hello.encode_to_vec();
        let back = agent::v1::AgentMessage::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, hello);
    }
}
