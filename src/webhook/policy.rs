//! The policy file: model, parsing and validation.
//!
//! A policy is YAML written by cluster admins (see `docs/webhook.md` for the reference). It is
//! read in two steps: the YAML is split into independent pieces (each node type, profile and rule
//! on its own) that are deserialized separately, and every piece is then checked for meaning
//! (quantities, names, references, limits below requests, requests above a node type). Every
//! problem found is reported with its path (`profiles.large.resources.requests.cpu`), not just
//! the first one, so `validate-policy` can list them all.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use globset::{Glob, GlobMatcher};
use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use super::quantity::Quantity;

/// Annotation a task sets (in its `pod_override` metadata) to opt into a profile.
pub const PROFILE_ANNOTATION: &str = "airflow-keda-scaler/profile";
/// Annotation the webhook writes on the pods it changed, describing what it applied.
pub const APPLIED_ANNOTATION: &str = "airflow-keda-scaler/applied";
/// Name of the container Airflow runs the task in.
pub const BASE_CONTAINER: &str = "base";
/// Airflow 3's workload Secret volume: never touched.
pub const WORKLOAD_VOLUME: &str = "airflow-workload";
/// Where Airflow 3 mounts its workload Secret: never touched.
pub const WORKLOAD_MOUNT_PATH: &str = "/run/secrets/airflow-workload";
/// Volume name used for temp storage unless the policy names one.
pub const DEFAULT_TEMP_VOLUME: &str = "airflow-keda-scaler-tmp";

/// Labels Airflow's executor sets and relies on (to watch and adopt its pods).
pub const AIRFLOW_LABELS: &[&str] = &[
    "kubernetes_executor",
    "airflow-worker",
    "dag_id",
    "task_id",
    "run_id",
    "try_number",
    "map_index",
    "airflow_version",
    "execution_date",
    "logical_date",
];
/// Annotations Airflow's executor sets and relies on.
pub const AIRFLOW_ANNOTATIONS: &[&str] = &[
    "dag_id",
    "task_id",
    "run_id",
    "try_number",
    "map_index",
    "execution_date",
    "logical_date",
];
/// Environment variable Airflow sets on its task pods: never overridden.
pub const AIRFLOW_POD_ENV: &str = "AIRFLOW_IS_K8S_EXECUTOR_POD";

