//! What the webhook warns about, and the kinds it counts them by.
//!
//! Airflow's scheduler discards admission warnings, so every warning goes to four places: the
//! client (`warnings` in the response, shown by `kubectl`), the pod (the
//! `airflow-keda-scaler/warnings` annotation, when the pod is admitted), the
//! `airflow_keda_scaler_webhook_warnings_total{kind}` counter and an info log line. Messages
//! name tasks, containers, volumes and paths only, never a value from the pod's args or env.

use std::fmt;

use serde::{Serialize, Serializer};

/// Prefix of every warning the client sees.
pub const CLIENT_PREFIX: &str = "airflow-keda-scaler: ";

/// What a warning is about (a fixed set: the metric's `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WarningKind {
    /// The task asks for a profile the policy does not define (`unknownProfile: warn`).
    UnknownProfile,
    /// Containers besides `base` (`sidecars: warn`).
    Sidecar,
    /// The pod places itself outside the policy's node types: requests not checked.
    ForeignNodeType,
    /// The temp storage path is already mounted from another volume: not added.
    TempStoragePathTaken,
    /// The pod already defines a volume with the temp storage's name: the pod's kept.
    TempStorageVolumeTaken,
    /// No `base` container: resources, env and temp storage not applied.
    NoBaseContainer,
}

impl WarningKind {
    /// Every kind, for the metric's initial zeros.
    pub const ALL: [Self; 6] = [
        Self::UnknownProfile,
        Self::Sidecar,
        Self::ForeignNodeType,
        Self::TempStoragePathTaken,
        Self::TempStorageVolumeTaken,
        Self::NoBaseContainer,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownProfile => "unknown-profile",
            Self::Sidecar => "sidecar",
            Self::ForeignNodeType => "foreign-node-type",
            Self::TempStoragePathTaken => "temp-storage-path-taken",
            Self::TempStorageVolumeTaken => "temp-storage-volume-taken",
            Self::NoBaseContainer => "no-base-container",
        }
    }
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One warning: its kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What it is about.
    pub kind: WarningKind,
    /// The message, without the [`CLIENT_PREFIX`].
    pub message: String,
}

impl Warning {
    /// A warning of `kind`.
    pub fn new(kind: WarningKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// As the client sees it: `airflow-keda-scaler: <message>`.
impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CLIENT_PREFIX}{}", self.message)
    }
}

/// Serialized as the client sees it (a string).
impl Serialize for Warning {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The value of the pod's warnings annotation: one warning a line.
pub fn annotation(warnings: &[Warning]) -> String {
    warnings
        .iter()
        .map(|w| w.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
