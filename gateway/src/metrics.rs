//! `GET /metrics`: the gateway's counters and the runtime's statistics in Prometheus's text
//! exposition format (version 0.0.4), written by hand: a few dozen series of counters, gauges
//! and histograms do not need a metrics library (docs/DESIGN.md, "Why each dependency"). Every
//! metric is documented in docs/PROTOCOL.md ("Metrics").
//!
//! Most values are the counters that `GET /stats` serves as well ([`Counters`]), read when
//! scraped; the two that need labels, requests by op and result code and closes by close
//! code, are tallied apart ([`Tallies`](crate::stats::Tallies)).

use std::fmt::{Display, Write};

use presence_runtime::{LatencyHistogram, RuntimeHistograms, RuntimeStats, LATENCY_BUCKET_BOUNDS_US};

use crate::protocol::Op;
use crate::shared::{Backend, Shared};
use crate::stats::{Counters, GatewayStats};

/// The `Content-Type` of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `op` label of a frame that is not a request (not JSON, no `id` or `op`, an unknown op,
/// a binary frame): a label's values must be a small fixed set, never what a client wrote.
pub(crate) const OP_INVALID: &str = "invalid";

/// The `op` label of a request.
pub(crate) fn op_label(op: &Op) -> &'static str {
    match op {
        Op::Login { .. } => "login",
        Op::Heartbeat {} => "heartbeat",
        Op::SetStatus { .. } => "set_status",
        Op::GetStatus { .. } => "get_status",
        Op::Subscribe { .. } => "subscribe",
        Op::Unsubscribe { .. } => "unsubscribe",
        Op::Logout {} => "logout",
    }
}

/// The text being written: families of samples, each family once, with its help and type.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: `# HELP` and `# TYPE`.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the family just started.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family of one sample without labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram of latencies, in seconds: cumulative buckets, `+Inf`, sum and count.
    fn histogram(&mut self, name: &str, help: &str, histogram: &LatencyHistogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound_us, count) in LATENCY_BUCKET_BOUNDS_US.iter().zip(histogram.counts) {
            cumulative += count;
            self.sample(&bucket, &[("le", &seconds(*bound_us))], cumulative);
        }
        let count = histogram.count();
        self.sample(&bucket, &[("le", "+Inf")], count);
        self.sample(&format!("{name}_sum"), &[], seconds(histogram.sum_us));
        self.sample(&format!("{name}_count"), &[], count);
    }
}

/// Microseconds as seconds, as Prometheus writes numbers (`0.00005`, `2.5`, `10`).
fn seconds(us: u64) -> String {
    // f64 holds every whole number of microseconds below 2^53 (285 years) exactly.
    (us as f64 / 1e6).to_string()
}

/// `# HELP` text: a backslash and a line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: a backslash, a double quote and a line feed escaped.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition of one gateway as of now.
pub(crate) fn render(shared: &Shared) -> String {
    let mut out = Exposition::default();
    let stats = shared.counters.read();
    let (anonymous, logged_in) = shared.connections_by_state();
    gateway(&mut out, &stats, (anonymous as u64, logged_in as u64), &shared.counters);
    // A cluster's runtimes are the nodes': they are not this process's to export.
    if let Backend::Local(handle) = &shared.backend {
        runtime(&mut out, &handle.stats(), &handle.histograms());
    }
    out.text
}

