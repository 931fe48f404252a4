//! The RFC 6902 patch from the pod to its mutated copy, and the check that refuses any patch
//! touching what the webhook must never touch.

use std::collections::BTreeMap;

use json_patch::{
    AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation,
    jsonptr::{Pointer, PointerBuf},
};
use k8s_openapi::api::core::v1::{EnvVar, Pod, ResourceRequirements, Volume, VolumeMount};
use serde::Serialize;
use serde_json::Value;

use super::{super::policy::WORKLOAD_VOLUME, ReviewError};

/// What the patch compares, copied from a pod before the mutation changes it in place: the
/// fields the mutation may touch (and the check looks at), never the pod's big ones (`args`,
/// `command`, the rest of the spec), so a review does not copy the whole pod. Of the lists the
/// mutation only appends to (volumes, mounts, tolerations) only the length is kept, and where
/// the workload volume or mount sits; debug builds check the patch against a full copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Before {
    labels: MapBefore,
    annotations: MapBefore,
    spec: Option<SpecBefore>,
}

/// Labels or annotations before the mutation, which only ever sets keys in them: whether the
/// map existed, its length, and the old value of each key the mutation may set (not a copy of
/// the map). A key changed outside those is a bug in the mutation: the patch refuses it when
/// the length tells (an added or removed key), and debug builds check every patch against a
/// full copy of the pod.
#[derive(Debug, Clone, Default, PartialEq)]
struct MapBefore {
    existed: bool,
    len: usize,
    keys: Vec<(String, Option<String>)>,
}

