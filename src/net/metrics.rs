//! zoned's metrics (N7) in the Prometheus text format (version 0.0.4): the zone's gauges
//! (members by update status, the operation's state, seconds to activation), read from the
//! store at each scrape, and the process's counters (requests and errors by path and kind,
//! group-commit batch sizes, refusals audited and suppressed, connections, handshakes, the
//! chain served).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::tls::ChainCounts;

/// Upper bounds of the batch-size histogram's buckets (messages per group commit).
const BATCH_BUCKETS: [u64; 7] = [1, 2, 8, 32, 128, 256, 1024];

/// The process's counters; cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (path, status) → requests answered.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// (path, kind) → refusals and failures answered with an `ApiError` of that kind.
    errors: Mutex<BTreeMap<(String, String), u64>>,
    batches: AtomicU64,
    batch_messages: AtomicU64,
    batch_buckets: [AtomicU64; BATCH_BUCKETS.len()],
    batch_max: AtomicU64,
    /// Refusals written to the audit log.
    pub refusals_audited: AtomicU64,
    /// Refusals not audited because their peer had reached its rate (counted here instead).
    pub refusals_suppressed: AtomicU64,
    /// Refusals whose audit failed (the store refused the entry).
    pub refusals_failed: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Requests being answered now (headers read, answer not yet sent).
    pub requests_in_flight: AtomicU64,
    /// Connections closed at once because the limit of open connections was reached.
    pub connections_rejected: AtomicU64,
    /// TLS handshakes that failed (the client's certificate refused, a protocol error).
    pub handshake_failures: AtomicU64,
    /// TLS handshakes that did not finish in time.
    pub handshake_timeouts: AtomicU64,
    /// Runs of the zone's scheduled work that activated an operation (N6).
    pub activations: AtomicU64,
    /// Failures of the zone's scheduled work or of the server's own agent.
    pub background_errors: AtomicU64,
}

/// The zone's state at a scrape.
#[derive(Debug, Clone, Default)]
pub struct ZoneGauges {
    /// Members of the zone.
    pub members: u64,
    /// Members of the running (or last) operation by update status (`op show`'s statuses).
    pub by_status: BTreeMap<String, u64>,
    /// The running or last operation: id, kind, state.
    pub operation: Option<(u64, String, String)>,
    /// Whether an operation is running.
    pub running: bool,
    /// Seconds until the running operation activates (negative: overdue).
    pub seconds_to_activation: Option<i64>,
}

impl Metrics {
    /// A request to `path` was answered with `status`.
    pub fn request(&self, path: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((path.to_string(), status)).or_default() += 1;
    }

    /// A request to `path` was refused or failed with an error of `kind`.
    pub fn error(&self, path: &str, kind: &str) {
        let mut m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((path.to_string(), kind.to_string())).or_default() += 1;
    }

