//! Logs and metrics setup.
//!
//! Logs are human-readable on a terminal and JSON lines otherwise (what log
//! shippers want); every line inside a request carries that request's id
//! through the request span. Metrics go to one process-wide Prometheus
//! recorder rendered by `GET /metrics`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global tracing subscriber. Safe to call more than once
/// (later calls do nothing), which keeps tests simple.
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().with_current_span(true).with_span_list(false).flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Latency buckets in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Counters an alert watches exist from the start at 0, so "no errors yet"
/// and "no data" look different on a dashboard.
fn register_counters() {
    for operation in ["append_events", "api"] {
        metrics::counter!("dealbridge_store_errors_total", "operation" => operation).absolute(0);
    }
    for outcome in ["swapped", "rejected"] {
        metrics::counter!("dealbridge_mapping_reloads_total", "outcome" => outcome).absolute(0);
    }
    metrics::counter!("dealbridge_outbox_published_total").absolute(0);
    metrics::counter!("dealbridge_engine_problems_total").absolute(0);
}

/// The process-wide metrics handle, installing the recorder on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZE_BUCKETS))
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (embedding); then
            // this handle still renders, just without global macros.
            let _ = metrics::set_global_recorder(recorder);
            register_counters();
            handle
        })
        .clone()
}
