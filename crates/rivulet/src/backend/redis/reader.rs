//! Blocking readers, each on its own connection (B-SUB-6).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::RedisBackend;
use super::conn::{Conn, is_connection_loss, open_dedicated};
use super::reply::{self, RawEntry};
use super::settle::push_acks;
use super::wire::{decode_dead_letter_record, decode_message};
use crate::backend::{
    EntryRef, GroupRole, Lane, ReadEntry, Reader, Readers, Record, RetryLater, Settlements,
    Settling, StreamKey, StreamKind,
};
use crate::error::{Error, Result};
use crate::message::EntryId;
use crate::name::{ConsumerName, GroupName};

/// A reader reads its group's incarnation with every this many reads (and after it
/// re-created the group).
const GENERATION_EVERY: u32 = 64;

/// Extra time, beyond the BLOCK time, before a silent read connection is given up.
const READ_GRACE: Duration = Duration::from_secs(5);

/// Decodes an entry read from a lane of `key`.
/// The payload size limit is the bus's (it classifies oversized entries): the backend
/// decodes whatever it reads.
pub(super) fn decode_entry(key: &StreamKey, lane: Lane, raw: &RawEntry) -> Record {
    match (key.kind, lane) {
        (StreamKind::DeadLetters, Lane::Main) => {
            decode_dead_letter_record(raw, &key.topic, usize::MAX)
        }
        _ => decode_message(raw, usize::MAX),
    }
}

/// A reader: `XREADGROUP … STREAMS <lane> <stream> > >` on a dedicated connection, with
/// no response timeout. Dropping it closes the connection, which interrupts a blocking
/// read.
pub(super) struct RedisReader {
    backend: RedisBackend,
    key: StreamKey,
    group: GroupName,
    consumer: ConsumerName,
    stream: String,
    lane: String,
    /// The hash of group incarnations.
    generations: String,
    /// The group's incarnation as last read, and how many reads ago. Refreshed with
    /// every [`GENERATION_EVERY`]th read and after a re-creation: a stale value only
    /// makes a settlement of an entry that is no longer pending write anyway (a possible
    /// duplicate, never a loss).
    generation: u64,
    reads_since_generation: u32,
    /// Retries of the last call whose settlement failed.
    unsettled: Vec<RetryLater>,
    /// `None` after a connection loss: reopened by the next read.
    conn: Option<Conn>,
    /// The last topic entry this reader was delivered, where a vanished group is
    /// re-created.
    last_seen: Option<String>,
}

impl fmt::Debug for RedisReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReader")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl RedisReader {
    pub(super) async fn open(
        backend: RedisBackend,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<Self> {
        let keys = backend.log_keys(key);
        let conn = Self::dial(&backend, &keys.stream).await?;
        Ok(RedisReader {
            stream: keys.stream.clone(),
            lane: keys.lane(group.as_str()),
            generations: keys.generations(),
            generation: 0,
            reads_since_generation: 0,
            unsettled: Vec::new(),
            backend,
            key: key.clone(),
            group: group.clone(),
            consumer: consumer.clone(),
            conn: Some(conn),
            last_seen: None,
        })
    }

    /// Opens the dedicated connection (on a cluster, to the node serving `stream`).
    async fn dial(backend: &RedisBackend, stream: &str) -> Result<Conn> {
        let mut shared = backend.conn()?;
        let inner = &backend.inner;
        open_dedicated(
            &inner.target,
            inner.timeouts,
            &inner.redacted,
            &mut shared,
            stream,
        )
        .await
    }

    async fn connection(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            self.conn = Some(Self::dial(&self.backend, &self.stream).await?);
        }
        self.conn.as_mut().ok_or(Error::Closed)
    }

    /// Whether the reader holds a plain connection to one node (not a cluster
    /// connection to every node).
    #[cfg(test)]
    pub(super) fn on_one_node(&self) -> bool {
        matches!(self.conn, Some(Conn::Multiplexed(_)))
    }

    /// Looks at the settlement commands' replies. A retry script the server had
    /// forgotten (NOSCRIPT, after a restart or `SCRIPT FLUSH`) is run again through the
    /// backend, which reloads it; the read's result is kept either way.
    async fn check_settlements(
        &mut self,
        settle: &Settlements,
        results: Vec<redis::RedisResult<Value>>,
        first_retry: usize,
    ) {
        for (i, result) in results.into_iter().enumerate() {
            let Err(e) = result else { continue };
            let retry = i
                .checked_sub(first_retry)
                .and_then(|k| settle.retries.get(k));
            match retry {
                Some(r)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    if let Err(e) = self.backend.retry_later(&self.key, &self.group, r).await {
                        tracing::debug!(error = %e, "could not schedule a retry; it is applied again later");
                        self.unsettled.push(r.clone());
                    }
                }
                // Acks of a vanished group: nothing is pending any more (retries never meet
                // NOGROUP: their scripts schedule them all the same).
                _ if reply::is_nogroup(&e) => {}
                // A retry whose script failed wrote nothing: its entry stays pending and
                // held, and the consumer applies the settlement again later (a failed ack
                // is harmless: the entry is redelivered). The read's result stands.
                Some(r) => {
                    tracing::debug!(error = %e, "scheduling a retry failed; it is applied again later");
                    self.unsettled.push(r.clone());
                }
                None => {
                    tracing::debug!(error = %e, "an acknowledgement failed; the entry will be redelivered")
                }
            }
        }
    }

    /// The group vanished (deleted by an admin). It is re-created where this reader
    /// last read, or at the start of the topic when it never read: never at `$`, which
    /// would silently skip whatever was published meanwhile. Entries that were pending
    /// are redelivered only if they come after that point.
    async fn recreate_group(&mut self) -> Result<()> {
        let start = self.last_seen.clone().unwrap_or_else(|| "0".to_owned());
        tracing::warn!(
            topic = %self.key.topic,
            group = %self.group,
            start = %start,
            "consumer group vanished; re-creating it where this reader last read"
        );
        metrics::counter!(
            "rivulet_group_recreated_total",
            "topic" => self.key.topic.to_string(),
            "group" => self.group.to_string()
        )
        .increment(1);
        let (backend, key, group) = (self.backend.clone(), self.key.clone(), self.group.clone());
        let conn = self.connection().await?;
        backend
            .create_group(conn, &key, &group, &start, GroupRole::Regular, true)
            .await?;
        self.reads_since_generation = 0;
        Ok(())
    }
}

