//! Publishing: single messages and batches, typed or raw (B-PUB-1..6).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tracing::Instrument;

use super::Bus;
use crate::backend::PublishOpts;
use crate::error::{Error, Result};
use crate::message::{Envelope, Headers, MessageId, Published, check_header_name, check_headers};
use crate::name::TopicName;

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(value)?))
}

/// Options shared by single and batch publishes.
#[derive(Debug, Default)]
struct Common {
    headers: Headers,
    wait_replicas: Option<(u32, Duration)>,
    /// The first invalid input seen while building; reported when awaited.
    error: Option<Error>,
}

impl Common {
    fn header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        match check_header_name(&name) {
            Ok(()) => {
                self.headers.insert(name, value.into());
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }
}

/// A publish being built. Await it to write the message (`IntoFuture`).
///
/// ```no_run
/// # async fn f(bus: rivulet::Bus) -> rivulet::Result<()> {
/// let published = bus
///     .publish("orders:order:created", &serde_json::json!({"id": 7}))
///     .header("tenant", "acme")
///     .await?;
/// println!("{} at {}", published.message_id, published.entry_id);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a publish does nothing until awaited"]
pub struct Publish<'a> {
    bus: &'a Bus,
    topic: Result<TopicName>,
    payload: Result<Bytes>,
    id: Option<Result<MessageId>>,
    common: Common,
}

impl<'a> Publish<'a> {
    /// Adds a header. W3C `traceparent` / `tracestate` are carried like any other.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.common.header(name, value);
        self
    }

    /// Adds several headers.
    pub fn headers<K: Into<String>, V: Into<String>>(
        mut self,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in headers {
            self.common.header(k, v);
        }
        self
    }

    /// Publishes with a caller-chosen message id, idempotently: publishing the same id
    /// again within the bus's dedup window writes nothing and returns the first entry
    /// with [`Published::duplicate`] set (B-PUB-4).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(MessageId::new(id));
        self
    }

    /// Waits until `replicas` replicas acknowledged the write, up to `timeout`
    /// (B-PUB-5). If fewer did, the call fails with [`Error::Indeterminate`]: the message
    /// may still be delivered.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.common.wait_replicas = Some((replicas, timeout));
        self
    }

    async fn run(self) -> Result<Published> {
        if let Some(e) = self.common.error {
            return Err(e);
        }
        check_headers(&self.common.headers)?;
        let mut headers = self.common.headers;
        // After the check: the two trace headers rivulet adds never make a valid
        // publish fail.
        crate::trace::inject(&mut headers);
        let topic = self.topic?;
        let payload = self.payload?;
        let (id, idempotent) = match self.id {
            Some(id) => (id?, true),
            None => (MessageId::generate(), false),
        };
        tracing::Span::current().record("message_id", id.as_str());
        let envelope = Envelope::new(id, payload, headers);
        let mut out = self
            .bus
            .write(
                &topic,
                vec![envelope],
                idempotent,
                self.common.wait_replicas,
            )
            .await?;
        out.pop()
            .ok_or_else(|| Error::Protocol("the backend returned no entry for a publish".into()))
    }
}

impl<'a> IntoFuture for Publish<'a> {
    type Output = Result<Published>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Published>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        let span = tracing::debug_span!(
            "rivulet.publish",
            topic = tracing::field::Empty,
            message_id = tracing::field::Empty,
        );
        if let Ok(t) = &self.topic {
            span.record("topic", t.as_str());
        }
        Box::pin(self.run().instrument(span))
    }
}

/// A batch publish being built: every message is written in one round trip, in order.
/// Await it to write them (`IntoFuture`).
///
/// The batch is not atomic: the server may refuse some of its messages (out of memory,
/// for example) after writing others. Then the result is [`Error::PartialBatch`], which
/// says per message whether it was written; no message written is reported as failed.
#[derive(Debug)]
#[must_use = "a publish does nothing until awaited"]
pub struct PublishBatch<'a> {
    bus: &'a Bus,
    topic: Result<TopicName>,
    payloads: Result<Vec<Bytes>>,
    common: Common,
}

