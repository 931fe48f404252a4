//! Which worker node type a task pod runs on, and how that was decided.
//!
//! A rule's or the profile's `nodeType`, else the node type the pod names itself (its
//! `nodeSelector`, whole or partial, else its required node affinity), else `defaultNodeType`
//! — or, for a pod there that requests an extended resource or hugepages the default lacks, the
//! first node type offering enough of them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, Pod};

use super::{
    guard,
    matching::{Effective, Source},
    policy::{BASE_CONTAINER, NodeType, Policy, is_special_resource},
    quantity::Quantity,
};

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
    use crate::webhook::matching::{TaskIdentity, resolve};

    fn pod(yaml: &str) -> Pod {
        serde_saphyr::from_str(yaml).unwrap()
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
