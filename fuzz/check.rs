//! The body of the `metadata` fuzz target, shared with the CI test that runs it over the seed
//! corpus (`tests/proof_hostile.rs`, `fuzz_body_runs_on_seed_corpus`).
//!
//! Input layout (so that a byte-level fuzzer reaches both parsers and every key quickly):
//! - first byte even: trigger metadata for [`metadata::parse`]. The rest is split at `0xFF`
//!   (never part of valid UTF-8) into entries. An entry whose first byte is below
//!   [`KEYS`]`.len()` is that key, the remaining bytes its value; any other entry is a raw
//!   `key=value` (bytes decoded lossily as UTF-8).
//! - first byte odd: the rest, decoded lossily as UTF-8, is a worker-queue file for
//!   [`WorkerQueues::parse`].
//!
//! Both must never panic. Whatever they accept must satisfy the invariants the rest of the
//! scaler relies on; whatever they reject must name a key in a short message.
#![allow(dead_code)]

use std::collections::HashMap;

use airflow_keda_scaler::{
    scaler::model::metadata::{self, KEDA_KEYS, MAX_KEYS, OWN_KEYS},
    scaler::model::worker_queue::{
        MAX_COUNT, MAX_EXECUTOR_NAME_LEN, MAX_LIST_LEN, MAX_QUEUE_NAME_LEN,
        MAX_WORKER_QUEUE_NAME_LEN, WorkerQueue, WorkerQueues,
    },
};

/// The worker queues the metadata is resolved against. (shared fixture: `tests/fixtures/worker-queues.yaml`).
pub const DECLARED: &str = include_str!("../tests/fixtures/worker-queues.yaml");

/// Keys reachable with one selector byte: ours, their `FromEnv` aliases, KEDA's.
pub const KEYS: &[&str] = &[
    "workerQueue",
    "queues",
    "maxTasksPerWorker",
    "minWorkers",
    "maxWorkers",
    "activationTasks",
    "executorNames",
    "defaultExecutor",
    "workerQueueFromEnv",
    "queuesFromEnv",
    "maxTasksPerWorkerFromEnv",
    "minWorkersFromEnv",
    "maxWorkersFromEnv",
    "activationTasksFromEnv",
    "executorNamesFromEnv",
    "defaultExecutorFromEnv",
    "scalerAddress",
    "enableTLS",
    "unsafeSsl",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
    "tlsCertFile",
];

/// Longest accepted error message (the hostile-metadata proof asks for < 1 KiB).
pub const MAX_ERROR_LEN: usize = 1024;

/// Runs one fuzz input. Panics when an invariant is broken.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_metadata(&decode_metadata(rest));
    } else {
        check_worker_queue_file(&String::from_utf8_lossy(rest));
    }
}

/// Decodes the metadata layout described in the module docs.
pub fn decode_metadata(data: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for entry in data.split(|b| *b == 0xFF) {
        let Some((&selector, rest)) = entry.split_first() else {
            continue;
        };
        let (key, value) = match KEYS.get(usize::from(selector)) {
            Some(key) => (key.to_string(), String::from_utf8_lossy(rest).into_owned()),
            None => match entry.iter().position(|b| *b == b'=') {
                Some(eq) => (
                    String::from_utf8_lossy(&entry[..eq]).into_owned(),
                    String::from_utf8_lossy(&entry[eq + 1..]).into_owned(),
                ),
                None => (String::from_utf8_lossy(entry).into_owned(), String::new()),
            },
        };
        map.insert(key, value);
    }
    map
}

/// Encodes `pairs` in the metadata layout (first byte included): for writing seeds.
pub fn encode_metadata(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0u8];
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(0xFF);
        }
        match KEYS.iter().position(|k| k == key) {
            Some(index) => out.push(u8::try_from(index).expect("few keys")),
            None => {
                // A raw entry must not start with a selector byte.
                assert!(
                    key.as_bytes()
                        .first()
                        .is_none_or(|b| usize::from(*b) >= KEYS.len()),
                    "raw key {key:?} starts with a selector byte"
                );
                out.extend_from_slice(key.as_bytes());
                out.push(b'=');
            }
        }
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Encodes a worker-queue file (first byte included): for writing seeds.
pub fn encode_file(text: &str) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(text.as_bytes());
    out
}

fn declared() -> WorkerQueues {
    WorkerQueues::parse(DECLARED).expect("the declared worker queues parse")
}

