//! Guard rails, checked on the pod after mutation.
//!
//! - Requests above the node type's allocatable: denied (the scheduler could never place the
//!   pod; the task would sit in `queued` until Airflow gives up). The message names the task,
//!   what it asks for, what the node type offers and what to change.
//! - A limit below its request: denied (the API server would refuse it with a less helpful
//!   message).
//! - Sidecars: a warning, or a denial when the policy says so.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{
    matching::{NodeTypeChoice, Source, TaskIdentity},
    policy::{Action, BASE_CONTAINER, NodeType, Policy},
    quantity::Quantity,
};

/// What the guard rails found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardReport {
    /// Reasons to refuse the pod (empty: admit).
    pub violations: Vec<String>,
    /// Warnings for the client.
    pub warnings: Vec<String>,
}

fn container_requests(c: &Container) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    let Some(r) = &c.resources else { return out };
    // A limit without a request means request = limit.
    for map in [r.limits.as_ref(), r.requests.as_ref()]
        .into_iter()
        .flatten()
    {
        for (k, v) in map {
            if let Ok(q) = Quantity::parse(&v.0) {
                out.insert(k.clone(), q);
            }
        }
    }
    out
}

fn add_into(total: &mut BTreeMap<String, Quantity>, more: &BTreeMap<String, Quantity>) {
    for (k, v) in more {
        let sum = total
            .get(k)
            .map_or_else(|| v.clone(), |t| t.saturating_add(v));
        total.insert(k.clone(), sum);
    }
}

fn max_into(total: &mut BTreeMap<String, Quantity>, other: &BTreeMap<String, Quantity>) {
    for (k, v) in other {
        if total.get(k).is_none_or(|t| v > t) {
            total.insert(k.clone(), v.clone());
        }
    }
}

/// What the scheduler will reserve for the pod, per resource, the way Kubernetes computes it:
/// the sum of the containers (and sidecar init containers), or the largest init container step
/// if larger, plus the pod overhead; pod-level `resources.requests` win where set.
pub fn pod_requests(pod: &Pod) -> BTreeMap<String, Quantity> {
    let Some(spec) = &pod.spec else {
        return BTreeMap::new();
    };
    let mut sum = BTreeMap::new();
    for c in &spec.containers {
        add_into(&mut sum, &container_requests(c));
    }
    let mut sidecars = BTreeMap::new();
    let mut init_peak = BTreeMap::new();
    for c in spec.init_containers.iter().flatten() {
        let req = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            add_into(&mut sidecars, &req);
        } else {
            let mut step = sidecars.clone();
            add_into(&mut step, &req);
            max_into(&mut init_peak, &step);
        }
    }
    add_into(&mut sum, &sidecars);
    max_into(&mut sum, &init_peak);
    if let Some(overhead) = &spec.overhead {
        let o = overhead
            .iter()
            .filter_map(|(k, v)| Quantity::parse(&v.0).ok().map(|q| (k.clone(), q)))
            .collect();
        add_into(&mut sum, &o);
    }
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        for (k, v) in pod_level {
            if let Ok(q) = Quantity::parse(&v.0) {
                sum.insert(k.clone(), q);
            }
        }
    }
    sum
}

/// The containers counted as sidecars: every container but `base`, and init containers that
/// keep running (`restartPolicy: Always`).
pub fn sidecars(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .filter(|c| c.name != BASE_CONTAINER)
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always")),
        )
        .map(|c| c.name.clone())
        .collect()
}

fn source_note(sources: &BTreeMap<String, Source>, key: &str) -> String {
    match sources.get(key) {
        Some(Source::Pod) | None => " (set by the task's pod)".to_owned(),
        Some(s) => format!(" (from {s})"),
    }
}

