//! Drift: the workers Kubernetes runs differ from what the formula asks for, for longer than a
//! few HPA syncs. The usual causes, checked in this order:
//!
//! - no HPA targets the workload (the ScaledObject is missing or not ready);
//! - the HPA has no tolerance 0 although it was configured: the API server dropped it
//!   (`HPAConfigurableTolerance` off), and the 10 % dead band is back (FACTS §10);
//! - the HPA cannot scale (`ScalingActive` / `AbleToScale` false) or its maximum is lower;
//! - the workload wants the pods but they do not get ready: a ResourceQuota refuses them
//!   (`ReplicaFailure`), or they stay Pending (unschedulable);
//! - tasks wait as `scheduled` at the `[core] parallelism` limit: the formula cannot see them;
//! - more workers than asked: the scale-down stabilization window still holds them.

use std::time::{Duration, Instant};

use serde::Serialize;

/// What is known about the HPA that targets a worker workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaObservation {
    pub name: String,
    pub desired_replicas: u32,
    pub current_replicas: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// `behavior.scaleUp.tolerance` / `scaleDown.tolerance` as the API server kept them.
    pub scale_up_tolerance: Option<f64>,
    pub scale_down_tolerance: Option<f64>,
    /// The message of an `AbleToScale` or `ScalingActive` condition that is false.
    pub not_scaling: Option<String>,
}

impl HpaObservation {
    /// Both tolerances are 0: the HPA applies the formula exactly.
    pub fn exact_tolerance(&self) -> bool {
        self.scale_up_tolerance == Some(0.0) && self.scale_down_tolerance == Some(0.0)
    }
}

/// Everything [`cause`] looks at for one worker queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriftInputs {
    /// What the formula asks for.
    pub formula: u32,
    /// Ready worker pods.
    pub ready: u32,
    /// The workload's `spec.replicas`.
    pub spec_replicas: Option<u32>,
    pub hpa: Option<HpaObservation>,
    /// Worker pods in phase Pending, and the scheduler's message for one that is unschedulable.
    pub pending: u32,
    pub unschedulable: Option<String>,
    /// The workload's `ReplicaFailure` condition message (e.g. `exceeded quota`).
    pub replica_failure: Option<String>,
    /// Tasks wait as `scheduled` at the parallelism limit.
    pub starved: bool,
    /// Tolerance 0 is configured (`--exact-tolerance`, the chart's `scaledObject.exactTolerance`).
    pub exact_tolerance_configured: bool,
}

/// The likely cause of a drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "cause", rename_all = "camelCase")]
pub enum DriftCause {
    NoHpa,
    ToleranceDropped,
    HpaNotScaling {
        message: String,
    },
    HpaMaximum {
        max: u32,
    },
    Quota {
        message: String,
    },
    PendingPods {
        pending: u32,
        message: Option<String>,
    },
    ParallelismCap,
    ScaleDownStabilization {
        hpa_desired: u32,
    },
    Unknown {
        detail: String,
    },
}

impl DriftCause {
    /// A short stable label (logs, JSON).
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoHpa => "no_hpa",
            Self::ToleranceDropped => "tolerance_dropped",
            Self::HpaNotScaling { .. } => "hpa_not_scaling",
            Self::HpaMaximum { .. } => "hpa_maximum",
            Self::Quota { .. } => "quota",
            Self::PendingPods { .. } => "pending_pods",
            Self::ParallelismCap => "parallelism_cap",
            Self::ScaleDownStabilization { .. } => "scale_down_stabilization",
            Self::Unknown { .. } => "unknown",
        }
    }

    /// One sentence for `explain` and the log.
    pub fn describe(&self) -> String {
        match self {
            Self::NoHpa => {
                "no HPA targets the workload: is the ScaledObject there and READY?".into()
            }
            Self::ToleranceDropped => "tolerance dropped: tolerance 0 is configured but the HPA \
                 has none (HPAConfigurableTolerance off?), so its 10 % dead band applies"
                .into(),
            Self::HpaNotScaling { message } => format!("the HPA cannot scale: {message}"),
            Self::HpaMaximum { max } => format!("the HPA's maxReplicas is {max}"),
            Self::Quota { message } => format!("quota: the workload cannot create pods: {message}"),
            Self::PendingPods { pending, message } => match message {
                Some(m) => format!("pending pods: {pending} worker pod(s) not scheduled: {m}"),
                None => format!("pending pods: {pending} worker pod(s) not ready yet"),
            },
            Self::ParallelismCap => "parallelism cap: tasks wait as scheduled while queued + \
                 running is at [core] parallelism, so the formula cannot see them"
                .into(),
            Self::ScaleDownStabilization { hpa_desired } => format!(
                "scale-down stabilization: the HPA still wants {hpa_desired} (its window keeps \
                 the highest recommendation)"
            ),
            Self::Unknown { detail } => detail.clone(),
        }
    }
}