/// [`metadata::parse`] on `map`: no panic, deterministic, and the invariants below.
pub fn check_metadata(map: &HashMap<String, String>) {
    let declared = declared();
    let first = metadata::parse(map, &declared);
    let again = metadata::parse(map, &declared);
    assert_eq!(first, again, "metadata::parse is not deterministic");
    match first {
        Ok(wq) => {
            check_worker_queue(&wq);
            assert!(map.len() <= MAX_KEYS, "{} keys accepted", map.len());
            for key in map.keys() {
                let base = key.strip_suffix("FromEnv").unwrap_or(key);
                assert!(
                    OWN_KEYS.contains(&base) || KEDA_KEYS.contains(&key.as_str()),
                    "unknown key {key:?} accepted"
                );
            }
            if let Some(name) = &wq.name {
                assert!(declared.get(name).is_some(), "undeclared {name:?} accepted");
            }
            let owns_nothing = map.keys().all(|k| KEDA_KEYS.contains(&k.as_str()));
            if owns_nothing {
                assert_eq!(
                    wq,
                    WorkerQueue::default(),
                    "KEDA's keys changed the settings"
                );
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.len() < MAX_ERROR_LEN,
                "error message of {} bytes",
                message.len()
            );
            let key = e.key();
            let named = key == "scalerMetadata"
                || OWN_KEYS.contains(&key)
                || map.keys().any(|k| {
                    k == key
                        || key.starts_with(&format!("{:?}", k.chars().take(64).collect::<String>()))
                });
            assert!(
                named,
                "error names no key of the input: {key:?} ({message})"
            );
            assert!(
                message.contains(key),
                "message does not name {key:?}: {message}"
            );
        }
    }
}

/// [`WorkerQueues::parse`] on `text`: no panic; every accepted entry satisfies the invariants
/// and is what a trigger naming it resolves to.
pub fn check_worker_queue_file(text: &str) {
    let Ok(parsed) = WorkerQueues::parse(text) else {
        return;
    };
    let names = parsed.names();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(names, sorted, "names not sorted and unique");
    for wq in parsed.iter() {
        check_worker_queue(wq);
        let name = wq
            .name
            .as_deref()
            .expect("a declared worker queue has a name");
        assert!(
            !name.is_empty()
                && name.len() <= MAX_WORKER_QUEUE_NAME_LEN
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "bad worker-queue name {name:?} accepted"
        );
        let trigger = HashMap::from([("workerQueue".to_string(), name.to_string())]);
        assert_eq!(
            metadata::parse(&trigger, &parsed).as_ref(),
            Ok(wq),
            "a trigger naming {name:?} does not resolve to its file entry"
        );
    }
}

/// What every accepted worker queue must satisfy.
pub fn check_worker_queue(wq: &WorkerQueue) {
    let max = u32::try_from(MAX_COUNT).expect("MAX_COUNT fits u32");
    assert!(
        (1..=max).contains(&wq.max_tasks_per_worker),
        "maxTasksPerWorker {}",
        wq.max_tasks_per_worker
    );
    assert!(
        (1..=max).contains(&wq.max_workers),
        "maxWorkers {}",
        wq.max_workers
    );
    assert!(
        wq.min_workers <= wq.max_workers,
        "minWorkers {} > maxWorkers {}",
        wq.min_workers,
        wq.max_workers
    );
    assert!(
        wq.activation_tasks <= MAX_COUNT,
        "activationTasks {}",
        wq.activation_tasks
    );
    check_list("queues", &wq.queues, MAX_QUEUE_NAME_LEN);
    check_list("executorNames", &wq.executor_names, MAX_EXECUTOR_NAME_LEN);
    let metric = wq.metric_name();
    assert!(
        metric.starts_with("airflow-tasks"),
        "metric name {metric:?}"
    );
    assert!(metric.len() <= 63, "metric name {metric:?} too long");
    assert!(
        metric
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "metric name {metric:?} has characters outside [a-z0-9-]"
    );
    assert_eq!(metric, wq.metric_name(), "metric name not stable");
}

fn check_list(key: &str, names: &[String], max_len: usize) {
    assert!(!names.is_empty(), "{key}: empty list accepted");
    assert!(
        names.len() <= MAX_LIST_LEN,
        "{key}: {} entries",
        names.len()
    );
    for (i, name) in names.iter().enumerate() {
        assert!(!name.is_empty(), "{key}: empty name accepted");
        assert!(name.chars().count() <= max_len, "{key}: name too long");
        assert!(
            !name.chars().any(char::is_control),
            "{key}: control character"
        );
        assert!(!names[..i].contains(name), "{key}: duplicate {name:?}");
    }
}
