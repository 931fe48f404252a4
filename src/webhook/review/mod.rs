//! One admission review, from request bytes to response, without a socket.
//!
//! [`review_pod`] decides for one pod (skip, admit with a patch, or deny); [`handle`] wraps it
//! in the `admission.k8s.io/v1` protocol. The request is read once: the envelope with the
//! object left as raw JSON, then the object straight into a typed `Pod` (only for pod
//! creations). The patch is the RFC 6902 difference between the typed pod and its mutated
//! copy; both sides go through the same typed model, so fields this build does not know are
//! never mentioned. A safety check refuses (as an internal error) any patch that would touch
//! what the webhook must never touch.
//!
//! Nothing from the pod's body reaches an error, a log line or a metric: decoder messages are
//! reduced to the path and what was expected, never the value found (the args carry the task's
//! token).
//!
//! - [`verdict`]: the decision for one typed pod.
//! - [`patch`]: the JSONPatch and its safety check.

use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{metrics::Metrics, policy::Policy, warning::Warning};

mod patch;
mod verdict;

pub use patch::{Before, check_patch, debug_check_patch, pod_patch};
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
    /// The response to send (HTTP 200), serialized as JSON.
    pub response: ReviewResponse,
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
    /// Warnings sent (as the client sees them).
    pub warnings: Vec<String>,
}

/// The envelope of a request, with the object as `O`: a typed [`Pod`] on the fast path, raw
/// JSON on the slow one (see [`handle`]).
#[derive(Deserialize)]
struct ReviewIn<O> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RequestIn<O>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<O> {
    uid: String,
    kind: KindIn,
    #[serde(default)]
    sub_resource: Option<String>,
    operation: Operation,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default = "none")]
    object: Option<O>,
}

fn none<O>() -> Option<O> {
    None
}

/// The object of a request: decoded with the envelope, or left raw when that failed.
enum ObjectIn<'a> {
    Pod(Box<Pod>),
    Raw(&'a RawValue),
}

impl<O> ReviewIn<O> {
    fn map<P>(self, f: impl FnOnce(O) -> P) -> ReviewIn<P> {
        ReviewIn {
            api_version: self.api_version,
            kind: self.kind,
            request: self.request.map(|r| RequestIn {
                uid: r.uid,
                kind: r.kind,
                sub_resource: r.sub_resource,
                operation: r.operation,
                namespace: r.namespace,
                object: r.object.map(f),
            }),
        }
    }
}

/// Reads the body in one pass, the object straight into a typed `Pod`; when that fails (not
/// a pod, a malformed pod, a malformed envelope) reads it again with the object left raw, so
/// that the error (or the skip) is exactly the one the slow path gives.
fn read_review(body: &[u8]) -> Result<ReviewIn<ObjectIn<'_>>, ReviewError> {
    // UTF-8 checked once for the whole body (`from_slice` checks every string again).
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(review) = serde_json::from_str::<ReviewIn<Pod>>(text)
    {
        return Ok(review.map(|pod| ObjectIn::Pod(Box::new(pod))));
    }
    serde_json::from_slice::<ReviewIn<&RawValue>>(body)
        .map(|review| review.map(ObjectIn::Raw))
        .map_err(|e| ReviewError::BadReview(scrub(&e)))
}

#[derive(Deserialize)]
struct KindIn {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// A decoder message without the value it found: `invalid type: string "<args>", expected a
/// sequence` becomes `invalid value, expected a sequence`.
fn scrub(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Data => {
            let text = e.to_string();
            let what = if text.starts_with("missing field") {
                text.split(" at line ").next().unwrap_or("").to_owned()
            } else {
                match text.split_once(", expected ") {
                    Some((_, expected)) => format!(
                        "invalid value, expected {}",
                        expected.split(" at line ").next().unwrap_or("")
                    ),
                    None => "invalid value".to_owned(),
                }
            };
            format!("{what} at {at}")
        }
        Category::Syntax => format!("malformed JSON at {at}"),
        Category::Eof => "truncated JSON".to_owned(),
        Category::Io => "unreadable body".to_owned(),
    }
}

/// Decodes the pod, typed; on failure, says where (`spec.containers[0].args`) and what was
/// expected, never what was found.
fn decode_pod(raw: &RawValue) -> Result<Pod, String> {
    serde_json::from_str::<Pod>(raw.get()).map_err(|_| {
        // Cold path: decode again, tracking the path.
        let mut de = serde_json::Deserializer::from_str(raw.get());
        match serde_path_to_error::deserialize::<_, Pod>(&mut de) {
            Ok(_) => "cannot be decoded".to_owned(),
            Err(e) => {
                let path = e.path().to_string();
                format!("at {path}: {}", scrub(e.inner()))
            }
        }
    })
}