impl MapBefore {
    fn of<'k>(
        map: &Option<BTreeMap<String, String>>,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Self {
        let mut out = Self {
            existed: map.is_some(),
            len: map.as_ref().map_or(0, BTreeMap::len),
            keys: Vec::new(),
        };
        for key in keys {
            if out.keys.iter().all(|(k, _)| k != key) {
                let old = map.as_ref().and_then(|m| m.get(key)).cloned();
                out.keys.push((key.to_owned(), old));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct SpecBefore {
    containers: Vec<ContainerBefore>,
    volumes: Option<Appended>,
    node_selector: Option<BTreeMap<String, String>>,
    tolerations: Option<Appended>,
    priority_class_name: Option<String>,
    priority: Option<i32>,
    preemption_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ContainerBefore {
    resources: Option<ResourceRequirements>,
    env: Option<Vec<EnvVar>>,
    volume_mounts: Option<Appended>,
}

/// A list the mutation only appends to (volumes, mounts, tolerations): its length and where
/// the workload volume (or its mount) sits, instead of a copy of its items.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Appended {
    len: usize,
    workload: Option<usize>,
}

impl Appended {
    fn of<T>(list: &Option<Vec<T>>, is_workload: impl Fn(&T) -> bool) -> Option<Self> {
        list.as_ref().map(|items| Self {
            len: items.len(),
            workload: items.iter().position(is_workload),
        })
    }
}

impl Before {
    /// Copies what the patch compares from `pod`; `labels` and `annotations` name the keys the
    /// mutation may set.
    pub fn of<'k>(
        pod: &Pod,
        labels: impl IntoIterator<Item = &'k str>,
        annotations: impl IntoIterator<Item = &'k str>,
    ) -> Self {
        Self {
            labels: MapBefore::of(&pod.metadata.labels, labels),
            annotations: MapBefore::of(&pod.metadata.annotations, annotations),
            spec: pod.spec.as_ref().map(|s| SpecBefore {
                containers: s
                    .containers
                    .iter()
                    .map(|c| ContainerBefore {
                        resources: c.resources.clone(),
                        env: c.env.clone(),
                        volume_mounts: Appended::of(&c.volume_mounts, |m: &VolumeMount| {
                            m.name == WORKLOAD_VOLUME
                        }),
                    })
                    .collect(),
                volumes: Appended::of(&s.volumes, |v: &Volume| v.name == WORKLOAD_VOLUME),
                node_selector: s.node_selector.clone(),
                tolerations: Appended::of(&s.tolerations, |_| false),
                priority_class_name: s.priority_class_name.clone(),
                priority: s.priority,
                preemption_policy: s.preemption_policy.clone(),
            }),
        }
    }
}

/// The RFC 6902 patch from the pod as it was (`before`) to the mutated pod, checked against
/// the invariants.
///
/// Only the fields the mutation may change are compared (typed, which is cheap) and only those
/// that differ are turned into JSON: string maps key by key, lists that only grew item by item
/// (what the mutation does to labels, annotations, the node selector, tolerations, volumes and
/// mounts), anything else through a JSON diff of that field alone.
/// [`debug_check_patch`] checks in debug builds that the patch turns the pod into its mutated
/// copy.
pub fn pod_patch(before: &Before, after: &Pod) -> Result<Patch, ReviewError> {
    let mut ops = Vec::new();
    let ma = &after.metadata;
    diff_keys(
        &mut ops,
        &["metadata", "labels"],
        &before.labels,
        &ma.labels,
    )?;
    diff_keys(
        &mut ops,
        &["metadata", "annotations"],
        &before.annotations,
        &ma.annotations,
    )?;
    if let (Some(sb), Some(sa)) = (&before.spec, &after.spec) {
        for (i, (cb, ca)) in sb.containers.iter().zip(&sa.containers).enumerate() {
            let mounts_grew =
                cb.volume_mounts.map(|b| b.len) != ca.volume_mounts.as_ref().map(Vec::len);
            if cb.resources == ca.resources && cb.env == ca.env && !mounts_grew {
                continue;
            }
            let i = i.to_string();
            let at = |field| ["spec", "containers", i.as_str(), field];
            diff_field(&mut ops, &at("resources"), &cb.resources, &ca.resources)?;
            diff_list(&mut ops, &at("env"), &cb.env, &ca.env)?;
            diff_appended(
                &mut ops,
                &at("volumeMounts"),
                cb.volume_mounts,
                &ca.volume_mounts,
            )?;
        }
        diff_appended(&mut ops, &["spec", "volumes"], sb.volumes, &sa.volumes)?;
        diff_map(
            &mut ops,
            &["spec", "nodeSelector"],
            &sb.node_selector,
            &sa.node_selector,
        )?;
        diff_appended(
            &mut ops,
            &["spec", "tolerations"],
            sb.tolerations,
            &sa.tolerations,
        )?;
        diff_field(
            &mut ops,
            &["spec", "priorityClassName"],
            &sb.priority_class_name,
            &sa.priority_class_name,
        )?;
        diff_field(&mut ops, &["spec", "priority"], &sb.priority, &sa.priority)?;
        diff_field(
            &mut ops,
            &["spec", "preemptionPolicy"],
            &sb.preemption_policy,
            &sa.preemption_policy,
        )?;
    }
    let patch = Patch(ops);
    check_patch(before, &patch)?;
    Ok(patch)
}

/// Debug builds: the patch turns the original pod into the mutated one (nothing the mutation
/// changed is missing from it). Compiled out of release builds.
pub fn debug_check_patch(original: &Pod, after: &Pod, patch: &Patch) {
    #[cfg(debug_assertions)]
    {
        let mut patched = serde_json::to_value(original).unwrap_or(Value::Null);
        let applied = json_patch::patch(&mut patched, &patch.0);
        debug_assert!(
            applied.is_ok() && Some(patched) == serde_json::to_value(after).ok(),
            "pod_patch misses a change the mutation made"
        );
    }
    #[cfg(not(debug_assertions))]
    let _ = (original, after, patch);
}

/// Appends the operations turning `before` into `after` at `path` (what a diff of the whole
/// documents gives for that field).
fn diff_field<T: Serialize + PartialEq>(
    ops: &mut Vec<PatchOperation>,
    path: &[&str],
    before: &Option<T>,
    after: &Option<T>,
) -> Result<(), ReviewError> {
    if before == after {
        return Ok(());
    }
    let at = PointerBuf::from_tokens(path.iter().copied());
    match (before, after) {
        (_, None) => ops.push(PatchOperation::Remove(RemoveOperation { path: at })),
        (None, Some(a)) => ops.push(PatchOperation::Add(AddOperation {
            path: at,
            value: serde_json::to_value(a)?,
        })),
        (Some(b), Some(a)) => {
            let (b, a) = (serde_json::to_value(b)?, serde_json::to_value(a)?);
            ops.extend(
                json_patch::diff(&b, &a)
                    .0
                    .into_iter()
                    .map(|op| prefixed(&at, op)),
            );
        }
    }
    Ok(())
}

/// [`diff_field`] for a string map, key by key (no JSON tree of either map).
fn diff_map(
    ops: &mut Vec<PatchOperation>,
    path: &[&str],
    before: &Option<BTreeMap<String, String>>,
    after: &Option<BTreeMap<String, String>>,
) -> Result<(), ReviewError> {
    let (Some(b), Some(a)) = (before, after) else {
        return diff_field(ops, path, before, after);
    };
    if b == a {
        return Ok(());
    }
    let at = PointerBuf::from_tokens(path.iter().copied());
    for (key, value) in a {
        let old = b.get(key);
        if old == Some(value) {
            continue;
        }
        let path = at.with_trailing_token(key.as_str());
        let value = Value::String(value.clone());
        ops.push(match old {
            None => PatchOperation::Add(AddOperation { path, value }),
            Some(_) => PatchOperation::Replace(ReplaceOperation { path, value }),
        });
    }
    for key in b.keys().filter(|k| !a.contains_key(*k)) {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: at.with_trailing_token(key.as_str()),
        }));
    }
    Ok(())
}

