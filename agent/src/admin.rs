//! `AgentAdmin` on the agent's admin port (mTLS, admin identities only), with health and
//! reflection, for people debugging a workload cluster with grpcurl.

use std::sync::Arc;

use dbprov_common::{
    grpc::{ServeError, caller, debug_services, tls_incoming},
    tls::Identity,
};
use dbprov_proto::{
    admin::v1::{
        self as admin,
        agent_admin_server::{AgentAdmin, AgentAdminServer},
    },
    agent::v1 as pb,
};
use tonic::{Request, Response, Status};

use crate::{connection::SharedStatus, executor::Executor};

/// The AgentAdmin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    /// Cluster served.
    pub cluster: String,
    /// Hub address.
    pub hub_address: String,
    /// Trust domain of admin identities.
    pub trust_domain: String,
    /// Capabilities reported to the hub.
    pub capabilities: pb::Capabilities,
    /// Connection status.
    pub status: SharedStatus,
    /// The executor.
    pub executor: Executor,
}

impl AdminService {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match caller(req, &self.trust_domain)? {
            Identity::Admin { .. } => Ok(()),
            id => Err(Status::permission_denied(format!(
                "{id} may not call AgentAdmin (an admin certificate is needed)"
            ))),
        }
    }
}

#[tonic::async_trait]
impl AgentAdmin for AdminService {
    async fn get_status(
        &self,
        request: Request<admin::GetStatusRequest>,
    ) -> Result<Response<admin::AgentStatus>, Status> {
        self.authorize(&request)?;
        let s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(Response::new(admin::AgentStatus {
            cluster_name: self.cluster.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            hub_address: self.hub_address.clone(),
            connected: s.connected,
            session_id: s.session_id,
            last_error: s.last_error,
            capabilities: Some(self.capabilities.clone()),
        }))
    }

    async fn list_operations(
        &self,
        request: Request<admin::ListOperationsRequest>,
    ) -> Result<Response<admin::ListOperationsResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(admin::ListOperationsResponse {
            operations: self.executor.running_operations(),
        }))
    }
}

/// Serves AgentAdmin, health and reflection on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: AdminService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AgentAdminServer<AdminService>>()
        .await;
    let mut server = tonic::transport::Server::builder();
    debug_services(&mut server, health)?
        .add_service(AgentAdminServer::new(service))
        .serve_with_incoming_shutdown(tls_incoming(listener, tls), shutdown)
        .await?;
    Ok(())
}
