//! Guard rails, checked on the pod after mutation.
//!
//! - Requests above the node type's allocatable: denied (the scheduler could never place the
//!   pod; the task would sit in `queued` until Airflow gives up). A node type offers none of an
//!   extended resource or hugepages it does not list. The message names the task, what it asks
//!   for, what the node type offers and what to change, advising only what the task can do.
//! - A limit below its request, or containers above the pod-level resources
//!   (`spec.resources`): denied (the API server would refuse the pod with a less helpful
//!   message).
//! - Sidecars: a warning, or a denial when the policy says so.
//!
//! The guard runs on every review, so on a reinvocation (`reinvocationPolicy: IfNeeded`) it
//! checks again the containers a later webhook added.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use super::{
    matching::{Source, TaskIdentity},
    mutate::ResourceSources,
    placement::NodeTypeChoice,
    policy::{Action, BASE_CONTAINER, NodeType, PROFILE_ANNOTATION, Policy, is_special_resource},
    quantity::Quantity,
    warning::{Warning, WarningKind},
};

/// What the guard rails found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardReport {
    /// Reasons to refuse the pod (empty: admit).
    pub violations: Vec<String>,
    /// Warnings (see [`crate::webhook::warning`]).
    pub warnings: Vec<Warning>,
}

/// A container's requests, a limit standing in for a missing request (as Kubernetes does).
pub fn container_requests(c: &Container) -> BTreeMap<String, Quantity> {
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
    let mut sum = container_total(spec);
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

/// The containers' requests together: the sum of the containers and sidecar init containers,
/// or the largest init container step if larger.
fn container_total(spec: &PodSpec) -> BTreeMap<String, Quantity> {
    let mut sum = BTreeMap::new();
    for c in &spec.containers {
        let requests = container_requests(c);
        if sum.is_empty() {
            sum = requests;
        } else {
            add_into(&mut sum, &requests);
        }
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

fn source_note(sources: &ResourceSources, kind: &'static str, res: &str) -> String {
    match sources.get(&(kind, res.to_owned())) {
        Some(Source::Pod) | None => " (set by the task's pod)".to_owned(),
        Some(s) => format!(" (from {s})"),
    }
}

/// Runs every guard rail on the mutated pod. `profile` is the profile applied to it, if any.
pub fn check(
    policy: &Policy,
    pod: &Pod,
    task: &TaskIdentity,
    profile: Option<&str>,
    node_type: &NodeTypeChoice<'_>,
    base_sources: &ResourceSources,
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
                        source_note(base_sources, "requests", res),
                        source_note(base_sources, "limits", res),
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

    pod_level_budget(spec, task, base_sources, &mut report);

    // Requests above what the node type offers.
    if let Some(nt) = node_type.node_type() {
        let asked = pod_requests(pod);
        let (mut wants, mut offers) = (Vec::new(), Vec::new());
        for (res, a) in &asked {
            if let Some(offered) = nt.offers(res).filter(|o| a > o) {
                wants.push(amount(res, a));
                offers.push(if offered.nanos() == 0 {
                    format!("none of {res}")
                } else {
                    amount(res, &offered)
                });
            }
        }
        if !wants.is_empty() {
            let has_sidecars = spec.containers.len() > 1
                || spec
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|c| c.restart_policy.as_deref() == Some("Always"));
            let placed_by = match node_type {
                NodeTypeChoice::Place(_, source) => source.clone(),
                _ => Source::Pod,
            };
            report.violations.push(format!(
                "task {task} requests {} (all containers together) but node type `{}` offers {}: {}",
                wants.join(" and "),
                nt.name,
                offers.join(" and "),
                advice(policy, nt, &placed_by, profile, &asked, has_sidecars)
            ));
        }
    } else if matches!(node_type, NodeTypeChoice::Foreign) && !policy.node_types.is_empty() {
        report.warnings.push(Warning::new(
            WarningKind::ForeignNodeType,
            format!(
                "task {} selects nodes outside the policy's node types: requests not checked",
                task.short()
            ),
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
            Action::Warn => report.warnings.push(Warning::new(
                WarningKind::Sidecar,
                format!(
                    "task {} runs sidecar(s) {names}: sidecars are discouraged",
                    task.short()
                ),
            )),
            Action::Deny => report.violations.push(format!(
                "task {task} runs sidecar container(s) {names}, which this cluster does not allow: remove them from the task's pod_override"
            )),
        }
    }
    report
}

/// Pod-level resources (`spec.resources`, Kubernetes 1.32+): the containers' requests together
/// must not exceed the pod-level requests, nor any container's limit the pod-level limit.
fn pod_level_budget(
    spec: &PodSpec,
    task: &TaskIdentity,
    base_sources: &ResourceSources,
    report: &mut GuardReport,
) {
    let Some(pod_level) = &spec.resources else {
        return;
    };
    let note = |kind: &'static str, res: &str| match base_sources.get(&(kind, res.to_owned())) {
        Some(Source::Pod) | None => String::new(),
        Some(s) => format!(", {kind}.{res} of `{BASE_CONTAINER}` from {s}"),
    };
    let total = container_total(spec);
    for (res, budget) in pod_level.requests.iter().flatten() {
        let (Ok(b), Some(t)) = (Quantity::parse(&budget.0), total.get(res)) else {
            continue;
        };
        if *t > b {
            report.violations.push(format!(
                "task {task}: its containers request {} together{} but the pod-level resources allow spec.resources.requests.{res}={}: raise or remove spec.resources in the task's pod_override, or ask for less",
                amount(res, t),
                note("requests", res),
                budget.0
            ));
        }
    }
    for (res, budget) in pod_level.limits.iter().flatten() {
        let Ok(b) = Quantity::parse(&budget.0) else {
            continue;
        };
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let limit = c
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get(res))
                .and_then(|l| Quantity::parse(&l.0).ok());
            if let Some(l) = limit.filter(|l| *l > b) {
                let from = if c.name == BASE_CONTAINER {
                    note("limits", res)
                } else {
                    String::new()
                };
                report.violations.push(format!(
                    "task {task}: container `{}` has a {res} limit of {l}{from} above the pod-level resources' spec.resources.limits.{res}={}: raise or remove spec.resources in the task's pod_override, or ask for less",
                    c.name, budget.0
                ));
            }
        }
    }
}