/// Runs every guard rail on the mutated pod.
pub fn check(
    policy: &Policy,
    pod: &Pod,
    task: &TaskIdentity,
    node_type: &NodeTypeChoice<'_>,
    base_sources: &BTreeMap<String, Source>,
) -> GuardReport {
    let mut report = GuardReport::default();
    let Some(spec) = &pod.spec else {
        return report;
    };

    // Limits below requests, in every container.
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let Some(r) = &c.resources else { continue };
        let (Some(req), Some(lim)) = (&r.requests, &r.limits) else {
            continue;
        };
        for (res, rq) in req {
            let (Ok(rq), Some(Ok(lq))) = (
                Quantity::parse(&rq.0),
                lim.get(res).map(|l| Quantity::parse(&l.0)),
            ) else {
                continue;
            };
            if lq < rq {
                let (rn, ln) = if c.name == BASE_CONTAINER {
                    (
                        source_note(base_sources, &format!("requests.{res}")),
                        source_note(base_sources, &format!("limits.{res}")),
                    )
                } else {
                    (String::new(), String::new())
                };
                report.violations.push(format!(
                    "task {task}: container `{}` has a {res} limit of {lq}{ln} below its request of {rq}{rn}: set limits.{res} at least as high as requests.{res}",
                    c.name
                ));
            }
        }
    }

    // Requests above what the node type offers.
    if let Some(nt) = node_type.node_type() {
        let asked = pod_requests(pod);
        let (mut wants, mut offers) = (Vec::new(), Vec::new());
        for (res, offered) in &nt.allocatable {
            if let Some(a) = asked.get(res).filter(|a| *a > offered) {
                wants.push(amount(res, a));
                offers.push(amount(res, offered));
            }
        }
        if !wants.is_empty() {
            report.violations.push(format!(
                "task {task} requests {} (all containers together) but node type `{}` offers {}: {}",
                wants.join(" and "),
                nt.name,
                offers.join(" and "),
                advice(policy, nt, &asked, spec.containers.len() > 1)
            ));
        }
    } else if matches!(node_type, NodeTypeChoice::Foreign) && !policy.node_types.is_empty() {
        report.warnings.push(format!(
            "airflow-keda-scaler: task {} selects nodes outside the policy's node types: requests not checked",
            task.short()
        ));
    }

    // Sidecars.
    let extra: Vec<String> = sidecars(pod)
        .into_iter()
        .filter(|n| {
            !policy
                .guard_rails
                .allowed_sidecars
                .iter()
                .any(|g| g.is_match(n))
        })
        .collect();
    if !extra.is_empty() {
        let names = extra
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match policy.guard_rails.sidecars {
            Action::Allow => {}
            Action::Warn => report.warnings.push(format!(
                "airflow-keda-scaler: task {} runs sidecar(s) {names}: sidecars are discouraged",
                task.short()
            )),
            Action::Deny => report.violations.push(format!(
                "task {task} runs sidecar container(s) {names}, which this cluster does not allow: remove them from the task's pod_override"
            )),
        }
    }
    report
}

/// `6 CPU`, `100Gi of memory`.
fn amount(res: &str, q: &Quantity) -> String {
    if res == "cpu" {
        q.human(res)
    } else {
        format!("{} of {res}", q.human(res))
    }
}

