//! The serve loop of the cluster side: after every refresh (and at least every second) it
//! reads the watched workloads, keeps the pod-deletion costs, tracks drift, warns about the
//! parallelism cap and starvation, and publishes the [`ClusterView`] that `/metrics` reads.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{
    Cluster, ClusterStore, DriftCause, DriftReport, cost::CostKeeper, targets, watch::Watcher,
};
use crate::scaler::{
    metrics::Metrics,
    model::{
        drift, pods,
        sizing::{Plan, PlanOptions, drift_inputs},
        target::{ScaleTargetRef, TargetKind},
        worker_queue::WorkerQueues,
    },
    snapshot::{Snapshot, SnapshotStore},
};

/// Settings of the loop.
#[derive(Debug, Clone, Copy)]
pub struct WorkersOptions {
    pub plan: PlanOptions,
    /// Most pod patches per second.
    pub deletion_cost_rate: u32,
    /// How long ready workers may be off the formula before `hpa_drift`.
    pub drift_after: Duration,
    /// Snapshots older than this are not used to write deletion costs.
    pub max_staleness: Duration,
}

/// What the loop remembers between ticks (logging and drift timers).
#[derive(Debug, Default)]
struct Memory {
    trackers: BTreeMap<String, drift::DriftTracker>,
    logged_causes: BTreeMap<String, &'static str>,
    warned_caps: bool,
    starved: bool,
    unmatched_logged: BTreeMap<ScaleTargetRef, bool>,
}

/// Connects under `config.kubernetes` and, with a cluster, returns [`run`] for the caller to
/// spawn (under its supervisor). Tells `metrics` either way, so `/metrics` shows the
/// parallelism settings. Fails only with `--kubernetes on` and no configuration.
pub async fn start(
    config: &super::WorkersConfig,
    declared: Arc<WorkerQueues>,
    snapshots: SnapshotStore,
    metrics: Metrics,
    max_staleness: Duration,
    shutdown: CancellationToken,
) -> Result<Option<impl Future<Output = ()> + Send + 'static>, super::ClusterError> {
    let cluster = Cluster::connect(config.kubernetes, config.namespace.as_deref()).await?;
    let options = config.plan_options(cluster.is_some());
    let Some(cluster) = cluster else {
        metrics.watch_workers(None, options);
        return Ok(None);
    };
    let store = ClusterStore::default();
    metrics.watch_workers(Some(store.clone()), options);
    let workers = WorkersOptions {
        plan: options,
        deletion_cost_rate: config.deletion_cost_rate,
        drift_after: config.drift_after,
        max_staleness,
    };
    Ok(Some(run(
        cluster, declared, snapshots, store, metrics, workers, shutdown,
    )))
}

/// Runs until `shutdown`.
pub async fn run(
    cluster: Cluster,
    declared: Arc<WorkerQueues>,
    snapshots: SnapshotStore,
    out: ClusterStore,
    metrics: Metrics,
    options: WorkersOptions,
    shutdown: CancellationToken,
) {
    let targets = targets(&declared);
    tracing::info!(
        namespace = %cluster.namespace,
        workloads = ?targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        pod_deletion_cost = options.plan.deletion_cost,
        "watching the worker workloads, their pods and HPAs"
    );
    let watcher = Watcher::start(&cluster, &targets, &shutdown);
    let mut keeper = options
        .plan
        .deletion_cost
        .then(|| CostKeeper::new(&cluster, options.deletion_cost_rate));
    let mut rx = snapshots.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory = Memory::default();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = rx.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
        let mut view = watcher.view();
        let published = snapshots.current();
        let Ok(snapshot) = published.fresh(options.max_staleness) else {
            // No fresh counts: show the workers, but neither judge drift nor touch costs.
            out.publish(view);
            continue;
        };
        let plan = Plan::compute_with(&declared, &snapshot, Some(&view), options.plan);
        let now = Instant::now();
        for q in &plan.worker_queues {
            let Some(wq) = declared.get(&q.worker_queue) else {
                continue;
            };
            let Some(obs) = view.get(wq.scale_target_ref.as_ref()) else {
                continue;
            };
            let inputs = drift_inputs(q, obs, plan.starved, options.plan);
            let off = obs.found && drift::is_off(&inputs);
            let cause = off.then(|| drift::cause(&inputs));
            // The HPA keeps workers through its scale-down window by design.
            let expected = matches!(cause, Some(DriftCause::ScaleDownStabilization { .. }));
            let tracker = memory.trackers.entry(q.worker_queue.clone()).or_default();
            let drifting = tracker.observe(off && !expected, now, options.drift_after);
            let age = tracker.age(now).unwrap_or_default();
            if let Some(cause) = cause {
                if drifting && memory.logged_causes.get(&q.worker_queue) != Some(&cause.label()) {
                    tracing::warn!(
                        worker_queue = %q.worker_queue,
                        formula = q.desired_workers,
                        ready = obs.ready_workers,
                        hpa_desired = obs.hpa.as_ref().map(|h| h.desired_replicas),
                        off_for = ?age,
                        cause = cause.label(),
                        "ready workers differ from the formula: {}",
                        cause.describe()
                    );
                    memory
                        .logged_causes
                        .insert(q.worker_queue.clone(), cause.label());
                }
                view.drift.insert(
                    q.worker_queue.clone(),
                    DriftReport {
                        drifting,
                        off_for_secs: age.as_secs_f64(),
                        cause,
                    },
                );
            }
            if !drifting && memory.logged_causes.remove(&q.worker_queue).is_some() {
                tracing::info!(worker_queue = %q.worker_queue, "ready workers follow the formula again");
            }
        }
        warn_parallelism(&plan, &mut memory);
        if let Some(keeper) = keeper.as_mut() {
            keep_costs(keeper, &declared, &snapshot, &view, &metrics, &mut memory).await;
        }
        out.publish(view);
    }
    drop(watcher);
    tracing::debug!("cluster loop stopped");
}

