//! Applying the effective settings to a pod: pure functions from a pod to a changed pod.
//!
//! Every change is made only when the pod does not have it already, so applying the same
//! settings to the result changes nothing (idempotence). Containers are never added, removed or
//! reordered; `args` and `command` (where Airflow puts the workload and its task token) are
//! never touched, nor a workload Secret volume (`airflow-workload`) should a provider mount one.
//! The patch is the difference between the pod and its changed copy (see
//! [`crate::webhook::review`]).
//!
//! Defaults come last and only fill what is still unset on `base` after the pod, the profile and
//! the rules; they never create a conflict: a default limit is raised to the request, a default
//! request is not added where the pod sets a limit (Kubernetes then uses the limit), and no
//! default is added for a resource the pod budgets at pod level (`spec.resources`).
//!
//! Environment variables: Kubernetes runs the *last* entry of a name, and Airflow appends env
//! lists (template, then `pod_override`), so a value the policy sets goes into the last entry.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Container, EmptyDirVolumeSource, EnvVar, Pod, PodSpec, ResourceRequirements, Toleration,
        Volume, VolumeMount,
    },
    apimachinery::pkg::api::resource::Quantity as K8sQuantity,
};

use super::{
    matching::{Effective, Source, Sourced},
    placement::NodeTypeChoice,
    policy::{APPLIED_ANNOTATION, BASE_CONTAINER, NodeType, Policy, TempStorage},
    quantity::Quantity,
    warning::{Warning, WarningKind},
};

/// What mutation produced: the changed pod (a copy, see [`mutate`]) and what changed.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The changed pod.
    pub pod: Pod,
    /// One human line per change, e.g. `requests.cpu=2 (profile large)`.
    pub applied: Vec<String>,
    /// Things the admin should know (see [`crate::webhook::warning`]).
    pub warnings: Vec<Warning>,
    /// Origin of each `requests.<res>` / `limits.<res>` of `base` after mutation.
    pub base_sources: ResourceSources,
}

/// What [`apply`] changed in a pod.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// One human line per change, e.g. `requests.cpu=2 (profile large)`.
    pub applied: Vec<String>,
    /// Things the admin should know (see [`crate::webhook::warning`]).
    pub warnings: Vec<Warning>,
    /// Origin of each `requests.<res>` / `limits.<res>` of `base` after mutation.
    pub base_sources: ResourceSources,
}

/// Where each resource setting of `base` came from, by (`"requests"` or `"limits"`, resource).
/// Read only for the guard's messages; keyed by parts so that building it formats nothing.
pub type ResourceSources = BTreeMap<(&'static str, String), Source>;

impl Mutation {
    /// True when the pod was changed.
    pub fn changed(&self) -> bool {
        !self.applied.is_empty()
    }
}

/// Index of the `base` container, if the pod has one.
pub fn base_index(spec: &PodSpec) -> Option<usize> {
    spec.containers
        .iter()
        .position(|c| c.name == BASE_CONTAINER)
}

/// Applies the settings to a copy of the pod (see [`apply`] for the pod itself).
pub fn mutate(
    policy: &Policy,
    pod: &Pod,
    effective: &Effective,
    node_type: &NodeTypeChoice<'_>,
) -> Mutation {
    let mut copy = pod.clone();
    let changes = apply(policy, &mut copy, effective, node_type);
    Mutation {
        pod: copy,
        applied: changes.applied,
        warnings: changes.warnings,
        base_sources: changes.base_sources,
    }
}

/// Applies the settings to the pod itself (the review keeps only what the patch compares,
/// [`crate::webhook::review::Before`], instead of a copy of the whole pod).
pub fn apply(
    policy: &Policy,
    pod: &mut Pod,
    effective: &Effective,
    node_type: &NodeTypeChoice<'_>,
) -> Changes {
    let had_labels = pod.metadata.labels.is_some();
    let had_annotations = pod.metadata.annotations.is_some();
    let mut out = Changes::default();
    if let Some(spec) = pod.spec.as_mut() {
        match base_index(spec) {
            Some(i) => {
                let had_volumes = spec.volumes.is_some();
                let mut volumes = spec.volumes.take().unwrap_or_default();
                let pod_level = pod_level_resources(spec);
                let base = &mut spec.containers[i];
                resources(
                    policy,
                    base,
                    effective,
                    &pod_level,
                    &mut out.applied,
                    &mut out.base_sources,
                );
                env(base, &effective.env, &mut out.applied);
                for t in effective.temp_storage.values() {
                    temp_storage(base, &mut volumes, t, &mut out.applied, &mut out.warnings);
                }
                spec.volumes = (had_volumes || !volumes.is_empty()).then_some(volumes);
            }
            None => {
                let wants_base = !effective.requests.is_empty()
                    || !effective.limits.is_empty()
                    || !policy.defaults.is_empty()
                    || !effective.env.is_empty()
                    || !effective.temp_storage.is_empty();
                if wants_base {
                    out.warnings.push(Warning::new(
                        WarningKind::NoBaseContainer,
                        format!("no `{BASE_CONTAINER}` container: resources, env and temp storage were not applied"),
                    ));
                }
            }
        }
        let placement = match node_type {
            NodeTypeChoice::Place(nt, source) => Some((*nt, source.clone())),
            NodeTypeChoice::Own(nt) => Some((*nt, Source::Pod)),
            NodeTypeChoice::Foreign | NodeTypeChoice::None => None,
        };
        if let Some((nt, source)) = placement {
            place(spec, nt, &source, &mut out.applied);
        }
        if let Some(pc) = &effective.priority_class_name
            && spec.priority_class_name.as_deref() != Some(pc.value.as_str())
        {
            spec.priority_class_name = Some(pc.value.clone());
            // The Priority admission plugin resolved these from the old class before webhooks
            // ran; it fills them again from the new class when the webhook is reinvoked.
            spec.priority = None;
            spec.preemption_policy = None;
            out.applied
                .push(format!("priorityClassName={} ({})", pc.value, pc.source));
        }
    }
    for (kind, wanted) in [
        ("label", &effective.labels),
        ("annotation", &effective.annotations),
    ] {
        let map = if kind == "label" {
            pod.metadata.labels.get_or_insert_with(Default::default)
        } else {
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
        };
        for (k, v) in wanted {
            if map.get(k) != Some(&v.value) {
                map.insert(k.clone(), v.value.clone());
                out.applied
                    .push(format!("{kind} {k}={} ({})", v.value, v.source));
            }
        }
    }
    if pod.metadata.labels.as_ref().is_some_and(|m| m.is_empty()) && !had_labels {
        pod.metadata.labels = None;
    }
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|m| m.is_empty())
        && !had_annotations
    {
        pod.metadata.annotations = None;
    }
    if !out.applied.is_empty() {
        // `profile=…; rules=…; <applied>; …`, written once (no copies of the applied lines).
        let mut summary = String::new();
        let mut item = |parts: &[&str]| {
            if !summary.is_empty() {
                summary.push_str("; ");
            }
            parts.iter().for_each(|p| summary.push_str(p));
        };
        if let Some(p) = &effective.profile {
            item(&["profile=", p]);
        }
        if !effective.rules.is_empty() {
            item(&["rules=", &effective.rules.join(",")]);
        }
        for a in &out.applied {
            item(&[a]);
        }
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(APPLIED_ANNOTATION.to_owned(), summary);
    }
    out
}

