//! The publisher probe: publishes `count` uniquely identified messages at a steady rate
//! and logs every call as `{id, t_invoke, t_done, result, error}`.
//!
//! Even-numbered messages are published with their id as the caller-chosen message id
//! (the idempotent-publish script), odd ones with a generated id (plain `XADD`), so both
//! write paths are exercised. The payload always carries the id.
//!
//! With `copies` > 1 every message is published that many times in a row, each copy under
//! its own message id (`<id>~<copy>` for the even ones, generated for the odd ones) with
//! the same payload: what a producer retrying without its message id would do. Every
//! copy is logged under the message's id, with its copy number.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{Connect, JsonLines, Msg, PublishRecord, PublishResult, hash64, now_ms};

/// What the harness asks of one publisher process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PublisherConfig {
    pub(crate) connect: Connect,
    pub(crate) topic: String,
    /// Message ids are `<prefix><n:06>` for `n` in `0..count`.
    pub(crate) id_prefix: String,
    pub(crate) count: u64,
    pub(crate) rate_per_sec: u64,
    /// Calls allowed in flight at once.
    pub(crate) in_flight: usize,
    /// Padding length range (bytes), chosen per id from the seed.
    pub(crate) pad: [usize; 2],
    /// Ids published with a payload over the size limit (the call must fail).
    pub(crate) oversize: BTreeSet<String>,
    /// Safe retention applied by this process's background trimmer.
    #[serde(default)]
    pub(crate) retention: Option<Retention>,
    /// How many times each message is published (0 means 1).
    #[serde(default)]
    pub(crate) copies: u32,
    /// Every n-th message is published with `wait_for_replicas(1, 1 s)` (0: none).
    #[serde(default)]
    pub(crate) wait_replicas_every: u64,
    pub(crate) seed: u64,
    pub(crate) log: PathBuf,
}

/// Per-topic retention for the publisher's bus (the trimmer runs where messages are
/// published).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Retention {
    pub(crate) max_len: u64,
    pub(crate) trim_interval_ms: u64,
}

/// The id of message `n` of a publisher.
pub(crate) fn message_id(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:06}")
}

/// Sorts an error into `fail` (nothing was written) or `unknown` (it may have been).
///
/// Only errors raised before anything was sent, and error replies of the server (the
/// command was refused), are `fail`; every connection problem, timeout or indeterminate
/// outcome is `unknown`, never `fail`.
pub(crate) fn classify(e: &rivulet::Error) -> PublishResult {
    use rivulet::ErrorKind as K;
    match e.kind() {
        K::InvalidName
        | K::PayloadTooLarge
        | K::HeaderLimit
        | K::Codec
        | K::Config
        | K::Backpressure
        | K::Closed
        | K::NotAvailable => PublishResult::Fail,
        K::Redis => match e {
            // Error replies that mean the server refused the command before running it.
            rivulet::Error::Redis(re) => match re.kind() {
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::ReadOnly
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::Moved
                    | redis::ServerErrorKind::Ask
                    | redis::ServerErrorKind::CrossSlot
                    | redis::ServerErrorKind::NoPerm,
                ) => PublishResult::Fail,
                _ => PublishResult::Unknown,
            },
            _ => PublishResult::Unknown,
        },
        _ => PublishResult::Unknown,
    }
}