/// Whether `ready` is off `formula`: any difference with tolerance 0 configured, else outside
/// the HPA's default 10 % band (where the HPA is not meant to follow).
pub fn is_off(inputs: &DriftInputs) -> bool {
    if inputs.ready == inputs.formula {
        return false;
    }
    if inputs.exact_tolerance_configured {
        return true;
    }
    let ready = f64::from(inputs.ready.max(1));
    let ratio = f64::from(inputs.formula) / ready;
    !(0.9..=1.1).contains(&ratio)
}

/// The likely cause of `ready` differing from `formula`.
pub fn cause(i: &DriftInputs) -> DriftCause {
    let Some(hpa) = &i.hpa else {
        return DriftCause::NoHpa;
    };
    if i.exact_tolerance_configured && !hpa.exact_tolerance() {
        return DriftCause::ToleranceDropped;
    }
    if i.formula > i.ready {
        if hpa.desired_replicas < i.formula {
            if let Some(message) = &hpa.not_scaling {
                return DriftCause::HpaNotScaling {
                    message: message.clone(),
                };
            }
            if hpa.max_replicas < i.formula {
                return DriftCause::HpaMaximum {
                    max: hpa.max_replicas,
                };
            }
        }
        if i.spec_replicas.unwrap_or(0) >= i.formula || hpa.desired_replicas >= i.formula {
            if let Some(message) = &i.replica_failure {
                return DriftCause::Quota {
                    message: message.clone(),
                };
            }
            if i.pending > 0 || i.unschedulable.is_some() {
                return DriftCause::PendingPods {
                    pending: i.pending,
                    message: i.unschedulable.clone(),
                };
            }
        }
        if i.starved {
            return DriftCause::ParallelismCap;
        }
        return DriftCause::Unknown {
            detail: format!(
                "the HPA wants {} and the workload has {} replicas, {} ready",
                hpa.desired_replicas,
                i.spec_replicas.unwrap_or(0),
                i.ready
            ),
        };
    }
    if hpa.desired_replicas > i.formula {
        return DriftCause::ScaleDownStabilization {
            hpa_desired: hpa.desired_replicas,
        };
    }
    DriftCause::Unknown {
        detail: format!(
            "{} ready workers for {} asked; the HPA wants {}",
            i.ready, i.formula, hpa.desired_replicas
        ),
    }
}

/// A worker queue's drift as last evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    /// Off the formula for longer than `--drift-after` (what `hpa_drift` exports). `explain`,
    /// which looks once, reports any difference as off and leaves this false.
    pub drifting: bool,
    /// How long it has been off (0 for a one-time look).
    pub off_for_secs: f64,
    pub cause: DriftCause,
}

/// Remembers since when a worker queue has been off the formula.
#[derive(Debug, Clone, Default)]
pub struct DriftTracker {
    since: Option<Instant>,
}

