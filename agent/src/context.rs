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
}

impl std::fmt::Debug for OpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpContext").finish_non_exhaustive()
    }
}
