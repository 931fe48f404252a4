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

use k8s_openapi::api::core::v1::{NodeSelector, Pod};

use super::{
    guard,
    policy::{
        AirflowPodSelector, BASE_CONTAINER, NodeType, PROFILE_ANNOTATION, Policy, Resources, Rule,
        Settings, TempStorage, is_special_resource,
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
        f.write_str(&self.short())?;
        let mut extra = Vec::new();
        if let Some(r) = &self.run_id {
            extra.push(format!("run {r}"));
        }
        if let Some(t) = &self.try_number {
            extra.push(format!("try {t}"));
        }
        if !extra.is_empty() {
            write!(f, " ({})", extra.join(", "))?;
        }
        Ok(())
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

/// How the pod's worker node type was decided.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeTypeChoice<'p> {
    /// A profile, a rule or the default node type places the pod on this type.
    Place(&'p NodeType, Source),
    /// The pod's own nodeSelector already selects this type.
    Own(&'p NodeType),
    /// The pod places itself (nodeSelector / required node affinity) outside the known types.
    Foreign,
    /// No node type: nothing to place, nothing to check.
    None,
}

impl<'p> NodeTypeChoice<'p> {
    /// The node type whose allocatable bounds the pod, if known.
    pub fn node_type(&self) -> Option<&'p NodeType> {
        match self {
            Self::Place(nt, _) | Self::Own(nt) => Some(nt),
            Self::Foreign | Self::None => None,
        }
    }
}

/// Decides the node type: profile / rule > the pod's own choice (its `nodeSelector`, else its
/// required node affinity, naming a node type in whole or in part) > `defaultNodeType`. A pod
/// left to the default node type that requests an extended resource (or hugepages) the default
/// lacks goes to the first node type (by name) that offers enough of it, if any.
pub fn choose_node_type<'p>(
    policy: &'p Policy,
    effective: &Effective,
    pod: &Pod,
) -> NodeTypeChoice<'p> {
    if let Some(s) = &effective.node_type
        && let Some(nt) = policy.node_type(&s.value)
    {
        return NodeTypeChoice::Place(nt, s.source.clone());
    }
    let spec = pod.spec.as_ref();
    let selector = spec
        .and_then(|s| s.node_selector.as_ref())
        .filter(|s| !s.is_empty());
    if let Some(sel) = selector {
        return named_by_selector(policy, sel).map_or(NodeTypeChoice::Foreign, NodeTypeChoice::Own);
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(required) = required {
        return named_by_affinity(policy, required)
            .map_or(NodeTypeChoice::Foreign, NodeTypeChoice::Own);
    }
    let Some(default) = policy
        .default_node_type
        .as_deref()
        .and_then(|d| policy.node_type(d))
    else {
        return NodeTypeChoice::None;
    };
    let special = special_requests(pod, effective);
    let lacking = special
        .iter()
        .find(|(res, q)| default.offers(res).is_some_and(|o| o < **q));
    if let Some((res, _)) = lacking {
        let fits = |nt: &&NodeType| {
            special
                .iter()
                .all(|(r, q)| nt.offers(r).is_some_and(|o| o >= *q))
        };
        if let Some(nt) = policy.node_types.values().find(fits) {
            return NodeTypeChoice::Place(nt, Source::Needs(res.clone()));
        }
    }
    NodeTypeChoice::Place(default, Source::DefaultNodeType)
}

/// Extended resources and hugepages the pod will request (all containers, with the profile's
/// and rules' values for `base`), positive amounts only.
fn special_requests(pod: &Pod, effective: &Effective) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    let Some(spec) = &pod.spec else {
        return out;
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let is_base = c.name == BASE_CONTAINER;
        for (k, q) in guard::container_requests(c) {
            if is_special_resource(&k) && !(is_base && effective.requests.contains_key(&k)) {
                let sum = out
                    .get(&k)
                    .map_or_else(|| q.clone(), |t| t.saturating_add(&q));
                out.insert(k, sum);
            }
        }
    }
    for (k, v) in &effective.requests {
        if is_special_resource(k) {
            let sum = out
                .get(k)
                .map_or_else(|| v.value.clone(), |t| t.saturating_add(&v.value));
            out.insert(k.clone(), sum);
        }
    }
    out.retain(|_, q| q.nanos() > 0);
    out
}