/// `6 CPU`, `100Gi of memory`.
fn amount(res: &str, q: &Quantity) -> String {
    if res == "cpu" {
        q.human(res)
    } else {
        format!("{} of {res}", q.human(res))
    }
}

/// What to change, only what the task can do: lower the requests; move to a node type that
/// fits through a profile it does not have yet, unless a rule forces the node type (rules win
/// over profiles).
fn advice(
    policy: &Policy,
    current: &NodeType,
    placed_by: &Source,
    profile: Option<&str>,
    asked: &BTreeMap<String, Quantity>,
    has_sidecars: bool,
) -> String {
    let fits = |nt: &NodeType| {
        asked
            .iter()
            .all(|(res, a)| nt.offers(res).is_none_or(|o| *a <= o))
    };
    let mut text = String::from("lower the requests in the task's pod_override");
    if has_sidecars {
        text.push_str(" (sidecars count too)");
    }
    if let Source::Rule(rule) = placed_by {
        text.push_str(&format!(
            "; node type `{}` is set by rule `{rule}`, which no profile overrides: ask the cluster admins to change the rule",
            current.name
        ));
        return text;
    }
    let bigger: Vec<&NodeType> = policy
        .node_types
        .values()
        .filter(|nt| nt.name != current.name && fits(nt))
        .collect();
    if bigger.is_empty() {
        let missing = asked.iter().find(|(res, a)| {
            is_special_resource(res)
                && policy
                    .node_types
                    .values()
                    .all(|nt| nt.offers(res).is_some_and(|o| **a > o))
        });
        match missing {
            Some((res, _)) => text.push_str(&format!(
                "; no node type of this cluster offers that much {res}"
            )),
            None => text.push_str("; no node type of this cluster is large enough"),
        }
        return text;
    }
    let profiles: Vec<&String> = policy
        .profiles
        .iter()
        .filter(|(name, p)| {
            Some(name.as_str()) != profile
                && p.node_type
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
            ", or move it to node type {} with the annotation {PROFILE_ANNOTATION} set to {}",
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
        serde_saphyr::from_str(yaml).unwrap()
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
        let r = check(&policy, &p, &task, None, &choice, &BTreeMap::new());
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
            (
                ("requests", "memory".to_owned()),
                Source::Profile("big".into()),
            ),
            (("limits", "memory".to_owned()), Source::Pod),
        ]);
        let r = check(
            &policy,
            &p,
            &TaskIdentity::default(),
            None,
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
        assert_eq!(
            check(&warn, &p, &t, None, &n, &BTreeMap::new())
                .warnings
                .len(),
            1
        );
        let deny =
            Policy::parse("guardRails: {sidecars: deny, allowedSidecars: [istio-*]}").unwrap();
        let r = check(&deny, &p, &t, None, &n, &BTreeMap::new());
        assert_eq!(r.violations.len(), 1);
        assert!(r.violations[0].contains("`logger`") && !r.violations[0].contains("istio"));
        let allow = Policy::parse("guardRails: {sidecars: allow}").unwrap();
        assert_eq!(
            check(&allow, &p, &t, None, &n, &BTreeMap::new()),
            GuardReport::default()
        );
    }
}
