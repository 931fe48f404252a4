//! `scaleTargetRef` of a worker queue: the Deployment or StatefulSet of its Celery workers,
//! which the scaler watches when it talks to Kubernetes (`crate::scaler::cluster`).

use serde::Serialize;

use super::worker_queue::{FieldError, excerpt};

/// Kind of a worker workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum TargetKind {
    Deployment,
    StatefulSet,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
        }
    }
}

/// `scaleTargetRef: {kind, name}` of a worker queue (`apiVersion`, if given, must be `apps/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ScaleTargetRef {
    pub kind: TargetKind,
    pub name: String,
}

impl std::fmt::Display for ScaleTargetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

impl ScaleTargetRef {
    /// Validates the keys of `scaleTargetRef` as written; errors name the key.
    pub fn from_parts(
        kind: Option<String>,
        name: Option<String>,
        api_version: Option<String>,
    ) -> Result<Self, FieldError> {
        if let Some(api) = api_version
            && api != "apps/v1"
        {
            return Err(FieldError::new(
                "scaleTargetRef.apiVersion",
                format!("{} is not supported: expected apps/v1", excerpt(&api)),
            ));
        }
        let kind = match kind.as_deref() {
            Some("Deployment") => TargetKind::Deployment,
            Some("StatefulSet") => TargetKind::StatefulSet,
            Some(other) => {
                return Err(FieldError::new(
                    "scaleTargetRef.kind",
                    format!(
                        "{} is not supported: expected Deployment or StatefulSet",
                        excerpt(other)
                    ),
                ));
            }
            None => return Err(FieldError::new("scaleTargetRef.kind", "missing")),
        };
        let name = name.ok_or_else(|| FieldError::new("scaleTargetRef.name", "missing"))?;
        let dns = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
        if !dns {
            return Err(FieldError::new(
                "scaleTargetRef.name",
                format!("{} is not a Kubernetes object name", excerpt(&name)),
            ));
        }
        Ok(Self { kind, name })
    }
}
