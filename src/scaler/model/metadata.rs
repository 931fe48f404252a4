//! Trigger metadata (`ScaledObjectRef.scalerMetadata`) → validated [`WorkerQueue`].
//!
//! KEDA sends the trigger's whole `metadata` map on every call. Keys this scaler owns are
//! validated strictly (a misspelled key must never silently change scaling); keys KEDA itself
//! uses are ignored. `<key>FromEnv` keys arrive already resolved by KEDA and are accepted as
//! aliases of `<key>`.

use std::collections::HashMap;

use crate::scaler::model::worker_queue::{
    FieldError, MAX_EXECUTOR_NAME_LEN, MAX_QUEUE_NAME_LEN, WorkerQueue, WorkerQueues,
    check_worker_queue_name, excerpt, parse_bool, parse_count, parse_name_list, parse_u32,
};

/// Keys this scaler reads.
pub const OWN_KEYS: &[&str] = &[
    "workerQueue",
    "queues",
    "maxTasksPerWorker",
    "minWorkers",
    "maxWorkers",
    "activationTasks",
    "executorNames",
    "defaultExecutor",
];

/// Keys KEDA's external scaler reads itself; they reach us too and are ignored.
pub const KEDA_KEYS: &[&str] = &[
    "scalerAddress",
    "enableTLS",
    "unsafeSsl",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
    "tlsCertFile",
];

/// At most this many metadata keys are looked at (more is certainly not a real trigger).
pub const MAX_KEYS: usize = 64;

/// Why trigger metadata was rejected. Maps to gRPC `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trigger metadata {0}")]
pub struct MetadataError(#[from] pub FieldError);

impl MetadataError {
    pub fn key(&self) -> &str {
        &self.0.key
    }
}

fn field(key: &str, message: impl Into<String>) -> MetadataError {
    MetadataError(FieldError::new(key, message))
}

/// Resolves the trigger's metadata against the declared worker queues.
///
/// Order: built-in defaults, then the worker queue named by `workerQueue` (if any), then the
/// inline keys.
pub fn parse(
    metadata: &HashMap<String, String>,
    declared: &WorkerQueues,
) -> Result<WorkerQueue, MetadataError> {
    if metadata.len() > MAX_KEYS {
        return Err(field(
            "scalerMetadata",
            format!(
                "{} keys: at most {MAX_KEYS} are accepted; known keys are {}",
                metadata.len(),
                OWN_KEYS.join(", ")
            ),
        ));
    }
    let own = own_values(metadata)?;
    let get = |k: &str| own.get(k).map(String::as_str);

    let mut wq = match get("workerQueue") {
        Some(name) => {
            let name = name.trim();
            check_worker_queue_name("workerQueue", name)?;
            declared.get(name).cloned().ok_or_else(|| {
                let known = if declared.is_empty() {
                    "none: the scaler was started without --worker-queues".to_string()
                } else {
                    declared.names().join(", ")
                };
                field(
                    "workerQueue",
                    format!("{name:?} is not declared in the worker-queue file; declared: {known}"),
                )
            })?
        }
        None => WorkerQueue::default(),
    };

    if let Some(v) = get("queues") {
        wq.queues = parse_name_list("queues", v, MAX_QUEUE_NAME_LEN)?;
    }
    if let Some(v) = get("maxTasksPerWorker") {
        wq.max_tasks_per_worker = parse_u32("maxTasksPerWorker", v, 1)?;
    }
    if let Some(v) = get("minWorkers") {
        wq.min_workers = parse_u32("minWorkers", v, 0)?;
    }
    if let Some(v) = get("maxWorkers") {
        wq.max_workers = parse_u32("maxWorkers", v, 1)?;
    }
    if let Some(v) = get("activationTasks") {
        wq.activation_tasks = parse_count("activationTasks", v, 0)?;
    }
    if let Some(v) = get("executorNames") {
        wq.executor_names = parse_name_list("executorNames", v, MAX_EXECUTOR_NAME_LEN)?;
    }
    if let Some(v) = get("defaultExecutor") {
        wq.default_executor = parse_bool("defaultExecutor", v)?;
    }
    wq.check()?;
    Ok(wq)
}

/// Picks out this scaler's keys (and their `FromEnv` aliases); rejects unknown keys.
fn own_values(
    metadata: &HashMap<String, String>,
) -> Result<HashMap<&'static str, String>, MetadataError> {
    let mut own: HashMap<&'static str, String> = HashMap::new();
    // Sorted so that the first problem reported does not depend on hash order.
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        let value = &metadata[key];
        if KEDA_KEYS.contains(&key.as_str()) {
            continue;
        }
        let base = key.strip_suffix("FromEnv").unwrap_or(key);
        let Some(own_key) = OWN_KEYS.iter().find(|k| **k == base) else {
            return Err(field(
                &excerpt_key(key),
                format!(
                    "is not a key of this scaler; accepted keys: {} (KEDA's own keys such as \
                     scalerAddress are ignored)",
                    OWN_KEYS.join(", ")
                ),
            ));
        };
        if own.insert(own_key, value.clone()).is_some() {
            return Err(field(
                own_key,
                format!("is given both as `{own_key}` and as `{own_key}FromEnv`: keep one"),
            ));
        }
    }
    Ok(own)
}

