//! The decision for one pod: skip, admit with a patch, or deny.

use std::fmt;

use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;

use super::{
    super::{
        guard,
        matching::{self, TaskIdentity},
        mutate, placement,
        policy::{APPLIED_ANNOTATION, Action, PROFILE_ANNOTATION, Policy, WARNINGS_ANNOTATION},
        warning::{self, Warning, WarningKind},
    },
    Before, ReviewError, pod_patch,
};

/// The decision for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not an Airflow task pod (or not a pod creation): admitted, untouched.
    Skip(&'static str),
    /// Admitted, with a patch (possibly empty).
    Allow {
        /// The task.
        task: TaskIdentity,
        /// RFC 6902 operations (empty: nothing to change).
        patch: Patch,
        /// What was applied, one item per change.
        applied: Vec<String>,
        /// Warnings (see [`crate::webhook::warning`]).
        warnings: Vec<Warning>,
    },
    /// Refused.
    Deny {
        /// The task.
        task: TaskIdentity,
        /// Why, and what to change.
        message: String,
        /// Warnings (see [`crate::webhook::warning`]).
        warnings: Vec<Warning>,
    },
}

/// How a review ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Airflow pod, changed.
    Mutated,
    /// Airflow pod, nothing to change.
    Unchanged,
    /// Airflow pod, refused.
    Denied,
    /// Not ours: admitted untouched.
    Skipped,
    /// Malformed request (HTTP 400 / 413).
    Invalid,
    /// No policy loaded yet (HTTP 503).
    Unavailable,
    /// Internal error (HTTP 500).
    Error,
}

impl Outcome {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutated => "mutated",
            Self::Unchanged => "unchanged",
            Self::Denied => "denied",
            Self::Skipped => "skipped",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Verdict {
    /// The outcome label.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Skip(_) => Outcome::Skipped,
            Self::Allow { patch, .. } if patch.0.is_empty() => Outcome::Unchanged,
            Self::Allow { .. } => Outcome::Mutated,
            Self::Deny { .. } => Outcome::Denied,
        }
    }
}

/// Decides for one pod being created in `namespace` (the pod is changed in place on the way;
/// the verdict carries everything the caller needs).
pub fn review_pod(policy: &Policy, namespace: &str, pod: Pod) -> Result<Verdict, ReviewError> {
    let mut pod = pod;
    let pod = &mut pod;
    if !matching::is_airflow_pod(&policy.airflow_pods, pod) {
        return Ok(Verdict::Skip("not an Airflow KubernetesExecutor task pod"));
    }
    let task = TaskIdentity::of(pod);
    let resolution = matching::resolve(policy, namespace, &task, pod);
    let mut warnings = Vec::new();
    if let Some(name) = &resolution.unknown_profile {
        let known: Vec<&str> = policy.profiles.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "this cluster defines no profiles".to_owned()
        } else {
            format!("known profiles: {}", known.join(", "))
        };
        let msg = format!(
            "task {task} asks for profile `{name}` ({PROFILE_ANNOTATION}) but there is no such profile; {known}"
        );
        match policy.guard_rails.unknown_profile {
            Action::Deny => {
                return Ok(Verdict::Deny {
                    task,
                    message: msg,
                    warnings,
                });
            }
            Action::Warn => warnings.push(Warning::new(
                WarningKind::UnknownProfile,
                format!(
                    "task {} asks for unknown profile `{name}`: profile not applied",
                    task.short()
                ),
            )),
            Action::Allow => {}
        }
    }
    let choice = placement::choose_node_type(policy, &resolution.effective, pod);
    // The mutation sets these labels and annotations and no others (`mutate::apply`, then
    // the warnings annotation below).
    let effective = &resolution.effective;
    let before = Before::of(
        pod,
        effective.labels.keys().map(String::as_str),
        effective
            .annotations
            .keys()
            .map(String::as_str)
            .chain([APPLIED_ANNOTATION, WARNINGS_ANNOTATION]),
    );
    #[cfg(debug_assertions)]
    let original = pod.clone();
    let mut mutation = mutate::apply(policy, pod, &resolution.effective, &choice);
    warnings.append(&mut mutation.warnings);
    let report = guard::check(
        policy,
        pod,
        &task,
        resolution.effective.profile.as_deref(),
        &choice,
        &mutation.base_sources,
    );
    warnings.extend(report.warnings);
    if !report.violations.is_empty() {
        return Ok(Verdict::Deny {
            task,
            message: report.violations.join("; "),
            warnings,
        });
    }
    // Airflow's scheduler discards admission warnings: they go on the pod as well.
    if !warnings.is_empty() {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                WARNINGS_ANNOTATION.to_owned(),
                warning::annotation(&warnings),
            );
    }
    let patch = pod_patch(&before, pod)?;
    #[cfg(debug_assertions)]
    super::debug_check_patch(&original, pod, &patch);
    Ok(Verdict::Allow {
        task,
        patch,
        applied: mutation.applied,
        warnings,
    })
}
