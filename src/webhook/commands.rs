//! The admin commands: `validate-policy` and `mutate`. Both run offline and write to any
//! `io::Write`, so they are tested without a process.
//!
//! Exit codes (the binary's, [`crate::cli::exit`]): `validate-policy` 0 = valid, 3 = problems
//! found; `mutate` 0 = admitted (with or without changes), 5 = denied. Errors (unreadable files:
//! 4, invalid policy for `mutate`: 3) are returned as [`CommandError`].

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{
    policy::{Policy, PolicyError},
    review::{ReviewError, Verdict, review_pod},
};

/// Exit code of `mutate` when the webhook would deny the pod.
pub const EXIT_DENIED: u8 = crate::cli::exit::DENIED;

/// Output format of [`mutate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutateOutput {
    /// Comments, the patch as JSON and the pod as YAML.
    Yaml,
    /// One JSON object: `allowed`, `patch`, `pod`, `warnings`, `message`, `applied`.
    Json,
}

/// What [`mutate`] is asked.
#[derive(Debug, Clone)]
pub struct MutateRequest {
    /// Policy file.
    pub policy: PathBuf,
    /// Pod manifest (YAML or JSON), or an AdmissionReview carrying one.
    pub pod: PathBuf,
    /// Namespace the pod is created in (default: the pod's own, else `default`).
    pub namespace: Option<String>,
    /// Output format.
    pub output: MutateOutput,
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The policy could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The pod file could not be read.
    #[error("cannot read pod file {path}: {source}")]
    ReadPod {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The pod file is not a Pod.
    #[error("{path} is not a v1 Pod (or an AdmissionReview carrying one): {reason}")]
    NotAPod {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Reviewing failed (a bug).
    #[error(transparent)]
    Review(#[from] ReviewError),
    /// Output failed.
    #[error("cannot write output: {0}")]
    Write(#[from] std::io::Error),
    /// Output could not be encoded.
    #[error("cannot encode output: {0}")]
    Encode(String),
}

/// `validate-policy FILE`: prints every problem with its path; exit 3 when there are any.
pub fn validate_policy(file: &Path, out: &mut impl Write) -> Result<ExitCode, CommandError> {
    let path = file;
    let file = path.display();
    match Policy::load(path) {
        Ok(policy) => {
            let names = |it: Vec<&str>| {
                if it.is_empty() {
                    "none".to_owned()
                } else {
                    it.join(", ")
                }
            };
            writeln!(out, "{file}: valid")?;
            writeln!(
                out,
                "  node types: {} (default: {})",
                names(policy.node_types.keys().map(String::as_str).collect()),
                policy.default_node_type.as_deref().unwrap_or("none")
            )?;
            writeln!(
                out,
                "  profiles:   {}",
                names(policy.profiles.keys().map(String::as_str).collect())
            )?;
            writeln!(
                out,
                "  rules:      {}",
                names(policy.rules.iter().map(|r| r.name.as_str()).collect())
            )?;
            let d = &policy.defaults;
            let fmt = |m: &std::collections::BTreeMap<String, super::quantity::Quantity>| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            writeln!(
                out,
                "  defaults:   requests {{{}}} limits {{{}}}",
                fmt(&d.requests),
                fmt(&d.limits)
            )?;
            for w in policy.lint() {
                writeln!(out, "warning: {w}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(PolicyError::Invalid { problems, .. }) => {
            writeln!(out, "{file}: {} problem(s)", problems.len())?;
            for p in &problems {
                writeln!(out, "  {p}")?;
            }
            Ok(ExitCode::from(crate::cli::exit::INVALID))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads a Pod (or the pod inside an AdmissionReview) from YAML or JSON; returns the raw
/// document, the typed pod and the namespace found in the file.
pub fn read_pod(path: &Path) -> Result<(Value, Pod, Option<String>), CommandError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CommandError::ReadPod {
        path: shown.clone(),
        source,
    })?;
    let not_a_pod = |reason: String| CommandError::NotAPod {
        path: shown.clone(),
        reason,
    };
    let mut raw: Value =
        serde_saphyr::from_str_with_options(&text, crate::runtime::yaml::options())
            .map_err(|e| not_a_pod(e.to_string()))?;
    let mut namespace = None;
    if raw.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
        namespace = raw
            .pointer("/request/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        raw = raw
            .pointer("/request/object")
            .cloned()
            .ok_or_else(|| not_a_pod("the AdmissionReview has no request.object".to_owned()))?;
    }
    if !raw.is_object() {
        return Err(not_a_pod("expected a mapping".to_owned()));
    }
    let pod: Pod = serde_json::from_value(raw.clone()).map_err(|e| not_a_pod(e.to_string()))?;
    let namespace = namespace.or_else(|| pod.metadata.namespace.clone());
    Ok((raw, pod, namespace))
}

/// `mutate --policy FILE --pod POD.yaml`: prints what the webhook would answer.
pub fn mutate(args: &MutateRequest, out: &mut impl Write) -> Result<ExitCode, CommandError> {
    let policy = Policy::load(&args.policy)?;
    let (raw, pod, ns) = read_pod(&args.pod)?;
    let namespace = args
        .namespace
        .clone()
        .or(ns)
        .unwrap_or_else(|| "default".to_owned());
    let verdict = review_pod(&policy, &namespace, pod.clone())?;
    let outcome = verdict.outcome();
    let encode = |e: &dyn std::fmt::Display| CommandError::Encode(e.to_string());
    match (&verdict, args.output) {
        (Verdict::Skip(why), MutateOutput::Yaml) => {
            writeln!(out, "# outcome: {outcome}: {why}; admitted unchanged")?;
        }
        (Verdict::Skip(why), MutateOutput::Json) => {
            let v = json!({"allowed": true, "outcome": outcome.as_str(), "message": why, "patch": [], "pod": raw});
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| encode(&e))?
            )?;
        }
        (
            Verdict::Allow {
                task,
                patch,
                applied,
                warnings,
            },
            format,
        ) => {
            let mut result = raw.clone();
            if json_patch::patch(&mut result, &patch.0).is_err() {
                // The file lacks parts the API server always fills in (e.g. `metadata`).
                result = serde_json::to_value(&pod).map_err(|e| encode(&e))?;
                json_patch::patch(&mut result, &patch.0).map_err(|e| encode(&e))?;
            }
            if format == MutateOutput::Json {
                let v = json!({
                    "allowed": true, "outcome": outcome.as_str(), "task": task.to_string(),
                    "namespace": namespace, "applied": applied, "warnings": warnings,
                    "patch": patch, "pod": result,
                });
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).map_err(|e| encode(&e))?
                )?;
            } else {
                writeln!(out, "# task {task} in namespace {namespace}")?;
                writeln!(
                    out,
                    "# outcome: {outcome} ({} patch operations)",
                    patch.0.len()
                )?;
                for a in applied {
                    writeln!(out, "# applied: {a}")?;
                }
                for w in warnings {
                    writeln!(out, "# warning: {w}")?;
                }
                writeln!(out, "---\n# JSONPatch (RFC 6902) the webhook returns")?;
                let patch_yaml = serde_saphyr::to_string(patch).map_err(|e| encode(&e))?;
                write!(
                    out,
                    "{}",
                    if patch.0.is_empty() {
                        "[]\n"
                    } else {
                        &patch_yaml
                    }
                )?;
                writeln!(out, "---\n# the pod after the patch")?;
                write!(
                    out,
                    "{}",
                    serde_saphyr::to_string(&result).map_err(|e| encode(&e))?
                )?;
            }
        }
        (
            Verdict::Deny {
                task,
                message,
                warnings,
            },
            MutateOutput::Yaml,
        ) => {
            writeln!(out, "# task {task} in namespace {namespace}")?;
            writeln!(out, "# outcome: denied")?;
            for w in warnings {
                writeln!(out, "# warning: {w}")?;
            }
            writeln!(out, "DENIED: {message}")?;
        }
        (
            Verdict::Deny {
                task,
                message,
                warnings,
            },
            MutateOutput::Json,
        ) => {
            let v = json!({"allowed": false, "outcome": outcome.as_str(), "task": task.to_string(),
                "namespace": namespace, "message": message, "warnings": warnings});
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| encode(&e))?
            )?;
        }
    }
    Ok(match verdict {
        Verdict::Deny { .. } => ExitCode::from(EXIT_DENIED),
        _ => ExitCode::SUCCESS,
    })
}