#[async_trait]
impl Reader for RedisReader {
    fn take_unsettled(&mut self) -> Vec<RetryLater> {
        std::mem::take(&mut self.unsettled)
    }

    async fn settle_and_read(
        &mut self,
        settle: &Settlements,
        count: usize,
        block: Duration,
    ) -> Result<Vec<ReadEntry>> {
        // Settlements go first on the reader's own connection: the acks, then one atomic
        // script per retry.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut settle_cmds = push_acks(
            &mut pipe,
            &self.stream,
            &self.lane,
            &self.group,
            &settle.acks,
        );
        let first_retry = settle_cmds;
        for r in &settle.retries {
            pipe.add_command(self.backend.retry_later_cmd(&self.key, &self.group, r));
            settle_cmds += 1;
        }
        let read_now = count > 0;
        let fetch_generation = read_now && self.reads_since_generation == 0;
        if read_now {
            self.reads_since_generation = (self.reads_since_generation + 1) % GENERATION_EVERY;
            if fetch_generation {
                // The group's incarnation, read just before the entries it delivers.
                pipe.cmd("HGET")
                    .arg(&self.generations)
                    .arg(self.group.as_str());
            }
            let cmd = pipe.cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(self.group.as_str())
                .arg(self.consumer.as_str())
                .arg("COUNT")
                .arg(count);
            let block_ms = super::millis(block);
            if block_ms > 0 {
                cmd.arg("BLOCK").arg(block_ms);
            }
            cmd.arg("STREAMS")
                .arg(&self.lane)
                .arg(&self.stream)
                .arg(">")
                .arg(">");
        } else if settle_cmds == 0 {
            return Ok(Vec::new());
        }
        let conn = self.connection().await?;
        let wait = block.saturating_add(READ_GRACE);
        let r = tokio::time::timeout(
            wait,
            pipe.query_async::<Vec<redis::RedisResult<Value>>>(conn),
        )
        .await;
        let mut results = match r {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => {
                if is_connection_loss(&e) {
                    self.conn = None;
                }
                return Err(e.into());
            }
            Err(_) => {
                // The server did not answer within BLOCK + grace: the connection is dead.
                self.conn = None;
                return Err(Error::Timeout(wait));
            }
        };
        let read = if read_now { results.pop() } else { None };
        if fetch_generation {
            match results.pop() {
                Some(Ok(v)) => self.generation = super::recovery::generation_of(&v).unwrap_or(0),
                _ => self.reads_since_generation = 0,
            }
        }
        let generation = self.generation;
        self.check_settlements(settle, results, first_retry).await;
        if !read_now {
            return Ok(Vec::new());
        }
        let v = match read {
            Some(Ok(v)) => v,
            Some(Err(e)) if reply::is_nogroup(&e) => {
                self.recreate_group().await?;
                return Ok(Vec::new());
            }
            Some(Err(e)) => {
                if is_connection_loss(&e) {
                    self.conn = None;
                }
                return Err(e.into());
            }
            None => return Err(Error::Protocol("a read returned no reply".into())),
        };
        // The lane first (retries waited longest), then the topic, as the memory
        // backend does.
        let mut lane_entries = Vec::new();
        let mut main_entries = Vec::new();
        for (stream, entries) in reply::streams(&v) {
            let which = if stream == self.lane {
                Lane::Retry
            } else {
                Lane::Main
            };
            for raw in entries {
                if which == Lane::Main {
                    self.last_seen = Some(raw.id.clone());
                }
                let record = decode_entry(&self.key, which, &raw);
                let entry = ReadEntry {
                    entry: EntryRef {
                        lane: which,
                        id: EntryId(raw.id),
                    },
                    record,
                    delivery_count: 1,
                    generation,
                };
                match which {
                    Lane::Retry => lane_entries.push(entry),
                    Lane::Main => main_entries.push(entry),
                }
            }
        }
        lane_entries.extend(main_entries);
        Ok(lane_entries)
    }
}

#[async_trait]
impl Readers for RedisBackend {
    async fn reader(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<Box<dyn Reader>> {
        let reader = RedisReader::open(self.clone(), key, group, consumer).await?;
        Ok(Box::new(reader))
    }
}
