//! The webhook's Prometheus metrics. Label values come from fixed sets only (outcomes, reload
//! kinds and results, warning kinds), never from pods.
//!
//! One [`Metrics`] per webhook; the review code is handed it and counts warnings where they
//! are reported ([`Metrics::warning`]).

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::{review::Outcome, warning::WarningKind};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    what: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabels {
    what: &'static str,
}

fn latency_histogram() -> Histogram {
    // 25 µs … ~0.4 s
    Histogram::new(exponential_buckets(0.000_025, 2.0, 15))
}

/// What a reload was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The policy file.
    Policy,
    /// The certificate / key pair.
    Certificate,
}

impl Reloaded {
    fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Certificate => "certificate",
        }
    }
}

/// All webhook metrics, cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    reviews: Family<OutcomeLabels, Counter>,
    latency: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    warnings: Family<KindLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    loaded: Family<WhatLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric (prefix `airflow_keda_scaler_webhook_`).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("airflow_keda_scaler_webhook");
        let reviews = Family::<OutcomeLabels, Counter>::default();
        let latency = Family::<OutcomeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let warnings = Family::<KindLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let loaded = Family::<WhatLabels, Gauge>::default();
        registry.register(
            "reviews",
            "Admission reviews answered, by outcome (mutated, unchanged, denied, skipped, invalid, unavailable, error)",
            reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to answer one admission review, from the body read to the response, by outcome",
            latency.clone(),
        );
        registry.register(
            "warnings",
            "Warnings about admitted or denied task pods, by kind (also sent to the client, put on the pod as the airflow-keda-scaler/warnings annotation and logged)",
            warnings.clone(),
        );
        for kind in WarningKind::ALL {
            drop(warnings.get_or_create(&KindLabels {
                kind: kind.as_str(),
            }));
        }
        registry.register(
            "reloads",
            "Reloads of the policy and the TLS certificate, by result (ok, error)",
            reloads.clone(),
        );
        registry.register(
            "loaded",
            "1 when a valid policy / certificate is loaded",
            loaded.clone(),
        );
        for what in [Reloaded::Policy, Reloaded::Certificate] {
            loaded
                .get_or_create(&WhatLabels {
                    what: what.as_str(),
                })
                .set(0);
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                reviews,
                latency,
                warnings,
                reloads,
                loaded,
            }),
        }
    }

    /// Counts one review and its latency.
    pub fn review(&self, outcome: Outcome, seconds: f64) {
        let l = OutcomeLabels {
            outcome: outcome.as_str(),
        };
        self.inner.reviews.get_or_create(&l).inc();
        self.inner.latency.get_or_create(&l).observe(seconds);
    }

    /// Counts one warning of `kind` (see [`crate::webhook::warning`]).
    pub fn warning(&self, kind: WarningKind) {
        self.inner
            .warnings
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Counts one reload attempt.
    pub fn reload(&self, what: Reloaded, ok: bool) {
        self.inner
            .reloads
            .get_or_create(&ReloadLabels {
                what: what.as_str(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        if ok {
            self.inner
                .loaded
                .get_or_create(&WhatLabels {
                    what: what.as_str(),
                })
                .set(1);
        }
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_reviews_by_outcome() {
        let m = Metrics::new();
        m.review(Outcome::Mutated, 0.001);
        m.review(Outcome::Denied, 0.002);
        m.reload(Reloaded::Policy, true);
        m.warning(WarningKind::Sidecar);
        let text = m.encode();
        assert!(
            text.contains(r#"airflow_keda_scaler_webhook_reviews_total{outcome="mutated"} 1"#),
            "{text}"
        );
        assert!(text.contains("airflow_keda_scaler_webhook_review_duration_seconds_bucket"));
        assert!(
            text.contains(
                r#"airflow_keda_scaler_webhook_warnings_total{kind="no-base-container"}"#
            ),
            "every warning kind is exposed from the start: {text}"
        );
        assert!(
            text.contains(r#"airflow_keda_scaler_webhook_warnings_total{kind="sidecar"} 1"#),
            "{text}"
        );
        assert!(
            !Metrics::new().encode().contains(r#"{kind="sidecar"} 1"#),
            "each registry counts its own warnings"
        );
        assert!(
            text.contains(r#"airflow_keda_scaler_webhook_loaded{what="policy"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"airflow_keda_scaler_webhook_reloads_total{what="policy",result="ok"} 1"#
            ),
            "{text}"
        );
    }
}
