//! Tests of the mutation: defaults, precedence, idempotence, env, temp storage, pod-level resources.

use super::*;
use crate::webhook::{
    matching::{TaskIdentity, resolve},
    placement::choose_node_type,
};

fn run(policy: &str, pod: &str) -> Mutation {
    let policy = Policy::parse(policy).unwrap();
    let pod: Pod = serde_saphyr::from_str(pod).unwrap();
    let task = TaskIdentity::of(&pod);
    let r = resolve(&policy, "airflow", &task, &pod);
    let choice = choose_node_type(&policy, &r.effective, &pod);
    mutate(&policy, &pod, &r.effective, &choice)
}

fn base(m: &Mutation) -> &Container {
    &m.pod.spec.as_ref().unwrap().containers[0]
}

fn q(c: &Container, kind: &str, res: &str) -> Option<String> {
    let r = c.resources.as_ref()?;
    let m = if kind == "requests" {
        r.requests.as_ref()
    } else {
        r.limits.as_ref()
    }?;
    m.get(res).map(|q| q.0.clone())
}

#[test]
fn defaults_fill_a_bare_pod() {
    let m = run("", "spec: {containers: [{name: base}]}");
    let b = base(&m);
    assert_eq!(q(b, "requests", "cpu").as_deref(), Some("1"));
    assert_eq!(q(b, "limits", "memory").as_deref(), Some("512Mi"));
    assert_eq!(m.applied.len(), 4);
    let note = &m.pod.metadata.annotations.as_ref().unwrap()[APPLIED_ANNOTATION];
    assert!(note.contains("requests.cpu=1 (defaults)"), "{note}");
}

#[test]
fn defaults_keep_what_the_pod_sets_and_never_conflict() {
    let m = run(
        "",
        "spec: {containers: [{name: base, resources: {requests: {cpu: '2', memory: 1Gi}, limits: {cpu: 3}}}]}",
    );
    let b = base(&m);
    assert_eq!(q(b, "requests", "cpu").as_deref(), Some("2"));
    assert_eq!(q(b, "limits", "cpu").as_deref(), Some("3"));
    // memory limit would default to 512Mi, below the 1Gi request: raised to the request.
    assert_eq!(q(b, "limits", "memory").as_deref(), Some("1Gi"));
    // Only a limit: Kubernetes copies it to the request, the default does not lower it.
    let m = run(
        "",
        "spec: {containers: [{name: base, resources: {limits: {cpu: 4}}}]}",
    );
    assert_eq!(q(base(&m), "requests", "cpu"), None);
    assert_eq!(q(base(&m), "requests", "memory").as_deref(), Some("512Mi"));
}

#[test]
fn mutation_is_idempotent() {
    let policy = r#"
nodeTypes: {big: {allocatable: {cpu: 16}, nodeSelector: {pool: big}, tolerations: [{key: pool, value: big, effect: NoSchedule}]}}
defaultNodeType: big
priorityClasses: {}
"#;
    // (unknown key above would be a problem: keep the policy valid)
    let policy = policy.replace("priorityClasses: {}\n", "");
    let policy = format!(
        "{policy}rules: [{{name: all, tempStorage: {{path: /scratch, sizeLimit: 1Gi}}, env: {{X: '1'}}, labels: {{team: data}}, priorityClassName: batch}}]"
    );
    let pod = "metadata: {name: p}\nspec: {priority: 0, containers: [{name: base, env: [{name: X, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]}, {name: side}]}";
    let first = run(&policy, pod);
    assert!(first.changed());
    let again_pod = serde_saphyr::to_string(&first.pod).unwrap();
    let second = run(&policy, &again_pod);
    assert!(
        !second.changed(),
        "second pass applied {:?}",
        second.applied
    );
    assert_eq!(
        serde_json::to_value(&second.pod).unwrap(),
        serde_json::to_value(&first.pod).unwrap()
    );
    let spec = first.pod.spec.as_ref().unwrap();
    assert_eq!(
        spec.containers[1].name, "side",
        "containers keep their order"
    );
    assert_eq!(spec.priority, None);
    assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
}

#[test]
fn temp_storage_does_not_steal_a_mount_path() {
    let m = run(
        "defaults: {resources: {}}\nrules: [{name: t, tempStorage: {path: /tmp}}]",
        "spec: {containers: [{name: base, volumeMounts: [{name: mine, mountPath: /tmp/}]}], volumes: [{name: mine, emptyDir: {}}]}",
    );
    assert!(!m.changed());
    assert_eq!(m.warnings.len(), 1);
}

#[test]
fn no_base_container_is_a_warning() {
    let m = run("", "spec: {containers: [{name: main}]}");
    assert!(!m.changed());
    assert_eq!(m.warnings.len(), 1);
}

fn env_values<'a>(m: &'a Mutation, name: &str) -> Vec<&'a str> {
    base(m)
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == name)
        .map(|e| e.value.as_deref().unwrap_or(""))
        .collect()
}

#[test]
fn env_goes_into_the_last_entry_of_a_name() {
    let m = run(
        "rules: [{name: r, env: {TMPDIR: /scratch}}]",
        "spec: {containers: [{name: base, env: [{name: TMPDIR, value: /tmp}, {name: A, value: a}, {name: TMPDIR, value: /data}]}]}",
    );
    assert_eq!(env_values(&m, "TMPDIR"), ["/tmp", "/scratch"]);
    assert_eq!(env_values(&m, "A"), ["a"]);
}

#[test]
fn no_default_for_what_the_pod_budgets_at_pod_level() {
    let m = run(
        "",
        "spec: {resources: {requests: {cpu: 500m}}, containers: [{name: base}]}",
    );
    let b = base(&m);
    assert_eq!(q(b, "requests", "cpu"), None);
    assert_eq!(q(b, "limits", "cpu"), None);
    assert_eq!(q(b, "requests", "memory").as_deref(), Some("512Mi"));
}

#[test]
fn temp_storages_add_up_by_volume_name() {
    let m = run(
        "defaults: {resources: {}}\nprofiles: {p: {tempStorage: {path: /scratch}}}\nrules: [{name: r, tempStorage: {path: /reports, volumeName: reports}}]",
        "metadata: {annotations: {airflow-keda-scaler/profile: p}}\nspec: {containers: [{name: base}]}",
    );
    let mounts: Vec<&str> = base(&m)
        .volume_mounts
        .iter()
        .flatten()
        .map(|v| v.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/scratch", "/reports"], "by volume name");
}

#[test]
fn a_volume_of_the_pod_with_our_name_is_kept_with_a_warning() {
    let m = run(
        "defaults: {resources: {}}\nrules: [{name: r, tempStorage: {path: /scratch, sizeLimit: 1Gi}}]",
        "spec: {containers: [{name: base}], volumes: [{name: airflow-keda-scaler-tmp, configMap: {name: c}}]}",
    );
    assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    assert_eq!(m.warnings[0].kind, WarningKind::TempStorageVolumeTaken);
    let spec = m.pod.spec.as_ref().unwrap();
    assert_eq!(spec.volumes.as_ref().unwrap().len(), 1);
    assert!(spec.volumes.as_ref().unwrap()[0].config_map.is_some());
}