/// Unknown keys are echoed in errors: keep them short and printable.
fn excerpt_key(key: &str) -> String {
    if key.chars().count() <= 64 && !key.chars().any(char::is_control) {
        key.to_string()
    } else {
        excerpt(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn declared() -> WorkerQueues {
        WorkerQueues::parse(
            "workerQueues:\n  - name: ml\n    queues: [ml, gpu]\n    maxTasksPerWorker: 4\n    minWorkers: 0\n    maxWorkers: 3\n",
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_overrides() {
        let d = declared();
        let wq = parse(&md(&[("scalerAddress", "x:9090")]), &d).unwrap();
        assert_eq!(wq, WorkerQueue::default());

        let wq = parse(&md(&[("workerQueue", "ml")]), &d).unwrap();
        assert_eq!(wq.queues, vec!["ml", "gpu"]);
        assert_eq!(wq.max_tasks_per_worker, 4);

        // Inline keys override the file.
        let wq = parse(
            &md(&[
                ("workerQueue", "ml"),
                ("maxTasksPerWorker", "8"),
                ("maxWorkers", "5"),
            ]),
            &d,
        )
        .unwrap();
        assert_eq!((wq.max_tasks_per_worker, wq.max_workers), (8, 5));
        assert_eq!(wq.name.as_deref(), Some("ml"));

        let wq = parse(
            &md(&[
                ("queues", "a,b"),
                ("activationTasks", "3"),
                ("executorNames", "CeleryExecutor"),
                ("defaultExecutor", "false"),
                ("maxTasksPerWorkerFromEnv", "32"),
                ("enableTLS", "true"),
            ]),
            &d,
        )
        .unwrap();
        assert_eq!(wq.queues, vec!["a", "b"]);
        assert_eq!(wq.activation_tasks, 3);
        assert_eq!(wq.executor_names, vec!["CeleryExecutor"]);
        assert!(!wq.default_executor);
        assert_eq!(wq.max_tasks_per_worker, 32);
    }

    #[test]
    fn invalid_metadata_names_key_and_accepted_values() {
        let d = declared();
        let huge = "9".repeat(1 << 20);
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("maxTasksPerWorker", "0")],
                "maxTasksPerWorker",
                "from 1 to",
            ),
            (
                vec![("maxTasksPerWorker", "-4")],
                "maxTasksPerWorker",
                "from 1 to",
            ),
            (
                vec![("maxTasksPerWorker", "2.5")],
                "maxTasksPerWorker",
                "whole number",
            ),
            (
                vec![("maxTasksPerWorker", "sixteen")],
                "maxTasksPerWorker",
                "whole number",
            ),
            (
                vec![("maxTasksPerWorker", &huge)],
                "maxTasksPerWorker",
                "bytes)",
            ),
            (vec![("maxWorkers", "0")], "maxWorkers", "from 1 to"),
            (
                vec![("minWorkers", "5"), ("maxWorkers", "2")],
                "minWorkers",
                "greater",
            ),
            (
                vec![("activationTasks", "-1")],
                "activationTasks",
                "from 0 to",
            ),
            (vec![("queues", "")], "queues", "empty"),
            (vec![("queues", ",,")], "queues", "empty name"),
            (
                vec![("defaultExecutor", "yes")],
                "defaultExecutor",
                "true or false",
            ),
            (vec![("workerQueue", "nope")], "workerQueue", "declared: ml"),
            (
                vec![("workerQueue", "x'; DROP TABLE")],
                "workerQueue",
                "worker-queue name",
            ),
            (
                vec![("maxTaskPerWorker", "4")],
                "maxTaskPerWorker",
                "accepted keys",
            ),
            (
                vec![
                    ("maxTasksPerWorker", "4"),
                    ("maxTasksPerWorkerFromEnv", "4"),
                ],
                "maxTasksPerWorker",
                "keep one",
            ),
        ];
        for (pairs, key, needle) in cases {
            let err = parse(&md(&pairs), &d).unwrap_err();
            assert_eq!(err.key(), key, "{pairs:?}");
            let msg = err.to_string();
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.len() < 600, "message too long: {} bytes", msg.len());
        }
        let undeclared =
            parse(&md(&[("workerQueue", "ml")]), &WorkerQueues::default()).unwrap_err();
        assert!(undeclared.to_string().contains("without --worker-queues"));
    }

    #[test]
    fn too_many_keys() {
        let many: HashMap<String, String> = (0..5000)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let err = parse(&many, &WorkerQueues::default()).unwrap_err();
        assert_eq!(err.key(), "scalerMetadata");
    }
}