/// The node type a (possibly partial) `nodeSelector` names: the node types whose selector
/// agrees with every label the pod and the type both set, and shares at least one; one whose
/// whole selector the pod sets wins; otherwise it must be the only one.
fn named_by_selector<'p>(
    policy: &'p Policy,
    selector: &BTreeMap<String, String>,
) -> Option<&'p NodeType> {
    let agrees = |nt: &NodeType| {
        !nt.node_selector.is_empty()
            && selector
                .iter()
                .all(|(k, v)| nt.node_selector.get(k).is_none_or(|w| w == v))
            && selector.keys().any(|k| nt.node_selector.contains_key(k))
    };
    let candidates: Vec<&NodeType> = policy.node_types.values().filter(|nt| agrees(nt)).collect();
    let whole: Vec<&NodeType> = candidates
        .iter()
        .copied()
        .filter(|nt| nt.node_selector.keys().all(|k| selector.contains_key(k)))
        .collect();
    match (whole.as_slice(), candidates.as_slice()) {
        ([one], _) | ([], [one]) => Some(one),
        _ => None,
    }
}

/// The node type a required node affinity names: every term (they are ORed) must name the same
/// single node type, by `In` expressions on its nodeSelector labels; `NotIn`, `Exists` and
/// `DoesNotExist` on those labels must agree with it.
fn named_by_affinity<'p>(policy: &'p Policy, required: &NodeSelector) -> Option<&'p NodeType> {
    let mut named: Option<&NodeType> = None;
    for term in &required.node_selector_terms {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let agrees = |nt: &NodeType| {
            let mut positive = false;
            for e in exprs {
                let have = nt.node_selector.get(&e.key);
                let values = e.values.as_deref().unwrap_or_default();
                let ok = match (e.operator.as_str(), have) {
                    ("In", Some(v)) => {
                        positive = true;
                        values.contains(v)
                    }
                    ("NotIn", Some(v)) => !values.contains(v),
                    ("DoesNotExist", Some(_)) => false,
                    _ => true,
                };
                if !ok {
                    return false;
                }
            }
            positive
        };
        let mut candidates = policy.node_types.values().filter(|nt| agrees(nt));
        let (Some(one), None) = (candidates.next(), candidates.next()) else {
            return None;
        };
        if named.is_some_and(|n| n.name != one.name) {
            return None;
        }
        named = Some(one);
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
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
    fn node_type_from_pod_or_default() {
        let policy = Policy::parse(
            "nodeTypes: {small: {allocatable: {cpu: 4, memory: 16Gi}, nodeSelector: {pool: small}}, big: {allocatable: {cpu: 16, memory: 64Gi}, nodeSelector: {pool: big}}}\ndefaultNodeType: small",
        )
        .unwrap();
        let e = Effective::default();
        let own = pod("spec: {containers: [], nodeSelector: {pool: big, zone: a}}");
        assert!(
            matches!(choose_node_type(&policy, &e, &own), NodeTypeChoice::Own(nt) if nt.name == "big")
        );
        let foreign = pod("spec: {containers: [], nodeSelector: {pool: gpu}}");
        assert_eq!(
            choose_node_type(&policy, &e, &foreign),
            NodeTypeChoice::Foreign
        );
        let none = pod("spec: {containers: []}");
        assert!(matches!(
            choose_node_type(&policy, &e, &none),
            NodeTypeChoice::Place(nt, Source::DefaultNodeType) if nt.name == "small"
        ));
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

    const TYPES: &str = r#"
nodeTypes:
  m5: {allocatable: {cpu: 4, memory: 16Gi}, nodeSelector: {instance-type: m5, pool: tasks}}
  r5: {allocatable: {cpu: 8, memory: 64Gi}, nodeSelector: {instance-type: r5, pool: tasks}}
  g5: {allocatable: {cpu: 4, memory: 16Gi, nvidia.com/gpu: 1}, nodeSelector: {instance-type: g5}}
defaultNodeType: m5
"#;

    fn chosen(pod_yaml: &str) -> Option<String> {
        let policy = Policy::parse(TYPES).unwrap();
        let p = pod(pod_yaml);
        let e = resolve(&policy, "ns", &TaskIdentity::of(&p), &p).effective;
        match choose_node_type(&policy, &e, &p) {
            NodeTypeChoice::Own(nt) => Some(format!("own {}", nt.name)),
            NodeTypeChoice::Place(nt, s) => Some(format!("{} ({s})", nt.name)),
            NodeTypeChoice::Foreign => Some("foreign".into()),
            NodeTypeChoice::None => None,
        }
    }

    #[test]
    fn a_partial_node_selector_names_one_node_type_or_none() {
        let own = |sel: &str| chosen(&format!("spec: {{containers: [], nodeSelector: {sel}}}"));
        assert_eq!(own("{instance-type: r5}").as_deref(), Some("own r5"));
        assert_eq!(
            own("{instance-type: r5, zone: a}").as_deref(),
            Some("own r5")
        );
        // Shared by two node types: ambiguous.
        assert_eq!(own("{pool: tasks}").as_deref(), Some("foreign"));
        // Contradicts the node type it would name.
        assert_eq!(
            own("{instance-type: r5, pool: gpu}").as_deref(),
            Some("foreign")
        );
        assert_eq!(own("{zone: a}").as_deref(), Some("foreign"));
    }

    #[test]
    fn a_required_node_affinity_names_one_node_type_or_none() {
        let affinity = |terms: &str| {
            chosen(&format!(
                "spec: {{containers: [], affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: {terms}}}}}}}}}"
            ))
        };
        let term = |op: &str, values: &str| {
            format!(
                "{{matchExpressions: [{{key: instance-type, operator: {op}, values: {values}}}]}}"
            )
        };
        assert_eq!(
            affinity(&format!("[{}]", term("In", "[r5]"))).as_deref(),
            Some("own r5")
        );
        assert_eq!(
            affinity(&format!("[{}, {}]", term("In", "[r5]"), term("In", "[r5]"))).as_deref(),
            Some("own r5")
        );
        // Terms are ORed: two node types.
        assert_eq!(
            affinity(&format!("[{}, {}]", term("In", "[r5]"), term("In", "[m5]"))).as_deref(),
            Some("foreign")
        );
        assert_eq!(
            affinity(&format!("[{}]", term("In", "[r5, m5]"))).as_deref(),
            Some("foreign")
        );
        // Nothing positive: no node type named.
        assert_eq!(
            affinity(&format!("[{}]", term("NotIn", "[r5]"))).as_deref(),
            Some("foreign")
        );
    }

    #[test]
    fn extended_resources_decide_the_default_placement() {
        let asking = |res: &str| {
            chosen(&format!(
                "spec: {{containers: [{{name: base, resources: {{limits: {res}}}}}]}}"
            ))
        };
        assert_eq!(
            asking("{nvidia.com/gpu: 1}").as_deref(),
            Some("g5 (the pod requests nvidia.com/gpu)"),
            "a limit alone is the request"
        );
        assert_eq!(
            asking("{nvidia.com/gpu: 2}").as_deref(),
            Some("m5 (defaultNodeType)"),
            "no node type has two: the guard denies it on the default"
        );
        assert_eq!(asking("{cpu: 1}").as_deref(), Some("m5 (defaultNodeType)"));
    }
}
