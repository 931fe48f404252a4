//! Which pods the policy applies to, and which of its settings apply to one pod.
//!
//! Order of precedence, lowest first (each one overrides the ones before it, field by field):
//! 1. `defaults` (only fills what is still unset at the end, and never a resource the pod
//!    budgets at pod level, see [`crate::webhook::mutate`]),
//! 2. what the pod already has (template → executor → `pod_override`),
//! 3. the profile the task asked for with the `airflow-keda-scaler/profile` annotation,
//! 4. the matching `rules`, in file order (a later rule overrides an earlier one).
//!
//! Temp storages merge by volume name (a later one with the same name replaces the earlier;
//! `validate-policy` refuses two different ones with one name).

use std::{collections::BTreeMap, fmt};

use k8s_openapi::api::core::v1::Pod;

use super::{
    policy::{
        AirflowPodSelector, PROFILE_ANNOTATION, Policy, Resources, Rule, Settings, TempStorage,
    },
    quantity::Quantity,
};

/// Where a value the webhook applies comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The policy's `defaults`.
    Default,
    /// The policy's `defaultNodeType`.
    DefaultNodeType,
    /// A profile.
    Profile(String),
    /// A rule.
    Rule(String),
    /// The pod itself (as Airflow built it).
    Pod,
    /// The pod requests an extended resource (or hugepages) the default node type lacks.
    Needs(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("defaults"),
            Self::DefaultNodeType => f.write_str("defaultNodeType"),
            Self::Profile(p) => write!(f, "profile {p}"),
            Self::Rule(r) => write!(f, "rule {r}"),
            Self::Pod => f.write_str("the pod"),
            Self::Needs(r) => write!(f, "the pod requests {r}"),
        }
    }
}

/// A value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its origin.
    pub source: Source,
}

/// The Airflow task a pod runs, from the exact ids in its annotations (labels are sanitized
/// and may be truncated; they are only a fallback).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIdentity {
    /// `dag_id`.
    pub dag_id: Option<String>,
    /// `task_id`.
    pub task_id: Option<String>,
    /// `run_id`.
    pub run_id: Option<String>,
    /// `try_number`.
    pub try_number: Option<String>,
    /// `map_index` (absent when not mapped).
    pub map_index: Option<String>,
}

impl TaskIdentity {
    /// Reads the ids from a pod.
    pub fn of(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let get = |k: &str| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .or_else(|| meta.labels.as_ref().and_then(|l| l.get(k)))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Self {
            dag_id: get("dag_id"),
            task_id: get("task_id"),
            run_id: get("run_id"),
            try_number: get("try_number"),
            map_index: get("map_index").filter(|m| m != "-1"),
        }
    }
}

impl TaskIdentity {
    /// `dag_id.task_id[map_index]`, for short messages (warnings are best under 120 chars).
    pub fn short(&self) -> String {
        let dag = self.dag_id.as_deref().unwrap_or("?");
        let task = self.task_id.as_deref().unwrap_or("?");
        match &self.map_index {
            Some(m) => format!("{dag}.{task}[{m}]"),
            None => format!("{dag}.{task}"),
        }
    }
}

impl fmt::Display for TaskIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dag = self.dag_id.as_deref().unwrap_or("?");
        let task = self.task_id.as_deref().unwrap_or("?");
        write!(f, "{dag}.{task}")?;
        if let Some(m) = &self.map_index {
            write!(f, "[{m}]")?;
        }
        match (&self.run_id, &self.try_number) {
            (Some(r), Some(t)) => write!(f, " (run {r}, try {t})"),
            (Some(r), None) => write!(f, " (run {r})"),
            (None, Some(t)) => write!(f, " (try {t})"),
            (None, None) => Ok(()),
        }
    }
}

/// True when the pod is an Airflow KubernetesExecutor task pod according to the selector.
pub fn is_airflow_pod(selector: &AirflowPodSelector, pod: &Pod) -> bool {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let by_labels = (!selector.labels.is_empty() || !selector.label_keys.is_empty())
        && selector
            .labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        && selector.label_keys.iter().all(|k| labels.contains_key(k));
    let by_annotations = !selector.annotation_keys.is_empty()
        && selector
            .annotation_keys
            .iter()
            .all(|k| annotations.contains_key(k));
    by_labels || by_annotations
}

