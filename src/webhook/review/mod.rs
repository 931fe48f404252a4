//! One admission review, from request bytes to response, without a socket.
//!
//! [`review_pod`] decides for one pod (skip, admit with a patch, or deny); [`handle`] wraps it
//! in the `admission.k8s.io/v1` protocol. The patch is the RFC 6902 difference between the
//! typed pod and its mutated copy; both sides go through the same typed model, so fields this
//! build does not know are never mentioned. A safety check refuses (as an internal error) any
//! patch that would touch what the webhook must never touch.
//!
//! - [`verdict`]: the decision for one typed pod.
//! - [`patch`]: the JSONPatch and its safety check.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use serde_json::Value;

use super::policy::Policy;

mod patch;
mod verdict;

pub use patch::{check_patch, pod_patch};
pub use verdict::{Outcome, Verdict, review_pod};

/// Why a review could not be answered (the HTTP layer answers 400 or 500).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an `admission.k8s.io/v1` AdmissionReview with a request.
    #[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
    BadReview(String),
    /// The object claims to be a Pod but is not one.
    #[error("request {uid}: object is not a valid v1 Pod: {reason}")]
    BadPod {
        /// Request uid.
        uid: String,
        /// Decoder message.
        reason: String,
    },
    /// A bug: the computed patch would break an invariant (never sent).
    #[error("internal error: refusing to send a patch that {0}")]
    UnsafePatch(String),
    /// A bug: JSON serialization failed.
    #[error("internal error: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Result of handling one AdmissionReview body.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The response to send (HTTP 200), as JSON (see [`encode_response`]).
    pub response: Value,
    /// For metrics.
    pub outcome: Outcome,
    /// For the log line.
    pub summary: ReviewSummary,
}

/// What the log line says about a review.
#[derive(Debug, Clone, Default)]
pub struct ReviewSummary {
    /// Request uid.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name (or generateName).
    pub pod: String,
    /// Task, when an Airflow pod.
    pub task: Option<String>,
    /// What was applied, or why it was skipped or denied.
    pub detail: String,
    /// Number of patch operations.
    pub patch_ops: usize,
    /// Warnings sent.
    pub warnings: Vec<String>,
}

/// Handles one AdmissionReview body: parse, decide, answer with the same `uid`.
pub fn handle(policy: &Policy, body: &[u8]) -> Result<Handled, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| ReviewError::BadReview(e.to_string()))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(ReviewError::BadReview(format!(
            "apiVersion `{}` kind `{}` (expected admission.k8s.io/v1 AdmissionReview)",
            review.types.api_version, review.types.kind
        )));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| ReviewError::BadReview("no request".to_owned()))?;
    let mut summary = ReviewSummary {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        ..Default::default()
    };
    let base = AdmissionResponse::from(&request);
    let is_pod = request.kind.group.is_empty()
        && request.kind.version == "v1"
        && request.kind.kind == "Pod"
        && request.sub_resource.as_deref().unwrap_or("").is_empty();
    let skip = |why: &str, mut summary: ReviewSummary| {
        summary.detail = why.to_owned();
        encode_response(base.clone().into_review()).map(|response| Handled {
            response,
            outcome: Outcome::Skipped,
            summary,
        })
    };
    if !is_pod {
        let why = format!(
            "not a pod ({}/{} {}{})",
            request.kind.group,
            request.kind.version,
            request.kind.kind,
            request
                .sub_resource
                .as_deref()
                .map(|s| format!(" /{s}"))
                .unwrap_or_default()
        );
        return skip(&why, summary);
    }
    if request.operation != Operation::Create {
        return skip("not a CREATE", summary);
    }
    let Some(object) = request.object.as_ref() else {
        return skip("no object", summary);
    };
    let bad_pod = |reason: String| ReviewError::BadPod {
        uid: request.uid.clone(),
        reason,
    };
    let value = serde_json::to_value(object).map_err(|e| bad_pod(e.to_string()))?;
    let pod: Pod = serde_json::from_value(value).map_err(|e| bad_pod(e.to_string()))?;
    summary.pod = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    summary.namespace.clone_from(&namespace);
    let verdict = review_pod(policy, &namespace, &pod)?;
    let outcome = verdict.outcome();
    let response = match verdict {
        Verdict::Skip(why) => return skip(why, summary),
        Verdict::Allow {
            task,
            patch,
            applied,
            warnings,
        } => {
            summary.task = Some(task.to_string());
            summary.patch_ops = patch.0.len();
            summary.detail = if applied.is_empty() {
                "nothing to change".to_owned()
            } else {
                applied.join("; ")
            };
            summary.warnings.clone_from(&warnings);
            let mut resp = if patch.0.is_empty() {
                base
            } else {
                base.with_patch(patch)
                    .map_err(|e| ReviewError::UnsafePatch(e.to_string()))?
            };
            resp.warnings = (!warnings.is_empty()).then_some(warnings);
            resp
        }
        Verdict::Deny {
            task,
            message,
            warnings,
        } => {
            summary.task = Some(task.to_string());
            summary.detail.clone_from(&message);
            summary.warnings.clone_from(&warnings);
            let mut resp = base.deny(message);
            resp.result.code = 403;
            resp.result.reason = "Forbidden".to_owned();
            resp.warnings = (!warnings.is_empty()).then_some(warnings);
            resp
        }
    };
    Ok(Handled {
        response: encode_response(response.into_review())?,
        outcome,
        summary,
    })
}

