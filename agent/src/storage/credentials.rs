//! Which credential source each object store uses, decided from the storage spec and the
//! agent's environment before any network call, so that the source can be logged, named in
//! error messages, and unit-tested for the flows no local server can play (EKS Pod Identity,
//! instance metadata, GCE/GKE metadata, Azure managed identity).
//!
//! The order mirrors each SDK's standard chain (aws-config's default chain: environment,
//! profile, web identity, container, instance metadata; Google's application default
//! credentials: `GOOGLE_APPLICATION_CREDENTIALS`, the gcloud file, the metadata server;
//! Azure's: workload identity, then managed identity), after the Secret a spec names, which
//! always wins. The selected source alone is then built, so the one logged is the one used.

use std::fmt;

/// Account key entry of the credentials Secret.
pub const KEY_ENTRY: &str = "AZURE_STORAGE_KEY";

/// What the selection may read of the agent's process environment.
pub trait Environment {
    /// A variable's value; empty counts as unset (a chart that renders `value: ""`).
    fn var(&self, name: &str) -> Option<String>;
    /// Whether a file exists.
    fn exists(&self, path: &str) -> bool;
}

/// The agent's real environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }
}

/// A source that was asked for but cannot be used, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceRefused(pub String);

/// Where S3 credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsSource {
    /// Static keys in the Secret the spec names.
    Secret {
        /// Secret name.
        name: String,
    },
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`).
    EnvironmentKeys,
    /// A shared config/credentials file profile.
    Profile {
        /// Profile name.
        profile: String,
    },
    /// IRSA: `AssumeRoleWithWebIdentity` with a projected ServiceAccount token.
    WebIdentity {
        /// Role to assume.
        role_arn: String,
        /// The token file.
        token_file: String,
        /// STS endpoint override, when set.
        sts_endpoint: Option<String>,
    },
    /// EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI` + authorization token file).
    PodIdentity {
        /// The agent's credentials endpoint.
        uri: String,
    },
    /// ECS task role (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, or a full URI without a
    /// token file).
    Container,
    /// The EC2 instance profile through the instance metadata service (IMDSv2).
    InstanceMetadata,
}

impl fmt::Display for AwsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsSource::Secret { name } => write!(f, "static keys from Secret {name}"),
            AwsSource::EnvironmentKeys => {
                f.write_str("static keys from the agent's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
            }
            AwsSource::Profile { profile } => write!(f, "AWS profile {profile:?}"),
            AwsSource::WebIdentity {
                role_arn,
                token_file,
                sts_endpoint,
            } => {
                write!(
                    f,
                    "AWS web identity (IRSA): role {role_arn}, token file {token_file}"
                )?;
                if let Some(ep) = sts_endpoint {
                    write!(f, ", STS endpoint {ep}")?;
                }
                Ok(())
            }
            AwsSource::PodIdentity { uri } => write!(f, "EKS Pod Identity ({uri})"),
            AwsSource::Container => f.write_str("ECS container credentials"),
            AwsSource::InstanceMetadata => f.write_str("EC2 instance metadata (instance profile)"),
        }
    }
}

impl AwsSource {
    /// What to do when this source gave no credentials.
    pub fn fix(&self) -> &'static str {
        match self {
            AwsSource::Secret { .. } => {
                "check the keys in the Secret named by storage.s3.secretRef"
            }
            AwsSource::EnvironmentKeys => {
                "check the agent's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or set storage.s3.secretRef"
            }
            AwsSource::Profile { .. } => "check the agent's AWS profile files and AWS_PROFILE",
            AwsSource::WebIdentity { .. } => {
                "check that the role trusts the cluster's OIDC issuer and this ServiceAccount, \
                 and that the token audience is the one the STS expects (chart value \
                 cloudIdentity.token.audience; sts.amazonaws.com on AWS)"
            }
            AwsSource::PodIdentity { .. } => {
                "check the EKS Pod Identity association of the agent's ServiceAccount"
            }
            AwsSource::Container => "check the task role of the container",
            AwsSource::InstanceMetadata => {
                "no static keys in storage.s3 and no AWS identity in the agent's environment: \
                 set storage.s3.secretRef, or annotate the agent's ServiceAccount \
                 (eks.amazonaws.com/role-arn, chart value serviceAccount.annotations) for IRSA"
            }
        }
    }
}