fn warn_parallelism(plan: &Plan, memory: &mut Memory) {
    if let Some(p) = plan.airflow_parallelism
        && !memory.warned_caps
    {
        for q in &plan.worker_queues {
            if let Some(cap) = q.parallelism_cap {
                tracing::warn!(
                    worker_queue = %q.worker_queue,
                    airflow_parallelism = p,
                    capped_at = cap,
                    max_workers = q.max_workers,
                    recommended = plan.parallelism.value,
                    "[core] parallelism {p} lets this worker queue reach {cap} of its {} workers; \
                     set AIRFLOW__CORE__PARALLELISM to {}",
                    q.max_workers,
                    plan.parallelism.value
                );
            }
        }
        memory.warned_caps = true;
    }
    if plan.starved != memory.starved {
        if plan.starved {
            tracing::warn!(
                queued_and_running = plan.queued_and_running,
                airflow_parallelism = plan.airflow_parallelism,
                scheduled = plan.worker_queues.iter().map(|q| q.scheduled).sum::<u64>(),
                "tasks wait as scheduled while queued + running is at [core] parallelism: the \
                 workers cannot see them; raise AIRFLOW__CORE__PARALLELISM to {}",
                plan.parallelism.value
            );
        } else {
            tracing::info!("no more tasks waiting at the parallelism limit");
        }
        memory.starved = plan.starved;
    }
}

async fn keep_costs(
    keeper: &mut CostKeeper,
    declared: &WorkerQueues,
    snapshot: &Snapshot,
    view: &super::ClusterView,
    metrics: &Metrics,
    memory: &mut Memory,
) {
    // Running tasks by hostname, per Deployment (worker queues sharing one add up).
    let mut by_target: BTreeMap<&ScaleTargetRef, BTreeMap<&str, u64>> = BTreeMap::new();
    for wq in declared.iter() {
        let Some(t) = wq.scale_target_ref.as_ref() else {
            continue;
        };
        if t.kind != TargetKind::Deployment {
            continue;
        }
        let hosts = by_target.entry(t).or_default();
        for (h, n) in snapshot.running_by_host(&wq.selector()) {
            *hosts.entry(h).or_default() += n;
        }
    }
    for (t, hosts) in by_target {
        let Some(obs) = view.workloads.get(t) else {
            continue;
        };
        if !obs.found || obs.error.is_some() {
            continue;
        }
        let (per_pod, unmatched) = pods::tasks_per_pod(&obs.pods, &hosts);
        let logged = memory.unmatched_logged.entry(t.clone()).or_default();
        if unmatched > 0 && !*logged && !obs.pods.is_empty() {
            tracing::info!(
                workload = %t,
                tasks = unmatched,
                "running tasks whose hostname names no pod of the workload (hostname_callable \
                 not the pod name or IP, or workers outside it): they do not count in its \
                 deletion costs"
            );
            *logged = true;
        }
        let patches = pods::cost_patches(&obs.pods, &per_pod);
        if patches.is_empty() {
            continue;
        }
        let round = keeper.apply(&patches).await;
        metrics.deletion_cost_patches(round.patched, round.failed);
    }
}
