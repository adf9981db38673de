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
    pub admin_credentials: std::sync::Arc<RecentCredentials>,
    /// Which namespaces may use the agent's own storage access.
    pub agent_storage: AgentStorageAccess,
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
            agent_storage: AgentStorageAccess::default(),
        }
    }

    /// The same context, letting `access`'s namespaces use the agent's own storage access.
    #[must_use]
    pub fn with_agent_storage(mut self, access: AgentStorageAccess) -> Self {
        self.agent_storage = access;
        self
    }
}

/// The namespaces whose backups, schedules and restores may use what the agent itself can
/// reach in object storage: its cloud identity (a `storage` block that names no credentials
/// Secret: IRSA, workload identity, instance metadata, `AWS_*` variables) and the volumes
/// mounted into it (`storage.pvc`). A tenant's manifest is untrusted input, and those are the
/// agent's, not the tenant's: without this list a namespace could read, overwrite or delete
/// whatever the agent's identity can reach, other teams' backups included. Default: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStorageAccess {
    every_namespace: bool,
    namespaces: std::collections::BTreeSet<String>,
}

impl AgentStorageAccess {
    /// From the agent's `--agent-storage-namespaces` list: namespace names, or `*` for every
    /// namespace (a cluster with one team). Blank entries are ignored.
    pub fn from_list<S: AsRef<str>>(list: &[S]) -> Self {
        let names = list
            .iter()
            .map(|n| n.as_ref().trim())
            .filter(|n| !n.is_empty());
        let mut access = Self::default();
        for name in names {
            if name == "*" {
                access.every_namespace = true;
            } else {
                access.namespaces.insert(name.to_owned());
            }
        }
        access
    }

    /// Every namespace may (tests, single-team clusters).
    pub fn every_namespace() -> Self {
        Self::from_list(&["*"])
    }

    /// Whether resources of `namespace` may use the agent's storage access.
    pub fn admits(&self, namespace: &str) -> bool {
        self.every_namespace || self.namespaces.contains(namespace)
    }
}

impl std::fmt::Debug for OpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpContext").finish_non_exhaustive()
    }
}

/// How long an instance's admin credentials, once read, are used without reading their Secret
/// again. Every operation connects (several times for some), and a burst of a thousand users
/// read the same Secret thousands of times a second from the workload apiserver. A login the
/// server refuses with reused credentials reads the Secret again at once (the password may
/// have just changed), so the time only bounds how stale a still-working login can be.
pub const ADMIN_CREDENTIALS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// A user name and its password.
pub type Credentials = (String, String);

/// Admin credentials recently read, by Secret and keys, each used until
/// [`ADMIN_CREDENTIALS_TTL`] after it was read (in memory only, never logged). One per
/// [`OpContext`], so two workload clusters never share an entry.
#[derive(Default)]
pub struct RecentCredentials {
    entries: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Credentials)>>,
}

impl std::fmt::Debug for RecentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        f.debug_struct("RecentCredentials").finish_non_exhaustive()
    }
}

impl RecentCredentials {
    pub(crate) fn fresh(&self, key: &str) -> Option<Credentials> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < ADMIN_CREDENTIALS_TTL)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn keep(&self, key: String, value: Credentials) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Expired entries go, so what is kept is bounded by the instances in use.
        entries.retain(|_, (at, _)| at.elapsed() < ADMIN_CREDENTIALS_TTL);
        entries.insert(key, (std::time::Instant::now(), value));
    }

    pub(crate) fn forget(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn admin_credentials_read_moments_ago_are_used_again_and_others_are_not() {
        let recent = super::RecentCredentials::default();
        assert_eq!(recent.fresh("ns/admin/username/password"), None);
        recent.keep(
            "ns/admin/username/password".into(),
            ("postgres".into(), "pw".into()),
        );
        assert_eq!(
            recent.fresh("ns/admin/username/password"),
            Some(("postgres".into(), "pw".into()))
        );
        // Another Secret, or other keys of the same Secret, are read on their own.
        assert_eq!(recent.fresh("ns/admin/user/password"), None);
        assert_eq!(recent.fresh("other/admin/username/password"), None);
        // A login refused with them forgets them, so the Secret is read again at once.
        recent.forget("ns/admin/username/password");
        assert_eq!(recent.fresh("ns/admin/username/password"), None);
    }

    #[test]
    fn agent_storage_is_for_the_namespaces_listed_or_none() {
        use super::AgentStorageAccess;
        let none = AgentStorageAccess::from_list::<&str>(&[]);
        assert!(!none.admits("team-a") && !none.admits(""));
        assert_eq!(none, AgentStorageAccess::default());
        let some = AgentStorageAccess::from_list(&["team-a", " team-b ", ""]);
        assert!(some.admits("team-a") && some.admits("team-b"));
        assert!(!some.admits("team-c") && !some.admits("*") && !some.admits("team"));
        let all = AgentStorageAccess::from_list(&["team-a", "*"]);
        assert!(all.admits("anything"));
        assert_eq!(all, {
            let mut a = AgentStorageAccess::every_namespace();
            a.namespaces.insert("team-a".into());
            a
        });
    }
}