/// Picks the S3 credential source: the spec's Secret, else the first source of aws-config's
/// default chain whose settings are present in `env`; instance metadata when none is (unless
/// `AWS_EC2_METADATA_DISABLED` turns it off, which leaves nothing).
pub fn aws_source(secret: Option<&str>, env: &dyn Environment) -> Result<AwsSource, SourceRefused> {
    if let Some(name) = secret {
        return Ok(AwsSource::Secret {
            name: name.to_owned(),
        });
    }
    match (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(_), Some(_)) => return Ok(AwsSource::EnvironmentKeys),
        (Some(_), None) | (None, Some(_)) => {
            return Err(SourceRefused(
                "the agent has only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its \
                 environment: set both, or neither to use its cloud identity"
                    .into(),
            ));
        }
        (None, None) => {}
    }
    if let Some(profile) = env.var("AWS_PROFILE") {
        return Ok(AwsSource::Profile { profile });
    }
    let home = env.var("HOME").unwrap_or_default();
    let files = [
        env.var("AWS_SHARED_CREDENTIALS_FILE")
            .unwrap_or_else(|| format!("{home}/.aws/credentials")),
        env.var("AWS_CONFIG_FILE")
            .unwrap_or_else(|| format!("{home}/.aws/config")),
    ];
    if files.iter().any(|f| env.exists(f)) {
        return Ok(AwsSource::Profile {
            profile: "default".into(),
        });
    }
    match (
        env.var("AWS_ROLE_ARN"),
        env.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
    ) {
        (Some(role_arn), Some(token_file)) => {
            if !env.exists(&token_file) {
                return Err(SourceRefused(format!(
                    "AWS_WEB_IDENTITY_TOKEN_FILE {token_file} does not exist in the agent: \
                     mount the projected ServiceAccount token there (chart value \
                     cloudIdentity.token.enabled=true) or point the variable at it"
                )));
            }
            return Ok(AwsSource::WebIdentity {
                role_arn,
                token_file,
                sts_endpoint: env
                    .var("AWS_ENDPOINT_URL_STS")
                    .or_else(|| env.var("AWS_ENDPOINT_URL")),
            });
        }
        (Some(_), None) => {
            return Err(SourceRefused(
                "the agent has AWS_ROLE_ARN but no AWS_WEB_IDENTITY_TOKEN_FILE: mount a \
                 projected ServiceAccount token (chart value cloudIdentity.token.enabled=true) \
                 and set AWS_WEB_IDENTITY_TOKEN_FILE to its path"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(SourceRefused(
                "the agent has AWS_WEB_IDENTITY_TOKEN_FILE but no AWS_ROLE_ARN: annotate its \
                 ServiceAccount with eks.amazonaws.com/role-arn (EKS injects AWS_ROLE_ARN) or \
                 set AWS_ROLE_ARN"
                    .into(),
            ));
        }
        (None, None) => {}
    }
    if let Some(uri) = env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        return match env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(file) if !env.exists(&file) => Err(SourceRefused(format!(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file} does not exist in the agent: \
                 EKS Pod Identity mounts it when the ServiceAccount has an association"
            ))),
            Some(_) => Ok(AwsSource::PodIdentity { uri }),
            None => Ok(AwsSource::Container),
        };
    }
    if env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some() {
        return Ok(AwsSource::Container);
    }
    if env
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(SourceRefused(
            "no static keys in storage.s3 and no AWS identity in the agent's environment \
             (instance metadata is disabled by AWS_EC2_METADATA_DISABLED): set \
             storage.s3.secretRef, or annotate the agent's ServiceAccount \
             (eks.amazonaws.com/role-arn, chart value serviceAccount.annotations) for IRSA"
                .into(),
        ));
    }
    Ok(AwsSource::InstanceMetadata)
}

/// Where GCS credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcsSource {
    /// A service-account JSON key in the Secret the spec names.
    Secret {
        /// Secret name.
        name: String,
        /// Key in the Secret.
        key: String,
    },
    /// No credentials, against the spec's endpoint (emulators).
    Anonymous,
    /// The file `GOOGLE_APPLICATION_CREDENTIALS` names (a key, or a workload identity
    /// federation config).
    CredentialsFile {
        /// Its path.
        path: String,
    },
    /// gcloud's application default credentials file.
    GcloudFile,
    /// The metadata server (GKE workload identity, or the node's service account).
    MetadataServer,
}