/// Handles one AdmissionReview body: parse, decide, answer with the same `uid`. Warnings are
/// counted in `metrics`.
pub fn handle(policy: &Policy, metrics: &Metrics, body: &[u8]) -> Result<Handled, ReviewError> {
    let review = read_review(body)?;
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return Err(ReviewError::BadReview(format!(
            "apiVersion `{}` kind `{}` (expected admission.k8s.io/v1 AdmissionReview)",
            review.api_version, review.kind
        )));
    }
    let request = review
        .request
        .ok_or_else(|| ReviewError::BadReview("no request".to_owned()))?;
    let mut summary = ReviewSummary {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        ..Default::default()
    };
    let is_pod = request.kind.group.is_empty()
        && request.kind.version == "v1"
        && request.kind.kind == "Pod"
        && request.sub_resource.as_deref().unwrap_or("").is_empty();
    let skip = |why: &str, mut summary: ReviewSummary| {
        summary.detail = why.to_owned();
        Ok(Handled {
            response: response(&request.uid, Answer::Allow(None), Vec::new())?,
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
    let Some(object) = request.object else {
        return skip("no object", summary);
    };
    let pod = match object {
        ObjectIn::Pod(pod) => *pod,
        ObjectIn::Raw(raw) => decode_pod(raw).map_err(|reason| ReviewError::BadPod {
            uid: request.uid.clone(),
            reason,
        })?,
    };
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
    let verdict = review_pod(policy, &namespace, pod)?;
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
            report_warnings(metrics, &mut summary, &warnings);
            response(&request.uid, Answer::Allow(Some(&patch)), warnings)?
        }
        Verdict::Deny {
            task,
            message,
            warnings,
        } => {
            summary.task = Some(task.to_string());
            report_warnings(metrics, &mut summary, &warnings);
            let r = response(&request.uid, Answer::Deny(&message), warnings)?;
            summary.detail = message;
            r
        }
    };
    Ok(Handled {
        response,
        outcome,
        summary,
    })
}

/// Where warnings go besides the client and the pod: the counter by kind and one info line
/// each (names and paths only, see [`crate::webhook::warning`]).
fn report_warnings(metrics: &Metrics, summary: &mut ReviewSummary, warnings: &[Warning]) {
    for w in warnings {
        metrics.warning(w.kind);
        tracing::info!(
            uid = %summary.uid,
            namespace = %summary.namespace,
            pod = %summary.pod,
            task = summary.task.as_deref().unwrap_or("-"),
            kind = %w.kind,
            "admission warning: {}",
            w.message
        );
    }
    summary.warnings = warnings.iter().map(ToString::to_string).collect();
}

enum Answer<'a> {
    Allow(Option<&'a Patch>),
    Deny(&'a str),
}

/// The `admission.k8s.io/v1` AdmissionReview answering a request, serialized straight to the
/// body (no intermediate JSON tree).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    api_version: &'static str,
    kind: &'static str,
    /// The answer.
    pub response: ResponseOut,
}

/// The `response` of a [`ReviewResponse`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseOut {
    /// The request's uid.
    pub uid: String,
    /// Admitted or not.
    pub allowed: bool,
    /// Why not, when denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusOut>,
    /// `JSONPatch` when there is a patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The JSONPatch, base64, as the API server reads Go's `[]byte`: a JSON string kept raw,
    /// since base64 needs no escaping (the response's encoder would scan it byte by byte).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Box<RawValue>>,
    /// Warnings, as the client sees them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// The status of a denial.
#[derive(Debug, Clone, Serialize)]
pub struct StatusOut {
    status: &'static str,
    /// What the client sees.
    pub message: String,
    reason: &'static str,
    code: u16,
}

/// The response review. The patch is serialized straight into its base64 text.
fn response(
    uid: &str,
    answer: Answer<'_>,
    warnings: Vec<Warning>,
) -> Result<ReviewResponse, ReviewError> {
    let (allowed, status, patch) = match answer {
        Answer::Allow(patch) => (true, None, patch.filter(|p| !p.0.is_empty())),
        Answer::Deny(message) => (
            false,
            Some(StatusOut {
                status: "Failure",
                message: message.to_owned(),
                reason: "Forbidden",
                code: 403,
            }),
            None,
        ),
    };
    // The JSON in one buffer, then base64 in one pass: serde_json writes token by token, and
    // a base64 writer pays for every small write.
    let patch = patch
        .map(|p| {
            use base64::Engine as _;
            let json = serde_json::to_vec(&OpsOut(p))?;
            let mut text = String::with_capacity(json.len().div_ceil(3) * 4 + 2);
            text.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(json, &mut text);
            text.push('"');
            RawValue::from_string(text)
        })
        .transpose()?;
    Ok(ReviewResponse {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: uid.to_owned(),
            allowed,
            status,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings,
        },
    })
}

/// A JSONPatch written as RFC 6902 objects (`op`, `path`, then `from` or `value`) by a plain
/// struct: json_patch's own `Serialize` goes through serde's internally-tagged enum machinery,
/// a fifth of the response's cost.
struct OpsOut<'a>(&'a Patch);

#[derive(Serialize)]
struct OpOut<'a> {
    op: &'static str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a serde_json::Value>,
}

impl Serialize for OpsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use json_patch::PatchOperation as Op;
        use serde::ser::SerializeSeq as _;
        let mut seq = serializer.serialize_seq(Some(self.0.0.len()))?;
        for op in &self.0.0 {
            let (name, from, value) = match op {
                Op::Add(o) => ("add", None, Some(&o.value)),
                Op::Remove(_) => ("remove", None, None),
                Op::Replace(o) => ("replace", None, Some(&o.value)),
                Op::Move(o) => ("move", Some(o.from.as_str()), None),
                Op::Copy(o) => ("copy", Some(o.from.as_str()), None),
                Op::Test(o) => ("test", None, Some(&o.value)),
            };
            seq.serialize_element(&OpOut {
                op: name,
                path: op.path().as_str(),
                from,
                value,
            })?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests;
