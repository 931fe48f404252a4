//! A Celery *worker queue*: a set of workers that consume some Airflow queues, with Astro's
//! sizing settings. Declared in the worker-queue file (`--worker-queues`) and/or inline in a
//! KEDA trigger's metadata ([`crate::metadata`]); the validation rules live here, once.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::snapshot::Selector;

/// `[celery] worker_concurrency` default, Astro's "max tasks per worker" default.
pub const DEFAULT_MAX_TASKS_PER_WORKER: u32 = 16;
/// Astro's default minimum worker count.
pub const DEFAULT_MIN_WORKERS: u32 = 1;
/// Astro's default maximum worker count.
pub const DEFAULT_MAX_WORKERS: u32 = 10;
/// Airflow's `[operators] default_queue`.
pub const DEFAULT_QUEUE: &str = "default";
/// Values of `task_instance.executor` that mean Celery, unless configured otherwise.
pub const DEFAULT_EXECUTOR_NAMES: &[&str] = &[
    "CeleryExecutor",
    "airflow.providers.celery.executors.celery_executor.CeleryExecutor",
];
/// Largest accepted count (tasks per worker, workers, activation threshold).
pub const MAX_COUNT: u64 = 1_000_000;
/// `task_instance.queue` is VARCHAR(256).
pub const MAX_QUEUE_NAME_LEN: usize = 256;
/// `task_instance.executor` is VARCHAR(1000).
pub const MAX_EXECUTOR_NAME_LEN: usize = 1000;
/// Worker-queue names end up in metric names: keep them short.
pub const MAX_WORKER_QUEUE_NAME_LEN: usize = 63;
/// At most this many entries in one list (queues, executor names).
pub const MAX_LIST_LEN: usize = 64;

/// Validated settings of one worker queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerQueue {
    /// Name (from the file or the trigger); `None` for a purely inline trigger.
    pub name: Option<String>,
    pub queues: Vec<String>,
    pub max_tasks_per_worker: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    pub activation_tasks: u64,
    pub executor_names: Vec<String>,
    pub default_executor: bool,
    /// The workload of this worker queue's Celery workers (the ScaledObject's
    /// `scaleTargetRef`), watched when the scaler talks to Kubernetes. File only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_target_ref: Option<ScaleTargetRef>,
}

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

/// Parses `scaleTargetRef` of the worker-queue file.
fn yaml_target_ref(value: &serde_yaml::Value) -> Result<ScaleTargetRef, FieldError> {
    const KEY: &str = "scaleTargetRef";
    let serde_yaml::Value::Mapping(map) = value else {
        return Err(FieldError::new(KEY, "expected a map {kind, name}"));
    };
    let mut kind = None;
    let mut name = None;
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        let text = || yaml_scalar(&format!("{KEY}.{key}"), v, "a string");
        match key {
            "kind" => kind = Some(text()?),
            "name" => name = Some(text()?),
            "apiVersion" => {
                let api = text()?;
                if api != "apps/v1" {
                    return Err(FieldError::new(
                        "scaleTargetRef.apiVersion",
                        format!("{} is not supported: expected apps/v1", excerpt(&api)),
                    ));
                }
            }
            other => {
                return Err(FieldError::new(
                    KEY,
                    format!(
                        "unknown key {}: expected kind, name, apiVersion",
                        excerpt(other)
                    ),
                ));
            }
        }
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
    Ok(ScaleTargetRef { kind, name })
}

impl Default for WorkerQueue {
    fn default() -> Self {
        Self {
            name: None,
            queues: vec![DEFAULT_QUEUE.to_string()],
            max_tasks_per_worker: DEFAULT_MAX_TASKS_PER_WORKER,
            min_workers: DEFAULT_MIN_WORKERS,
            max_workers: DEFAULT_MAX_WORKERS,
            activation_tasks: 0,
            executor_names: DEFAULT_EXECUTOR_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            default_executor: true,
            scale_target_ref: None,
        }
    }
}