impl<'a> PublishBatch<'a> {
    /// Adds a header to every message of the batch.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.common.header(name, value);
        self
    }

    /// Waits for replicas after the batch is written (see [`Publish::wait_for_replicas`]).
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.common.wait_replicas = Some((replicas, timeout));
        self
    }

    async fn run(self) -> Result<Vec<Published>> {
        if let Some(e) = self.common.error {
            return Err(e);
        }
        check_headers(&self.common.headers)?;
        let mut headers = self.common.headers;
        crate::trace::inject(&mut headers);
        let topic = self.topic?;
        let payloads = self.payloads?;
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let envelopes = payloads
            .into_iter()
            .map(|p| Envelope::new(MessageId::generate(), p, headers.clone()))
            .collect();
        self.bus
            .write(&topic, envelopes, false, self.common.wait_replicas)
            .await
    }
}

impl<'a> IntoFuture for PublishBatch<'a> {
    type Output = Result<Vec<Published>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Vec<Published>>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        let span = tracing::debug_span!("rivulet.publish_batch", topic = tracing::field::Empty);
        if let Ok(t) = &self.topic {
            span.record("topic", t.as_str());
        }
        Box::pin(self.run().instrument(span))
    }
}

impl Bus {
    /// Publishes `value` encoded as JSON on `topic`. Returns once the backend has the
    /// message (B-PUB-1).
    pub fn publish<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Publish<'_> {
        Publish {
            bus: self,
            topic: TopicName::new(topic),
            payload: encode(value),
            id: None,
            common: Common::default(),
        }
    }

    /// Publishes raw bytes on `topic`.
    pub fn publish_raw(&self, topic: &str, payload: impl Into<Bytes>) -> Publish<'_> {
        Publish {
            bus: self,
            topic: TopicName::new(topic),
            payload: Ok(payload.into()),
            id: None,
            common: Common::default(),
        }
    }

    /// Publishes many JSON-encoded values in one round trip (B-PUB-2).
    pub fn publish_batch<'a, T: Serialize + 'a>(
        &self,
        topic: &str,
        values: impl IntoIterator<Item = &'a T>,
    ) -> PublishBatch<'_> {
        PublishBatch {
            bus: self,
            topic: TopicName::new(topic),
            payloads: values.into_iter().map(encode).collect(),
            common: Common::default(),
        }
    }

    /// Publishes many raw payloads in one round trip.
    pub fn publish_batch_raw(
        &self,
        topic: &str,
        payloads: impl IntoIterator<Item = Bytes>,
    ) -> PublishBatch<'_> {
        PublishBatch {
            bus: self,
            topic: TopicName::new(topic),
            payloads: Ok(payloads.into_iter().collect()),
            common: Common::default(),
        }
    }

    async fn write(
        &self,
        topic: &TopicName,
        envelopes: Vec<Envelope>,
        idempotent: bool,
        wait_replicas: Option<(u32, Duration)>,
    ) -> Result<Vec<Published>> {
        let shared = &self.shared;
        if shared.is_closing() {
            return Err(Error::Closed);
        }
        let limit = shared.cfg.max_payload;
        if let Some(big) = envelopes.iter().find(|e| e.payload.len() > limit) {
            return Err(Error::PayloadTooLarge {
                size: big.payload.len(),
                limit,
            });
        }
        let opts = PublishOpts {
            dedup_window: idempotent.then_some(shared.cfg.dedup_window),
            topic: shared.topic_options(topic),
            wait_replicas,
        };
        let result = shared.backend.publish(topic, envelopes, &opts).await;
        let written = match &result {
            Ok(out) => out.len(),
            Err(Error::PartialBatch { results }) => results.iter().filter(|r| r.is_ok()).count(),
            Err(_) => 0,
        };
        if written > 0 {
            metrics::counter!("rivulet_published_total", "topic" => topic.to_string())
                .increment(written as u64);
            shared.housekeeper(topic);
        }
        result
    }
}