impl fmt::Display for GcsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcsSource::Secret { name, key } => {
                write!(f, "service-account key from Secret {name} key {key:?}")
            }
            GcsSource::Anonymous => f.write_str("anonymous (emulator endpoint)"),
            GcsSource::CredentialsFile { path } => {
                write!(f, "application default credentials file {path}")
            }
            GcsSource::GcloudFile => f.write_str("gcloud application default credentials"),
            GcsSource::MetadataServer => {
                f.write_str("metadata server (GKE workload identity / node service account)")
            }
        }
    }
}

/// Picks the GCS credential source: the spec's Secret; else anonymous when the spec names an
/// endpoint (an emulator); else application default credentials in their standard order.
pub fn gcs_source(
    secret: Option<(&str, &str)>,
    endpoint: bool,
    env: &dyn Environment,
) -> Result<GcsSource, SourceRefused> {
    if let Some((name, key)) = secret {
        return Ok(GcsSource::Secret {
            name: name.to_owned(),
            key: key.to_owned(),
        });
    }
    if endpoint {
        return Ok(GcsSource::Anonymous);
    }
    if let Some(path) = env.var("GOOGLE_APPLICATION_CREDENTIALS") {
        if !env.exists(&path) {
            return Err(SourceRefused(format!(
                "GOOGLE_APPLICATION_CREDENTIALS {path} does not exist in the agent: mount the \
                 file there or unset the variable to use GKE workload identity"
            )));
        }
        return Ok(GcsSource::CredentialsFile { path });
    }
    let home = env.var("HOME").unwrap_or_default();
    if env.exists(&format!(
        "{home}/.config/gcloud/application_default_credentials.json"
    )) {
        return Ok(GcsSource::GcloudFile);
    }
    Ok(GcsSource::MetadataServer)
}

/// Where Azure Blob credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureSource {
    /// The account key (`AZURE_STORAGE_KEY`) in the spec's Secret.
    SharedKey {
        /// Secret name.
        name: String,
    },
    /// A SAS token in the spec's Secret.
    Sas {
        /// Secret name.
        name: String,
        /// Key in the Secret.
        key: String,
    },
    /// Microsoft Entra workload identity: a federated ServiceAccount token exchanged for an
    /// access token.
    WorkloadIdentity {
        /// Application (client) id.
        client_id: String,
        /// Tenant id.
        tenant_id: String,
        /// The federated token file.
        token_file: String,
    },
    /// The system-assigned managed identity through the instance metadata service.
    ManagedIdentity,
}

impl fmt::Display for AzureSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureSource::SharedKey { name } => write!(f, "shared key from Secret {name}"),
            AzureSource::Sas { name, key } => {
                write!(f, "SAS token from Secret {name} key {key:?}")
            }
            AzureSource::WorkloadIdentity {
                client_id,
                tenant_id,
                token_file,
            } => write!(
                f,
                "Azure workload identity: client {client_id}, tenant {tenant_id}, token file {token_file}"
            ),
            AzureSource::ManagedIdentity => {
                f.write_str("Azure system-assigned managed identity (instance metadata)")
            }
        }
    }
}

impl AzureSource {
    /// What to do when this source gave no credentials.
    pub fn fix(&self) -> &'static str {
        match self {
            AzureSource::SharedKey { .. } => {
                "check AZURE_STORAGE_KEY in the Secret named by storage.azure.secretRef"
            }
            AzureSource::Sas { .. } => {
                "the SAS token was refused: issue a new one that is valid now, covers this \
                 container and allows read, write, list and delete, and put it in the Secret"
            }
            AzureSource::WorkloadIdentity { .. } => {
                "check the federated credential of the app registration (issuer = the \
                 cluster's OIDC issuer, subject = system:serviceaccount:<namespace>:<name>) \
                 and its Storage Blob Data Contributor role on the account"
            }
            AzureSource::ManagedIdentity => {
                "no credentials in storage.azure and no Azure identity in the agent's \
                 environment: set storage.azure.secretRef (AZURE_STORAGE_KEY or \
                 AZURE_STORAGE_SAS_TOKEN), or enable workload identity (chart values \
                 serviceAccount.annotations azure.workload.identity/client-id and podLabels \
                 azure.workload.identity/use: \"true\")"
            }
        }
    }
}