/// [`diff_map`] for labels and annotations, from the declared keys' old values.
fn diff_keys(
    ops: &mut Vec<PatchOperation>,
    path: &[&str],
    before: &MapBefore,
    after: &Option<BTreeMap<String, String>>,
) -> Result<(), ReviewError> {
    let at = || PointerBuf::from_tokens(path.iter().copied());
    let after = match (before.existed, after) {
        (false, None) => return Ok(()),
        (false, Some(a)) => {
            if let Some(k) = a.keys().find(|k| before.keys.iter().all(|(d, _)| d != *k)) {
                return Err(ReviewError::UnsafePatch(format!(
                    "sets {}/{k}, a key the mutation did not declare",
                    at()
                )));
            }
            ops.push(PatchOperation::Add(AddOperation {
                path: at(),
                value: serde_json::to_value(a)?,
            }));
            return Ok(());
        }
        (true, None) => {
            return Err(ReviewError::UnsafePatch(format!("removes {}", at())));
        }
        (true, Some(a)) => a,
    };
    let mut len = before.len;
    let prefix = at();
    for (key, old) in &before.keys {
        let new = after.get(key);
        if new == old.as_ref() {
            continue;
        }
        let path = prefix.with_trailing_token(key.as_str());
        ops.push(match (old, new) {
            (None, Some(v)) => {
                len += 1;
                PatchOperation::Add(AddOperation {
                    path,
                    value: Value::String(v.clone()),
                })
            }
            (Some(_), Some(v)) => PatchOperation::Replace(ReplaceOperation {
                path,
                value: Value::String(v.clone()),
            }),
            (Some(_), None) => {
                len -= 1;
                PatchOperation::Remove(RemoveOperation { path })
            }
            (None, None) => continue,
        });
    }
    if after.len() != len {
        return Err(ReviewError::UnsafePatch(format!(
            "adds or removes keys of {} the mutation did not declare",
            prefix
        )));
    }
    Ok(())
}

/// [`diff_field`] for a list: when the mutation only appended items, one `add` per new item
/// (no JSON tree of the items already there); otherwise a JSON diff of the list.
fn diff_list<T: Serialize + PartialEq>(
    ops: &mut Vec<PatchOperation>,
    path: &[&str],
    before: &Option<Vec<T>>,
    after: &Option<Vec<T>>,
) -> Result<(), ReviewError> {
    if let (Some(b), Some(a)) = (before, after)
        && a.len() > b.len()
        && a[..b.len()] == b[..]
    {
        let at = PointerBuf::from_tokens(path.iter().copied());
        for (i, item) in a.iter().enumerate().skip(b.len()) {
            ops.push(PatchOperation::Add(AddOperation {
                path: at.with_trailing_token(i),
                value: serde_json::to_value(item)?,
            }));
        }
        return Ok(());
    }
    diff_field(ops, path, before, after)
}

/// [`diff_field`] for a list the mutation only appends to, from its length before: one `add`
/// per new item, the whole list when there was none. A list that shrank or disappeared is a
/// bug in the mutation and refused.
fn diff_appended<T: Serialize>(
    ops: &mut Vec<PatchOperation>,
    path: &[&str],
    before: Option<Appended>,
    after: &Option<Vec<T>>,
) -> Result<(), ReviewError> {
    let at = || PointerBuf::from_tokens(path.iter().copied());
    match (before, after) {
        (None, None) => {}
        (None, Some(items)) => ops.push(PatchOperation::Add(AddOperation {
            path: at(),
            value: serde_json::to_value(items)?,
        })),
        (Some(b), Some(items)) if items.len() >= b.len => {
            let at = at();
            for (i, item) in items.iter().enumerate().skip(b.len) {
                ops.push(PatchOperation::Add(AddOperation {
                    path: at.with_trailing_token(i),
                    value: serde_json::to_value(item)?,
                }));
            }
        }
        (Some(_), _) => {
            return Err(ReviewError::UnsafePatch(format!(
                "shrinks or removes {}",
                at()
            )));
        }
    }
    Ok(())
}

