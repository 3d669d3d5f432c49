//! Request counters and latency histograms, served as Prometheus text at
//! `/metrics`, followed by the agents' Service proxy counters (collected by
//! the node gateway, [`crate::gateway::proxy_stats`]):
//!
//! | metric | type | what |
//! |---|---|---|
//! | `shturman_proxy_connections_total` | counter | connections accepted |
//! | `shturman_proxy_connections_active` | gauge | connections open |
//! | `shturman_proxy_connections_failed_total` | counter | connections closed because no endpoint could be reached |
//! | `shturman_proxy_bytes_in_total` | counter | bytes from clients to endpoints |
//! | `shturman_proxy_bytes_out_total` | counter | bytes from endpoints to clients |
//!
//! each labelled `{node, namespace, service, port}` (the Service port's
//! number); a node's counters start again from zero when its agent restarts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::gateway::proxy_stats::Sample;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    /// (verb, resource, code) → count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// verb → latency.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Watches currently open.
    pub watchers: AtomicI64,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((verb.to_string(), resource.to_string(), code))
                .or_default() += 1;
        }
        if let Ok(mut h) = self.latency.lock() {
            let h = h.entry(verb.to_string()).or_default();
            let secs = took.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// The Prometheus text exposition, plus `extra` gauges (name, value).
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP shturman_apiserver_requests_total API requests by verb, resource and code.\n");
        out.push_str("# TYPE shturman_apiserver_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((verb, resource, code), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "shturman_apiserver_requests_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP shturman_apiserver_request_duration_seconds API request latency by verb.\n");
        out.push_str("# TYPE shturman_apiserver_request_duration_seconds histogram\n");
        if let Ok(h) = self.latency.lock() {
            for (verb, h) in h.iter() {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "shturman_apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",le=\"{bound}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "shturman_apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "shturman_apiserver_request_duration_seconds_sum{{verb=\"{verb}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "shturman_apiserver_request_duration_seconds_count{{verb=\"{verb}\"}} {}",
                    h.count
                );
            }
        }
        let _ = writeln!(out, "# HELP shturman_apiserver_watchers Watches currently open.");
        let _ = writeln!(out, "# TYPE shturman_apiserver_watchers gauge");
        let _ = writeln!(
            out,
            "shturman_apiserver_watchers {}",
            self.watchers.load(Ordering::Relaxed)
        );
        for (name, help, value) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

/// The proxy counters' families, one sample per node and Service port.
pub fn render_proxy(out: &mut String, samples: &[Sample]) {
    type Field = fn(&Sample) -> u64;
    let families: [(&str, &str, &str, Field); 5] = [
        (
            "shturman_proxy_connections_total",
            "counter",
            "Connections the Service proxies accepted.",
            |s| s.stats.accepted,
        ),
        (
            "shturman_proxy_connections_active",
            "gauge",
            "Connections the Service proxies have open.",
            |s| s.stats.active,
        ),
        (
            "shturman_proxy_connections_failed_total",
            "counter",
            "Connections closed because no endpoint could be reached.",
            |s| s.stats.failed,
        ),
        (
            "shturman_proxy_bytes_in_total",
            "counter",
            "Bytes the Service proxies carried from clients to endpoints.",
            |s| s.stats.bytes_in,
        ),
        (
            "shturman_proxy_bytes_out_total",
            "counter",
            "Bytes the Service proxies carried from endpoints to clients.",
            |s| s.stats.bytes_out,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in samples {
            let _ = writeln!(
                out,
                "{name}{{node=\"{}\",namespace=\"{}\",service=\"{}\",port=\"{}\"}} {}",
                escape(&s.node),
                escape(&s.stats.namespace),
                escape(&s.stats.name),
                s.stats.port,
                value(s)
            );
        }
    }
}

/// A label value as the text format wants it (`\`, `"` and newlines escaped).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_buckets() {
        let m = Metrics::default();
        m.observe("create", "pods", 201, Duration::from_millis(3));
        m.observe("create", "pods", 201, Duration::from_millis(30));
        let text = m.render(&[("shturman_store_revision", "Latest revision.", 7.0)]);
        assert!(
            text.contains(
                "shturman_apiserver_requests_total{verb=\"create\",resource=\"pods\",code=\"201\"} 2"
            )
        );
        assert!(
            text.contains(
                "shturman_apiserver_request_duration_seconds_bucket{verb=\"create\",le=\"0.005\"} 1"
            )
        );
        assert!(text.contains("shturman_apiserver_request_duration_seconds_count{verb=\"create\"} 2"));
        assert!(text.contains("shturman_store_revision 7"));
    }

    #[test]
    fn renders_proxy_counters_with_labels() {
        use shturman_api::wire::ProxyPortStats;
        let samples = [Sample {
            node: "pi-1".into(),
            stats: ProxyPortStats {
                namespace: "default".into(),
                name: "web".into(),
                port: 80,
                accepted: 60,
                active: 1,
                failed: 2,
                bytes_in: 300,
                bytes_out: 4000,
            },
        }];
        let mut text = String::new();
        render_proxy(&mut text, &samples);
        let labels = "{node=\"pi-1\",namespace=\"default\",service=\"web\",port=\"80\"}";
        for line in [
            format!("shturman_proxy_connections_total{labels} 60"),
            format!("shturman_proxy_connections_active{labels} 1"),
            format!("shturman_proxy_connections_failed_total{labels} 2"),
            format!("shturman_proxy_bytes_in_total{labels} 300"),
            format!("shturman_proxy_bytes_out_total{labels} 4000"),
            "# TYPE shturman_proxy_connections_active gauge".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