/// The profile a pod asks for, if any (empty values count as none).
pub fn requested_profile(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROFILE_ANNOTATION))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

/// True when the rule's conditions hold for this pod.
pub fn rule_matches(rule: &Rule, namespace: &str, task: &TaskIdentity, pod: &Pod) -> bool {
    let any = |globs: &[globset::GlobMatcher], value: Option<&str>| {
        globs.is_empty() || value.is_some_and(|v| globs.iter().any(|g| g.is_match(v)))
    };
    let m = &rule.matcher;
    let labels = pod.metadata.labels.as_ref();
    any(&m.namespaces, Some(namespace))
        && any(&m.dag_ids, task.dag_id.as_deref())
        && any(&m.task_ids, task.task_id.as_deref())
        && m.labels
            .iter()
            .all(|(k, g)| labels.and_then(|l| l.get(k)).is_some_and(|v| g.is_match(v)))
}

/// The settings that apply to one pod, merged from its profile and rules, each with its source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    /// The profile applied, if any.
    pub profile: Option<String>,
    /// The names of the rules that matched, in order.
    pub rules: Vec<String>,
    /// `base` requests to set.
    pub requests: BTreeMap<String, Sourced<Quantity>>,
    /// `base` limits to set.
    pub limits: BTreeMap<String, Sourced<Quantity>>,
    /// Node type chosen by a profile or rule.
    pub node_type: Option<Sourced<String>>,
    /// Temp storages by volume name.
    pub temp_storage: BTreeMap<String, Sourced<TempStorage>>,
    /// `base` env.
    pub env: BTreeMap<String, Sourced<String>>,
    /// Pod labels.
    pub labels: BTreeMap<String, Sourced<String>>,
    /// Pod annotations.
    pub annotations: BTreeMap<String, Sourced<String>>,
    /// Priority class.
    pub priority_class_name: Option<Sourced<String>>,
}

impl Effective {
    fn overlay(&mut self, s: &Settings, source: &Source) {
        let sourced = |v: &Quantity| Sourced {
            value: v.clone(),
            source: source.clone(),
        };
        let Resources { requests, limits } = &s.resources;
        for (k, v) in requests {
            self.requests.insert(k.clone(), sourced(v));
        }
        for (k, v) in limits {
            self.limits.insert(k.clone(), sourced(v));
        }
        let str_sourced = |v: &String| Sourced {
            value: v.clone(),
            source: source.clone(),
        };
        if let Some(nt) = &s.node_type {
            self.node_type = Some(str_sourced(nt));
        }
        if let Some(t) = &s.temp_storage {
            self.temp_storage.insert(
                t.volume_name.clone(),
                Sourced {
                    value: t.clone(),
                    source: source.clone(),
                },
            );
        }
        for (dst, src) in [
            (&mut self.env, &s.env),
            (&mut self.labels, &s.labels),
            (&mut self.annotations, &s.annotations),
        ] {
            for (k, v) in src {
                dst.insert(k.clone(), str_sourced(v));
            }
        }
        if let Some(pc) = &s.priority_class_name {
            self.priority_class_name = Some(str_sourced(pc));
        }
    }
}

/// Outcome of resolving the settings for one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The merged settings.
    pub effective: Effective,
    /// The pod asked for a profile the policy does not define.
    pub unknown_profile: Option<String>,
}

