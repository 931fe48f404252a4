//! The policy file: model, parsing and validation.
//!
//! A policy is YAML written by cluster admins (see `docs/webhook.md` for the reference). It is
//! read in two steps: the YAML is split into independent pieces (each node type, profile and rule
//! on its own) that are deserialized separately ([`raw`]), and every piece is then checked for
//! meaning ([`validate`], [`names`]: quantities, names, references, limits below requests,
//! requests above a node type) while the compiled [`model`] is built. Every problem found is
//! reported with its path (`profiles.large.resources.requests.cpu`), not just the first one, so
//! `validate-policy` can list them all.

use std::{
    fmt,
    path::{Path, PathBuf},
};

mod consistency;
mod model;
mod names;
mod raw;
mod settings;
mod validate;
mod yaml;

pub use model::*;

/// Annotation a task sets (in its `pod_override` metadata) to opt into a profile.
pub const PROFILE_ANNOTATION: &str = "airflow-keda-scaler/profile";
/// Annotation the webhook writes on the pods it changed, describing what it applied.
pub const APPLIED_ANNOTATION: &str = "airflow-keda-scaler/applied";
/// Annotation the webhook writes on the pods it admits with warnings (one a line): Airflow's
/// scheduler discards admission warnings, so they are kept where an admin looks.
pub const WARNINGS_ANNOTATION: &str = "airflow-keda-scaler/warnings";
/// Name of the container Airflow runs the task in.
pub const BASE_CONTAINER: &str = "base";
/// The workload Secret volume of unreleased cncf-kubernetes provider code (`--json-path`):
/// never touched. Released providers (10.25.0 with Airflow 3.3.2) have no such volume: the
/// workload and its task token are inline in `--json-string`, in the args the webhook never
/// touches either.
pub const WORKLOAD_VOLUME: &str = "airflow-workload";
/// Where that unreleased provider code mounts its workload Secret: never touched.
pub const WORKLOAD_MOUNT_PATH: &str = "/run/secrets/airflow-workload";
/// Volume name used for temp storage unless the policy names one.
pub const DEFAULT_TEMP_VOLUME: &str = "airflow-keda-scaler-tmp";

/// Labels Airflow's executor sets and relies on (to watch and adopt its pods).
pub const AIRFLOW_LABELS: &[&str] = &[
    "kubernetes_executor",
    "airflow-worker",
    "dag_id",
    "task_id",
    "run_id",
    "try_number",
    "map_index",
    "airflow_version",
    "execution_date",
    "logical_date",
];
/// Annotations Airflow's executor sets and relies on.
pub const AIRFLOW_ANNOTATIONS: &[&str] = &[
    "dag_id",
    "task_id",
    "run_id",
    "try_number",
    "map_index",
    "execution_date",
    "logical_date",
];
/// Environment variable Airflow sets on its task pods: never overridden.
pub const AIRFLOW_POD_ENV: &str = "AIRFLOW_IS_K8S_EXECUTOR_POD";

