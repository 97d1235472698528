//! The Prometheus exporter (feature `prometheus`), on `metrics-exporter-prometheus`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};

/// Histogram buckets (seconds) for handler durations: 1 ms to 1 min.
pub const HANDLER_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram buckets (seconds) for job durations and wait times: 1 ms to 1 h.
const JOB_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];

/// How often histograms are compacted when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// The installed Prometheus recorder: [`render`](Prometheus::render) gives the text
/// exposition format for an endpoint the application mounts in its own HTTP router;
/// [`listen`](Prometheus::listen) also serves it on an address of its own.
///
/// ```no_run
/// # async fn f() -> rivulet::Result<()> {
/// let prometheus = rivulet::metrics::Prometheus::install()?;
/// // in your router: GET /metrics => prometheus.render()
/// # let _ = prometheus.render();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Prometheus {
    handle: PrometheusHandle,
}

impl fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prometheus").finish_non_exhaustive()
    }
}

fn builder() -> Result<PrometheusBuilder> {
    let bad = |e: metrics_exporter_prometheus::BuildError| {
        Error::config(format!("the Prometheus exporter: {e}"))
    };
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("rivulet_handler_duration_seconds".into()),
            HANDLER_BUCKETS,
        )
        .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("rivulet_job_".into()), JOB_BUCKETS))
        .map_err(bad)
}

fn set_global(recorder: metrics_exporter_prometheus::PrometheusRecorder) -> Result<()> {
    ::metrics::set_global_recorder(recorder).map_err(|_| {
        Error::config("a metrics recorder is installed already: install Prometheus once, before it")
    })
}

impl Prometheus {
    /// Installs a Prometheus recorder as the process's `metrics` recorder (install it
    /// before buses and workers start: their handles bind to the recorder of the time)
    /// and describes rivulet's metrics. Inside a Tokio runtime it also compacts
    /// histograms every 5 s; elsewhere each [`render`](Self::render) does.
    ///
    /// Fails with [`Error::Config`] when a recorder is installed already.
    pub fn install() -> Result<Prometheus> {
        let recorder = builder()?.build_recorder();
        let handle = recorder.handle();
        set_global(recorder)?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let h = handle.clone();
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(UPKEEP).await;
                    h.run_upkeep();
                }
            });
        }
        super::describe();
        Ok(Prometheus { handle })
    }

    /// Like [`install`](Self::install), and serves the metrics over HTTP on `addr`
    /// (every path answers with the exposition format) until the runtime stops. Must
    /// be called inside a Tokio runtime; an address that cannot be bound is an
    /// [`Error::Config`].
    pub fn listen(addr: SocketAddr) -> Result<Prometheus> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::config(
                "Prometheus::listen must be called inside a Tokio runtime",
            ));
        }
        let (recorder, exporter) = builder()?
            .with_http_listener(addr)
            .build()
            .map_err(|e| Error::config(format!("the Prometheus listener on {addr}: {e}")))?;
        let handle = recorder.handle();
        set_global(recorder)?;
        tokio::spawn(async move {
            if let Err(e) = exporter.await {
                tracing::error!(error = ?e, "the Prometheus listener stopped");
            }
        });
        super::describe();
        Ok(Prometheus { handle })
    }

    /// The current values in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}