fn parse(q: &K8sQuantity) -> Option<Quantity> {
    Quantity::parse(&q.0).ok()
}

/// Resource names the pod budgets at pod level (`spec.resources` requests or limits).
fn pod_level_resources(spec: &PodSpec) -> Vec<String> {
    let Some(r) = &spec.resources else {
        return Vec::new();
    };
    [r.requests.as_ref(), r.limits.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(|m| m.keys().cloned())
        .collect()
}

fn resources(
    policy: &Policy,
    base: &mut Container,
    effective: &Effective,
    pod_level: &[String],
    applied: &mut Vec<String>,
    sources: &mut ResourceSources,
) {
    let had_resources = base.resources.is_some();
    let r = base
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    let had = (r.requests.is_some(), r.limits.is_some());
    let mut requests = r.requests.take().unwrap_or_default();
    let mut limits = r.limits.take().unwrap_or_default();
    for k in requests.keys() {
        sources.insert(("requests", k.clone()), Source::Pod);
    }
    for k in limits.keys() {
        sources.insert(("limits", k.clone()), Source::Pod);
    }
    for (kind, wanted, map) in [
        ("requests", &effective.requests, &mut requests),
        ("limits", &effective.limits, &mut limits),
    ] {
        for (res, Sourced { value, source }) in wanted {
            if map.get(res).and_then(parse).as_ref() != Some(value) {
                map.insert(res.clone(), K8sQuantity(value.as_str().to_owned()));
                applied.push(format!("{kind}.{res}={value} ({source})"));
            }
            sources.insert((kind, res.clone()), source.clone());
        }
    }
    // Defaults fill what is still unset, without creating a conflict. A resource budgeted at
    // pod level is the pod's to share among its containers: no default is added for it.
    let budgeted = |res: &String| pod_level.contains(res);
    for (res, default) in &policy.defaults.requests {
        if !requests.contains_key(res) && !limits.contains_key(res) && !budgeted(res) {
            requests.insert(res.clone(), K8sQuantity(default.as_str().to_owned()));
            applied.push(format!("requests.{res}={default} (defaults)"));
            sources.insert(("requests", res.clone()), Source::Default);
        }
    }
    for (res, default) in &policy.defaults.limits {
        if limits.contains_key(res) || budgeted(res) {
            continue;
        }
        let request = requests.get(res).and_then(parse);
        let value = match request {
            Some(req) if req > *default => req,
            _ => default.clone(),
        };
        limits.insert(res.clone(), K8sQuantity(value.as_str().to_owned()));
        applied.push(format!("limits.{res}={value} (defaults)"));
        sources.insert(("limits", res.clone()), Source::Default);
    }
    r.requests = (had.0 || !requests.is_empty()).then_some(requests);
    r.limits = (had.1 || !limits.is_empty()).then_some(limits);
    if !had_resources && r.requests.is_none() && r.limits.is_none() && r.claims.is_none() {
        base.resources = None;
    }
}

fn env(
    base: &mut Container,
    wanted: &BTreeMap<String, Sourced<String>>,
    applied: &mut Vec<String>,
) {
    if wanted.is_empty() {
        return;
    }
    let list = base.env.get_or_insert_with(Vec::new);
    for (name, v) in wanted {
        // The last entry of a name is the one the container gets.
        match list.iter_mut().rev().find(|e| e.name == *name) {
            Some(e) if e.value.as_deref() == Some(v.value.as_str()) && e.value_from.is_none() => {}
            Some(e) => {
                e.value = Some(v.value.clone());
                e.value_from = None;
                applied.push(format!("env {name} ({})", v.source));
            }
            None => {
                list.push(EnvVar {
                    name: name.clone(),
                    value: Some(v.value.clone()),
                    value_from: None,
                });
                applied.push(format!("env {name} ({})", v.source));
            }
        }
    }
}

fn temp_storage(
    base: &mut Container,
    volumes: &mut Vec<Volume>,
    t: &Sourced<TempStorage>,
    applied: &mut Vec<String>,
    warnings: &mut Vec<Warning>,
) {
    let ts = &t.value;
    let mounts = base.volume_mounts.get_or_insert_with(Vec::new);
    let mounted = mounts.iter().any(|m| m.name == ts.volume_name);
    let path_taken = mounts.iter().find(|m| {
        m.name != ts.volume_name
            && m.mount_path.trim_end_matches('/') == ts.path.trim_end_matches('/')
    });
    if let Some(other) = path_taken {
        warnings.push(Warning::new(
            WarningKind::TempStoragePathTaken,
            format!(
                "{} is already mounted from volume `{}`: temp storage ({}) not added",
                ts.path, other.name, t.source
            ),
        ));
        if mounts.is_empty() {
            base.volume_mounts = None;
        }
        return;
    }
    // The same emptyDir (the API server allows one source per volume).
    let ours = |v: &Volume| {
        v.empty_dir.as_ref().is_some_and(|e| {
            e.medium.as_deref().filter(|m| !m.is_empty()) == ts.medium.as_deref()
                && e.size_limit.as_ref().and_then(parse) == ts.size_limit
        })
    };
    if let Some(existing) = volumes.iter().find(|v| v.name == ts.volume_name) {
        if !ours(existing) {
            warnings.push(Warning::new(
                WarningKind::TempStorageVolumeTaken,
                format!(
                    "the pod already defines volume `{}`: kept as it is instead of the temp storage of {}",
                    ts.volume_name, t.source
                ),
            ));
        }
    } else {
        volumes.push(Volume {
            name: ts.volume_name.clone(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: ts.medium.clone(),
                size_limit: ts
                    .size_limit
                    .as_ref()
                    .map(|q| K8sQuantity(q.as_str().to_owned())),
            }),
            ..Default::default()
        });
        let size = ts
            .size_limit
            .as_ref()
            .map(|q| format!(" {q}"))
            .unwrap_or_default();
        let medium = ts
            .medium
            .as_ref()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        applied.push(format!(
            "volume {}{medium}{size} ({})",
            ts.volume_name, t.source
        ));
    }
    if !mounted {
        mounts.push(VolumeMount {
            name: ts.volume_name.clone(),
            mount_path: ts.path.clone(),
            ..Default::default()
        });
        applied.push(format!(
            "mount {} at {} ({})",
            ts.volume_name, ts.path, t.source
        ));
    }
}

