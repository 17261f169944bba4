//! `GET /metrics`: Prometheus text exposition (version 0.0.4) of builds by status, queue length,
//! running builds, step durations, bytes pushed/pulled and cache hits.
//!
//! Must not: block — counters are atomics, read once per scrape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::Status;

#[derive(Default)]
pub(crate) struct Metrics {
    submitted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    step_count: AtomicU64,
    step_ms: AtomicU64,
    /// Step-duration histogram buckets (cumulative at render time).
    buckets: [AtomicU64; BUCKETS.len()],
    pub bytes_pushed: AtomicU64,
    pub bytes_pulled: AtomicU64,
    pub cache_hits: AtomicU64,
}

/// Upper bounds of the step-duration buckets, in seconds.
const BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

impl Metrics {
    pub(crate) fn queued(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, s: Status) {
        let c = match s {
            Status::Succeeded => &self.succeeded,
            Status::Failed => &self.failed,
            Status::Cancelled => &self.cancelled,
            Status::Queued | Status::Running => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn step(&self, duration_ms: u64) {
        self.step_count.fetch_add(1, Ordering::Relaxed);
        self.step_ms.fetch_add(duration_ms, Ordering::Relaxed);
        let secs = duration_ms as f64 / 1000.0;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn render(&self, queued: usize, running: usize) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP kiln_builds_total Builds finished by this daemon, by final status.\n# TYPE kiln_builds_total counter"
        );
        for (st, c) in [
            ("succeeded", &self.succeeded),
            ("failed", &self.failed),
            ("cancelled", &self.cancelled),
        ] {
            let _ = writeln!(s, "kiln_builds_total{{status=\"{st}\"}} {}", g(c));
        }
        let _ = writeln!(
            s,
            "# HELP kiln_builds_submitted_total Builds accepted.\n# TYPE kiln_builds_submitted_total counter\nkiln_builds_submitted_total {}",
            g(&self.submitted)
        );
        let _ = writeln!(
            s,
            "# HELP kiln_queue_length Builds waiting for a slot.\n# TYPE kiln_queue_length gauge\nkiln_queue_length {queued}"
        );
        let _ = writeln!(
            s,
            "# HELP kiln_builds_running Builds running now.\n# TYPE kiln_builds_running gauge\nkiln_builds_running {running}"
        );
        let _ = writeln!(
            s,
            "# HELP kiln_step_duration_seconds Duration of build steps.\n# TYPE kiln_step_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += g(c);
            let _ = writeln!(
                s,
                "kiln_step_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = g(&self.step_count);
        let _ = writeln!(
            s,
            "kiln_step_duration_seconds_bucket{{le=\"+Inf\"}} {count}\nkiln_step_duration_seconds_sum {:.3}\nkiln_step_duration_seconds_count {count}",
            g(&self.step_ms) as f64 / 1000.0
        );
        for (name, help, c) in [
            (
                "kiln_bytes_pushed_total",
                "Blob bytes pushed to registries.",
                &self.bytes_pushed,
            ),
            (
                "kiln_bytes_pulled_total",
                "Blob bytes pulled from registries.",
                &self.bytes_pulled,
            ),
            (
                "kiln_cache_hits_total",
                "Build steps answered from the cache.",
                &self.cache_hits,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                g(c)
            );
        }
        s
    }
}
