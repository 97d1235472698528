//! Tests of every Redis primitive against real `redis-server` processes started by
//! `rivulet-testkit` (never a server the test did not start).

#![allow(clippy::unwrap_used)]

mod cluster;
mod connection;
mod delivery;
mod doctor;
mod jobs;
mod jobs_cluster;
mod jobs_control;
mod jobs_faults;
mod jobs_groups;
mod limits;
mod live;
mod recovery;
mod retention;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use rivulet_testkit::RedisServer;
use tokio::time::Instant;

use super::RedisBackend;
#[allow(unused_imports)]
pub(super) use crate::backend::{
    Backend, DeadLetterStore, EntryRef, GroupRole, GroupStatus, Groups, Inspection, LiveChannels,
    PublishOpts, Publishing, ReadEntry, Reader, Readers, Record, Recovery, Retention, RetryLater,
    Settling, StreamKey,
};
use crate::message::{Envelope, Headers, MessageId, Published};
use crate::name::{ConsumerName, GroupName, TopicName};
use crate::topic::StartFrom;

pub(super) const BLOCK: Duration = Duration::from_millis(200);

pub(super) fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

pub(super) fn group(s: &str) -> GroupName {
    GroupName::new(s).unwrap()
}

pub(super) fn consumer(s: &str) -> ConsumerName {
    ConsumerName::new(s).unwrap()
}

pub(super) fn envelope(payload: &str) -> Envelope {
    let mut headers = Headers::new();
    headers.insert(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    Envelope::new(
        MessageId::generate(),
        Bytes::copy_from_slice(payload.as_bytes()),
        headers,
    )
}

pub(super) fn payload(e: &ReadEntry) -> String {
    match &e.record {
        Record::Message(env) => String::from_utf8_lossy(&env.payload).into_owned(),
        Record::DeadLetter(d) => String::from_utf8_lossy(&d.payload).into_owned(),
        Record::Malformed { envelope, .. } => {
            String::from_utf8_lossy(&envelope.payload).into_owned()
        }
    }
}

pub(super) fn message(e: &ReadEntry) -> &Envelope {
    match &e.record {
        Record::Message(env) => env,
        other => panic!("expected a message, got {other:?}"),
    }
}

pub(super) fn refs(entries: &[ReadEntry]) -> Vec<EntryRef> {
    entries.iter().map(|e| e.entry.clone()).collect()
}

pub(super) async fn start() -> (RedisServer, RedisBackend) {
    let server = RedisServer::start().unwrap();
    let backend = RedisBackend::connect(&server.url()).await.unwrap();
    (server, backend)
}

/// A topic with a group created from the beginning, and a reader on it.
pub(super) async fn subscribed(
    backend: &RedisBackend,
    t: &str,
    g: &str,
    c: &str,
) -> (StreamKey, Box<dyn Reader>) {
    let key = StreamKey::main(topic(t));
    backend
        .ensure_group(&key, &group(g), &StartFrom::Beginning, GroupRole::Regular)
        .await
        .unwrap();
    let reader = backend.reader(&key, &group(g), &consumer(c)).await.unwrap();
    (key, reader)
}

pub(super) async fn publish(backend: &RedisBackend, t: &str, payloads: &[&str]) -> Vec<Published> {
    let batch = payloads.iter().map(|p| envelope(p)).collect();
    backend
        .publish(&topic(t), batch, &PublishOpts::default())
        .await
        .unwrap()
}

/// Reads until `n` entries arrived or the deadline passes.
pub(super) async fn read_n(reader: &mut Box<dyn Reader>, n: usize) -> Vec<ReadEntry> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(reader.read(n - out.len(), BLOCK).await.unwrap());
    }
    out
}

/// Polls `f` until it returns `Some`, or panics after 5 s.
pub(super) async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw command on a fresh synchronous connection.
pub(super) fn raw<T: redis::FromRedisValue>(server: &RedisServer, cmd: &redis::Cmd) -> T {
    let mut conn = server.connection().unwrap();
    cmd.query(&mut conn).unwrap()
}

pub(super) fn stream_key(t: &str) -> String {
    format!("{{rivulet/topic/{t}}}/stream")
}

pub(super) fn lane_key(t: &str, g: &str) -> String {
    format!("{{rivulet/topic/{t}}}/lane/{g}")
}

pub(super) fn retry_key(t: &str) -> String {
    format!("{{rivulet/topic/{t}}}/retry")
}

/// The grace period of the retry mover in these tests.
pub(super) const GRACE: Duration = Duration::from_secs(60);

pub(super) fn retry(entry: &EntryRef, next: &Envelope, due_ms: u64) -> RetryLater {
    RetryLater {
        entry: entry.clone(),
        next: next.clone(),
        due_ms,
        generation: 0,
    }
}