impl WorkerQueue {
    /// Which snapshot rows this worker queue consumes.
    pub fn selector(&self) -> Selector {
        Selector {
            queues: self.queues.clone(),
            executor_names: self.executor_names.clone(),
            celery_is_default: self.default_executor,
        }
    }

    /// The metric name reported to KEDA: `airflow-tasks-<name or queues>`, lowercase, only
    /// `[a-z0-9-]`, at most 63 characters. Stable for the same settings.
    pub fn metric_name(&self) -> String {
        let base = match &self.name {
            Some(n) => n.clone(),
            None => self.queues.join("-"),
        };
        let mut out = String::from("airflow-tasks-");
        for c in base.chars().flat_map(char::to_lowercase) {
            out.push(if c.is_ascii_alphanumeric() { c } else { '-' });
        }
        out.truncate(63);
        out.trim_end_matches('-').to_string()
    }

    /// Checks the cross-field rules.
    pub fn check(&self) -> Result<(), FieldError> {
        if self.min_workers > self.max_workers {
            return Err(FieldError::new(
                "minWorkers",
                format!(
                    "minWorkers ({}) must not be greater than maxWorkers ({})",
                    self.min_workers, self.max_workers
                ),
            ));
        }
        Ok(())
    }
}

/// A rejected setting: which key, and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct FieldError {
    pub key: String,
    pub message: String,
}

impl FieldError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Shortens a user-supplied value for an error message (values can be megabytes long).
pub fn excerpt(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}… ({} bytes)", value.len())
    }
}

/// Parses a count in `min..=MAX_COUNT`. `what` says what the key means.
pub fn parse_count(key: &str, raw: &str, min: u64) -> Result<u64, FieldError> {
    let accepted = || format!("expected a whole number from {min} to {MAX_COUNT}");
    let trimmed = raw.trim();
    let value: u64 = trimmed.parse().map_err(|_| {
        FieldError::new(
            key,
            format!("{} is not valid: {}", excerpt(raw), accepted()),
        )
    })?;
    if !(min..=MAX_COUNT).contains(&value) {
        return Err(FieldError::new(
            key,
            format!("{value} is out of range: {}", accepted()),
        ));
    }
    Ok(value)
}

/// Narrows a count already checked against [`MAX_COUNT`] (which fits in `u32`).
fn to_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

pub fn parse_u32(key: &str, raw: &str, min: u64) -> Result<u32, FieldError> {
    parse_count(key, raw, min).map(to_u32)
}

/// Parses `true` / `false` (any case).
pub fn parse_bool(key: &str, raw: &str) -> Result<bool, FieldError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(FieldError::new(
            key,
            format!("{} is not valid: expected true or false", excerpt(raw)),
        )),
    }
}

