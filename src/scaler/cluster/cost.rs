//! Keeps `controller.kubernetes.io/pod-deletion-cost` on Deployment worker pods equal to the
//! tasks running on each, so that a scale-down removes idle workers first.
//!
//! - Only changed values are written ([`super::pods::cost_patches`]), busiest pods first.
//! - At most `rate` patches per second (a token bucket), so hundreds of workers changing at
//!   once do not load the API server (airflow-helm/charts#339); the rest follow next tick.
//! - Server-side apply of the one annotation under one field manager, forced: two scaler
//!   replicas write the same value under the same manager, which is idempotent, and nothing
//!   else on the pod is touched.
//! - StatefulSet workers are never patched: their controller removes the highest ordinal and
//!   ignores the annotation.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use super::Cluster;
use crate::scaler::model::pods::{CostPatch, DELETION_COST_ANNOTATION};

/// The field manager of every write this program makes.
pub const FIELD_MANAGER: &str = "airflow-keda-scaler";

/// How long a written value is trusted while the watch has not shown it yet.
const ECHO_WAIT: Duration = Duration::from_secs(10);

/// A token bucket: `rate` per second, bursts of up to `rate`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What one round of patches did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostRound {
    pub patched: u64,
    pub failed: u64,
    /// Held back by the rate bound (or already written, waiting for the watch).
    pub deferred: u64,
}

/// Writes deletion costs for one scaler process.
#[derive(Debug)]
pub struct CostKeeper {
    api: Api<Pod>,
    limit: RateLimit,
    /// Values written recently: pod → (cost, when).
    written: BTreeMap<String, (i32, Instant)>,
    last_error: Option<String>,
}

impl CostKeeper {
    pub fn new(cluster: &Cluster, rate: u32) -> Self {
        Self {
            api: Api::namespaced(cluster.client.clone(), &cluster.namespace),
            limit: RateLimit::new(rate, Instant::now()),
            written: BTreeMap::new(),
            last_error: None,
        }
    }

    /// Applies `patches` (already the changed ones, busiest first) within the rate bound.
    pub async fn apply(&mut self, patches: &[CostPatch]) -> CostRound {
        let mut round = CostRound::default();
        let now = Instant::now();
        self.written
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < ECHO_WAIT);
        for p in patches {
            if self.written.get(&p.pod).is_some_and(|(c, _)| *c == p.cost) {
                round.deferred += 1;
                continue;
            }
            if !self.limit.try_take(Instant::now()) {
                round.deferred += 1;
                continue;
            }
            let body = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": p.pod,
                    "annotations": {DELETION_COST_ANNOTATION: p.cost.to_string()},
                },
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match self.api.patch(&p.pod, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    round.patched += 1;
                    self.written.insert(p.pod.clone(), (p.cost, Instant::now()));
                    tracing::debug!(pod = %p.pod, cost = p.cost, "pod-deletion cost written");
                    self.last_error = None;
                }
                // The pod went away between the watch event and the patch: nothing to do.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    round.failed += 1;
                    let m = e.to_string();
                    if self.last_error.as_deref() != Some(m.as_str()) {
                        tracing::warn!(pod = %p.pod, error = %m, "cannot write the pod-deletion cost (RBAC: patch pods?)");
                        self.last_error = Some(m);
                    }
                }
            }
        }
        round
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_bounds_bursts_and_refills() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(3, t0);
        assert_eq!((0..10).filter(|_| l.try_take(t0)).count(), 3);
        assert!(!l.try_take(t0 + Duration::from_millis(100)));
        // One second later: three more, no more than the burst.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!((0..10).filter(|_| l.try_take(t1)).count(), 3);
        let mut zero = RateLimit::new(0, t0);
        assert!(zero.try_take(t0), "a rate of 0 still makes progress (1/s)");
    }
}