/// Tolerations equal up to Kubernetes' defaults (operator `Equal`, empty effect).
fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    let n = |t: &Toleration| {
        (
            t.key.clone().unwrap_or_default(),
            t.operator.clone().unwrap_or_else(|| "Equal".to_owned()),
            t.value.clone().unwrap_or_default(),
            t.effect.clone().unwrap_or_default(),
            t.toleration_seconds,
        )
    };
    n(a) == n(b)
}

fn place(spec: &mut PodSpec, nt: &NodeType, source: &Source, applied: &mut Vec<String>) {
    let mut changed = false;
    if !nt.node_selector.is_empty() {
        let sel = spec.node_selector.get_or_insert_with(Default::default);
        for (k, v) in &nt.node_selector {
            if sel.get(k) != Some(v) {
                sel.insert(k.clone(), v.clone());
                changed = true;
            }
        }
    }
    if !nt.tolerations.is_empty() {
        let list = spec.tolerations.get_or_insert_with(Vec::new);
        for t in &nt.tolerations {
            if !list.iter().any(|have| same_toleration(have, t)) {
                list.push(t.clone());
                changed = true;
            }
        }
    }
    if changed {
        applied.push(format!("node type {} ({source})", nt.name));
    }
}

#[cfg(test)]
mod tests;
