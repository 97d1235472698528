//! Cancel hints: a dedicated Pub/Sub connection `SUBSCRIBE`d (not `PSUBSCRIBE`d: Redis
//! checks a pattern literally against ACL channel rules, so `&<prefix>/*` would refuse
//! it) to the queue's cancel channel, forwarding job ids into a bounded channel. Lossy
//! by design (they are hints; a renewal reads the flag): a full channel drops ids, and
//! ids published while the connection is down are never seen. After a connection loss
//! it reconnects with bounded backoff (on a cluster, to the next node given: every
//! `PUBLISH` reaches all nodes) and subscribes again; it stops when the receiver is
//! dropped or `stop` is cancelled.

use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::redis::RedisBackend;
use crate::backend::redis::conn::Target;
use crate::error::{Error, Result};
use crate::name::{JobId, QueueName};

/// Capacity of a cancel-hint channel.
const CAPACITY: usize = 256;
/// How often an idle subscription checks its connection.
const PING_EVERY: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

async fn open(
    client: &redis::Client,
    channel: &str,
    timeout: Duration,
) -> Result<(PubSubSink, PubSubStream)> {
    let connect = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

struct Hints {
    clients: Vec<redis::Client>,
    next: usize,
    channel: String,
    timeout: Duration,
    tx: mpsc::Sender<JobId>,
    stop: CancellationToken,
}

/// Why forwarding ended.
enum End {
    Stop,
    Lost,
}

impl Hints {
    async fn run(mut self, first: (PubSubSink, PubSubStream)) {
        let mut conn = Some(first);
        let mut backoff = BACKOFF_MIN;
        loop {
            let (sink, stream) = match conn.take() {
                Some(c) => c,
                None => {
                    tokio::select! {
                        _ = self.tx.closed() => return,
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    let Some(client) = self.clients.get(self.next % self.clients.len().max(1))
                    else {
                        return;
                    };
                    match open(client, &self.channel, self.timeout).await {
                        Ok(c) => {
                            backoff = BACKOFF_MIN;
                            c
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cancel hints cannot resubscribe yet");
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            self.next = self.next.wrapping_add(1);
                            continue;
                        }
                    }
                }
            };
            match self.forward(sink, stream).await {
                End::Stop => return,
                End::Lost => tracing::warn!("cancel hints lost their connection; resubscribing"),
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
                    let Some(msg) = msg else { return End::Lost };
                    let Ok(id) = JobId::new(String::from_utf8_lossy(msg.get_payload_bytes())) else {
                        continue;
                    };
                    if let Err(mpsc::error::TrySendError::Closed(_)) = self.tx.try_send(id) {
                        return End::Stop;
                    }
                }
            }
        }
    }
}

impl RedisBackend {
    pub(super) async fn jobs_cancel_hints(
        &self,
        queue: &QueueName,
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<JobId>> {
        let channel = self.queue_keys(queue).channel;
        let clients = match &self.inner.target {
            Target::Single(c) => vec![c.clone()],
            Target::Cluster { nodes, .. } => nodes.clone(),
        };
        let timeout = self.inner.timeouts.connect + self.inner.timeouts.response;
        let mut first = Err(Error::config("a cluster needs at least one node URL"));
        let mut next = 0;
        for (i, client) in clients.iter().enumerate() {
            first = open(client, &channel, timeout).await;
            if first.is_ok() {
                next = i;
                break;
            }
        }
        let first = first?;
        let (tx, rx) = mpsc::channel(CAPACITY);
        let task = Hints {
            clients,
            next,
            channel,
            timeout,
            tx,
            stop,
        };
        tokio::spawn(task.run(first));
        Ok(rx)
    }
}