/// Validates a list of names: non-empty, no empty entry, each at most `max_len` characters,
/// at most [`MAX_LIST_LEN`] entries. Duplicates are dropped, order kept.
pub fn check_names(
    key: &str,
    names: Vec<String>,
    max_len: usize,
) -> Result<Vec<String>, FieldError> {
    if names.is_empty() {
        return Err(FieldError::new(key, "the list is empty: name at least one"));
    }
    if names.len() > MAX_LIST_LEN {
        return Err(FieldError::new(
            key,
            format!(
                "{} entries: at most {MAX_LIST_LEN} are accepted",
                names.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if name.is_empty() {
            return Err(FieldError::new(key, "contains an empty name"));
        }
        if name.chars().count() > max_len {
            return Err(FieldError::new(
                key,
                format!("{} is longer than {max_len} characters", excerpt(&name)),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                key,
                format!("{} contains control characters", excerpt(&name)),
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Splits a comma-separated list (`a, b,c`) and validates it like [`check_names`].
pub fn parse_name_list(key: &str, raw: &str, max_len: usize) -> Result<Vec<String>, FieldError> {
    let names: Vec<String> = if raw.trim().is_empty() {
        Vec::new()
    } else {
        raw.split(',').map(|s| s.trim().to_string()).collect()
    };
    check_names(key, names, max_len)
}

/// Checks a worker-queue name: 1–63 characters, letters, digits, `-`, `_`, `.`.
pub fn check_worker_queue_name(key: &str, name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_WORKER_QUEUE_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            key,
            format!(
                "{} is not a worker-queue name: expected 1 to {MAX_WORKER_QUEUE_NAME_LEN} \
                 letters, digits, '-', '_' or '.'",
                excerpt(name)
            ),
        ))
    }
}

/// One entry of the worker-queue file, as written. Values stay untyped here so that every
/// error names its key (serde's own messages would not).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWorkerQueue {
    name: serde_yaml::Value,
    #[serde(default)]
    queues: Option<serde_yaml::Value>,
    #[serde(default)]
    max_tasks_per_worker: Option<serde_yaml::Value>,
    #[serde(default)]
    min_workers: Option<serde_yaml::Value>,
    #[serde(default)]
    max_workers: Option<serde_yaml::Value>,
    #[serde(default)]
    activation_tasks: Option<serde_yaml::Value>,
    #[serde(default)]
    executor_names: Option<serde_yaml::Value>,
    #[serde(default)]
    default_executor: Option<serde_yaml::Value>,
    #[serde(default)]
    scale_target_ref: Option<serde_yaml::Value>,
}

/// A scalar as text (numbers, booleans and strings alike); `None` for lists, maps and null.
fn scalar_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn yaml_scalar(key: &str, value: &serde_yaml::Value, expected: &str) -> Result<String, FieldError> {
    scalar_text(value).ok_or_else(|| FieldError::new(key, format!("expected {expected}")))
}

fn yaml_count(key: &str, value: &serde_yaml::Value, min: u64) -> Result<u64, FieldError> {
    let text = yaml_scalar(
        key,
        value,
        &format!("a whole number from {min} to {MAX_COUNT}"),
    )?;
    parse_count(key, &text, min)
}

/// A list of names, written as a YAML list or as a comma-separated string.
fn yaml_names(
    key: &str,
    value: &serde_yaml::Value,
    max_len: usize,
) -> Result<Vec<String>, FieldError> {
    match value {
        serde_yaml::Value::Sequence(items) => {
            let names = items
                .iter()
                .map(|v| yaml_scalar(key, v, "a list of names"))
                .collect::<Result<Vec<_>, _>>()?;
            check_names(key, names, max_len)
        }
        other => parse_name_list(key, &yaml_scalar(key, other, "a list of names")?, max_len),
    }
}

impl TryFrom<RawWorkerQueue> for WorkerQueue {
    type Error = FieldError;

    fn try_from(raw: RawWorkerQueue) -> Result<Self, FieldError> {
        let name = yaml_scalar("name", &raw.name, "a worker-queue name")?;
        check_worker_queue_name("name", &name)?;
        let d = WorkerQueue::default();
        let wq = WorkerQueue {
            queues: match &raw.queues {
                Some(v) => yaml_names("queues", v, MAX_QUEUE_NAME_LEN)?,
                None => d.queues,
            },
            max_tasks_per_worker: match &raw.max_tasks_per_worker {
                Some(v) => to_u32(yaml_count("maxTasksPerWorker", v, 1)?),
                None => d.max_tasks_per_worker,
            },
            min_workers: match &raw.min_workers {
                Some(v) => to_u32(yaml_count("minWorkers", v, 0)?),
                None => d.min_workers,
            },
            max_workers: match &raw.max_workers {
                Some(v) => to_u32(yaml_count("maxWorkers", v, 1)?),
                None => d.max_workers,
            },
            activation_tasks: match &raw.activation_tasks {
                Some(v) => yaml_count("activationTasks", v, 0)?,
                None => d.activation_tasks,
            },
            executor_names: match &raw.executor_names {
                Some(v) => yaml_names("executorNames", v, MAX_EXECUTOR_NAME_LEN)?,
                None => d.executor_names,
            },
            default_executor: match &raw.default_executor {
                Some(v) => parse_bool(
                    "defaultExecutor",
                    &yaml_scalar("defaultExecutor", v, "true or false")?,
                )?,
                None => d.default_executor,
            },
            scale_target_ref: raw
                .scale_target_ref
                .as_ref()
                .map(yaml_target_ref)
                .transpose()?,
            name: Some(name),
        };
        wq.check()?;
        Ok(wq)
    }
}

/// The worker-queue file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFile {
    worker_queues: Vec<serde_yaml::Value>,
}

/// Why the worker-queue file was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkerQueueFileError {
    #[error("cannot read worker-queue file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("worker-queue file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// All declared worker queues, by name (sorted, so output is stable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerQueues {
    by_name: BTreeMap<String, WorkerQueue>,
}

impl WorkerQueues {
    /// Reads and validates the file. Errors name the line.
    pub fn load(path: &Path) -> Result<Self, WorkerQueueFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkerQueueFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| WorkerQueueFileError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses the file's text; the error message names the line of the offending entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let lines = entry_lines(text);
        let mut by_name = BTreeMap::new();
        for (i, value) in raw.worker_queues.into_iter().enumerate() {
            let line = lines.get(i).copied();
            let at = |msg: String| match line {
                Some(l) => format!("workerQueues[{i}] (line {l}): {msg}"),
                None => format!("workerQueues[{i}]: {msg}"),
            };
            let entry: RawWorkerQueue =
                serde_yaml::from_value(value).map_err(|e| at(e.to_string()))?;
            let wq = WorkerQueue::try_from(entry).map_err(|e| at(e.to_string()))?;
            let name = wq.name.clone().unwrap_or_default();
            if by_name.insert(name.clone(), wq).is_some() {
                return Err(at(format!("`name`: {name:?} is declared twice")));
            }
        }
        Ok(Self { by_name })
    }

    pub fn from_list(list: Vec<WorkerQueue>) -> Self {
        Self {
            by_name: list
                .into_iter()
                .map(|wq| (wq.name.clone().unwrap_or_default(), wq))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&WorkerQueue> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &WorkerQueue> {
        self.by_name.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

/// 1-based line numbers of the list items under `workerQueues:` (a `- ` at the list's indent).
fn entry_lines(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut in_list = false;
    let mut indent: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let this_indent = line.len() - trimmed.len();
        if !in_list {
            in_list = this_indent == 0 && trimmed.starts_with("workerQueues:");
            continue;
        }
        if this_indent == 0 && !trimmed.starts_with('-') {
            break;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            match indent {
                None => {
                    indent = Some(this_indent);
                    out.push(n + 1);
                }
                Some(i) if i == this_indent => out.push(n + 1),
                Some(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# worker queues of the deployment
workerQueues:
  - name: default
    queues: [default]
  - name: ml-gpu
    queues:
      - ml
      - gpu
    maxTasksPerWorker: 4
    minWorkers: 0
    maxWorkers: 3
    defaultExecutor: false
    scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: airflow-worker-ml-gpu}
";

    #[test]
    fn parses_file_with_defaults() {
        let wqs = WorkerQueues::parse(GOOD).unwrap();
        assert_eq!(wqs.names(), vec!["default", "ml-gpu"]);
        let d = wqs.get("default").unwrap();
        assert_eq!(d.max_tasks_per_worker, 16);
        assert_eq!((d.min_workers, d.max_workers), (1, 10));
        assert!(d.default_executor);
        let ml = wqs.get("ml-gpu").unwrap();
        assert_eq!(ml.queues, vec!["ml", "gpu"]);
        assert_eq!(
            (ml.max_tasks_per_worker, ml.min_workers, ml.max_workers),
            (4, 0, 3)
        );
        assert!(!ml.default_executor);
        assert_eq!(ml.metric_name(), "airflow-tasks-ml-gpu");
        assert_eq!(
            ml.scale_target_ref,
            Some(ScaleTargetRef {
                kind: TargetKind::Deployment,
                name: "airflow-worker-ml-gpu".into()
            })
        );
        assert_eq!(d.scale_target_ref, None);
    }

    #[test]
    fn file_errors_name_the_line_and_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "workerQueues:\n  - name: a\n  - name: b\n    maxTasksPerWorker: 0\n",
                &["line 3", "maxTasksPerWorker", "from 1 to"],
            ),
            (
                "workerQueues:\n  - name: a\n    minWorkers: 5\n    maxWorkers: 2\n",
                &["line 2", "minWorkers", "greater than maxWorkers"],
            ),
            (
                "workerQueues:\n  - name: a\n  - name: a\n",
                &["line 3", "declared twice"],
            ),
            (
                "workerQueues:\n  - name: a\n    maxTaskPerWorker: 3\n",
                &["line 2", "unknown field `maxTaskPerWorker`"],
            ),
            (
                "workerQueues:\n  - name: a\n    queues: []\n",
                &["line 2", "queues", "empty"],
            ),
            (
                "workerQueues:\n  - name: 'bad name!'\n",
                &["line 2", "name"],
            ),
            (
                "workerQueues:\n  - name: a\n    maxWorkers: -1\n",
                &["line 2", "maxWorkers"],
            ),
            (
                "workerQueues:\n  - name: a\n    scaleTargetRef: {kind: Job, name: w}\n",
                &["line 2", "scaleTargetRef.kind", "Deployment or StatefulSet"],
            ),
            (
                "workerQueues:\n  - name: a\n    scaleTargetRef: {kind: Deployment}\n",
                &["line 2", "scaleTargetRef.name", "missing"],
            ),
            (
                "workerQueues:\n  - name: a\n    scaleTargetRef: {kind: Deployment, name: Bad_Name}\n",
                &["line 2", "scaleTargetRef.name"],
            ),
            (
                "workerQueues:\n  - name: a\n    scaleTargetRef: {kind: Deployment, name: w, apiVersion: v1}\n",
                &["line 2", "scaleTargetRef.apiVersion"],
            ),
            ("workerQueues: [\n", &["line"]),
            ("queues: []\n", &["workerQueues"]),
        ];
        for (text, needles) in cases {
            let err = WorkerQueues::parse(text).unwrap_err();
            for needle in *needles {
                assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
            }
        }
    }

    #[test]
    fn counts_and_lists() {
        assert_eq!(parse_count("k", " 16 ", 1), Ok(16));
        for bad in [
            "0",
            "-1",
            "1.5",
            "abc",
            "",
            "99999999999999999999999",
            "1e3",
        ] {
            let err = parse_count("maxTasksPerWorker", bad, 1).unwrap_err();
            assert_eq!(err.key, "maxTasksPerWorker");
            assert!(err.message.contains("from 1 to 1000000"), "{err}");
        }
        assert_eq!(
            parse_name_list("queues", "a, b,a", 256),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert!(parse_name_list("queues", " , ", 256).is_err());
        assert!(parse_name_list("queues", "", 256).is_err());
        assert!(parse_name_list("queues", &"x".repeat(257), 256).is_err());
        assert_eq!(parse_bool("defaultExecutor", "TRUE"), Ok(true));
        assert!(parse_bool("defaultExecutor", "yes").is_err());
    }

    #[test]
    fn metric_names_are_lowercase_and_bounded() {
        let wq = WorkerQueue {
            queues: vec!["High_Prio".into(), "ümlaut".into()],
            ..WorkerQueue::default()
        };
        assert_eq!(wq.metric_name(), "airflow-tasks-high-prio--mlaut");
        let long = WorkerQueue {
            queues: vec!["q".repeat(100)],
            ..WorkerQueue::default()
        };
        assert_eq!(long.metric_name().len(), 63);
    }
}