impl DriftTracker {
    /// Feeds one observation; returns whether the drift has lasted longer than `after`.
    pub fn observe(&mut self, off: bool, now: Instant, after: Duration) -> bool {
        if !off {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now.saturating_duration_since(since) >= after
    }

    /// How long the current drift has lasted.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.since.map(|s| now.saturating_duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(desired: u32, tolerance: Option<f64>) -> HpaObservation {
        HpaObservation {
            name: "keda-hpa-default".into(),
            desired_replicas: desired,
            current_replicas: desired,
            min_replicas: 1,
            max_replicas: 10,
            scale_up_tolerance: tolerance,
            scale_down_tolerance: tolerance,
            not_scaling: None,
        }
    }

    fn inputs(formula: u32, ready: u32, hpa_: Option<HpaObservation>) -> DriftInputs {
        DriftInputs {
            formula,
            ready,
            spec_replicas: Some(ready),
            hpa: hpa_,
            exact_tolerance_configured: true,
            ..DriftInputs::default()
        }
    }

    #[test]
    fn off_the_formula() {
        assert!(!is_off(&inputs(3, 3, None)));
        assert!(is_off(&inputs(11, 10, None)));
        let mut dead_band = inputs(11, 10, None);
        dead_band.exact_tolerance_configured = false;
        assert!(!is_off(&dead_band), "inside the 10 % band by design");
        dead_band.formula = 12;
        assert!(is_off(&dead_band));
    }

    #[test]
    fn causes_in_order() {
        let t0 = Some(0.0);
        let mut cases: Vec<(DriftInputs, &str)> = vec![
            (inputs(3, 1, None), "no_hpa"),
            // 11 wanted, 10 running: the dead band holds the HPA at 10.
            (inputs(11, 10, Some(hpa(10, None))), "tolerance_dropped"),
            (inputs(4, 2, Some(hpa(4, t0))), "unknown"),
            (inputs(1, 3, Some(hpa(3, t0))), "scale_down_stabilization"),
        ];
        let mut not_scaling = inputs(4, 2, Some(hpa(2, t0)));
        if let Some(h) = not_scaling.hpa.as_mut() {
            h.not_scaling = Some("the HPA was unable to compute the replica count".into());
        }
        cases.push((not_scaling, "hpa_not_scaling"));
        let mut capped = inputs(4, 2, Some(hpa(2, t0)));
        if let Some(h) = capped.hpa.as_mut() {
            h.max_replicas = 2;
        }
        cases.push((capped, "hpa_maximum"));
        let mut quota = inputs(4, 2, Some(hpa(4, t0)));
        quota.spec_replicas = Some(4);
        quota.replica_failure = Some("pods \"w-x\" is forbidden: exceeded quota: q".into());
        quota.pending = 2;
        cases.push((quota, "quota"));
        let mut pending = inputs(4, 2, Some(hpa(4, t0)));
        pending.spec_replicas = Some(4);
        pending.pending = 2;
        pending.unschedulable = Some("0/3 nodes are available: Insufficient cpu".into());
        cases.push((pending, "pending_pods"));
        let mut starved = inputs(4, 2, Some(hpa(2, t0)));
        starved.starved = true;
        cases.push((starved, "parallelism_cap"));
        for (i, want) in cases {
            let c = cause(&i);
            assert_eq!(c.label(), want, "{i:?}");
            assert!(!c.describe().is_empty());
        }
        assert!(
            cause(&inputs(11, 10, Some(hpa(10, None))))
                .describe()
                .starts_with("tolerance dropped")
        );
    }

    #[test]
    fn drift_needs_to_last() {
        let mut t = DriftTracker::default();
        let now = Instant::now();
        let after = Duration::from_secs(60);
        assert!(!t.observe(true, now, after));
        assert!(!t.observe(true, now + Duration::from_secs(59), after));
        assert!(t.observe(true, now + Duration::from_secs(61), after));
        assert!(!t.observe(false, now + Duration::from_secs(62), after));
        assert_eq!(t.age(now), None);
        assert!(!t.observe(true, now + Duration::from_secs(63), after));
    }
}