/// What to change: lower the requests, or move to a node type that fits (and the profiles
/// that place pods there).
fn advice(
    policy: &Policy,
    current: &NodeType,
    asked: &BTreeMap<String, Quantity>,
    has_sidecars: bool,
) -> String {
    let fits = |nt: &NodeType| {
        nt.allocatable
            .iter()
            .all(|(res, offered)| asked.get(res).is_none_or(|a| a <= offered))
    };
    let bigger: Vec<&NodeType> = policy
        .node_types
        .values()
        .filter(|nt| nt.name != current.name && fits(nt))
        .collect();
    let mut text = String::from("lower the requests in the task's pod_override");
    if has_sidecars {
        text.push_str(" (sidecars count too)");
    }
    if bigger.is_empty() {
        text.push_str("; no node type of this cluster is large enough");
        return text;
    }
    let profiles: Vec<&String> = policy
        .profiles
        .iter()
        .filter(|(_, p)| {
            p.node_type
                .as_deref()
                .is_some_and(|n| bigger.iter().any(|nt| nt.name == n))
        })
        .map(|(name, _)| name)
        .collect();
    let names: Vec<String> = bigger.iter().map(|nt| format!("`{}`", nt.name)).collect();
    if profiles.is_empty() {
        text.push_str(&format!(", or run it on node type {}", names.join(" or ")));
    } else {
        let ps: Vec<String> = profiles.iter().map(|p| format!("`{p}`")).collect();
        text.push_str(&format!(
            ", or move it to node type {} with the annotation airflow-keda-scaler/profile set to {}",
            names.join(" or "),
            ps.join(" or ")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn pod_requests_follow_kubernetes() {
        let p = pod(r#"
spec:
  containers:
    - {name: base, resources: {requests: {cpu: 500m}}}
    - {name: side, resources: {limits: {cpu: 1, memory: 1Gi}}}
  initContainers:
    - {name: init, resources: {requests: {cpu: 3}}}
    - {name: native-sidecar, restartPolicy: Always, resources: {requests: {cpu: 250m}}}
  overhead: {memory: 100Mi}
"#);
        let r = pod_requests(&p);
        // containers 1.5 + sidecar 0.25 = 1.75 < init step 3
        assert_eq!(r["cpu"], Quantity::parse("3").unwrap());
        assert_eq!(r["memory"], Quantity::parse("1124Mi").unwrap());
        assert_eq!(sidecars(&p), ["side", "native-sidecar"]);
    }

    #[test]
    fn oversize_message_says_what_to_change() {
        let policy = Policy::parse(
            r#"
nodeTypes:
  small: {allocatable: {cpu: "2", memory: 8Gi}, nodeSelector: {pool: small}}
  large: {allocatable: {cpu: "16", memory: 64Gi}, nodeSelector: {pool: large}}
defaultNodeType: small
profiles: {big: {nodeType: large}}
"#,
        )
        .unwrap();
        let p =
            pod("spec: {containers: [{name: base, resources: {requests: {cpu: 4, memory: 1Gi}}}]}");
        let task = TaskIdentity {
            dag_id: Some("etl".into()),
            task_id: Some("crunch".into()),
            ..Default::default()
        };
        let choice = NodeTypeChoice::Place(&policy.node_types["small"], Source::DefaultNodeType);
        let r = check(&policy, &p, &task, &choice, &BTreeMap::new());
        assert_eq!(r.violations.len(), 1, "{r:?}");
        let m = &r.violations[0];
        for part in ["etl.crunch", "4 CPU", "offers 2 CPU", "`large`", "`big`"] {
            assert!(m.contains(part), "{part} missing in {m}");
        }
    }

    #[test]
    fn limits_below_requests_name_their_source() {
        let policy = Policy::parse("").unwrap();
        let p = pod(
            "spec: {containers: [{name: base, resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}}]}",
        );
        let sources = BTreeMap::from([
            ("requests.memory".to_owned(), Source::Profile("big".into())),
            ("limits.memory".to_owned(), Source::Pod),
        ]);
        let r = check(
            &policy,
            &p,
            &TaskIdentity::default(),
            &NodeTypeChoice::None,
            &sources,
        );
        assert_eq!(r.violations.len(), 1);
        assert!(
            r.violations[0].contains("from profile big"),
            "{}",
            r.violations[0]
        );
    }

    #[test]
    fn sidecars_warn_deny_or_pass() {
        let p = pod("spec: {containers: [{name: base}, {name: istio-proxy}, {name: logger}]}");
        let t = TaskIdentity::default();
        let n = NodeTypeChoice::None;
        let warn = Policy::parse("").unwrap();
        assert_eq!(check(&warn, &p, &t, &n, &BTreeMap::new()).warnings.len(), 1);
        let deny =
            Policy::parse("guardRails: {sidecars: deny, allowedSidecars: [istio-*]}").unwrap();
        let r = check(&deny, &p, &t, &n, &BTreeMap::new());
        assert_eq!(r.violations.len(), 1);
        assert!(r.violations[0].contains("`logger`") && !r.violations[0].contains("istio"));
        let allow = Policy::parse("guardRails: {sidecars: allow}").unwrap();
        assert_eq!(
            check(&allow, &p, &t, &n, &BTreeMap::new()),
            GuardReport::default()
        );
    }
}
