//! Cancel hints: a [`pubsub`](crate::backend::redis::pubsub) subscription `SUBSCRIBE`d
//! (not `PSUBSCRIBE`d: Redis checks a pattern literally against ACL channel rules, so
//! `&<prefix>/*` would refuse it) to the queue's cancel channel, forwarding job ids.
//! Lossy by design (they are hints; a renewal reads the flag): a full channel drops ids,
//! and ids published while the connection is down are never seen.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::redis::RedisBackend;
use crate::backend::redis::pubsub::{Interest, Purpose};
use crate::error::Result;
use crate::name::{JobId, QueueName};

/// Capacity of a cancel-hint channel.
const CAPACITY: usize = 256;

fn job_id(msg: &redis::Msg) -> Option<JobId> {
    JobId::new(String::from_utf8_lossy(msg.get_payload_bytes())).ok()
}

impl RedisBackend {
    pub(super) async fn jobs_cancel_hints(
        &self,
        queue: &QueueName,
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<JobId>> {
        let channel = self.queue_keys(queue).channel;
        self.subscribe_forwarding(
            Interest::Channels(vec![channel]),
            Purpose::CancelHints,
            CAPACITY,
            job_id,
            stop,
        )
        .await
    }
}