    /// A group commit answered `size` messages.
    pub fn batch(&self, size: usize) {
        let size = size as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_messages.fetch_add(size, Ordering::Relaxed);
        self.batch_max.fetch_max(size, Ordering::Relaxed);
        for (bound, count) in BATCH_BUCKETS.iter().zip(&self.batch_buckets) {
            if size <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// How many group commits ran, and the largest.
    pub fn batches(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.batch_max.load(Ordering::Relaxed),
        )
    }

    /// The Prometheus text of these counters, the zone's gauges, the chains served and the
    /// refusals the sink dropped.
    pub fn render(&self, zone: &ZoneGauges, chains: &ChainCounts, sink_dropped: u64) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "zoned_members",
            "Members of the zone.",
            zone.members,
        );
        header(
            &mut out,
            "zoned_members_by_update_status",
            "gauge",
            "Members of the running (or last) operation by update status.",
        );
        for (status, n) in &zone.by_status {
            let _ = writeln!(
                out,
                "zoned_members_by_update_status{{status=\"{}\"}} {n}",
                escape(status)
            );
        }
        gauge(
            &mut out,
            "zoned_operation_running",
            "Whether an operation is running (1) or not (0).",
            u64::from(zone.running),
        );
        header(
            &mut out,
            "zoned_operation_info",
            "gauge",
            "The running (or last) operation: id, kind and state as labels.",
        );
        if let Some((id, kind, state)) = &zone.operation {
            let _ = writeln!(
                out,
                "zoned_operation_info{{id=\"{id}\",kind=\"{}\",state=\"{}\"}} 1",
                escape(kind),
                escape(state)
            );
        }
        header(
            &mut out,
            "zoned_seconds_to_activation",
            "gauge",
            "Seconds until the running operation activates (negative: overdue).",
        );
        if let Some(s) = zone.seconds_to_activation {
            let _ = writeln!(out, "zoned_seconds_to_activation {s}");
        }
        header(
            &mut out,
            "zoned_requests_total",
            "counter",
            "Requests answered, by path and HTTP status.",
        );
        for ((path, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "zoned_requests_total{{path=\"{}\",status=\"{status}\"}} {n}",
                escape(path)
            );
        }
        header(
            &mut out,
            "zoned_request_errors_total",
            "counter",
            "Requests refused or failed, by path and error kind.",
        );
        for ((path, kind), n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "zoned_request_errors_total{{path=\"{}\",kind=\"{}\"}} {n}",
                escape(path),
                escape(kind)
            );
        }
        header(
            &mut out,
            "zoned_poll_batch_size",
            "histogram",
            "Agent messages answered per group commit.",
        );
        for (bound, count) in BATCH_BUCKETS.iter().zip(&self.batch_buckets) {
            let _ = writeln!(
                out,
                "zoned_poll_batch_size_bucket{{le=\"{bound}\"}} {}",
                load(count)
            );
        }
        let _ = writeln!(
            out,
            "zoned_poll_batch_size_bucket{{le=\"+Inf\"}} {}",
            load(&self.batches)
        );
        let _ = writeln!(
            out,
            "zoned_poll_batch_size_sum {}",
            load(&self.batch_messages)
        );
        let _ = writeln!(out, "zoned_poll_batch_size_count {}", load(&self.batches));
        counter(
            &mut out,
            "zoned_refusals_audited_total",
            "Refusals written to the audit log.",
            load(&self.refusals_audited),
        );
        counter(
            &mut out,
            "zoned_refusals_suppressed_total",
            "Refusals not audited: their peer exceeded its audit rate, or the queue was full.",
            load(&self.refusals_suppressed) + sink_dropped,
        );
        counter(
            &mut out,
            "zoned_refusals_audit_failed_total",
            "Refusals whose audit entry the store refused.",
            load(&self.refusals_failed),
        );
        counter(
            &mut out,
            "zoned_connections_total",
            "Connections accepted.",
            load(&self.connections),
        );
        gauge(
            &mut out,
            "zoned_connections_open",
            "Connections open now.",
            load(&self.connections_open),
        );
        gauge(
            &mut out,
            "zoned_requests_in_flight",
            "Requests being answered now.",
            load(&self.requests_in_flight),
        );
        counter(
            &mut out,
            "zoned_connections_rejected_total",
            "Connections closed at once: too many open.",
            load(&self.connections_rejected),
        );
        counter(
            &mut out,
            "zoned_tls_handshake_failures_total",
            "TLS handshakes that failed.",
            load(&self.handshake_failures),
        );
        counter(
            &mut out,
            "zoned_tls_handshake_timeouts_total",
            "TLS handshakes that did not finish in time.",
            load(&self.handshake_timeouts),
        );
        header(
            &mut out,
            "zoned_tls_chains_served_total",
            "counter",
            "Handshakes by the chain served (N4): full (no bridge), plain, bridged.",
        );
        for (which, n) in [
            ("full", &chains.full),
            ("plain", &chains.plain),
            ("bridged", &chains.bridged),
        ] {
            let _ = writeln!(
                out,
                "zoned_tls_chains_served_total{{chain=\"{which}\"}} {}",
                load(n)
            );
        }
        counter(
            &mut out,
            "zoned_activations_total",
            "Operations activated by the scheduled work (N6).",
            load(&self.activations),
        );
        counter(
            &mut out,
            "zoned_background_errors_total",
            "Failures of the scheduled work or of the server's own agent.",
            load(&self.background_errors),
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value as the text format wants it (backslash, quote and newline escaped).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_the_histogram_cumulatively() {
        let m = Metrics::default();
        m.batch(1);
        m.batch(30);
        m.batch(300);
        let text = m.render(&ZoneGauges::default(), &ChainCounts::default(), 0);
        assert!(
            text.contains("zoned_poll_batch_size_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("zoned_poll_batch_size_bucket{le=\"32\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("zoned_poll_batch_size_bucket{le=\"256\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("zoned_poll_batch_size_bucket{le=\"1024\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("zoned_poll_batch_size_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("zoned_poll_batch_size_sum 331\n"), "{text}");
        assert_eq!(m.batches(), (3, 300));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.error("/v1/poll", "a \"b\"\nc\\");
        let text = m.render(&ZoneGauges::default(), &ChainCounts::default(), 0);
        assert!(text.contains("kind=\"a \\\"b\\\"\\nc\\\\\"} 1\n"), "{text}");
    }
}