fn gateway(
    out: &mut Exposition,
    stats: &GatewayStats,
    (anonymous, logged_in): (u64, u64),
    counters: &Counters,
) {
    out.family(
        "presence_gateway_connections",
        "gauge",
        "Connections open now, by state: anonymous (plain HTTP, or a WebSocket not logged in yet) or logged_in.",
    );
    out.sample("presence_gateway_connections", &[("state", "anonymous")], anonymous);
    out.sample("presence_gateway_connections", &[("state", "logged_in")], logged_in);
    out.single(
        "presence_gateway_connections_accepted_total",
        "counter",
        "Connections accepted since the gateway started.",
        stats.connections_total,
    );
    out.family(
        "presence_gateway_connections_refused_total",
        "counter",
        "Connections refused at accept, by reason: full (max_connections, or shutting down) or address (max_connections_per_address).",
    );
    out.sample(
        "presence_gateway_connections_refused_total",
        &[("reason", "full")],
        stats.connections_refused.saturating_sub(stats.connections_refused_address),
    );
    out.sample(
        "presence_gateway_connections_refused_total",
        &[("reason", "address")],
        stats.connections_refused_address,
    );
    out.single(
        "presence_gateway_connections_evicted_total",
        "counter",
        "Connections not logged in closed (1013) to make room for a newer one.",
        stats.connections_evicted,
    );
    out.single(
        "presence_gateway_accept_errors_total",
        "counter",
        "Accepts that failed (most often for lack of file descriptors); each is followed by a short back-off.",
        stats.accept_errors,
    );

    let requests = counters.tallies.requests();
    out.family(
        "presence_gateway_requests_total",
        "counter",
        "Requests answered, by op (invalid: a frame that is not a request) and the reply's code (0: ok).",
    );
    for ((op, code), n) in &requests {
        out.sample("presence_gateway_requests_total", &[("op", op), ("code", &code.to_string())], n);
    }
    out.family(
        "presence_gateway_logins_total",
        "counter",
        "Logins answered, by the reply's code: 0 logged in, otherwise why it was refused (8006 bad token, 8007 expired, ...).",
    );
    for ((_, code), n) in requests.iter().filter(|((op, _), _)| *op == "login") {
        out.sample("presence_gateway_logins_total", &[("code", &code.to_string())], n);
    }
    out.single(
        "presence_gateway_requests_shed_total",
        "counter",
        "Requests answered Busy (8008) because the engine's queue was full.",
        stats.requests_shed,
    );
    out.single(
        "presence_gateway_heartbeats_shed_total",
        "counter",
        "WebSocket pings whose heartbeat was dropped because the engine's queue was full.",
        stats.heartbeats_shed,
    );

    out.single(
        "presence_gateway_notices_queued_total",
        "counter",
        "Status notices and kicks queued onto sockets.",
        stats.notices_queued,
    );
    out.family(
        "presence_gateway_notices_dropped_total",
        "counter",
        "Notices not queued, by reason: unrouted (no socket here serves the device) or slow_reader (its socket's queue was full, or the socket closing).",
    );
    out.sample("presence_gateway_notices_dropped_total", &[("reason", "unrouted")], stats.notices_unrouted);
    out.sample("presence_gateway_notices_dropped_total", &[("reason", "slow_reader")], stats.notices_dropped);

    out.family(
        "presence_gateway_closes_total",
        "counter",
        "WebSockets closed, by close code and reason (client_gone: the client closed or the connection broke).",
    );
    for (code, reason, n) in counters.tallies.closes() {
        out.sample("presence_gateway_closes_total", &[("code", &code.to_string()), ("reason", &reason)], n);
    }
}

