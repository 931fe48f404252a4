//! The compiled policy: what the webhook applies, after validation.

use std::collections::BTreeMap;

use globset::GlobMatcher;
use k8s_openapi::api::core::v1::Toleration;
use serde::Deserialize;

use crate::webhook::quantity::Quantity;

/// A validated policy, ready to apply.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Which pods are Airflow KubernetesExecutor task pods.
    pub airflow_pods: AirflowPodSelector,
    /// Resources for the `base` container where the pod sets none.
    pub defaults: Resources,
    /// Worker node types by name.
    pub node_types: BTreeMap<String, NodeType>,
    /// Node type for pods that choose none (and are placed by no profile or rule).
    pub default_node_type: Option<String>,
    /// Profiles by name.
    pub profiles: BTreeMap<String, Settings>,
    /// Admin rules, in file order.
    pub rules: Vec<Rule>,
    /// What to refuse or warn about after mutation.
    pub guard_rails: GuardRails,
}

/// How Airflow task pods are recognised. A pod is one when the label test holds (every label in
/// `labels` with its value and every key in `label_keys` present; only if either is non-empty),
/// or when the annotation test holds (every key in `annotation_keys` present; only if
/// non-empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AirflowPodSelector {
    /// Labels that must be present with these exact values.
    pub labels: BTreeMap<String, String>,
    /// Labels that must be present (any value).
    pub label_keys: Vec<String>,
    /// Annotations that, all present, identify an Airflow task pod on their own.
    pub annotation_keys: Vec<String>,
}

impl Default for AirflowPodSelector {
    fn default() -> Self {
        Self {
            labels: BTreeMap::from([("kubernetes_executor".to_owned(), "True".to_owned())]),
            label_keys: vec!["airflow-worker".to_owned()],
            annotation_keys: ["dag_id", "task_id", "run_id", "try_number"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// Requests and limits by resource name (`cpu`, `memory`, `ephemeral-storage`, `nvidia.com/gpu`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Requests.
    pub requests: BTreeMap<String, Quantity>,
    /// Limits.
    pub limits: BTreeMap<String, Quantity>,
}

impl Resources {
    /// The built-in defaults: 1 CPU and 512Mi, for requests and limits.
    pub fn builtin_defaults() -> Self {
        let both = || {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity::from_nanos(1_000_000_000)),
                (
                    "memory".to_owned(),
                    Quantity::from_nanos(512 * 1024 * 1024 * 1_000_000_000),
                ),
            ])
        };
        Self {
            requests: both(),
            limits: both(),
        }
    }

    /// True when neither requests nor limits are set.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

/// A worker node type: what its nodes can give a pod, and how to place a pod on them.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeType {
    /// Its name in the policy.
    pub name: String,
    /// Allocatable amount per resource name; resources not listed are not checked.
    pub allocatable: BTreeMap<String, Quantity>,
    /// Labels the pod's `nodeSelector` gets.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations the pod gets (added when missing).
    pub tolerations: Vec<Toleration>,
}

impl NodeType {
    /// What one node of this type offers of `resource`: its allocatable when listed; none
    /// for an extended resource or hugepages it does not list (a node without GPUs offers
    /// zero GPUs); unknown (not checked) for a standard resource it does not list.
    pub fn offers(&self, resource: &str) -> Option<Quantity> {
        match self.allocatable.get(resource) {
            Some(q) => Some(q.clone()),
            None if is_special_resource(resource) => Some(Quantity::from_nanos(0)),
            None => None,
        }
    }
}

/// Extended resources (`nvidia.com/gpu`) and hugepages: never overcommitted, and a node type
/// that does not list them offers none.
pub fn is_special_resource(resource: &str) -> bool {
    resource.contains('/') || resource.starts_with("hugepages-")
}

/// An `emptyDir` scratch volume mounted into `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempStorage {
    /// Mount path in `base`.
    pub path: String,
    /// `emptyDir.sizeLimit`.
    pub size_limit: Option<Quantity>,
    /// `emptyDir.medium` (`Memory` for tmpfs).
    pub medium: Option<String>,
    /// Volume name.
    pub volume_name: String,
}

/// The settings a profile or a rule applies. Empty fields apply nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Requests / limits for `base` (each one set replaces the pod's value for that resource).
    pub resources: Resources,
    /// Worker node type to place the pod on.
    pub node_type: Option<String>,
    /// Scratch volume.
    pub temp_storage: Option<TempStorage>,
    /// Environment variables of `base`.
    pub env: BTreeMap<String, String>,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Pod annotations.
    pub annotations: BTreeMap<String, String>,
    /// `spec.priorityClassName`.
    pub priority_class_name: Option<String>,
}

impl Settings {
    /// True when this applies nothing at all.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
            && self.node_type.is_none()
            && self.temp_storage.is_none()
            && self.env.is_empty()
            && self.labels.is_empty()
            && self.annotations.is_empty()
            && self.priority_class_name.is_none()
    }
}

/// An admin rule: when every condition holds, its settings apply.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name (shown in the applied annotation and in logs).
    pub name: String,
    /// Conditions.
    pub matcher: RuleMatch,
    /// What it applies.
    pub settings: Settings,
}

/// Conditions of a rule. Each list matches when any of its globs matches; an empty list
/// matches everything; all the conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct RuleMatch {
    /// Namespace globs.
    pub namespaces: Vec<GlobMatcher>,
    /// dag_id globs (matched against the exact id from the pod's annotations).
    pub dag_ids: Vec<GlobMatcher>,
    /// task_id globs.
    pub task_ids: Vec<GlobMatcher>,
    /// Pod labels that must be present with a value matching the glob.
    pub labels: Vec<(String, GlobMatcher)>,
}

/// What to do about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Say nothing.
    Allow,
    /// Admit the pod with a warning shown to the client.
    Warn,
    /// Refuse the pod.
    Deny,
}

/// Guard rails applied after mutation. Requests above the node type's allocatable and limits
/// below requests are always refused.
#[derive(Debug, Clone)]
pub struct GuardRails {
    /// Containers besides `base` (and init containers with `restartPolicy: Always`).
    pub sidecars: Action,
    /// Sidecar names (globs) never reported.
    pub allowed_sidecars: Vec<GlobMatcher>,
    /// A profile annotation naming no profile of the policy (`allow`: admitted without a
    /// profile, silently).
    pub unknown_profile: Action,
}

impl Default for GuardRails {
    fn default() -> Self {
        Self {
            sidecars: Action::Warn,
            allowed_sidecars: Vec::new(),
            unknown_profile: Action::Deny,
        }
    }
}
