//! Tests of the review: malformed and corrupted bodies (errors, never panics or values), the
//! patch encoding, warnings.

use super::*;
use serde_json::json;

#[test]
fn patch_ops_serialize_as_json_patch_does() {
    let patch: Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/labels/a~1b", "value": {"x": [1, "two"]}},
        {"op": "remove", "path": "/spec/priority"},
        {"op": "replace", "path": "/spec/priorityClassName", "value": "high"},
        {"op": "move", "from": "/a", "path": "/b"},
        {"op": "copy", "from": "/c", "path": "/d"},
        {"op": "test", "path": "/e", "value": null},
    ]))
    .unwrap();
    assert_eq!(
        serde_json::to_value(OpsOut(&patch)).unwrap(),
        serde_json::to_value(&patch).unwrap()
    );
}

/// Every malformed body gets its own asserted outcome: a 400 (`BadReview` / `BadPod`) with a
/// message that says what is wrong, never a panic and never a silent allow.
#[test]
fn malformed_reviews_are_errors_not_panics() {
    let policy = Policy::parse("").unwrap();
    const REVIEW: &str = r#""kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1""#;
    const POD_REQUEST: &str = r#""uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"userInfo":{}"#;
    let review = |request: &str| format!("{{{REVIEW},\"request\":{{{POD_REQUEST},{request}}}}}");
    // (body, the error message must contain)
    let bad_review: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "truncated JSON"),
        (b"null".to_vec(), "expected struct ReviewIn"),
        (b"{".to_vec(), "truncated JSON"),
        (b"[]".to_vec(), "expected struct ReviewIn"),
        (b"\xff\xfe".to_vec(), "malformed JSON"),
        (
            br#"{"kind":"AdmissionReview"}"#.to_vec(),
            "expected admission.k8s.io/v1 AdmissionReview",
        ),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{}}"#
                .to_vec(),
            "missing field `uid`",
        ),
        (format!("{{{REVIEW}}}").into_bytes(), "no request"),
        (
            format!("{{{REVIEW},\"request\":{{\"uid\":\"u\"}}}}").into_bytes(),
            "missing field `kind`",
        ),
        (
            review(r#""operation":"EXPLODE""#).into_bytes(),
            "expected one of `CREATE`, `UPDATE`, `DELETE`, `CONNECT`",
        ),
    ];
    let bad_pod: Vec<(Vec<u8>, &str)> = vec![
        (
            review(r#""operation":"CREATE","object":{"apiVersion":"v1","kind":"Pod","spec":{"containers":"nope"}}"#)
                .into_bytes(),
            "at spec.containers: invalid value, expected a sequence",
        ),
        (
            review(r#""operation":"CREATE","object":{"apiVersion":"v2","kind":"Pod"}"#)
                .into_bytes(),
            "expected v1",
        ),
    ];
    for (body, message) in &bad_review {
        match handle(&policy, &Metrics::new(), body) {
            Err(ReviewError::BadReview(m)) => assert!(m.contains(message), "{m}"),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    for (body, message) in &bad_pod {
        match handle(&policy, &Metrics::new(), body) {
            Err(ReviewError::BadPod { uid, reason }) => {
                assert_eq!(uid, "u");
                assert!(reason.contains(message), "{reason}");
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    // An Airflow pod whose request is not a quantity decodes (Kubernetes checks quantities
    // in validation, after every mutating webhook): the webhook leaves that value alone and
    // fills only what is missing; the API server then refuses the pod with its own message.
    let unparsable = review(
        r#""operation":"CREATE","object":{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"kubernetes_executor":"True","airflow-worker":"1"}},"spec":{"containers":[{"name":"base","resources":{"requests":{"cpu":"lots"}}}]}}"#,
    );
    let handled = handle(&policy, &Metrics::new(), unparsable.as_bytes()).unwrap();
    assert_eq!(handled.outcome, Outcome::Mutated);
    assert_eq!(
        serde_json::to_value(&handled.response).unwrap()["response"]["allowed"],
        true
    );
    assert!(
        !handled.summary.detail.contains("requests.cpu"),
        "{}",
        handled.summary.detail
    );
    assert_eq!(bad_review.len() + bad_pod.len() + 1, 13);
}

fn airflow_review() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "airflow", "operation": "CREATE", "userInfo": {},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"kubernetes_executor": "True", "airflow-worker": "1"},
                    "annotations": {"dag_id": "d", "task_id": "t", "airflow-keda-scaler/profile": "nope"}},
                "spec": {"containers": [{"name": "base", "resources": {"requests": {"cpu": "2"}}}, {"name": "side"}],
                    "volumes": [{"name": "airflow-workload", "secret": {"secretName": "s"}}]}}
        }
    }))
    .unwrap()
}

/// Every prefix and many single-byte corruptions of a valid review: errors, never panics.
#[test]
fn truncated_and_corrupted_reviews_never_panic() {
    let policy = Policy::parse("guardRails: {unknownProfile: warn}").unwrap();
    let body = airflow_review();
    let metrics = Metrics::new();
    let ok = handle(&policy, &metrics, &body).unwrap();
    assert_eq!(ok.outcome, Outcome::Mutated);
    for end in 0..body.len() {
        let _ = handle(&policy, &metrics, &body[..end]);
    }
    for i in 0..body.len() {
        for b in [b'"', b'{', b'0', b'\\', b'-', 0xff] {
            let mut bad = body.clone();
            bad[i] = b;
            let _ = handle(&policy, &metrics, &bad);
        }
    }
}

#[test]
fn unknown_profile_can_be_a_warning() {
    let policy = Policy::parse("guardRails: {unknownProfile: warn, sidecars: allow}").unwrap();
    let metrics = Metrics::new();
    let h = handle(&policy, &metrics, &airflow_review()).unwrap();
    assert!(
        metrics
            .encode()
            .contains(r#"airflow_keda_scaler_webhook_warnings_total{kind="unknown-profile"} 1"#),
        "counted in the metrics it was given"
    );
    let response = serde_json::to_value(&h.response).unwrap();
    let warnings = response["response"]["warnings"].as_array().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("unknown profile `nope`")
    );
    assert!(response["response"]["patch"].is_string(), "patch is base64");
    let denied = handle(
        &Policy::parse("").unwrap(),
        &Metrics::new(),
        &airflow_review(),
    )
    .unwrap();
    assert_eq!(denied.outcome, Outcome::Denied);
    let denied = serde_json::to_value(&denied.response).unwrap();
    assert_eq!(denied["response"]["uid"], "u-1");
    assert_eq!(denied["response"]["status"]["code"], 403);
}

#[test]
fn decoder_errors_say_where_never_what() {
    let secret = "eyJhbGciOiJIUzUxMiJ9.secret";
    for (object, path) in [
        (
            json!({"spec": {"containers": [{"name": "base", "args": secret}]}}),
            "spec.containers[0].args",
        ),
        (
            json!({"spec": {"containers": [{"name": "base", "args": [7]}]}}),
            "spec.containers[0].args[0]",
        ),
        (
            json!({"spec": {"containers": [{"name": "base", "imagePullPolicy": {"x": secret}}]}}),
            "spec.containers[0].imagePullPolicy",
        ),
    ] {
        let raw = serde_json::value::to_raw_value(&object).unwrap();
        let message = decode_pod(&raw).unwrap_err();
        assert!(message.starts_with(&format!("at {path}: ")), "{message}");
        assert!(
            !message.contains("eyJ") && !message.contains("`7`"),
            "{message}"
        );
    }
}
