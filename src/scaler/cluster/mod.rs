//! The workers as Kubernetes runs them: each worker queue's workload (`scaleTargetRef`), its
//! pods and the HPA that targets it.
//!
//! Optional at run time (`--kubernetes off|auto|on`): without a cluster the scaler works from
//! the database alone, and every column below shows `-`.
//!
//! - [`watch`]: reflectors (serve) and one-shot reads (`explain`) into a [`ClusterView`];
//! - [`objects`]: Kubernetes objects → the workload, pod and HPA observations;
//! - [`cost`]: keeps `controller.kubernetes.io/pod-deletion-cost` on Deployment worker pods;
//! - [`run`]: the serve loop (drift tracking, deletion costs, parallelism warnings).
//!
//! The pure parts are in the model: `task_instance.hostname` → pod and the cost of each pod
//! ([`crate::scaler::model::pods`]), drift and its cause ([`crate::scaler::model::drift`]),
//! the observations ([`crate::scaler::model::observed`]).

pub mod cost;
pub mod objects;
pub mod run;
pub mod watch;

use std::sync::Arc;

pub use crate::scaler::model::{
    drift::{DriftCause, DriftReport, HpaObservation},
    observed::{ClusterView, WorkerObservation},
    pods::WorkerPod,
};
use crate::scaler::model::{
    parallelism::ParallelismMode,
    sizing::{Plan, PlanOptions},
    target::ScaleTargetRef,
    worker_queue::WorkerQueues,
};

/// Whether the scaler talks to Kubernetes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KubeMode {
    /// Never.
    Off,
    /// When a configuration is found (in-cluster service account, `KUBECONFIG` or
    /// `~/.kube/config`); otherwise off, with one log line.
    #[default]
    Auto,
    /// Always; fail at start when no configuration is found.
    On,
}

/// Settings of the cluster side and of the parallelism checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkersConfig {
    pub kubernetes: KubeMode,
    /// Namespace of the workers; `None`: the configuration's.
    pub namespace: Option<String>,
    /// Keep pod-deletion costs on Deployment workers.
    pub deletion_cost: bool,
    /// Most patches per second.
    pub deletion_cost_rate: u32,
    /// Tolerance 0 is configured on the ScaledObjects.
    pub exact_tolerance: bool,
    /// How long ready workers may be off the formula before `hpa_drift`.
    pub drift_after: std::time::Duration,
    pub parallelism_mode: ParallelismMode,
    /// Airflow's `[core] parallelism`, when known.
    pub airflow_parallelism: Option<u64>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            kubernetes: KubeMode::Off,
            namespace: None,
            deletion_cost: true,
            deletion_cost_rate: 10,
            exact_tolerance: true,
            drift_after: std::time::Duration::from_secs(60),
            parallelism_mode: ParallelismMode::Max,
            airflow_parallelism: None,
        }
    }
}

impl WorkersConfig {
    /// The plan settings, given whether a cluster is watched.
    pub fn plan_options(&self, cluster: bool) -> PlanOptions {
        PlanOptions {
            parallelism_mode: self.parallelism_mode,
            airflow_parallelism: self.airflow_parallelism,
            deletion_cost: cluster && self.deletion_cost,
            exact_tolerance: self.exact_tolerance,
        }
    }
}

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Config(String),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
    #[error("Kubernetes API: {0}")]
    Api(String),
}

/// A Kubernetes client and the namespace of the Airflow workers.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds a client under `mode`: `None` when off (or `auto` without a configuration).
    /// `namespace` defaults to the configuration's (the pod's own namespace in a cluster).
    pub async fn connect(
        mode: KubeMode,
        namespace: Option<&str>,
    ) -> Result<Option<Self>, ClusterError> {
        if mode == KubeMode::Off {
            return Ok(None);
        }
        let config = match kube::Config::infer().await {
            Ok(c) => c,
            Err(e) if mode == KubeMode::Auto => {
                // In a pod (the API server's address is in the environment) a missing
                // configuration is a mistake worth a warning: the token was not mounted.
                if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                    tracing::warn!(
                        reason = %e,
                        "running in a pod without a usable ServiceAccount token: workers, HPAs \
                         and pod-deletion costs are not watched (--kubernetes auto)"
                    );
                } else {
                    tracing::info!(
                        reason = %e,
                        "no Kubernetes configuration found: workers, HPAs and pod-deletion costs \
                         are not watched (--kubernetes auto)"
                    );
                }
                return Ok(None);
            }
            Err(e) => return Err(ClusterError::Config(e.to_string())),
        };
        let namespace = namespace
            .filter(|n| !n.is_empty())
            .map_or_else(|| config.default_namespace.clone(), str::to_string);
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterError::Client(e.to_string()))?;
        Ok(Some(Self { client, namespace }))
    }
}

/// The workloads named by the declared worker queues, each once.
pub fn targets(declared: &WorkerQueues) -> Vec<ScaleTargetRef> {
    let mut out: Vec<ScaleTargetRef> = declared
        .iter()
        .filter_map(|wq| wq.scale_target_ref.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The latest [`ClusterView`], shared between the watcher and its readers.
#[derive(Debug, Clone, Default)]
pub struct ClusterStore {
    inner: Arc<std::sync::RwLock<Option<Arc<ClusterView>>>>,
}

impl ClusterStore {
    pub fn publish(&self, view: ClusterView) {
        if let Ok(mut g) = self.inner.write() {
            *g = Some(Arc::new(view));
        }
    }

    /// `None` while nothing is watched.
    pub fn current(&self) -> Option<Arc<ClusterView>> {
        self.inner.read().ok().and_then(|g| g.clone())
    }
}

/// `explain`'s plan: with a cluster (under `config.kubernetes`), one read of the workloads,
/// pods and HPAs. Returns the plan and a line saying where the workers were looked for.
pub async fn explain_plan(
    config: &WorkersConfig,
    declared: &WorkerQueues,
    snapshot: &crate::scaler::snapshot::Snapshot,
) -> Result<(Plan, String), ClusterError> {
    let cluster = Cluster::connect(config.kubernetes, config.namespace.as_deref()).await?;
    let options = config.plan_options(cluster.is_some());
    let Some(cluster) = cluster else {
        let plan = Plan::compute_with(declared, snapshot, None, options);
        return Ok((plan, "kubernetes: not watched (--kubernetes)\n".into()));
    };
    let targets = targets(declared);
    let read = tokio::time::timeout(watch::READ_TIMEOUT, watch::read_once(&cluster, &targets));
    let (view, line) = match read.await {
        Ok(Ok(view)) => (
            Some(view),
            format!("kubernetes: namespace {}\n", cluster.namespace),
        ),
        Ok(Err(e)) => (None, format!("kubernetes: cannot read ({e})\n")),
        Err(_) => (
            None,
            format!(
                "kubernetes: no answer within {}s\n",
                watch::READ_TIMEOUT.as_secs()
            ),
        ),
    };
    let plan = Plan::compute_with(declared, snapshot, view.as_ref(), options);
    Ok((plan, line))
}
