//! The Kubernetes actuator: reads and patches the `scale` subresource of a Deployment or a
//! StatefulSet, exactly what `kubectl scale` and the HorizontalPodAutoscaler do.
//!
//! Only the scale subresource is touched (`GET` and `PATCH
//! /apis/apps/v1/namespaces/<ns>/<deployments|statefulsets>/<name>/scale`), so the RBAC role
//! in `deploy/rbac.yaml` needs nothing but `get`/`patch` on `deployments/scale` or
//! `statefulsets/scale` — never the right to change the pod template. The patch is a JSON
//! merge patch `{"spec":{"replicas":N}}` with field manager `keyshift-autoscale`, so
//! `kubectl get --show-managed-fields` tells who set the count.

use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Upper bound for one API call's response.
const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The field manager recorded on every patch.
pub const FIELD_MANAGER: &str = "keyshift-autoscale";

/// Which kind of workload is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    Statefulset,
}

impl WorkloadKind {
    /// The resource's plural as it appears in API paths and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::Statefulset => "statefulsets",
        }
    }
}

/// The workload whose replica count keyshift sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} in namespace '{}'",
            self.kind.plural(),
            self.name,
            self.namespace
        )
    }
}

/// Where the API server and credentials come from.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// A kubeconfig file; `None` infers: `$KUBECONFIG` or `~/.kube/config`, else the pod's
    /// in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context other than the current one.
    pub context: Option<String>,
}

/// A failed Kubernetes call, naming the workload and, for API errors, what to check.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable configuration (kubeconfig unreadable, not in a cluster).
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    /// The API server answered with an error status.
    #[error("{verb} scale of {target} failed: HTTP {code} {reason}: {message}{hint}")]
    Api {
        /// `reading` or `patching`.
        verb: &'static str,
        /// The workload.
        target: String,
        /// HTTP status code.
        code: u16,
        /// The API's reason (`NotFound`, `Forbidden`, ...).
        reason: String,
        /// The API's message.
        message: String,
        /// What to check for common codes.
        hint: &'static str,
    },
    /// The API server could not be reached or its answer not understood.
    #[error("{verb} scale of {target} failed: {source}")]
    Transport {
        /// `reading` or `patching`.
        verb: &'static str,
        /// The workload.
        target: String,
        /// kube's error.
        source: kube::Error,
    },
}

/// Reads and sets the replica count of one workload through its scale subresource.
#[derive(Clone)]
pub struct KubeActuator {
    target: Target,
    api: ScaleApi,
}

#[derive(Clone)]
enum ScaleApi {
    Deployment(Api<Deployment>),
    StatefulSet(Api<StatefulSet>),
}

impl KubeActuator {
    /// Builds a client from `conn` for the workload `kind`/`name` in `namespace` (the
    /// kubeconfig context's namespace, or the pod's own in a cluster, if `None`).
    pub async fn connect(
        conn: &Connection,
        kind: WorkloadKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Self, KubeError> {
        // rustls refuses to guess when more than one crypto provider is linked in; an error
        // only means one was installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = KubeConfigOptions {
            context: conn.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match &conn.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| {
                    KubeError::Config(format!("reading kubeconfig {}: {e}", path.display()))
                })?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
            }
            None if conn.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?,
            None => Config::infer()
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?,
        };
        // kube leaves responses unbounded (for watches); a scale call that hangs would stall
        // every later evaluation.
        config.read_timeout.get_or_insert(API_TIMEOUT);
        let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_owned);
        let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        let target = Target {
            kind,
            namespace,
            name: name.to_owned(),
        };
        Ok(Self::with_client(client, target))
    }

    /// An actuator over an existing client.
    pub fn with_client(client: Client, target: Target) -> Self {
        let api = match target.kind {
            WorkloadKind::Deployment => {
                ScaleApi::Deployment(Api::namespaced(client, &target.namespace))
            }
            WorkloadKind::Statefulset => {
                ScaleApi::StatefulSet(Api::namespaced(client, &target.namespace))
            }
        };
        KubeActuator { target, api }
    }

    /// The workload.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The replica count the workload is set to (`spec.replicas` of its scale, as the HPA
    /// reads it: pods still starting count, so a scale-up is not repeated while they start).
    pub async fn replicas(&self) -> Result<u32, KubeError> {
        let scale = match &self.api {
            ScaleApi::Deployment(api) => api.get_scale(&self.target.name).await,
            ScaleApi::StatefulSet(api) => api.get_scale(&self.target.name).await,
        }
        .map_err(|e| self.error("reading", e))?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        Ok(u32::try_from(replicas).unwrap_or(0))
    }

    /// Sets the replica count; returns the count the API server reports back.
    pub async fn set_replicas(&self, replicas: u32) -> Result<u32, KubeError> {
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let name = &self.target.name;
        let scale = match &self.api {
            ScaleApi::Deployment(api) => api.patch_scale(name, &params, &patch).await,
            ScaleApi::StatefulSet(api) => api.patch_scale(name, &params, &patch).await,
        }
        .map_err(|e| self.error("patching", e))?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        Ok(u32::try_from(replicas).unwrap_or(0))
    }

    fn error(&self, verb: &'static str, e: kube::Error) -> KubeError {
        let target = self.target.to_string();
        match e {
            kube::Error::Api(status) => {
                let hint = match status.code {
                    404 => " (check --namespace and the workload's name and kind)",
                    401 => " (check the kubeconfig's credentials)",
                    403 => {
                        " (the service account needs get and patch on the scale \
                         subresource: see deploy/rbac.yaml)"
                    }
                    _ => "",
                };
                KubeError::Api {
                    verb,
                    target,
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                    hint,
                }
            }
            source => KubeError::Transport {
                verb,
                target,
                source,
            },
        }
    }
}