/// Runs the probe to completion.
pub(crate) async fn run(cfg: PublisherConfig) -> Result<(), String> {
    let log = Arc::new(JsonLines::open(&cfg.log).map_err(|e| format!("open log: {e}"))?);
    let deadline = now_ms() + cfg.connect.start_deadline_ms;
    let backend = loop {
        match cfg.connect.backend().await {
            Ok(b) => break b,
            Err(e) if now_ms() < deadline => {
                tracing::warn!(error = %e, "publisher: connect failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("connect: {e}")),
        }
    };
    let mut builder = rivulet::Bus::builder(backend)
        .app("chaos")
        .max_payload(cfg.connect.max_payload);
    if let Some(r) = cfg.retention {
        builder = builder
            .topic(
                cfg.topic.clone(),
                rivulet::TopicOptions::default().max_len(r.max_len),
            )
            .trim_interval(Duration::from_millis(r.trim_interval_ms));
    }
    let bus = builder.build().map_err(|e| format!("bus: {e}"))?;
    let call_limit = Duration::from_millis(cfg.connect.response_timeout_ms + 3000);
    let permits = Arc::new(Semaphore::new(cfg.in_flight.max(1)));
    let period = Duration::from_secs_f64(1.0 / cfg.rate_per_sec.max(1) as f64);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cfg = Arc::new(cfg);
    let copies = u64::from(cfg.copies.max(1));
    for call in 0..cfg.count * copies {
        let (n, copy) = (call / copies, u32::try_from(call % copies).unwrap_or(0));
        ticker.tick().await;
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("semaphore: {e}"))?;
        let (bus, log, cfg) = (bus.clone(), log.clone(), cfg.clone());
        tokio::spawn(async move {
            let record = publish_one(&bus, &cfg, n, copy, call_limit).await;
            if let Err(e) = log.append(&record) {
                tracing::error!(error = %e, "publisher: cannot write log");
            }
            drop(permit);
        });
    }
    let all = u32::try_from(cfg.in_flight.max(1)).unwrap_or(u32::MAX);
    let _all = permits
        .acquire_many(all)
        .await
        .map_err(|e| format!("semaphore: {e}"))?;
    bus.shutdown().await;
    Ok(())
}

async fn publish_one(
    bus: &rivulet::Bus,
    cfg: &PublisherConfig,
    n: u64,
    copy: u32,
    call_limit: Duration,
) -> PublishRecord {
    let id = message_id(&cfg.id_prefix, n);
    let pad_len = if cfg.oversize.contains(&id) {
        cfg.connect.max_payload + 1024
    } else {
        let [lo, hi] = cfg.pad;
        let span = u64::try_from(hi.saturating_sub(lo)).unwrap_or(0) + 1;
        lo + usize::try_from(hash64(cfg.seed, &id) % span).unwrap_or(0)
    };
    let msg = Msg {
        id: id.clone(),
        pad: "x".repeat(pad_len),
    };
    let t_invoke = now_ms();
    let waited = cfg.wait_replicas_every > 0 && n.is_multiple_of(cfg.wait_replicas_every);
    let call = async {
        let publish = if n.is_multiple_of(2) && copy == 0 {
            bus.publish(&cfg.topic, &msg).id(id.clone())
        } else if n.is_multiple_of(2) {
            bus.publish(&cfg.topic, &msg).id(format!("{id}~{copy}"))
        } else {
            bus.publish(&cfg.topic, &msg)
        };
        if waited {
            publish.wait_for_replicas(1, Duration::from_secs(1)).await
        } else {
            publish.await
        }
    };
    let (result, error) = match tokio::time::timeout(call_limit, call).await {
        Ok(Ok(_)) => (PublishResult::Ok, None),
        Ok(Err(e)) => (classify(&e), Some(e.to_string())),
        Err(_) => (
            PublishResult::Unknown,
            Some(format!("no answer within {call_limit:?}")),
        ),
    };
    PublishRecord {
        id,
        copy,
        t_invoke,
        t_done: now_ms(),
        result,
        error,
        waited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_fail_and_connection_errors_are_unknown() {
        let too_large = rivulet::Error::PayloadTooLarge { size: 10, limit: 5 };
        assert_eq!(classify(&too_large), PublishResult::Fail);
        assert_eq!(
            classify(&rivulet::Error::Connection("reset".into())),
            PublishResult::Unknown
        );
        assert_eq!(
            classify(&rivulet::Error::Timeout(Duration::from_secs(1))),
            PublishResult::Unknown
        );
        assert_eq!(
            classify(&rivulet::Error::Indeterminate("wait".into())),
            PublishResult::Unknown
        );
        let dropped: rivulet::Error =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
                .into();
        assert_eq!(classify(&dropped), PublishResult::Unknown);
    }

    #[test]
    fn ids_sort_in_publish_order() {
        assert_eq!(message_id("m", 7), "m000007");
        assert!(message_id("m", 9) < message_id("m", 10));
    }
}
