//! A Celery *worker queue*: a set of workers that consume some Airflow queues, with Astro's
//! sizing settings. Declared in the worker-queue file (`--worker-queues`) and/or inline in a
//! KEDA trigger's metadata ([`super::metadata`]); the validation rules live here, once.

use serde::Serialize;

pub use super::target::{ScaleTargetRef, TargetKind};
use crate::scaler::snapshot::Selector;

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

mod file;

pub use self::file::{WorkerQueueFileError, WorkerQueueParseError, WorkerQueues};

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
                &["line 3", "unknown field `maxTaskPerWorker`"],
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
            let err = WorkerQueues::parse(text).unwrap_err().to_string();
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
