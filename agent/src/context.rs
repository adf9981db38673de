//! What operations need from the agent process: the workload cluster's API (Secrets), where
//! volumes are mounted and where client tools are.

/// Shared by every operation.
#[derive(Clone)]
pub struct OpContext {
    /// Client of the workload cluster the agent runs in.
    pub kube: kube::Client,
    /// Where PVCs are mounted (`<root>/<claimName>`).
    pub pvc_root: std::path::PathBuf,
    /// Directories searched for client tools (then PATH).
    pub tool_dirs: Vec<std::path::PathBuf>,
    /// Admin credentials read moments ago, shared by the operations of this context only.
    pub admin_credentials: std::sync::Arc<crate::db::RecentCredentials>,
}

impl OpContext {
    /// A context for the workload cluster `kube`, with nothing read yet.
    pub fn new(
        kube: kube::Client,
        pvc_root: std::path::PathBuf,
        tool_dirs: Vec<std::path::PathBuf>,
    ) -> Self {
        Self {
            kube,
            pvc_root,
            tool_dirs,
            admin_credentials: std::sync::Arc::default(),
        }
    }
}

impl std::fmt::Debug for OpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpContext").finish_non_exhaustive()
    }
}