/// Merges the requested profile and the matching rules, in precedence order.
pub fn resolve(policy: &Policy, namespace: &str, task: &TaskIdentity, pod: &Pod) -> Resolution {
    let mut effective = Effective::default();
    let mut unknown_profile = None;
    if let Some(name) = requested_profile(pod) {
        match policy.profiles.get(name) {
            Some(p) => {
                effective.overlay(p, &Source::Profile(name.to_owned()));
                effective.profile = Some(name.to_owned());
            }
            None => unknown_profile = Some(name.to_owned()),
        }
    }
    for rule in &policy.rules {
        if rule_matches(rule, namespace, task, pod) {
            effective.overlay(&rule.settings, &Source::Rule(rule.name.clone()));
            effective.rules.push(rule.name.clone());
        }
    }
    Resolution {
        effective,
        unknown_profile,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::placement::choose_node_type;

    fn pod(yaml: &str) -> Pod {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const AIRFLOW_POD: &str = r#"
metadata:
  labels: {kubernetes_executor: "True", airflow-worker: "12", dag_id: etl-0123456789abcdef, task_id: load}
  annotations: {dag_id: etl_very_long_dag_name, task_id: load, run_id: "manual__2024", try_number: "2"}
spec:
  containers: [{name: base}]
"#;

    #[test]
    fn recognises_airflow_pods() {
        let sel = AirflowPodSelector::default();
        assert!(is_airflow_pod(&sel, &pod(AIRFLOW_POD)));
        assert!(is_airflow_pod(
            &sel,
            &pod("metadata: {annotations: {dag_id: a, task_id: b, run_id: c, try_number: '1'}}")
        ));
        assert!(!is_airflow_pod(
            &sel,
            &pod("metadata: {labels: {kubernetes_executor: 'False', airflow-worker: '1'}}")
        ));
        assert!(!is_airflow_pod(
            &sel,
            &pod("metadata: {labels: {kubernetes_executor: 'True'}}")
        ));
        assert!(!is_airflow_pod(
            &sel,
            &pod("metadata: {labels: {app: nginx}}")
        ));
        assert!(!is_airflow_pod(&sel, &pod("{}")));
    }

    #[test]
    fn ids_come_from_annotations() {
        let t = TaskIdentity::of(&pod(AIRFLOW_POD));
        assert_eq!(t.dag_id.as_deref(), Some("etl_very_long_dag_name"));
        assert_eq!(
            t.to_string(),
            "etl_very_long_dag_name.load (run manual__2024, try 2)"
        );
        let t = TaskIdentity::of(&pod(
            "metadata: {labels: {dag_id: d, task_id: t, map_index: '3'}}",
        ));
        assert_eq!(t.to_string(), "d.t[3]");
    }

    #[test]
    fn precedence_rules_over_profiles() {
        let policy = Policy::parse(
            r#"
nodeTypes: {small: {allocatable: {cpu: "4", memory: 16Gi}, nodeSelector: {pool: small}}, big: {allocatable: {cpu: "16", memory: 64Gi}, nodeSelector: {pool: big}}}
defaultNodeType: small
profiles:
  large: {nodeType: big, resources: {requests: {cpu: "2", memory: 4Gi}}, env: {A: profile}}
rules:
  - name: etl
    match: {dagIds: ["etl_*"], namespaces: [airflow]}
    resources: {requests: {cpu: "3"}}
    env: {A: rule1}
  - name: loads
    match: {taskIds: [load], labels: {airflow-worker: "1*"}}
    env: {A: rule2}
  - name: elsewhere
    match: {namespaces: [other]}
    env: {A: never}
"#,
        )
        .unwrap();
        let mut p = pod(AIRFLOW_POD);
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(PROFILE_ANNOTATION.into(), "large".into());
        let task = TaskIdentity::of(&p);
        let r = resolve(&policy, "airflow", &task, &p);
        assert_eq!(r.unknown_profile, None);
        let e = r.effective;
        assert_eq!(e.profile.as_deref(), Some("large"));
        assert_eq!(e.rules, ["etl", "loads"]);
        assert_eq!(e.requests["cpu"].value.as_str(), "3");
        assert_eq!(e.requests["cpu"].source, Source::Rule("etl".into()));
        assert_eq!(e.requests["memory"].source, Source::Profile("large".into()));
        assert_eq!(e.env["A"].value, "rule2");
        let choice = choose_node_type(&policy, &e, &p);
        assert_eq!(choice.node_type().map(|n| n.name.as_str()), Some("big"));
    }

    #[test]
    fn unknown_profile_is_reported() {
        let policy = Policy::parse("").unwrap();
        let p = pod(&format!(
            "metadata: {{annotations: {{{PROFILE_ANNOTATION}: huge}}}}"
        ));
        let r = resolve(&policy, "ns", &TaskIdentity::of(&p), &p);
        assert_eq!(r.unknown_profile.as_deref(), Some("huge"));
    }
}
