//! Tests of the patch: appended lists, declared label and annotation keys, the safety check.

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
fn appended_lists_become_adds_and_a_shrunk_one_is_refused() {
    let before = pod();
    let mut after = before.clone();
    let spec = after.spec.as_mut().unwrap();
    spec.volumes.as_mut().unwrap().push(Volume {
        name: "scratch".into(),
        ..Volume::default()
    });
    spec.tolerations = Some(vec![Default::default()]);
    let patch = pod_patch(&Before::of(&before, [], []), &after).unwrap();
    let paths: Vec<String> = patch.0.iter().map(|op| op.path().to_string()).collect();
    assert_eq!(paths, ["/spec/volumes/1", "/spec/tolerations"]);

    after.spec.as_mut().unwrap().volumes = Some(Vec::new());
    let err = pod_patch(&Before::of(&before, [], []), &after).unwrap_err();
    assert!(
        err.to_string().contains("shrinks or removes /spec/volumes"),
        "{err}"
    );
}

#[test]
fn declared_label_and_annotation_keys_become_ops_and_others_are_refused() {
    let mut before = pod();
    before.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
    let mut after = before.clone();
    let labels = after.metadata.labels.as_mut().unwrap();
    labels.insert("team".into(), "b".into());
    labels.insert("tier".into(), "gpu".into());
    after.metadata.annotations = Some(BTreeMap::from([("note".into(), "x".into())]));
    let declared = Before::of(&before, ["team", "tier"], ["note"]);
    let patch = pod_patch(&declared, &after).unwrap();
    let ops: Vec<(String, &str)> = patch
        .0
        .iter()
        .map(|op| {
            let kind = match op {
                PatchOperation::Add(_) => "add",
                PatchOperation::Replace(_) => "replace",
                _ => "other",
            };
            (op.path().to_string(), kind)
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("/metadata/labels/team".to_owned(), "replace"),
            ("/metadata/labels/tier".to_owned(), "add"),
            ("/metadata/annotations".to_owned(), "add"),
        ]
    );
    // A key the mutation did not declare: refused, not silently left out of the patch.
    let undeclared = Before::of(&before, ["team"], ["note"]);
    let err = pod_patch(&undeclared, &after).unwrap_err();
    assert!(err.to_string().contains("did not declare"), "{err}");
    let undeclared = Before::of(&before, ["team", "tier"], []);
    let err = pod_patch(&undeclared, &after).unwrap_err();
    assert!(err.to_string().contains("did not declare"), "{err}");
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
            check_patch(&Before::of(&p, [], []), &Patch(vec![bad.clone()])).is_err(),
            "{bad:?}"
        );
    }
    for ok in [
        add(&["spec", "volumes", "1"]),
        add(&["spec", "containers", "0", "volumeMounts", "1"]),
        add(&["spec", "containers", "0", "resources"]),
        remove(&["spec", "priority"]),
    ] {
        assert!(
            check_patch(&Before::of(&p, [], []), &Patch(vec![ok.clone()])).is_ok(),
            "{ok:?}"
        );
    }
}