/// One problem in a policy, at a path such as `rules[2].match.dagIds[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file (dotted path, `[n]` for list items, `.` for the whole file).
    pub path: String,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but has problems.
    #[error("policy {origin} has {} problem(s): {}", problems.len(), join_problems(problems))]
    Invalid {
        /// File name (or `<input>`).
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// Compiled model
// ---------------------------------------------------------------------------------------------

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
    /// A profile annotation naming no profile of the policy (`allow` is treated as `warn`).
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

// ---------------------------------------------------------------------------------------------
// Raw (file) model
// ---------------------------------------------------------------------------------------------

/// A scalar that YAML may spell as a string, a number or a boolean (`cpu: 1`, `value: "True"`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SelectorSpec {
    #[serde(default)]
    labels: BTreeMap<String, Scalar>,
    #[serde(default)]
    label_keys: Vec<String>,
    #[serde(default)]
    annotation_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesSpec {
    #[serde(default)]
    requests: BTreeMap<String, Scalar>,
    #[serde(default)]
    limits: BTreeMap<String, Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsSpec {
    resources: Option<ResourcesSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeTypeSpec {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    allocatable: BTreeMap<String, Scalar>,
    #[serde(default)]
    node_selector: BTreeMap<String, Scalar>,
    #[serde(default)]
    tolerations: Vec<Toleration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TempStorageSpec {
    path: String,
    size_limit: Option<Scalar>,
    medium: Option<String>,
    volume_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SettingsSpec {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    resources: Option<ResourcesSpec>,
    node_type: Option<String>,
    temp_storage: Option<TempStorageSpec>,
    #[serde(default)]
    env: BTreeMap<String, Scalar>,
    #[serde(default)]
    labels: BTreeMap<String, Scalar>,
    #[serde(default)]
    annotations: BTreeMap<String, Scalar>,
    priority_class_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MatchSpec {
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    dag_ids: Vec<String>,
    #[serde(default)]
    task_ids: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GuardRailsSpec {
    sidecars: Option<Action>,
    #[serde(default)]
    allowed_sidecars: Vec<String>,
    unknown_profile: Option<Action>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "airflowPods",
    "defaults",
    "nodeTypes",
    "defaultNodeType",
    "profiles",
    "rules",
    "guardRails",
];

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|problems| PolicyError::Invalid {
            origin: path.display().to_string(),
            problems,
        })
    }

    /// Parses and validates policy YAML, returning every problem found.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        let mut cx = Cx::default();
        let policy = cx.policy(text);
        match policy {
            Some(p) if cx.problems.is_empty() => Ok(p),
            _ => Err(cx.problems),
        }
    }

    /// Non-fatal remarks about a valid policy (settings that do nothing, node types that
    /// cannot place a pod).
    pub fn lint(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.settings.is_empty() {
                out.push(Problem {
                    path: format!("rules[{i}]"),
                    message: format!("rule `{}` applies nothing", rule.name),
                });
            }
        }
        for (name, profile) in &self.profiles {
            if profile.is_empty() {
                out.push(Problem {
                    path: format!("profiles.{name}"),
                    message: "profile applies nothing".to_owned(),
                });
            }
        }
        for (name, nt) in &self.node_types {
            if nt.node_selector.is_empty() && nt.tolerations.is_empty() {
                out.push(Problem {
                    path: format!("nodeTypes.{name}"),
                    message: "node type has neither nodeSelector nor tolerations: it places no pod"
                        .to_owned(),
                });
            }
        }
        out
    }

    /// The node type by name.
    pub fn node_type(&self, name: &str) -> Option<&NodeType> {
        self.node_types.get(name)
    }
}

fn join(prefix: &str, inner: &str) -> String {
    if inner == "." || inner.is_empty() {
        prefix.to_owned()
    } else if prefix == "." || prefix.is_empty() {
        inner.to_owned()
    } else if inner.starts_with('[') {
        format!("{prefix}{inner}")
    } else {
        format!("{prefix}.{inner}")
    }
}

/// Validation context: collects problems.
#[derive(Default)]
struct Cx {
    problems: Vec<Problem>,
}

impl Cx {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserializes one piece of the file, recording the error with its full path.
    fn piece<T: DeserializeOwned>(&mut self, path: &str, value: serde_yaml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let msg = e.into_inner().to_string();
                self.problem(join(path, &inner), msg);
                None
            }
        }
    }

    fn policy(&mut self, text: &str) -> Option<Policy> {
        let mut root: serde_yaml::Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.problem(".", format!("not valid YAML: {e}"));
                return None;
            }
        };
        if let Err(e) = root.apply_merge() {
            self.problem(".", format!("YAML merge keys: {e}"));
            return None;
        }
        let mut map = match root {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            _ => {
                self.problem(".", "a policy is a YAML mapping (airflowPods, defaults, nodeTypes, defaultNodeType, profiles, rules, guardRails)");
                return None;
            }
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if TOP_LEVEL_KEYS.contains(&k) => {}
                Some(k) => self.problem(
                    k,
                    format!("unknown key; expected one of {}", TOP_LEVEL_KEYS.join(", ")),
                ),
                None => self.problem(".", "keys must be strings"),
            }
        }
        let mut take = |k: &str| map.remove(k).filter(|v| !v.is_null());

        let airflow_pods = match take("airflowPods") {
            Some(v) => self
                .piece::<SelectorSpec>("airflowPods", v)
                .map(|s| self.selector(s))
                .unwrap_or_default(),
            None => AirflowPodSelector::default(),
        };

        let defaults_raw = take("defaults").and_then(|v| self.piece::<DefaultsSpec>("defaults", v));
        let node_types_raw = self.named_pieces::<NodeTypeSpec>("nodeTypes", take("nodeTypes"));
        let default_node_type =
            take("defaultNodeType").and_then(|v| self.piece::<String>("defaultNodeType", v));
        let profiles_raw = self.named_pieces::<SettingsSpec>("profiles", take("profiles"));
        let rules_value = take("rules");
        let guard_value = take("guardRails");

        let mut node_types = BTreeMap::new();
        for (name, spec) in node_types_raw {
            let nt = self.node_type(&format!("nodeTypes.{name}"), &name, spec);
            node_types.insert(name, nt);
        }
        let names: BTreeSet<String> = node_types.keys().cloned().collect();
        if let Some(d) = &default_node_type {
            self.node_type_ref("defaultNodeType", d, &names);
        }

        let defaults = match defaults_raw.and_then(|d| d.resources) {
            Some(r) => self.resources("defaults.resources", r),
            None => Resources::builtin_defaults(),
        };
        self.limits_not_below_requests("defaults.resources", &defaults);
        if let Some(nt) = default_node_type.as_deref().and_then(|d| node_types.get(d)) {
            self.fits("defaults.resources", &defaults, nt);
        }

        let mut profiles = BTreeMap::new();
        for (name, spec) in profiles_raw {
            let path = format!("profiles.{name}");
            if !is_profile_name(&name) {
                self.problem(
                    &path,
                    "profile names use letters, digits, `-`, `_` and `.` (at most 63)",
                );
            }
            let s = self.settings(&path, spec, &names);
            // A profile placed on no node type of its own runs on the default node type.
            let nt = s.node_type.as_deref().or(default_node_type.as_deref());
            if let Some(nt) = nt.and_then(|n| node_types.get(n)) {
                self.fits(&format!("{path}.resources"), &s.resources, nt);
            }
            profiles.insert(name, s);
        }

        let mut rules = Vec::new();
        if let Some(v) = rules_value {
            match v {
                serde_yaml::Value::Sequence(items) => {
                    let mut seen = BTreeSet::new();
                    for (i, item) in items.into_iter().enumerate() {
                        if let Some(r) = self.rule(&format!("rules[{i}]"), item, &names) {
                            if let Some(nt) = r
                                .settings
                                .node_type
                                .as_deref()
                                .and_then(|n| node_types.get(n))
                            {
                                self.fits(
                                    &format!("rules[{i}].resources"),
                                    &r.settings.resources,
                                    nt,
                                );
                            }
                            if !seen.insert(r.name.clone()) {
                                self.problem(
                                    format!("rules[{i}].name"),
                                    format!("duplicate rule name `{}`", r.name),
                                );
                            }
                            rules.push(r);
                        }
                    }
                }
                _ => self.problem("rules", "expected a list of rules"),
            }
        }

        let guard_raw = guard_value.and_then(|v| self.piece::<GuardRailsSpec>("guardRails", v));
        let guard_rails = match guard_raw {
            Some(g) => {
                let allowed_sidecars =
                    self.globs("guardRails.allowedSidecars", &g.allowed_sidecars);
                GuardRails {
                    sidecars: g.sidecars.unwrap_or(Action::Warn),
                    allowed_sidecars,
                    unknown_profile: match g.unknown_profile {
                        Some(Action::Allow) => {
                            self.problem(
                                "guardRails.unknownProfile",
                                "use `warn` or `deny` (an unknown profile is never silent)",
                            );
                            Action::Warn
                        }
                        Some(a) => a,
                        None => Action::Deny,
                    },
                }
            }
            None => GuardRails::default(),
        };

        Some(Policy {
            airflow_pods,
            defaults,
            node_types,
            default_node_type,
            profiles,
            rules,
            guard_rails,
        })
    }

    /// A mapping of name → piece, each deserialized on its own.
    fn named_pieces<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: Option<serde_yaml::Value>,
    ) -> Vec<(String, T)> {
        let Some(value) = value else {
            return Vec::new();
        };
        let serde_yaml::Value::Mapping(map) = value else {
            self.problem(path, "expected a mapping of name: settings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in map {
            let Some(name) = k.as_str().map(str::to_owned) else {
                self.problem(path, "names must be strings");
                continue;
            };
            if name.trim().is_empty() {
                self.problem(path, "empty name");
                continue;
            }
            let item_path = format!("{path}.{name}");
            let v = if v.is_null() {
                serde_yaml::Value::Mapping(Default::default())
            } else {
                v
            };
            if let Some(t) = self.piece::<T>(&item_path, v) {
                out.push((name, t));
            }
        }
        out
    }

    fn selector(&mut self, s: SelectorSpec) -> AirflowPodSelector {
        let labels: BTreeMap<String, String> =
            s.labels.into_iter().map(|(k, v)| (k, v.0)).collect();
        for (k, v) in &labels {
            self.label_key(&format!("airflowPods.labels.{k}"), k);
            self.label_value(&format!("airflowPods.labels.{k}"), v);
        }
        for (i, k) in s.label_keys.iter().enumerate() {
            self.label_key(&format!("airflowPods.labelKeys[{i}]"), k);
        }
        for (i, k) in s.annotation_keys.iter().enumerate() {
            self.label_key(&format!("airflowPods.annotationKeys[{i}]"), k);
        }
        if labels.is_empty() && s.label_keys.is_empty() && s.annotation_keys.is_empty() {
            self.problem(
                "airflowPods",
                "no condition: set labels, labelKeys or annotationKeys (or remove airflowPods to use the built-in selector)",
            );
        }
        AirflowPodSelector {
            labels,
            label_keys: s.label_keys,
            annotation_keys: s.annotation_keys,
        }
    }

    fn node_type(&mut self, path: &str, name: &str, spec: NodeTypeSpec) -> NodeType {
        let mut allocatable = BTreeMap::new();
        for (res, q) in spec.allocatable {
            let p = format!("{path}.allocatable.{res}");
            self.resource_name(&p, &res);
            if let Some(q) = self.quantity(&p, &q.0) {
                allocatable.insert(res, q);
            }
        }
        let mut node_selector = BTreeMap::new();
        for (k, v) in spec.node_selector {
            let p = format!("{path}.nodeSelector.{k}");
            self.label_key(&p, &k);
            self.label_value(&p, &v.0);
            node_selector.insert(k, v.0);
        }
        for (i, t) in spec.tolerations.iter().enumerate() {
            self.toleration(&format!("{path}.tolerations[{i}]"), t);
        }
        NodeType {
            name: name.to_owned(),
            allocatable,
            node_selector,
            tolerations: spec.tolerations,
        }
    }

    fn toleration(&mut self, path: &str, t: &Toleration) {
        let op = t.operator.as_deref().unwrap_or("Equal");
        match op {
            "Equal" => {
                if t.key.as_deref().unwrap_or("").is_empty() {
                    self.problem(format!("{path}.key"), "operator Equal needs a key");
                }
            }
            "Exists" => {
                if !t.value.as_deref().unwrap_or("").is_empty() {
                    self.problem(format!("{path}.value"), "operator Exists takes no value");
                }
            }
            other => self.problem(
                format!("{path}.operator"),
                format!("`{other}`: use Equal or Exists"),
            ),
        }
        if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
            self.label_key(&format!("{path}.key"), k);
        }
        let effect = t.effect.as_deref().unwrap_or("");
        if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            self.problem(
                format!("{path}.effect"),
                format!("`{effect}`: use NoSchedule, PreferNoSchedule or NoExecute"),
            );
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            self.problem(
                format!("{path}.tolerationSeconds"),
                "only valid with effect NoExecute",
            );
        }
    }

    fn node_type_ref(&mut self, path: &str, name: &str, known: &BTreeSet<String>) {
        if !known.contains(name) {
            let list = if known.is_empty() {
                "none is defined under nodeTypes".to_owned()
            } else {
                format!(
                    "known: {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            self.problem(path, format!("unknown node type `{name}` ({list})"));
        }
    }

    fn resources(&mut self, path: &str, r: ResourcesSpec) -> Resources {
        let mut out = Resources::default();
        for (kind, src, dst) in [
            ("requests", r.requests, &mut out.requests),
            ("limits", r.limits, &mut out.limits),
        ] {
            for (res, q) in src {
                let p = format!("{path}.{kind}.{res}");
                self.resource_name(&p, &res);
                if let Some(q) = self.quantity(&p, &q.0) {
                    dst.insert(res, q);
                }
            }
        }
        for (res, req) in &out.requests {
            let extended = res.contains('/') || res.starts_with("hugepages-");
            if let Some(lim) = out.limits.get(res).filter(|l| extended && *l != req) {
                self.problem(
                    format!("{path}.limits.{res}"),
                    format!("{res} cannot be overcommitted: its limit ({lim}) must equal its request ({req})"),
                );
            }
        }
        out
    }

    fn limits_not_below_requests(&mut self, path: &str, r: &Resources) {
        for (res, req) in &r.requests {
            if let Some(lim) = r.limits.get(res).filter(|l| *l < req) {
                self.problem(
                    format!("{path}.limits.{res}"),
                    format!("limit {lim} is below the request {req}"),
                );
            }
        }
    }

    fn fits(&mut self, path: &str, r: &Resources, nt: &NodeType) {
        for (res, req) in &r.requests {
            if let Some(offer) = nt.allocatable.get(res).filter(|o| req > *o) {
                self.problem(
                    format!("{path}.requests.{res}"),
                    format!(
                        "{} is more than node type `{}` offers ({}): every pod given it would be denied",
                        req.human(res),
                        nt.name,
                        offer.human(res)
                    ),
                );
            }
        }
    }

    fn settings(&mut self, path: &str, s: SettingsSpec, node_types: &BTreeSet<String>) -> Settings {
        let resources = match s.resources {
            Some(r) => self.resources(&format!("{path}.resources"), r),
            None => Resources::default(),
        };
        self.limits_not_below_requests(&format!("{path}.resources"), &resources);
        if let Some(nt) = &s.node_type {
            self.node_type_ref(&format!("{path}.nodeType"), nt, node_types);
        }
        let temp_storage = s
            .temp_storage
            .map(|t| self.temp_storage(&format!("{path}.tempStorage"), t));
        let mut env = BTreeMap::new();
        for (k, v) in s.env {
            let p = format!("{path}.env.{k}");
            if !is_env_name(&k) {
                self.problem(&p, "environment variable names use letters, digits, `_`, `-` and `.`, and do not start with a digit");
            }
            if k == AIRFLOW_POD_ENV {
                self.problem(
                    &p,
                    format!("{AIRFLOW_POD_ENV} is set by Airflow and must not be changed"),
                );
            }
            env.insert(k, v.0);
        }
        let mut labels = BTreeMap::new();
        for (k, v) in s.labels {
            let p = format!("{path}.labels.{k}");
            self.label_key(&p, &k);
            self.label_value(&p, &v.0);
            if AIRFLOW_LABELS.contains(&k.as_str()) {
                self.problem(&p, "this label is set by Airflow's executor, which finds its pods by it: do not change it");
            }
            labels.insert(k, v.0);
        }
        let mut annotations = BTreeMap::new();
        for (k, v) in s.annotations {
            let p = format!("{path}.annotations.{k}");
            self.label_key(&p, &k);
            if AIRFLOW_ANNOTATIONS.contains(&k.as_str()) {
                self.problem(
                    &p,
                    "this annotation is set by Airflow's executor: do not change it",
                );
            }
            if k == PROFILE_ANNOTATION || k == APPLIED_ANNOTATION {
                self.problem(&p, "this annotation belongs to the webhook itself");
            }
            annotations.insert(k, v.0);
        }
        if let Some(pc) = &s.priority_class_name
            && !is_dns_subdomain(pc)
        {
            self.problem(
                format!("{path}.priorityClassName"),
                "a PriorityClass name is a DNS subdomain (lowercase letters, digits, `-`, `.`)",
            );
        }
        Settings {
            resources,
            node_type: s.node_type,
            temp_storage,
            env,
            labels,
            annotations,
            priority_class_name: s.priority_class_name,
        }
    }

    fn temp_storage(&mut self, path: &str, t: TempStorageSpec) -> TempStorage {
        if !t.path.starts_with('/') {
            self.problem(format!("{path}.path"), "the mount path must be absolute");
        }
        if t.path.split('/').any(|c| c == "..") {
            self.problem(
                format!("{path}.path"),
                "the mount path must not contain `..`",
            );
        }
        let norm = t.path.trim_end_matches('/');
        let workload = WORKLOAD_MOUNT_PATH;
        if norm == workload
            || norm.starts_with(&format!("{workload}/"))
            || workload.starts_with(&format!("{norm}/"))
            || norm.is_empty()
        {
            self.problem(
                format!("{path}.path"),
                format!("overlaps Airflow 3's workload mount {workload}: pick another path"),
            );
        }
        let size_limit = t
            .size_limit
            .and_then(|q| self.quantity(&format!("{path}.sizeLimit"), &q.0));
        let medium = t.medium.filter(|m| !m.is_empty());
        if let Some(m) = medium.as_deref()
            && m != "Memory"
        {
            self.problem(
                format!("{path}.medium"),
                format!("`{m}`: use `Memory` (tmpfs) or leave it out (node disk)"),
            );
        }
        let volume_name = t
            .volume_name
            .unwrap_or_else(|| DEFAULT_TEMP_VOLUME.to_owned());
        if !is_dns_label(&volume_name) {
            self.problem(
                format!("{path}.volumeName"),
                "a volume name is a DNS label (lowercase letters, digits and `-`, at most 63)",
            );
        }
        if volume_name == WORKLOAD_VOLUME {
            self.problem(
                format!("{path}.volumeName"),
                format!("`{WORKLOAD_VOLUME}` is Airflow 3's workload volume"),
            );
        }
        TempStorage {
            path: t.path,
            size_limit,
            medium,
            volume_name,
        }
    }

    fn rule(
        &mut self,
        path: &str,
        item: serde_yaml::Value,
        node_types: &BTreeSet<String>,
    ) -> Option<Rule> {
        let serde_yaml::Value::Mapping(mut map) = item else {
            self.problem(path, "a rule is a mapping with name, match and settings");
            return None;
        };
        let name = match map.remove("name") {
            Some(serde_yaml::Value::String(s)) if !s.trim().is_empty() => s,
            _ => {
                self.problem(format!("{path}.name"), "every rule needs a name");
                format!("#{}", path.trim_start_matches("rules"))
            }
        };
        let matcher = match map.remove("match").filter(|v| !v.is_null()) {
            Some(v) => self
                .piece::<MatchSpec>(&format!("{path}.match"), v)
                .map(|m| self.rule_match(&format!("{path}.match"), m))
                .unwrap_or_default(),
            None => RuleMatch::default(),
        };
        let settings = self
            .piece::<SettingsSpec>(path, serde_yaml::Value::Mapping(map))
            .map(|s| self.settings(path, s, node_types))
            .unwrap_or_default();
        Some(Rule {
            name,
            matcher,
            settings,
        })
    }

    fn rule_match(&mut self, path: &str, m: MatchSpec) -> RuleMatch {
        let mut labels = Vec::new();
        for (k, v) in m.labels {
            let p = format!("{path}.labels.{k}");
            self.label_key(&p, &k);
            if let Some(g) = self.glob(&p, &v.0) {
                labels.push((k, g));
            }
        }
        RuleMatch {
            namespaces: self.globs(&format!("{path}.namespaces"), &m.namespaces),
            dag_ids: self.globs(&format!("{path}.dagIds"), &m.dag_ids),
            task_ids: self.globs(&format!("{path}.taskIds"), &m.task_ids),
            labels,
        }
    }

    fn globs(&mut self, path: &str, patterns: &[String]) -> Vec<GlobMatcher> {
        patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.glob(&format!("{path}[{i}]"), p))
            .collect()
    }

    fn glob(&mut self, path: &str, pattern: &str) -> Option<GlobMatcher> {
        match Glob::new(pattern) {
            Ok(g) => Some(g.compile_matcher()),
            Err(e) => {
                self.problem(path, format!("bad glob: {e}"));
                None
            }
        }
    }

    fn quantity(&mut self, path: &str, text: &str) -> Option<Quantity> {
        match Quantity::parse(text) {
            Ok(q) if q.is_negative() => {
                self.problem(path, format!("`{text}` is negative"));
                None
            }
            Ok(q) => Some(q),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }

    fn resource_name(&mut self, path: &str, name: &str) {
        let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage")
            || name.starts_with("hugepages-");
        let extended = name
            .split_once('/')
            .is_some_and(|(d, n)| is_dns_subdomain(d) && is_label_name(n));
        if !standard && !extended {
            self.problem(
                path,
                format!("unknown resource `{name}`: use cpu, memory, ephemeral-storage, hugepages-<size> or an extended resource such as nvidia.com/gpu"),
            );
        }
    }

    fn label_key(&mut self, path: &str, key: &str) {
        let ok = match key.split_once('/') {
            Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
            None => is_label_name(key),
        };
        if !ok {
            self.problem(path, format!("`{key}` is not a valid label/annotation key"));
        }
    }

    fn label_value(&mut self, path: &str, value: &str) {
        if !(value.is_empty() || is_label_name(value)) {
            self.problem(
                path,
                format!("`{value}` is not a valid label value (at most 63 letters, digits, `-`, `_`, `.`; alphanumeric at both ends)"),
            );
        }
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_profile_name(s: &str) -> bool {
    is_label_name(s)
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        match Policy::parse(yaml) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn empty_policy_has_builtin_defaults() {
        let p = Policy::parse("").unwrap();
        assert_eq!(p.defaults.requests["cpu"].as_str(), "1");
        assert_eq!(p.defaults.limits["memory"].as_str(), "512Mi");
        assert_eq!(p.airflow_pods, AirflowPodSelector::default());
        assert_eq!(p.guard_rails.sidecars, Action::Warn);
        assert_eq!(p.guard_rails.unknown_profile, Action::Deny);
        let p = Policy::parse("defaults: {resources: {}}").unwrap();
        assert!(p.defaults.is_empty(), "resources: {{}} turns defaults off");
    }

    #[test]
    fn numbers_are_accepted_as_quantities() {
        let p = Policy::parse("defaults: {resources: {requests: {cpu: 0.5, memory: 1073741824}}}")
            .unwrap();
        assert_eq!(p.defaults.requests["cpu"], Quantity::parse("500m").unwrap());
        assert_eq!(
            p.defaults.requests["memory"],
            Quantity::parse("1Gi").unwrap()
        );
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let yaml = r#"
nodeTypes:
  small:
    allocatable: {cpu: "2", memory: 4Gi, gpu: 1}
    tolerations: [{key: pool, operator: Sometimes}]
  big:
    allocatable: {cpu: lots}
defaultNodeType: nope
profiles:
  large:
    nodeType: small
    resources: {requests: {cpu: "3"}, limits: {cpu: "2"}}
    labels: {dag_id: x}
  bad:
    colour: red
rules:
  - name: one
    match: {dagIds: ["a[b"]}
    tempStorage: {path: relative, medium: Disk}
  - name: one
    env: {AIRFLOW_IS_K8S_EXECUTOR_POD: "False"}
  - match: {namespaces: [x]}
    priorityClassName: Not_Valid
surprise: 1
"#;
        let got = problems(yaml);
        let want_paths = [
            "surprise:",
            "nodeTypes.small.allocatable.gpu:",
            "nodeTypes.small.tolerations[0].operator:",
            "nodeTypes.big.allocatable.cpu:",
            "defaultNodeType:",
            "profiles.large.resources.limits.cpu:",
            "profiles.large.resources.requests.cpu:",
            "profiles.large.labels.dag_id:",
            "profiles.bad.colour:",
            "rules[0].match.dagIds[0]:",
            "rules[0].tempStorage.path:",
            "rules[0].tempStorage.medium:",
            "rules[1].name:",
            "rules[1].env.AIRFLOW_IS_K8S_EXECUTOR_POD:",
            "rules[2].name:",
            "rules[2].priorityClassName:",
        ];
        for w in want_paths {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w} in {got:#?}"
            );
        }
        assert!(got.iter().any(|g| g.contains("colour")), "{got:#?}");
    }

    #[test]
    fn workload_volume_is_protected() {
        let got = problems(
            "profiles: {p: {tempStorage: {path: /run/secrets/airflow-workload/x, volumeName: airflow-workload}}}",
        );
        assert_eq!(got.len(), 2, "{got:#?}");
        let got = problems("profiles: {p: {tempStorage: {path: /run}}}");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(problems("profiles: {p: {tempStorage: {path: /tmp/scratch}}}").is_empty());
    }

    #[test]
    fn non_mapping_is_a_problem() {
        assert_eq!(problems("- a\n- b").len(), 1);
        assert_eq!(problems(": : :").len(), 1);
        assert_eq!(problems("rules: {a: 1}").len(), 1);
        assert_eq!(problems("airflowPods: {}").len(), 1);
    }

    #[test]
    fn extended_resources_must_not_overcommit() {
        let got = problems(
            "profiles: {gpu: {resources: {requests: {nvidia.com/gpu: 1}, limits: {nvidia.com/gpu: 2}}}}",
        );
        assert_eq!(got.len(), 1, "{got:#?}");
    }

    #[test]
    fn lint_flags_empty_rules() {
        let p = Policy::parse("rules: [{name: nothing}]\nnodeTypes: {bare: {}}").unwrap();
        assert_eq!(p.lint().len(), 2);
    }
}
