//! The RFC 6902 patch from the pod to its mutated copy, and the check that refuses any patch
//! touching what the webhook must never touch.

use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;

use super::{super::policy::WORKLOAD_VOLUME, ReviewError};

/// The RFC 6902 patch from `before` to `after`, checked against the invariants.
pub fn pod_patch(before: &Pod, after: &Pod) -> Result<Patch, ReviewError> {
    let b = serde_json::to_value(before)?;
    let a = serde_json::to_value(after)?;
    let patch = json_patch::diff(&b, &a);
    check_patch(before, &patch)?;
    Ok(patch)
}

fn op_path(op: &PatchOperation) -> Vec<String> {
    op.path()
        .tokens()
        .map(|t| t.decoded().into_owned())
        .collect()
}

/// Refuses patches that would reorder or replace containers, touch `args` / `command`, touch
/// Airflow 3's workload volume or its mount, or remove anything but the fields the webhook is
/// allowed to clear.
pub fn check_patch(before: &Pod, patch: &Patch) -> Result<(), ReviewError> {
    let spec = before.spec.as_ref();
    let workload_volume = spec
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().position(|v| v.name == WORKLOAD_VOLUME))
        .map(|i| i.to_string());
    let unsafe_patch = |why: String| Err(ReviewError::UnsafePatch(why));
    for op in &patch.0 {
        let path = op_path(op);
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        let shown = op.path().to_string();
        if !matches!(
            op,
            PatchOperation::Add(_) | PatchOperation::Replace(_) | PatchOperation::Remove(_)
        ) {
            return unsafe_patch(format!("uses a move/copy/test op at {shown}"));
        }
        match p.as_slice() {
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
            ["spec", "volumes"] if spec.and_then(|s| s.volumes.as_ref()).is_some() => {
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
                    .and_then(|c| c.volume_mounts.as_ref());
                if let Some(mounts) = mounts {
                    if rest.is_empty() {
                        return unsafe_patch(format!(
                            "replaces a container's volume mounts ({shown})"
                        ));
                    }
                    let workload_mount = mounts
                        .iter()
                        .position(|m| m.name == WORKLOAD_VOLUME)
                        .map(|i| i.to_string());
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
                p.as_slice(),
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
mod tests {
    use super::*;
    use json_patch::{AddOperation, RemoveOperation, jsonptr::PointerBuf};
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "base", "args": ["x"],
                    "volumeMounts": [{"name": "airflow-workload", "mountPath": "/run/secrets/airflow-workload"}]}],
                "volumes": [{"name": "airflow-workload", "secret": {"secretName": "s"}}],
                "priority": 0
            }
        }))
        .unwrap()
    }

    fn add(path: &[&str]) -> PatchOperation {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value: json!("x"),
        })
    }

    fn remove(path: &[&str]) -> PatchOperation {
        PatchOperation::Remove(RemoveOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
        })
    }

    #[test]
    fn safety_check_refuses_forbidden_patches() {
        let p = pod();
        for bad in [
            add(&["spec", "containers", "1"]),
            add(&["spec", "containers", "0", "args", "0"]),
            add(&["spec", "volumes", "0", "secret"]),
            add(&["spec", "volumes"]),
            add(&["spec", "containers", "0", "volumeMounts", "0", "readOnly"]),
            remove(&["metadata", "labels"]),
        ] {
            assert!(
                check_patch(&p, &Patch(vec![bad.clone()])).is_err(),
                "{bad:?}"
            );
        }
        for ok in [
            add(&["spec", "volumes", "1"]),
            add(&["spec", "containers", "0", "volumeMounts", "1"]),
            add(&["spec", "containers", "0", "resources"]),
            remove(&["spec", "priority"]),
        ] {
            assert!(check_patch(&p, &Patch(vec![ok.clone()])).is_ok(), "{ok:?}");
        }
    }
}