fn prefixed(prefix: &Pointer, op: PatchOperation) -> PatchOperation {
    let join = |p: &Pointer| prefix.concat(p);
    match op {
        PatchOperation::Add(mut o) => {
            o.path = join(&o.path);
            PatchOperation::Add(o)
        }
        PatchOperation::Remove(mut o) => {
            o.path = join(&o.path);
            PatchOperation::Remove(o)
        }
        PatchOperation::Replace(mut o) => {
            o.path = join(&o.path);
            PatchOperation::Replace(o)
        }
        PatchOperation::Move(mut o) => {
            o.path = join(&o.path);
            o.from = join(&o.from);
            PatchOperation::Move(o)
        }
        PatchOperation::Copy(mut o) => {
            o.path = join(&o.path);
            o.from = join(&o.from);
            PatchOperation::Copy(o)
        }
        PatchOperation::Test(mut o) => {
            o.path = join(&o.path);
            PatchOperation::Test(o)
        }
    }
}

/// The deepest path the webhook's patches use is 6 segments (`/spec/containers/0/env/3/valueFrom`).
const MAX_DEPTH: usize = 16;

/// Refuses patches that would reorder or replace containers, touch `args` / `command`, touch
/// Airflow 3's workload volume or its mount, or remove anything but the fields the webhook is
/// allowed to clear.
pub fn check_patch(before: &Before, patch: &Patch) -> Result<(), ReviewError> {
    let spec = before.spec.as_ref();
    let workload_volume = spec
        .and_then(|s| s.volumes)
        .and_then(|v| v.workload)
        .map(|i| i.to_string());
    let unsafe_patch = |why: String| Err(ReviewError::UnsafePatch(why));
    for op in &patch.0 {
        // Segments borrow from the path unless they carry `~` escapes (then they are decoded
        // into `decoded`); no allocation otherwise. The path is only formatted for an error.
        let raw = op.path().as_str();
        let decoded: Vec<String> = if raw.contains('~') {
            op.path()
                .tokens()
                .map(|t| t.decoded().into_owned())
                .collect()
        } else {
            Vec::new()
        };
        let mut segments = [""; MAX_DEPTH];
        let mut depth = 0;
        let mut push = |segment| {
            if let Some(slot) = segments.get_mut(depth) {
                *slot = segment;
            }
            depth += 1;
        };
        if raw.contains('~') {
            decoded.iter().for_each(|d| push(d.as_str()));
        } else {
            raw.split('/').skip(1).for_each(push);
        }
        if depth > MAX_DEPTH {
            return unsafe_patch(format!(
                "goes deeper than {MAX_DEPTH} levels ({})",
                op.path()
            ));
        }
        let p = &segments[..depth];
        let shown = op.path();
        if !matches!(
            op,
            PatchOperation::Add(_) | PatchOperation::Replace(_) | PatchOperation::Remove(_)
        ) {
            return unsafe_patch(format!("uses a move/copy/test op at {shown}"));
        }
        match p {
            [
                "spec",
                "containers" | "initContainers" | "ephemeralContainers",
            ]
            | [
                "spec",
                "containers" | "initContainers" | "ephemeralContainers",
                _,
            ] => {
                return unsafe_patch(format!("adds, removes or replaces a container ({shown})"));
            }
            [
                "spec",
                "containers" | "initContainers",
                _,
                "args" | "command" | "name",
                ..,
            ] => {
                return unsafe_patch(format!(
                    "touches a container's command, args or name ({shown})"
                ));
            }
            ["spec", "volumes"] if spec.and_then(|s| s.volumes).is_some() => {
                return unsafe_patch(format!("replaces the volume list ({shown})"));
            }
            ["spec", "volumes", i, ..] if Some(*i) == workload_volume.as_deref() => {
                return unsafe_patch(format!("touches the {WORKLOAD_VOLUME} volume ({shown})"));
            }
            ["spec", "containers", i, "volumeMounts", rest @ ..] => {
                let mounts = i
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| spec?.containers.get(i))
                    .and_then(|c| c.volume_mounts);
                if let Some(mounts) = mounts {
                    if rest.is_empty() {
                        return unsafe_patch(format!(
                            "replaces a container's volume mounts ({shown})"
                        ));
                    }
                    let workload_mount = mounts.workload.map(|i| i.to_string());
                    if Some(rest[0]) == workload_mount.as_deref() {
                        return unsafe_patch(format!(
                            "touches the {WORKLOAD_VOLUME} mount ({shown})"
                        ));
                    }
                }
            }
            _ => {}
        }
        if let PatchOperation::Remove(_) = op {
            let allowed = matches!(
                p,
                ["spec", "priority" | "preemptionPolicy"]
                    | ["spec", "containers", _, "env", _, "valueFrom"]
            );
            if !allowed {
                return unsafe_patch(format!("removes {shown}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
