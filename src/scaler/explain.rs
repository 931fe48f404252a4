//! `explain`: one snapshot (and, with a cluster, one read of the workers), one line per worker
//! queue, notes, then the parallelism to set.

use super::{
    ScalerError, cluster,
    config::{ExplainConfig, OutputFormat},
    db::MetadataDb,
    load_worker_queues,
    model::worker_queue::{WorkerQueue, WorkerQueues},
    refresher,
    snapshot::TaskState,
};

/// Reads one snapshot and writes the plan to `out`.
pub async fn explain(
    config: &ExplainConfig,
    out: &mut dyn std::io::Write,
) -> Result<(), ScalerError> {
    let declared = load_worker_queues(config.worker_queues.as_deref())?;
    let db = MetadataDb::connect(&config.db).await?;
    let snapshot = refresher::refresh_once(&db).await?;
    let declared = if declared.is_empty() {
        // No file: every Airflow queue with work is its own worker queue, default settings.
        let mut queues: Vec<String> = snapshot
            .counts
            .iter()
            .filter(|c| matches!(c.state, TaskState::Queued | TaskState::Running))
            .map(|c| c.queue.clone())
            .collect();
        queues.sort();
        queues.dedup();
        WorkerQueues::from_list(
            queues
                .into_iter()
                .map(|q| WorkerQueue {
                    name: Some(q.clone()),
                    queues: vec![q],
                    ..WorkerQueue::default()
                })
                .collect(),
        )
    } else {
        declared
    };
    // With a cluster: one read of the workloads, their pods and HPAs.
    let (plan, cluster_line) = cluster::explain_plan(&config.workers, &declared, &snapshot).await?;
    let text = match config.output {
        OutputFormat::Table => format!(
            "database: {} ({})\n{cluster_line}\n{}",
            db.redacted_url(),
            snapshot.schema.describe(),
            plan.to_table()
        ),
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&plan).map_err(ScalerError::Encode)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "schema".into(),
                    serde_json::to_value(snapshot.schema).unwrap_or_default(),
                );
            }
            let mut s = serde_json::to_string_pretty(&v).map_err(ScalerError::Encode)?;
            s.push('\n');
            s
        }
    };
    out.write_all(text.as_bytes()).map_err(ScalerError::Output)
}