/// Picks the Azure credential source. With a Secret, `secret_keys` are the keys it holds
/// (`None`: the Secret does not exist; the caller reports that) and `sas_key` the key of the
/// SAS token; the account key wins over a SAS token, as before. Without a Secret: workload
/// identity when its variables are set (all three, or a refusal naming the missing one),
/// else the system-assigned managed identity. A user-assigned managed identity through IMDS
/// (`AZURE_CLIENT_ID` without a federated token) is refused: azure_identity 0.21 asks IMDS
/// for the system-assigned identity only, and using another identity than the one asked for
/// would be worse than failing.
pub fn azure_source(
    secret: Option<(&str, Option<&[String]>)>,
    sas_key: &str,
    env: &dyn Environment,
) -> Result<Option<AzureSource>, SourceRefused> {
    if let Some((name, keys)) = secret {
        let Some(keys) = keys else {
            return Ok(None);
        };
        if keys.iter().any(|k| k == KEY_ENTRY) {
            return Ok(Some(AzureSource::SharedKey {
                name: name.to_owned(),
            }));
        }
        if keys.iter().any(|k| k == sas_key) {
            return Ok(Some(AzureSource::Sas {
                name: name.to_owned(),
                key: sas_key.to_owned(),
            }));
        }
        return Err(SourceRefused(format!(
            "Secret {name} has neither {} (account key) nor {sas_key} (SAS token): add one",
            KEY_ENTRY
        )));
    }
    let client_id = env.var("AZURE_CLIENT_ID");
    match env.var("AZURE_FEDERATED_TOKEN_FILE") {
        Some(token_file) => {
            let (Some(client_id), Some(tenant_id)) = (client_id, env.var("AZURE_TENANT_ID")) else {
                return Err(SourceRefused(
                    "the agent has AZURE_FEDERATED_TOKEN_FILE but not both AZURE_CLIENT_ID and \
                     AZURE_TENANT_ID: label the agent's pod azure.workload.identity/use: \"true\" \
                     and annotate its ServiceAccount azure.workload.identity/client-id (the \
                     webhook injects them), or set them in the chart's env"
                        .into(),
                ));
            };
            if !env.exists(&token_file) {
                return Err(SourceRefused(format!(
                    "AZURE_FEDERATED_TOKEN_FILE {token_file} does not exist in the agent: \
                     mount the projected ServiceAccount token there"
                )));
            }
            Ok(Some(AzureSource::WorkloadIdentity {
                client_id,
                tenant_id,
                token_file,
            }))
        }
        None if client_id.is_some() => Err(SourceRefused(
            "the agent has AZURE_CLIENT_ID but no AZURE_FEDERATED_TOKEN_FILE, which asks for a \
             user-assigned managed identity: dbprov cannot request one (azure_identity 0.21 \
             asks instance metadata for the system-assigned identity only); use workload \
             identity, the system-assigned identity (unset AZURE_CLIENT_ID) or \
             storage.azure.secretRef"
                .into(),
        )),
        None => Ok(Some(AzureSource::ManagedIdentity)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[derive(Default)]
    struct FakeEnv {
        vars: BTreeMap<&'static str, &'static str>,
        files: BTreeSet<&'static str>,
    }

    impl FakeEnv {
        fn with(vars: &[(&'static str, &'static str)], files: &[&'static str]) -> Self {
            Self {
                vars: vars.iter().copied().collect(),
                files: files.iter().copied().collect(),
            }
        }
    }

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| (*v).to_owned())
        }
        fn exists(&self, path: &str) -> bool {
            self.files.contains(path)
        }
    }

    const TOKEN: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";

    #[test]
    fn a_secret_in_the_spec_wins_over_everything_in_the_environment() {
        let env = FakeEnv::with(
            &[
                ("AWS_ACCESS_KEY_ID", "a"),
                ("AWS_SECRET_ACCESS_KEY", "b"),
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", TOKEN),
            ],
            &[TOKEN],
        );
        assert_eq!(
            aws_source(Some("s3-creds"), &env).unwrap(),
            AwsSource::Secret {
                name: "s3-creds".into()
            }
        );
    }

    #[test]
    fn aws_sources_follow_the_default_chain_order() {
        let cases: Vec<(FakeEnv, AwsSource)> = vec![
            (
                FakeEnv::with(
                    &[
                        ("AWS_ACCESS_KEY_ID", "a"),
                        ("AWS_SECRET_ACCESS_KEY", "b"),
                        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
                        ("AWS_WEB_IDENTITY_TOKEN_FILE", TOKEN),
                    ],
                    &[TOKEN],
                ),
                AwsSource::EnvironmentKeys,
            ),
            (
                FakeEnv::with(
                    &[
                        ("AWS_PROFILE", "backup"),
                        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
                    ],
                    &[],
                ),
                AwsSource::Profile {
                    profile: "backup".into(),
                },
            ),
            (
                FakeEnv::with(&[("HOME", "/home/agent")], &["/home/agent/.aws/config"]),
                AwsSource::Profile {
                    profile: "default".into(),
                },
            ),
            (
                FakeEnv::with(
                    &[
                        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
                        ("AWS_WEB_IDENTITY_TOKEN_FILE", TOKEN),
                        ("AWS_ENDPOINT_URL_STS", "http://minio:9000"),
                        (
                            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                            "http://169.254.170.23/v1/credentials",
                        ),
                    ],
                    &[TOKEN],
                ),
                AwsSource::WebIdentity {
                    role_arn: "arn:aws:iam::1:role/r".into(),
                    token_file: TOKEN.into(),
                    sts_endpoint: Some("http://minio:9000".into()),
                },
            ),
            (
                FakeEnv::with(
                    &[
                        (
                            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                            "http://169.254.170.23/v1/credentials",
                        ),
                        (
                            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
                        ),
                    ],
                    &[
                        "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
                    ],
                ),
                AwsSource::PodIdentity {
                    uri: "http://169.254.170.23/v1/credentials".into(),
                },
            ),
            (
                FakeEnv::with(
                    &[(
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                        "/v2/credentials/x",
                    )],
                    &[],
                ),
                AwsSource::Container,
            ),
            (FakeEnv::default(), AwsSource::InstanceMetadata),
            // A chart that renders an empty value has not set the variable.
            (
                FakeEnv::with(
                    &[("AWS_ROLE_ARN", ""), ("AWS_WEB_IDENTITY_TOKEN_FILE", "")],
                    &[],
                ),
                AwsSource::InstanceMetadata,
            ),
        ];
        for (env, want) in cases {
            assert_eq!(aws_source(None, &env).unwrap(), want, "{want}");
        }
    }

    #[test]
    fn half_configured_aws_identities_are_refused_with_the_fix() {
        let cases: Vec<(FakeEnv, &str)> = vec![
            (
                FakeEnv::with(&[("AWS_ACCESS_KEY_ID", "a")], &[]),
                "only one of AWS_ACCESS_KEY_ID",
            ),
            (
                FakeEnv::with(&[("AWS_ROLE_ARN", "arn:aws:iam::1:role/r")], &[]),
                "no AWS_WEB_IDENTITY_TOKEN_FILE",
            ),
            (
                FakeEnv::with(&[("AWS_WEB_IDENTITY_TOKEN_FILE", TOKEN)], &[TOKEN]),
                "eks.amazonaws.com/role-arn",
            ),
            (
                FakeEnv::with(
                    &[
                        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
                        ("AWS_WEB_IDENTITY_TOKEN_FILE", TOKEN),
                    ],
                    &[],
                ),
                "does not exist in the agent",
            ),
            (
                FakeEnv::with(
                    &[
                        (
                            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                            "http://169.254.170.23/v1/credentials",
                        ),
                        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/nope"),
                    ],
                    &[],
                ),
                "EKS Pod Identity mounts it",
            ),
            (
                FakeEnv::with(&[("AWS_EC2_METADATA_DISABLED", "true")], &[]),
                "set storage.s3.secretRef, or annotate the agent's ServiceAccount",
            ),
        ];
        for (env, text) in cases {
            let e = aws_source(None, &env).unwrap_err().to_string();
            assert!(e.contains(text), "{e}");
        }
        assert!(
            AwsSource::InstanceMetadata
                .fix()
                .contains("eks.amazonaws.com/role-arn")
        );
    }

    #[test]
    fn gcs_sources_follow_application_default_credentials() {
        let key = FakeEnv::with(
            &[("GOOGLE_APPLICATION_CREDENTIALS", "/etc/gcp/sa.json")],
            &["/etc/gcp/sa.json"],
        );
        assert_eq!(
            gcs_source(Some(("gcs-key", "sa.json")), true, &key).unwrap(),
            GcsSource::Secret {
                name: "gcs-key".into(),
                key: "sa.json".into()
            }
        );
        assert_eq!(gcs_source(None, true, &key).unwrap(), GcsSource::Anonymous);
        assert_eq!(
            gcs_source(None, false, &key).unwrap(),
            GcsSource::CredentialsFile {
                path: "/etc/gcp/sa.json".into()
            }
        );
        let gcloud = FakeEnv::with(
            &[("HOME", "/root")],
            &["/root/.config/gcloud/application_default_credentials.json"],
        );
        assert_eq!(
            gcs_source(None, false, &gcloud).unwrap(),
            GcsSource::GcloudFile
        );
        assert_eq!(
            gcs_source(None, false, &FakeEnv::default()).unwrap(),
            GcsSource::MetadataServer
        );
        let missing = FakeEnv::with(&[("GOOGLE_APPLICATION_CREDENTIALS", "/nope.json")], &[]);
        let e = gcs_source(None, false, &missing).unwrap_err().to_string();
        assert!(
            e.contains("/nope.json") && e.contains("workload identity"),
            "{e}"
        );
    }

    #[test]
    fn azure_sources_prefer_the_secret_then_workload_then_managed_identity() {
        let keys = |k: &[&str]| k.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let none = FakeEnv::default();
        let both = keys(&["AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"]);
        assert_eq!(
            azure_source(Some(("az", Some(&both))), "AZURE_STORAGE_SAS_TOKEN", &none).unwrap(),
            Some(AzureSource::SharedKey { name: "az".into() })
        );
        let sas = keys(&["sas"]);
        assert_eq!(
            azure_source(Some(("az", Some(&sas))), "sas", &none).unwrap(),
            Some(AzureSource::Sas {
                name: "az".into(),
                key: "sas".into()
            })
        );
        assert_eq!(
            azure_source(Some(("az", None)), "AZURE_STORAGE_SAS_TOKEN", &none).unwrap(),
            None
        );
        let other = keys(&["password"]);
        let e = azure_source(Some(("az", Some(&other))), "AZURE_STORAGE_SAS_TOKEN", &none)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AZURE_STORAGE_KEY") && e.contains("AZURE_STORAGE_SAS_TOKEN"),
            "{e}"
        );

        const FED: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
        let wi = FakeEnv::with(
            &[
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_FEDERATED_TOKEN_FILE", FED),
            ],
            &[FED],
        );
        assert_eq!(
            azure_source(None, "AZURE_STORAGE_SAS_TOKEN", &wi).unwrap(),
            Some(AzureSource::WorkloadIdentity {
                client_id: "c".into(),
                tenant_id: "t".into(),
                token_file: FED.into()
            })
        );
        assert_eq!(
            azure_source(None, "AZURE_STORAGE_SAS_TOKEN", &none).unwrap(),
            Some(AzureSource::ManagedIdentity)
        );
        for (env, text) in [
            (
                FakeEnv::with(&[("AZURE_FEDERATED_TOKEN_FILE", FED)], &[FED]),
                "azure.workload.identity/use",
            ),
            (
                FakeEnv::with(
                    &[
                        ("AZURE_CLIENT_ID", "c"),
                        ("AZURE_TENANT_ID", "t"),
                        ("AZURE_FEDERATED_TOKEN_FILE", FED),
                    ],
                    &[],
                ),
                "does not exist in the agent",
            ),
            (
                FakeEnv::with(&[("AZURE_CLIENT_ID", "c")], &[]),
                "user-assigned managed identity",
            ),
        ] {
            let e = azure_source(None, "AZURE_STORAGE_SAS_TOKEN", &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(text), "{e}");
        }
        assert!(
            AzureSource::ManagedIdentity
                .fix()
                .contains("azure.workload.identity/use")
        );
    }
}
