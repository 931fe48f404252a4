//! The worker-queue file (`--worker-queues`): YAML read with serde-saphyr, each entry checked
//! by the rules of [`super`], every error naming its line and key.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    FieldError, MAX_COUNT, MAX_EXECUTOR_NAME_LEN, MAX_QUEUE_NAME_LEN, ScaleTargetRef, WorkerQueue,
    check_names, check_worker_queue_name, parse_bool, parse_count, parse_name_list, to_u32,
};

/// A value of the worker-queue file, untyped, so that every error names its key (serde's own
/// messages would not). Scalars are read as YAML 1.2 (see [`crate::runtime::yaml::options`]).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Node {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    List(Vec<Node>),
    /// A mapping, null, or anything else that is not a scalar or a list.
    Other(serde::de::IgnoredAny),
}

/// One entry of the worker-queue file, as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWorkerQueue {
    name: Node,
    #[serde(default)]
    queues: Option<Node>,
    #[serde(default)]
    max_tasks_per_worker: Option<Node>,
    #[serde(default)]
    min_workers: Option<Node>,
    #[serde(default)]
    max_workers: Option<Node>,
    #[serde(default)]
    activation_tasks: Option<Node>,
    #[serde(default)]
    executor_names: Option<Node>,
    #[serde(default)]
    default_executor: Option<Node>,
    #[serde(default)]
    scale_target_ref: Option<RawTargetRef>,
}

/// `scaleTargetRef` as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTargetRef {
    #[serde(default)]
    kind: Option<Node>,
    #[serde(default)]
    name: Option<Node>,
    #[serde(default)]
    api_version: Option<Node>,
}

impl RawTargetRef {
    fn parse(&self) -> Result<ScaleTargetRef, FieldError> {
        let text = |key: &str, v: &Option<Node>| {
            v.as_ref()
                .map(|v| yaml_scalar(&format!("scaleTargetRef.{key}"), v, "a string"))
                .transpose()
        };
        ScaleTargetRef::from_parts(
            text("kind", &self.kind)?,
            text("name", &self.name)?,
            text("apiVersion", &self.api_version)?,
        )
    }
}

/// A scalar as text (numbers, booleans and strings alike); `None` for lists, maps and null.
fn scalar_text(value: &Node) -> Option<String> {
    match value {
        Node::Text(s) => Some(s.clone()),
        Node::Int(n) => Some(n.to_string()),
        Node::UInt(n) => Some(n.to_string()),
        // `{:?}` keeps the fraction of `16.0`, which is not a whole number as written.
        Node::Float(n) => Some(format!("{n:?}")),
        Node::Bool(b) => Some(b.to_string()),
        Node::List(_) | Node::Other(_) => None,
    }
}

fn yaml_scalar(key: &str, value: &Node, expected: &str) -> Result<String, FieldError> {
    scalar_text(value).ok_or_else(|| FieldError::new(key, format!("expected {expected}")))
}

fn yaml_count(key: &str, value: &Node, min: u64) -> Result<u64, FieldError> {
    let text = yaml_scalar(
        key,
        value,
        &format!("a whole number from {min} to {MAX_COUNT}"),
    )?;
    parse_count(key, &text, min)
}

/// A list of names, written as a YAML list or as a comma-separated string.
fn yaml_names(key: &str, value: &Node, max_len: usize) -> Result<Vec<String>, FieldError> {
    match value {
        Node::List(items) => {
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
                .map(RawTargetRef::parse)
                .transpose()?,
            name: Some(name),
        };
        wq.check()?;
        Ok(wq)
    }
}

/// The worker-queue file; each entry keeps the line it starts on.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFile {
    worker_queues: Vec<Spanned<RawWorkerQueue>>,
}

/// Why the text of a worker-queue file was refused. Every message names the line.
#[derive(Debug, thiserror::Error)]
pub enum WorkerQueueParseError {
    /// Not YAML, or not the file's shape (unknown key, missing `name`, …).
    #[error("{0}")]
    Yaml(Box<serde_saphyr::Error>),
    /// An entry has a wrong value.
    #[error("workerQueues[{index}] (line {line}): {source}")]
    Entry {
        /// Position in the list.
        index: usize,
        /// 1-based line the entry starts on.
        line: usize,
        /// The key and what is wrong with it.
        source: FieldError,
    },
    /// Two entries have the same name.
    #[error("workerQueues[{index}] (line {line}): `name`: {name:?} is declared twice")]
    Duplicate {
        /// Position of the second entry.
        index: usize,
        /// 1-based line the second entry starts on.
        line: usize,
        /// The name.
        name: String,
    },
}

/// Why the worker-queue file was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkerQueueFileError {
    #[error("cannot read worker-queue file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("worker-queue file {path}: {source}")]
    Invalid {
        path: String,
        source: WorkerQueueParseError,
    },
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
        Self::parse(&text).map_err(|source| WorkerQueueFileError::Invalid {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parses the file's text; the error names the line of the offending entry or key.
    pub fn parse(text: &str) -> Result<Self, WorkerQueueParseError> {
        let raw: RawFile =
            serde_saphyr::from_str_with_options(text, crate::runtime::yaml::options())
                .map_err(|e| WorkerQueueParseError::Yaml(Box::new(e)))?;
        let mut by_name = BTreeMap::new();
        for (index, entry) in raw.worker_queues.into_iter().enumerate() {
            let line = entry.referenced.line() as usize;
            let wq = WorkerQueue::try_from(entry.value).map_err(|source| {
                WorkerQueueParseError::Entry {
                    index,
                    line,
                    source,
                }
            })?;
            let name = wq.name.clone().unwrap_or_default();
            if by_name.insert(name.clone(), wq).is_some() {
                return Err(WorkerQueueParseError::Duplicate { index, line, name });
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