fn runtime(out: &mut Exposition, stats: &RuntimeStats, histograms: &RuntimeHistograms) {
    out.single(
        "presence_runtime_queue_depth",
        "gauge",
        "Commands waiting in the engine's queue now.",
        stats.queue_depth,
    );
    out.single(
        "presence_runtime_queue_capacity",
        "gauge",
        "How many commands the engine's queue holds at most.",
        stats.queue_capacity,
    );
    out.single(
        "presence_runtime_turns_total",
        "counter",
        "Turns run, ticks included: each one group commit (append and sync).",
        stats.turns,
    );
    out.family(
        "presence_runtime_commands_total",
        "counter",
        "Commands (and heartbeats by session handle) run, by result: ok, or refused by the engine or failed by the store.",
    );
    out.sample("presence_runtime_commands_total", &[("result", "ok")], stats.commands);
    out.sample("presence_runtime_commands_total", &[("result", "refused")], stats.refused);
    out.single(
        "presence_runtime_shed_total",
        "counter",
        "Requests the engine's full queue refused (load shed).",
        stats.shed,
    );
    out.single("presence_runtime_reads_total", "counter", "Reads run between turns.", stats.reads);
    out.single("presence_runtime_events_total", "counter", "Events appended to the log.", stats.events);
    out.single(
        "presence_runtime_appended_bytes_total",
        "counter",
        "Bytes of batches appended to the log since the runtime started.",
        stats.bytes_appended,
    );
    out.single(
        "presence_runtime_deliveries_total",
        "counter",
        "Notices handed to the gateway, one per recipient device.",
        stats.deliveries,
    );
    out.single(
        "presence_runtime_store_failures_total",
        "counter",
        "Appends the store refused (their commands failed and changed nothing).",
        stats.store_failures,
    );
    out.single(
        "presence_runtime_sink_panics_total",
        "counter",
        "Panics caught from the notice sink.",
        stats.sink_panics,
    );
    out.family(
        "presence_runtime_snapshots_total",
        "counter",
        "Snapshots, by result: saved, or failed (the log is intact; the next one tries again).",
    );
    out.sample("presence_runtime_snapshots_total", &[("result", "saved")], stats.snapshots);
    out.sample("presence_runtime_snapshots_total", &[("result", "failed")], stats.snapshot_failures);
    out.single(
        "presence_runtime_snapshot_sequence",
        "gauge",
        "The log sequence number the newest snapshot saved by this runtime covers (0: none yet).",
        stats.snapshot_seq,
    );
    out.histogram(
        "presence_runtime_turn_duration_seconds",
        "How long a turn of commands took (ticks are not timed), from taking its first command to handing out its notices.",
        &histograms.turn,
    );
    out.histogram(
        "presence_runtime_sync_duration_seconds",
        "How long the store's sync took, per turn of commands that logged something.",
        &histograms.sync,
    );
    out.histogram(
        "presence_runtime_reply_duration_seconds",
        "How long a command waited for its reply, from being queued to being answered.",
        &histograms.reply,
    );
    out.histogram(
        "presence_runtime_snapshot_pause_duration_seconds",
        "How long the runtime stopped between turns to capture its state for a snapshot.",
        &histograms.snapshot_pause,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_in_seconds_with_inf_sum_and_count() {
        let mut counts = [0u64; presence_runtime::LATENCY_BUCKETS];
        counts[0] = 2;
        counts[3] = 1;
        counts[17] = 1;
        let histogram = LatencyHistogram { counts, sum_us: 12_000_600 };
        let mut out = Exposition::default();
        out.histogram("x_seconds", "a help \\ with\nlines", &histogram);
        let lines: Vec<&str> = out.text.lines().collect();
        assert_eq!(lines[0], "# HELP x_seconds a help \\\\ with\\nlines");
        assert_eq!(lines[1], "# TYPE x_seconds histogram");
        assert_eq!(lines[2], "x_seconds_bucket{le=\"0.00005\"} 2");
        assert_eq!(lines[4], "x_seconds_bucket{le=\"0.00025\"} 2");
        assert_eq!(lines[5], "x_seconds_bucket{le=\"0.0005\"} 3");
        assert_eq!(lines[18], "x_seconds_bucket{le=\"10\"} 3");
        assert_eq!(lines[19], "x_seconds_bucket{le=\"+Inf\"} 4");
        assert_eq!(lines[20], "x_seconds_sum 12.0006");
        assert_eq!(lines[21], "x_seconds_count 4");
        assert_eq!(lines.len(), 22);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("m", &[("a", "q\"b\\n\nx"), ("b", "")], 1);
        assert_eq!(out.text, "m{a=\"q\\\"b\\\\n\\nx\",b=\"\"} 1\n");
    }
}
