//! `rivulet demo --metrics-listen ADDR`: the Prometheus endpoint during the run, and
//! after it until Ctrl-C, with the collector sampling the store's sizes.

use std::net::SocketAddr;
use std::time::Duration;

use rivulet::metrics::{Collector, CollectorHandle, Prometheus};

use super::backend::DemoBackend;
use crate::error::CliError;

/// How often the collector samples during the demo.
const EVERY: Duration = Duration::from_secs(1);

/// The endpoint and its collector.
#[derive(Debug)]
pub(crate) struct Exposed {
    addr: SocketAddr,
    /// Taken by the last sample.
    collector: Option<CollectorHandle>,
    backend: rivulet::AnyBackend,
}

/// Installs the Prometheus recorder with its listener on `addr` (before the bus and
/// the worker start, so their metrics bind to it) and starts the collector.
pub(crate) fn start(addr: SocketAddr, backend: &DemoBackend) -> Result<Exposed, CliError> {
    Prometheus::listen(addr)?;
    let collector = Collector::new(backend.any()).every(EVERY).spawn()?;
    Ok(Exposed {
        addr,
        collector: Some(collector),
        backend: backend.any(),
    })
}

impl Exposed {
    /// Stops the collector after one last sample, so that a scrape made once the
    /// summary is out sees the final sizes. The same collector takes it: it zeroes the
    /// gauges of groups that went away since its last tick (the broadcast group, at
    /// shutdown).
    pub(crate) async fn last_sample(&mut self) -> Result<(), CliError> {
        if let Some(handle) = self.collector.take() {
            let mut last = handle
                .stop()
                .await
                .unwrap_or_else(|| Collector::new(self.backend.clone()));
            last.collect_once().await?;
        }
        Ok(())
    }

    /// Says where the metrics are and serves them until Ctrl-C.
    pub(crate) async fn serve_until_ctrl_c(self, talk: bool) -> Result<(), CliError> {
        if talk {
            eprintln!(
                "rivulet demo: metrics at http://{}/metrics; Ctrl-C to stop",
                self.addr
            );
        }
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| CliError::runtime(format!("waiting for Ctrl-C: {e}")))
    }
}