/// Serializes a response review the way the API server reads it: `patch` is a base64 string
/// (Go `[]byte`), not the JSON array of numbers serde makes of kube's `Vec<u8>`
/// (kube-rs/kube#1781).
pub fn encode_response(review: AdmissionReview<DynamicObject>) -> Result<Value, ReviewError> {
    let mut value = serde_json::to_value(&review)?;
    if let Some(resp) = value.get_mut("response").and_then(Value::as_object_mut)
        && let Some(bytes) = review.response.as_ref().and_then(|r| r.patch.as_ref())
    {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        resp.insert("patch".to_owned(), Value::String(encoded));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformed_reviews_are_errors_not_panics() {
        let policy = Policy::parse("").unwrap();
        let cases: &[&[u8]] = &[
            b"",
            b"null",
            b"{",
            b"[]",
            b"\xff\xfe",
            br#"{"kind":"AdmissionReview"}"#,
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{}}"#,
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u"}}"#,
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"apiVersion":"v1","kind":"Pod","spec":{"containers":"nope"}}}}"#,
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"apiVersion":"v2","kind":"Pod"}}}"#,
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"EXPLODE","userInfo":{}}}"#,
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"kubernetes_executor":"True","airflow-worker":"1"}},"spec":{"containers":[{"name":"base","resources":{"requests":{"cpu":"lots"}}}]}}}}"#,
        ];
        for body in cases {
            let _ = handle(&policy, body);
        }
        assert!(matches!(
            handle(&policy, b"{"),
            Err(ReviewError::BadReview(_))
        ));
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
        let ok = handle(&policy, &body).unwrap();
        assert_eq!(ok.outcome, Outcome::Mutated);
        for end in 0..body.len() {
            let _ = handle(&policy, &body[..end]);
        }
        for i in 0..body.len() {
            for b in [b'"', b'{', b'0', b'\\', b'-', 0xff] {
                let mut bad = body.clone();
                bad[i] = b;
                let _ = handle(&policy, &bad);
            }
        }
    }

    #[test]
    fn unknown_profile_can_be_a_warning() {
        let policy = Policy::parse("guardRails: {unknownProfile: warn, sidecars: allow}").unwrap();
        let h = handle(&policy, &airflow_review()).unwrap();
        let warnings = h.response["response"]["warnings"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .contains("unknown profile `nope`")
        );
        assert!(
            h.response["response"]["patch"].is_string(),
            "patch is base64"
        );
        let denied = handle(&Policy::parse("").unwrap(), &airflow_review()).unwrap();
        assert_eq!(denied.outcome, Outcome::Denied);
        assert_eq!(denied.response["response"]["uid"], "u-1");
    }
}
