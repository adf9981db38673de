//! dbprov's gRPC protocol, generated at build time from `proto/` (see `build.rs`).

/// `dbprov.agent.v1`: the hub <-> agent stream.
pub mod agent {
    /// Version 1 of the agent protocol.
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        tonic::include_proto!("dbprov.agent.v1");
    }
}

/// The delivery classes of agent operations, shared by the hub and the agent so both sides
/// of the delivery contract (`docs/protocol.md`) read one list.
impl agent::v1::Operation {
    /// Whether the agent journals this operation: its effect is not idempotent by
    /// construction, so running it twice for one intent is not harmless. Ensure-* operations
    /// converge to the desired state and probes only read, so a second run changes nothing;
    /// they are not journaled.
    pub fn is_journaled(self) -> bool {
        match self {
            // Drops the target (dropExisting/inPlace) or loads data into it: twice loses what
            // was written in between, or loads twice.
            Self::Restore
            // Creates a new login / password each time.
            | Self::RotatePassword
            // A second drop would drop a same-named object created since.
            | Self::DropDatabase
            | Self::DropUser
            | Self::DropRole
            // A second delete would delete an artifact written to the same key since.
            | Self::DeleteBackup
            // Expensive and overwrites the artifact: answered from the journal instead.
            | Self::RunBackup => true,
            Self::Unspecified
            | Self::ProbeInstance
            | Self::EnsureDatabase
            | Self::EnsureUser
            | Self::EnsureRole
            | Self::EnsureGrant
            // Revoking again revokes nothing more.
            | Self::RevokeGrant
            // Not served by this agent version (answered UNSUPPORTED, no effect).
            | Self::ApplyMigrations => false,
        }
    }

    /// Whether the hub's id for an intent of this operation is derived from the intent's
    /// scope elsewhere than its resource's generation: long operations (backups, restores)
    /// keep theirs in the resource's `status.operationId`; a rotation's is scoped by its
    /// persisted `rotationId` (retirements share the operation, so one id per resource,
    /// generation and operation would answer one with the other's result).
    pub fn has_own_id(self) -> bool {
        matches!(self, Self::Restore | Self::RunBackup | Self::RotatePassword)
    }

    /// Whether a short intent of this operation keeps one id, derived from its resource's
    /// uid, generation and attempt, until the hub has a result for it: the journaled
    /// operations less those with an id of their own ([`Self::has_own_id`]). A re-send after
    /// a deadline, a disconnect or a hub restart then reaches the agent as the *same* intent,
    /// which it answers from its done table or journal, or re-attaches to, instead of running
    /// it again.
    pub fn keeps_its_id(self) -> bool {
        self.is_journaled() && !self.has_own_id()
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
    fn short_journaled_operations_keep_their_id() {
        use agent::v1::Operation;
        let keep: Vec<Operation> = (0..64)
            .filter_map(|n| Operation::try_from(n).ok())
            .filter(|op| op.keeps_its_id())
            .collect();
        assert_eq!(
            keep,
            [
                Operation::DropDatabase,
                Operation::DropUser,
                Operation::DropRole,
                Operation::DeleteBackup
            ]
            .iter()
            .copied()
            .filter(|op| op.is_journaled())
            .collect::<Vec<_>>()
        );
        assert_eq!(keep.len(), 4);
        for op in [
            Operation::Restore,
            Operation::RunBackup,
            Operation::RotatePassword,
        ] {
            assert!(op.is_journaled() && !op.keeps_its_id(), "{op:?}");
        }
        assert!(!Operation::EnsureGrant.is_journaled());
        assert!(!Operation::RevokeGrant.keeps_its_id());
    }

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
