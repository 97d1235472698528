//! Pub/Sub subscriptions that survive their connection: a dedicated connection,
//! `PSUBSCRIBE`d to patterns (live channels) or `SUBSCRIBE`d to channels (a queue's
//! cancel hints), forwarding into a bounded channel. Lossy by design: a full channel
//! drops messages, and messages published while the connection is down are never seen.
//! After a connection loss it reconnects with bounded backoff and subscribes again — on a
//! cluster to the next node given (Redis Cluster propagates every `PUBLISH` to all
//! nodes), with Sentinel to the master the sentinels name then; it stops when the
//! receiver is dropped or `stop` is cancelled.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RedisBackend;
use super::conn::Target;
use super::sentinel::SentinelTarget;
use super::tls::NamedTls;
use crate::error::{Error, Result};

/// How often an idle subscription checks its connection.
const PING_EVERY: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a subscription listens to.
#[derive(Debug, Clone)]
pub(crate) enum Interest {
    /// Glob patterns (`PSUBSCRIBE`). Redis checks patterns literally against ACL channel
    /// rules, so a user limited to `&<prefix>/*` cannot use them.
    Patterns(Vec<String>),
    /// Exact channels (`SUBSCRIBE`).
    Channels(Vec<String>),
}

/// Who uses a subscription: names it in logs and decides which metrics it feeds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Live,
    CancelHints,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Live => "live subscription",
            Purpose::CancelHints => "cancel hints",
        }
    }

    fn dropped(self) {
        if let Purpose::Live = self {
            metrics::counter!("rivulet_live_dropped_total").increment(1);
        }
    }

    fn reconnected(self) {
        if let Purpose::Live = self {
            metrics::counter!("rivulet_live_reconnects_total").increment(1);
        }
    }
}

/// Where a subscription connects: plain clients (one server, or each node of a cluster
/// in turn), the master the sentinels name at each connection, or a server over TLS with
/// a server-name override.
#[derive(Clone)]
enum Dial {
    Clients(Vec<redis::Client>),
    Sentinel(Arc<SentinelTarget>),
    Named(Arc<NamedTls>),
}

async fn subscribe(
    pubsub: redis::aio::PubSub,
    interest: &Interest,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let (mut sink, stream) = pubsub.split();
    match interest {
        Interest::Patterns(p) => sink.psubscribe(p).await?,
        Interest::Channels(c) => sink.subscribe(c).await?,
    }
    Ok((sink, stream))
}

impl Dial {
    /// Opens and subscribes a connection; `next` picks among plain clients.
    async fn open(
        &self,
        next: usize,
        interest: &Interest,
        timeout: Duration,
    ) -> Result<(PubSubSink, PubSubStream)> {
        let connect = async {
            let pubsub = match self {
                Dial::Clients(clients) => {
                    let Some(client) = clients.get(next % clients.len().max(1)) else {
                        return Err(Error::config("a cluster needs at least one node URL"));
                    };
                    client.get_async_pubsub().await?
                }
                Dial::Sentinel(sentinel) => {
                    sentinel.master_client().await?.get_async_pubsub().await?
                }
                Dial::Named(named) => named.pubsub().await?,
            };
            Ok(subscribe(pubsub, interest).await?)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    fn choices(&self) -> usize {
        match self {
            Dial::Clients(c) => c.len().max(1),
            _ => 1,
        }
    }
}

impl RedisBackend {
    /// Subscribes to `interest` on a connection of its own and forwards each message
    /// `convert` turns into an item (others are skipped) into a channel of `capacity`.
    pub(crate) async fn subscribe_forwarding<T: Send + 'static>(
        &self,
        interest: Interest,
        purpose: Purpose,
        capacity: usize,
        convert: fn(&redis::Msg) -> Option<T>,
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<T>> {
        self.conn()?;
        let dial = match &self.inner.target {
            Target::Single(c) => Dial::Clients(vec![c.clone()]),
            Target::Cluster { nodes, .. } => Dial::Clients(nodes.clone()),
            Target::Sentinel(s) => Dial::Sentinel(Arc::clone(s)),
            Target::Named(n) => Dial::Named(Arc::clone(n)),
        };
        let timeout = self.inner.timeouts.connect + self.inner.timeouts.response;
        let mut first = Err(Error::config("a cluster needs at least one node URL"));
        let mut next = 0;
        for i in 0..dial.choices() {
            first = dial.open(i, &interest, timeout).await;
            if first.is_ok() {
                next = i;
                break;
            }
        }
        let first = first.map_err(|e| match e {
            Error::Redis(e) => super::conn::connection_error(&self.inner.redacted, &e),
            other => other,
        })?;
        let (tx, rx) = mpsc::channel(capacity);
        let task = Subscription {
            dial,
            next,
            interest,
            purpose,
            convert,
            timeout,
            tx,
            stop,
        };
        tokio::spawn(task.run(first));
        Ok(rx)
    }
}

struct Subscription<T> {
    dial: Dial,
    /// Index of the plain client to connect to next.
    next: usize,
    interest: Interest,
    purpose: Purpose,
    convert: fn(&redis::Msg) -> Option<T>,
    timeout: Duration,
    tx: mpsc::Sender<T>,
    stop: CancellationToken,
}

enum End {
    /// The receiver is gone or the owner stopped: stop.
    Stop,
    /// The connection was lost: reconnect.
    Lost,
}

impl<T: Send + 'static> Subscription<T> {
    async fn run(mut self, first: (PubSubSink, PubSubStream)) {
        let mut conn = Some(first);
        let mut backoff = BACKOFF_MIN;
        let label = self.purpose.label();
        loop {
            let (sink, stream) = match conn.take() {
                Some(c) => c,
                None => {
                    tokio::select! {
                        _ = self.tx.closed() => return,
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    match self
                        .dial
                        .open(self.next, &self.interest, self.timeout)
                        .await
                    {
                        Ok(c) => {
                            tracing::info!("{label} reconnected");
                            backoff = BACKOFF_MIN;
                            c
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "{label} cannot reconnect yet");
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            self.next = self.next.wrapping_add(1);
                            continue;
                        }
                    }
                }
            };
            match self.forward(sink, stream).await {
                End::Stop => return,
                End::Lost => {
                    tracing::warn!("{label} lost its connection; resubscribing");
                    self.purpose.reconnected();
                }
            }
        }
    }

    async fn forward(&self, mut sink: PubSubSink, mut stream: PubSubStream) -> End {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = self.tx.closed() => return End::Stop,
                _ = self.stop.cancelled() => return End::Stop,
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return End::Lost;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return End::Lost;
                    };
                    let Some(item) = (self.convert)(&msg) else { continue };
                    match self.tx.try_send(item) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => self.purpose.dropped(),
                        Err(mpsc::error::TrySendError::Closed(_)) => return End::Stop,
                    }
                }
            }
        }
    }
}
