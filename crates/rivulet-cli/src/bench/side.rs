//! The rivulet side of each scenario, through the public API only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rivulet::{Bus, Delivery, HandlerError, RedisBackend, RetryPolicy, StartFrom};

use super::{BATCH, PRODUCERS, Payloads, stamp_age};
use crate::error::CliError;

/// The key prefix of every rivulet key the bench writes.
pub(crate) const PREFIX: &str = "rivulet-bench";

/// Opens buses on one Redis.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    url: String,
}

fn counting_handler(
    done: Arc<AtomicUsize>,
    fail_one_in: Option<u64>,
) -> impl Fn(Delivery<Bytes>) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static
{
    move |d: Delivery<Bytes>| {
        if let Some(k) = fail_one_in
            && d.attempt() == 1
            && fnv(d.message_id().as_str().as_bytes()).is_multiple_of(k)
        {
            return std::future::ready(Err(HandlerError::retryable("bench: planned failure")));
        }
        done.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok(()))
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

async fn wait_for(done: &AtomicUsize, n: usize, deadline: Instant) -> Result<(), CliError> {
    while done.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return Err(CliError::runtime(format!(
                "rivulet consumer: deadline passed with {}/{n} handled",
                done.load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(())
}

impl Side {
    pub(crate) fn new(url: &str) -> Self {
        Side {
            url: url.to_owned(),
        }
    }

    pub(crate) async fn bus(&self) -> Result<Bus, CliError> {
        let backend = RedisBackend::builder(self.url.clone())
            .prefix(PREFIX)
            .build()
            .await?;
        Ok(Bus::builder(backend)
            .app("bench")
            .block_timeout(Duration::from_millis(100))
            .retry_mover_interval(Duration::from_millis(50))
            .retry(RetryPolicy::default().backoff(Duration::ZERO))
            .build()?)
    }

    async fn produce(
        bus: &Bus,
        topic: &str,
        n: usize,
        payloads: &Payloads,
    ) -> Result<(), CliError> {
        let per = n.div_ceil(PRODUCERS);
        let mut tasks = Vec::new();
        for p in 0..PRODUCERS {
            let count = per.min(n.saturating_sub(p * per));
            let (bus, topic, payloads) = (bus.clone(), topic.to_owned(), payloads.clone());
            tasks.push(tokio::spawn(async move {
                let mut left = count;
                while left > 0 {
                    let k = left.min(BATCH);
                    let batch: Vec<Bytes> = (0..k).map(|_| payloads.next()).collect();
                    bus.publish_batch_raw(&topic, batch).await?;
                    left -= k;
                }
                Ok::<(), rivulet::Error>(())
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| CliError::runtime(format!("producer task: {e}")))??;
        }
        Ok(())
    }

    /// Producers and a consumer together; returns the time until all `n` were handled.
    /// With `fail_one_in`, about one message in that many fails its first attempt.
    pub(crate) async fn e2e(
        &self,
        topic: &str,
        n: usize,
        payloads: &Payloads,
        fail_one_in: Option<u64>,
    ) -> Result<Duration, CliError> {
        let bus = self.bus().await?;
        let done = Arc::new(AtomicUsize::new(0));
        bus.subscribe_raw(topic, "noop", counting_handler(done.clone(), fail_one_in))
            .concurrency(BATCH)
            .await?;
        let start = Instant::now();
        Self::produce(&bus, topic, n, payloads).await?;
        wait_for(&done, n, super::raw::deadline_for(n)).await?;
        let elapsed = start.elapsed();
        bus.shutdown().await;
        Ok(elapsed)
    }

    /// Consumes a backlog written beforehand; returns the time to drain it.
    pub(crate) async fn drain(
        &self,
        topic: &str,
        n: usize,
        payloads: &Payloads,
    ) -> Result<Duration, CliError> {
        let bus = self.bus().await?;
        Self::produce(&bus, topic, n, payloads).await?;
        let done = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        bus.subscribe_raw(topic, "noop", counting_handler(done.clone(), None))
            .concurrency(BATCH)
            .start_from(StartFrom::Beginning)
            .await?;
        wait_for(&done, n, super::raw::deadline_for(n)).await?;
        let elapsed = start.elapsed();
        bus.shutdown().await;
        Ok(elapsed)
    }

    /// One awaited publish at a time, optionally with `idle_subs` idle subscriptions on
    /// the same bus.
    pub(crate) async fn publish_latency(
        &self,
        topic: &str,
        n: usize,
        payloads: &Payloads,
        idle_subs: usize,
    ) -> Result<Histogram<u64>, CliError> {
        let bus = self.bus().await?;
        for i in 0..idle_subs {
            bus.subscribe_raw(
                &format!("{topic}.idle{i}"),
                "idle",
                |_d: Delivery<Bytes>| std::future::ready(Ok::<(), HandlerError>(())),
            )
            .await?;
        }
        let mut h = super::histogram()?;
        for _ in 0..n {
            let t = Instant::now();
            bus.publish_raw(topic, payloads.next()).await?;
            super::record(&mut h, t.elapsed());
        }
        bus.shutdown().await;
        Ok(h)
    }

    /// Publishes at `rate` per second; records publish → handler start.
    pub(crate) async fn handle_latency(
        &self,
        topic: &str,
        n: usize,
        rate: u32,
        payloads: &Payloads,
    ) -> Result<Histogram<u64>, CliError> {
        let bus = self.bus().await?;
        let hist = Arc::new(Mutex::new(super::histogram()?));
        let done = Arc::new(AtomicUsize::new(0));
        let (h2, d2) = (hist.clone(), done.clone());
        bus.subscribe_raw(topic, "latency", move |d: Delivery<Bytes>| {
            if let Some(age) = stamp_age(d.payload())
                && let Ok(mut h) = h2.lock()
            {
                super::record(&mut h, age);
            }
            d2.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok::<(), HandlerError>(()))
        })
        .concurrency(16)
        .await?;
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        for _ in 0..n {
            tick.tick().await;
            bus.publish_raw(topic, payloads.next()).await?;
        }
        wait_for(&done, n, super::raw::deadline_for(n)).await?;
        bus.shutdown().await;
        let h = hist
            .lock()
            .map_err(|_| CliError::runtime("latency histogram lock poisoned"))?
            .clone();
        Ok(h)
    }

    /// Publishes `n` messages that nobody consumes (memory scenario).
    pub(crate) async fn fill(
        &self,
        topic: &str,
        n: usize,
        payloads: &Payloads,
    ) -> Result<(), CliError> {
        let bus = self.bus().await?;
        Self::produce(&bus, topic, n, payloads).await?;
        bus.shutdown().await;
        Ok(())
    }
}
