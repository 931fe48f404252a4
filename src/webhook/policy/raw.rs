//! The raw (file) model: what serde reads from the YAML, before any check of meaning.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Deserializer};

use super::Action;

/// A scalar that YAML may spell as a string, a number or a boolean (`cpu: 1`, `value: "True"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Scalar(pub(super) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SelectorSpec {
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) label_keys: Vec<String>,
    #[serde(default)]
    pub(super) annotation_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResourcesSpec {
    #[serde(default)]
    pub(super) requests: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) limits: BTreeMap<String, Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsSpec {
    pub(super) resources: Option<ResourcesSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct NodeTypeSpec {
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) allocatable: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) node_selector: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) tolerations: Vec<Toleration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TempStorageSpec {
    pub(super) path: String,
    pub(super) size_limit: Option<Scalar>,
    pub(super) medium: Option<String>,
    pub(super) volume_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SettingsSpec {
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) description: Option<String>,
    pub(super) resources: Option<ResourcesSpec>,
    pub(super) node_type: Option<String>,
    pub(super) temp_storage: Option<TempStorageSpec>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, Scalar>,
    pub(super) priority_class_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct MatchSpec {
    #[serde(default)]
    pub(super) namespaces: Vec<String>,
    #[serde(default)]
    pub(super) dag_ids: Vec<String>,
    #[serde(default)]
    pub(super) task_ids: Vec<String>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct GuardRailsSpec {
    pub(super) sidecars: Option<Action>,
    #[serde(default)]
    pub(super) allowed_sidecars: Vec<String>,
    pub(super) unknown_profile: Option<Action>,
}

pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "airflowPods",
    "defaults",
    "nodeTypes",
    "defaultNodeType",
    "profiles",
    "rules",
    "guardRails",
];