/// One problem in a policy, at a path such as `rules[2].match.dagIds[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file (dotted path, `[n]` for list items, `.` for the whole file).
    pub path: String,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but has problems.
    #[error("policy {origin} has {} problem(s): {}", problems.len(), join_problems(problems))]
    Invalid {
        /// File name (or `<input>`).
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|problems| PolicyError::Invalid {
            origin: path.display().to_string(),
            problems,
        })
    }

    /// Parses and validates policy YAML, returning every problem found.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        let mut cx = validate::Cx::default();
        let policy = cx.policy(text);
        match policy {
            Some(p) if cx.problems.is_empty() => Ok(p),
            _ => Err(cx.problems),
        }
    }

    /// Non-fatal remarks about a valid policy (settings that do nothing, node types that
    /// cannot place a pod).
    pub fn lint(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.settings.is_empty() {
                out.push(Problem {
                    path: format!("rules[{i}]"),
                    message: format!("rule `{}` applies nothing", rule.name),
                });
            }
        }
        for (name, profile) in &self.profiles {
            if profile.is_empty() {
                out.push(Problem {
                    path: format!("profiles.{name}"),
                    message: "profile applies nothing".to_owned(),
                });
            }
        }
        for (name, nt) in &self.node_types {
            if nt.node_selector.is_empty() && nt.tolerations.is_empty() {
                out.push(Problem {
                    path: format!("nodeTypes.{name}"),
                    message: "node type has neither nodeSelector nor tolerations: it places no pod"
                        .to_owned(),
                });
            }
        }
        out
    }

    /// The node type by name.
    pub fn node_type(&self, name: &str) -> Option<&NodeType> {
        self.node_types.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::quantity::Quantity;

    fn problems(yaml: &str) -> Vec<String> {
        match Policy::parse(yaml) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn empty_policy_has_builtin_defaults() {
        let p = Policy::parse("").unwrap();
        assert_eq!(p.defaults.requests["cpu"].as_str(), "1");
        assert_eq!(p.defaults.limits["memory"].as_str(), "512Mi");
        assert_eq!(p.airflow_pods, AirflowPodSelector::default());
        assert_eq!(p.guard_rails.sidecars, Action::Warn);
        assert_eq!(p.guard_rails.unknown_profile, Action::Deny);
        let p = Policy::parse("defaults: {resources: {}}").unwrap();
        assert!(p.defaults.is_empty(), "resources: {{}} turns defaults off");
    }

    #[test]
    fn numbers_are_accepted_as_quantities() {
        let p = Policy::parse("defaults: {resources: {requests: {cpu: 0.5, memory: 1073741824}}}")
            .unwrap();
        assert_eq!(p.defaults.requests["cpu"], Quantity::parse("500m").unwrap());
        assert_eq!(
            p.defaults.requests["memory"],
            Quantity::parse("1Gi").unwrap()
        );
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let yaml = r#"
nodeTypes:
  small:
    allocatable: {cpu: "2", memory: 4Gi, gpu: 1}
    tolerations: [{key: pool, operator: Sometimes}]
  big:
    allocatable: {cpu: lots}
defaultNodeType: nope
profiles:
  large:
    nodeType: small
    resources: {requests: {cpu: "3"}, limits: {cpu: "2"}}
    labels: {dag_id: x}
  bad:
    colour: red
rules:
  - name: one
    match: {dagIds: ["a[b"]}
    tempStorage: {path: relative, medium: Disk}
  - name: one
    env: {AIRFLOW_IS_K8S_EXECUTOR_POD: "False"}
  - match: {namespaces: [x]}
    priorityClassName: Not_Valid
surprise: 1
"#;
        let got = problems(yaml);
        let want_paths = [
            "surprise:",
            "nodeTypes.small.allocatable.gpu:",
            "nodeTypes.small.tolerations[0].operator:",
            "nodeTypes.big.allocatable.cpu:",
            "defaultNodeType:",
            "profiles.large.resources.limits.cpu:",
            "profiles.large.resources.requests.cpu:",
            "profiles.large.labels.dag_id:",
            "profiles.bad.colour:",
            "rules[0].match.dagIds[0]:",
            "rules[0].tempStorage.path:",
            "rules[0].tempStorage.medium:",
            "rules[1].name:",
            "rules[1].env.AIRFLOW_IS_K8S_EXECUTOR_POD:",
            "rules[2].name:",
            "rules[2].priorityClassName:",
        ];
        for w in want_paths {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w} in {got:#?}"
            );
        }
        assert!(got.iter().any(|g| g.contains("colour")), "{got:#?}");
    }

    #[test]
    fn workload_volume_is_protected() {
        let got = problems(
            "profiles: {p: {tempStorage: {path: /run/secrets/airflow-workload/x, volumeName: airflow-workload}}}",
        );
        assert_eq!(got.len(), 2, "{got:#?}");
        let got = problems("profiles: {p: {tempStorage: {path: /run}}}");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(problems("profiles: {p: {tempStorage: {path: /tmp/scratch}}}").is_empty());
    }

    #[test]
    fn non_mapping_is_a_problem() {
        assert_eq!(problems("- a\n- b").len(), 1);
        assert_eq!(problems(": : :").len(), 1);
        assert_eq!(problems("rules: {a: 1}").len(), 1);
        assert_eq!(problems("airflowPods: {}").len(), 1);
    }

    #[test]
    fn extended_resources_must_not_overcommit() {
        let got = problems(
            "profiles: {gpu: {resources: {requests: {nvidia.com/gpu: 1}, limits: {nvidia.com/gpu: 2}}}}",
        );
        assert_eq!(got.len(), 1, "{got:#?}");
    }

    #[test]
    fn lint_flags_empty_rules() {
        let p =
            Policy::parse("rules: [{name: nothing}]\nnodeTypes: {bare: {allocatable: {cpu: 1}}}")
                .unwrap();
        assert_eq!(p.lint().len(), 2);
    }

    #[test]
    fn unknown_profile_allow_is_accepted() {
        let p = Policy::parse("guardRails: {unknownProfile: allow}").unwrap();
        assert_eq!(p.guard_rails.unknown_profile, Action::Allow);
    }

    #[test]
    fn the_webhooks_own_annotations_are_refused() {
        let got = problems(
            "profiles: {p: {annotations: {airflow-keda-scaler/warnings: x, airflow-keda-scaler/applied: y}}}",
        );
        assert_eq!(got.len(), 2, "{got:#?}");
    }

    #[test]
    fn run_time_traps_are_refused() {
        let types = "nodeTypes:\n  cpu: {allocatable: {cpu: 8, memory: 32Gi}, nodeSelector: {pool: cpu}}\n  gpu: {allocatable: {cpu: 8, memory: 32Gi, nvidia.com/gpu: 1}, nodeSelector: {pool: gpu}}\ndefaultNodeType: cpu\n";
        let with = |rest: &str| problems(&format!("{types}{rest}"));
        // A GPU profile without a node type goes where the GPUs are: fine.
        assert!(with("profiles: {g: {resources: {requests: {nvidia.com/gpu: 1}}}}").is_empty());
        // Two GPUs: no node type has them.
        let got = with("profiles: {g: {resources: {requests: {nvidia.com/gpu: 2}}}}");
        assert_eq!(got.len(), 1, "{got:#?}");
        // A rule adding GPUs to a profile pinned on the cpu node type.
        let got = with(
            "profiles: {c: {nodeType: cpu}}\nrules: [{name: r, resources: {requests: {nvidia.com/gpu: 1}}}]",
        );
        assert!(
            got.iter().any(|g| g.starts_with("rules[0].resources:")),
            "{got:#?}"
        );
        // Same volume name and same settings: no conflict; same path, two names: conflict.
        assert!(
            with("profiles: {p: {tempStorage: {path: /s}}}\nrules: [{name: r, tempStorage: {path: /s}}]")
                .is_empty()
        );
        let got = with(
            "profiles: {p: {tempStorage: {path: /s}}}\nrules: [{name: r, tempStorage: {path: /s/, volumeName: other}}]",
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("rules[0].tempStorage.path:")),
            "{got:#?}"
        );
        // A Memory emptyDir above the defaults' memory limit (512Mi).
        let got =
            with("rules: [{name: r, tempStorage: {path: /m, medium: Memory, sizeLimit: 1Gi}}]");
        assert!(got.iter().any(|g| g.contains("the defaults'")), "{got:#?}");
    }
}
