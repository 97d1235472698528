//! The seam between the bus and where messages live.
//!
//! The bus owns the behaviour (dispatch, outcomes, retry decisions, idempotency, drain);
//! a backend owns storage and its atomic transitions. Every backend implements the same
//! small set of primitives, modelled on Redis Streams consumer groups:
//!
//! * a topic is an append-only log; a group has a cursor and a pending list (PEL) of
//!   entries delivered to a consumer but not yet settled;
//! * each group also has a **retry lane**: a second log only that group reads, so a retry
//!   affects only the group that failed (B-RET-2);
//! * every transition that settles an entry (ack, ack + schedule retry, ack + dead-letter,
//!   replay, hand back) is one atomic step.
//!
//! User code never sees this trait; it picks a backend through [`AnyBackend`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{PendingEntry, TopicInfo};
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::message::{EntryId, Envelope, Published};
use crate::name::{ConsumerName, GroupName, QueueName, TopicName};
use crate::topic::{StartFrom, TopicOptions, TrimReport};

pub(crate) mod diagnostics;
pub(crate) mod flows;
pub(crate) mod job_schedulers;
pub(crate) mod jobs;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

/// Which log of a topic a stream key refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum StreamKind {
    /// The topic's messages.
    Main,
    /// The topic's dead-letter queue, which can be consumed like a topic.
    DeadLetters,
}

/// A consumable log: a topic or its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct StreamKey {
    pub(crate) topic: TopicName,
    pub(crate) kind: StreamKind,
}

impl StreamKey {
    pub(crate) fn main(topic: TopicName) -> Self {
        StreamKey {
            topic,
            kind: StreamKind::Main,
        }
    }

    pub(crate) fn dead_letters(topic: TopicName) -> Self {
        StreamKey {
            topic,
            kind: StreamKind::DeadLetters,
        }
    }
}

/// Which of a group's two logs an entry was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// The shared log every group reads.
    Main,
    /// The group's own retry lane.
    Retry,
}

/// An entry as a group sees it: its lane and its id in that lane.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EntryRef {
    pub(crate) lane: Lane,
    pub(crate) id: EntryId,
}

/// Why an entry could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Malformation {
    /// Fields missing or not decodable.
    Decode(String),
    /// The payload is over the size limit.
    TooLarge(usize),
}

/// What a read returned for one entry.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Record {
    /// A well-formed message.
    Message(Envelope),
    /// A dead-letter record (when reading a dead-letter queue).
    DeadLetter(Box<DeadLetter>),
    /// Something that is not a valid entry; salvaged fields travel to the dead-letter queue.
    Malformed {
        problem: Malformation,
        envelope: Envelope,
    },
}

/// One entry delivered to a consumer.
#[derive(Debug, Clone)]
pub(crate) struct ReadEntry {
    pub(crate) entry: EntryRef,
    pub(crate) record: Record,
    /// How many times the group has delivered this entry (1 on a first delivery).
    pub(crate) delivery_count: u64,
    /// The incarnation of the group that delivered it (0 when the backend does not
    /// track it). A group deleted outside rivulet and re-created gets a new one, so a
    /// settlement can tell "already settled" from "the pending list was lost with the
    /// group" (then it is written all the same).
    pub(crate) generation: u64,
}

/// The result of a reclaim pass.
#[derive(Debug, Default)]
pub(crate) struct Reclaimed {
    /// Entries now owned by the reclaiming consumer.
    pub(crate) entries: Vec<ReadEntry>,
    /// Pending entries whose data the log no longer holds (trimmed or deleted by someone
    /// else). They have been removed from the pending list and must be reported.
    pub(crate) missing: Vec<EntryRef>,
}

/// The result of moving due retries into their groups' retry lanes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RetrySweep {
    /// How many entries were moved.
    pub(crate) moved: usize,
    /// Retries whose group was gone past the grace period, dead-lettered with reason
    /// `group_gone`.
    pub(crate) dead_lettered: usize,
    /// Retries whose group is gone, waiting for it to come back.
    pub(crate) waiting: usize,
    /// Due time (ms since epoch) of the earliest entry still scheduled, if any.
    pub(crate) next_due_ms: Option<u64>,
}

/// How a message is to be written.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishOpts {
    /// Set when the caller supplied the message id: write at most once per id within
    /// this window (B-PUB-4).
    pub(crate) dedup_window: Option<Duration>,
    /// Per-topic limits (retention, backpressure).
    pub(crate) topic: TopicOptions,
    /// Wait for this many replicas to acknowledge, up to the timeout (B-PUB-5).
    pub(crate) wait_replicas: Option<(u32, Duration)>,
}

/// A message received on a live channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMessage {
    /// The channel it was published on.
    pub channel: String,
    /// The pattern that matched it.
    pub pattern: String,
    /// The raw payload.
    pub payload: Bytes,
}

/// A retry to schedule: settles `entry` and schedules `next` at `due_ms`, atomically.
#[derive(Debug, Clone)]
pub(crate) struct RetryLater {
    pub(crate) entry: EntryRef,
    pub(crate) next: Envelope,
    pub(crate) due_ms: u64,
    /// The group incarnation that delivered the entry (see [`ReadEntry::generation`]).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) generation: u64,
}

/// What a consumer settles with its next read: successes to acknowledge and retries to
/// schedule.
#[derive(Debug, Default)]
pub(crate) struct Settlements {
    pub(crate) acks: Vec<EntryRef>,
    pub(crate) retries: Vec<RetryLater>,
}

impl Settlements {
    pub(crate) fn is_empty(&self) -> bool {
        self.acks.is_empty() && self.retries.is_empty()
    }

    /// The entries these settle.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &EntryRef> {
        self.acks
            .iter()
            .chain(self.retries.iter().map(|r| &r.entry))
    }

    /// Adds `other`'s settlements to these.
    pub(crate) fn extend(&mut self, other: Settlements) {
        self.acks.extend(other.acks);
        self.retries.extend(other.retries);
    }
}

/// A blocking reader on its own connection (B-SUB-6). Dropping it releases the
/// connection, which is how a blocking read is interrupted at shutdown.
///
/// A reader returns everything one read brought back (up to `count` from the retry lane
/// plus up to `count` from the topic); the consumer decides what to start now and keeps
/// the rest alive until it starts them.
#[async_trait]
pub(crate) trait Reader: Send + fmt::Debug {
    /// Applies `settle` (acknowledgements and scheduled retries of this group, each
    /// retry atomic on its own), then reads up to `count` entries from each of the
    /// group's two logs (retry lane first), waiting up to `block` when both are empty
    /// (`Duration::ZERO`: do not wait). The settlements travel with the read, so a batch
    /// costs one round trip. When this returns an error the settlements may or may not
    /// have been applied; applying them again through the backend is harmless (an entry
    /// already settled is not rescheduled).
    async fn settle_and_read(
        &mut self,
        settle: &Settlements,
        count: usize,
        block: Duration,
    ) -> Result<Vec<ReadEntry>>;

    /// The retries of the last call whose settlement failed (a broken key, a full
    /// Redis): nothing of them was written, so the caller still holds their entries and
    /// applies them again later.
    fn take_unsettled(&mut self) -> Vec<RetryLater> {
        Vec::new()
    }

    /// Reads without settling anything.
    #[cfg(test)]
    async fn read(&mut self, count: usize, block: Duration) -> Result<Vec<ReadEntry>> {
        self.settle_and_read(&Settlements::default(), count, block)
            .await
    }
}

/// What [`Groups::ensure_group`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupStatus {
    /// The group was there already.
    Existed,
    /// The group was created at the requested start.
    Created,
    /// The group had been registered by rivulet but was gone from the topic (deleted
    /// outside rivulet): it was re-created at the start of the retained history, so
    /// nothing is skipped (entries it had handled may run again).
    Recreated,
}

/// Whether a group is a regular one or one process's broadcast copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupRole {
    /// A group shared by its consumers.
    Regular,
    /// A broadcast group of one process: registered as such, so orphan clean-up only
    /// ever considers groups created as broadcast groups (never a regular group whose
    /// name merely looks like one).
    Broadcast,
}

/// Publishing into a topic.
#[async_trait]
pub(crate) trait Publishing {
    /// Appends messages to a topic in one round trip, in order.
    async fn publish(
        &self,
        topic: &TopicName,
        batch: Vec<Envelope>,
        opts: &PublishOpts,
    ) -> Result<Vec<Published>>;
}

/// Group lifecycle: create, destroy, broadcast heartbeats and orphans (B-SUB-3).
#[async_trait]
pub(crate) trait Groups {
    /// Creates the group if it does not exist (with its retry lane) and registers it.
    async fn ensure_group(
        &self,
        key: &StreamKey,
        group: &GroupName,
        start: &StartFrom,
        role: GroupRole,
    ) -> Result<GroupStatus>;

    /// Removes a group, its pending list, its retry lane and its registration.
    async fn destroy_group(&self, key: &StreamKey, group: &GroupName) -> Result<()>;

    /// Marks a broadcast group as alive for `ttl`.
    async fn broadcast_heartbeat(
        &self,
        key: &StreamKey,
        group: &GroupName,
        ttl: Duration,
    ) -> Result<()>;

    /// Destroys the registered broadcast groups of `key` whose heartbeat has expired.
    /// Returns their names.
    async fn remove_orphan_broadcast_groups(&self, key: &StreamKey) -> Result<Vec<String>>;
}

/// Opening readers.
#[async_trait]
pub(crate) trait Readers {
    /// Opens a reader for one consumer of a group.
    async fn reader(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<Box<dyn Reader>>;
}

/// Settling entries and moving due retries.
#[async_trait]
pub(crate) trait Settling {
    /// Settles entries as handled.
    async fn ack(&self, key: &StreamKey, group: &GroupName, entries: &[EntryRef]) -> Result<()>;

    /// Atomically settles `entry` and schedules `next` for the group at `due_ms`. When
    /// the group no longer exists the retry is scheduled all the same (it waits for the
    /// group to come back, see [`Settling::move_due_retries`]).
    async fn retry_later(
        &self,
        key: &StreamKey,
        group: &GroupName,
        retry: &RetryLater,
    ) -> Result<()>;

    /// Atomically settles `entry` (delivered by group incarnation `generation`) and
    /// appends `dead` to the topic's dead-letter queue.
    async fn dead_letter(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entry: &EntryRef,
        generation: u64,
        dead: &DeadLetter,
    ) -> Result<()>;

    /// Moves up to `limit` scheduled retries due at `now_ms` into their groups' retry
    /// lanes. Retries of a group that does not exist wait up to `grace` for it to come
    /// back (a reader re-creates a vanished group), then are dead-lettered with reason
    /// `group_gone`: never dropped. Safe to run from several processes at once.
    async fn move_due_retries(
        &self,
        key: &StreamKey,
        now_ms: u64,
        limit: usize,
        grace: Duration,
    ) -> Result<RetrySweep>;
}

/// Crash recovery and long handlers (B-REC-1..3).
#[async_trait]
pub(crate) trait Recovery {
    /// Takes over up to `count` entries of the group that have been pending on any
    /// consumer for at least `min_idle`.
    async fn reclaim(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        min_idle: Duration,
        count: usize,
    ) -> Result<Reclaimed>;

    /// Resets the idle time of entries a consumer still holds (keep-alive), without
    /// counting a new delivery.
    async fn keep_alive(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        entries: &[EntryRef],
    ) -> Result<()>;

    /// Requeues the given entries, pending on `consumer`, into the group's retry lane
    /// so other consumers take them without waiting for `min_idle`; entries no longer
    /// pending on `consumer` are left alone. Returns how many were handed back.
    async fn hand_back(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        entries: &[EntryRef],
    ) -> Result<usize>;

    /// Copies entries of the topic a stopping subscription read but did not start, and
    /// that are pending nowhere because their group was deleted and re-created after it
    /// read them (their incarnation is older than the group's), into the group's lane,
    /// so they are not lost. Entries pending on any consumer are left alone. Returns how
    /// many were copied.
    async fn hand_back_orphans(
        &self,
        key: &StreamKey,
        group: &GroupName,
        entries: &[(EntryRef, u64)],
    ) -> Result<usize>;

    /// Entries pending on `consumer` (at most `limit`), oldest first.
    async fn pending_of(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        limit: usize,
    ) -> Result<Vec<EntryRef>>;
}

/// Retention (B-TRIM-1).
#[async_trait]
pub(crate) trait Retention {
    /// Applies retention now.
    async fn trim(&self, topic: &TopicName, opts: &TopicOptions) -> Result<TrimReport>;

    /// What [`trim`](Self::trim) would remove and keep now, without removing anything.
    async fn trim_dry_run(&self, topic: &TopicName, opts: &TopicOptions) -> Result<TrimReport>;
}

/// A topic's dead-letter queue.
#[async_trait]
pub(crate) trait DeadLetterStore {
    /// Lists dead letters after `after` (exclusive), oldest first.
    async fn dead_letters(
        &self,
        topic: &TopicName,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// One dead letter by id.
    async fn dead_letter_by_id(
        &self,
        topic: &TopicName,
        id: &EntryId,
    ) -> Result<Option<DeadLetter>>;

    /// How many dead letters the topic holds.
    async fn dead_letter_count(&self, topic: &TopicName) -> Result<u64>;

    /// Deletes dead letters by id. Returns how many existed.
    async fn remove_dead_letters(&self, topic: &TopicName, ids: &[EntryId]) -> Result<u64>;

    /// Atomically removes a dead letter and appends its message (attempt 1) to its
    /// group's retry lane, after checking that the group exists. Returns `false` when the
    /// dead letter no longer exists and [`Error::GroupNotFound`](crate::Error) when its
    /// group does not (the dead letter then stays where it is).
    async fn replay_dead_letter(&self, topic: &TopicName, dead: &DeadLetter) -> Result<bool>;

    /// Replays several dead letters in one round trip, each atomically as
    /// [`replay_dead_letter`](Self::replay_dead_letter) does; one outcome per dead letter,
    /// in order.
    async fn replay_dead_letters(
        &self,
        topic: &TopicName,
        dead: &[DeadLetter],
    ) -> Result<Vec<Replayed>> {
        let mut out = Vec::with_capacity(dead.len());
        for d in dead {
            out.push(match self.replay_dead_letter(topic, d).await {
                Ok(true) => Replayed::Done,
                Ok(false) => Replayed::Gone,
                Err(Error::GroupNotFound { .. }) => Replayed::GroupMissing,
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }
}

/// What replaying one dead letter came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replayed {
    /// Back in its group's retry lane.
    Done,
    /// It was no longer in the queue.
    Gone,
    /// Its group does not exist; it stays in the queue.
    GroupMissing,
}

/// Live channels (B-LIVE-1).
#[async_trait]
pub(crate) trait LiveChannels {
    /// Publishes on a live channel; returns how many subscribers received it.
    async fn live_publish(&self, channel: &str, payload: Bytes) -> Result<u64>;

    /// Subscribes to live channels matching any of the glob patterns. The subscription
    /// ends when `stop` is cancelled or the receiver is dropped.
    async fn live_subscribe(
        &self,
        patterns: &[String],
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<LiveMessage>>;
}

/// The sizes of one topic that live in the store, as the metrics collector samples them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TopicSample {
    pub(crate) topic: Option<TopicName>,
    /// Entries the topic's stream retains (acknowledged ones included, until trimmed).
    pub(crate) length: u64,
    /// Retries scheduled in the topic's retry set (all groups).
    pub(crate) retries: u64,
    /// Entries of the topic's dead-letter queue.
    pub(crate) dead_letters: u64,
    /// The groups on the topic's stream.
    pub(crate) groups: Vec<GroupSample>,
}

/// One group of a [`TopicSample`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSample {
    pub(crate) group: String,
    /// Entries of the topic's stream delivered to the group and not yet acknowledged.
    pub(crate) pending: u64,
    /// Entries of the topic's stream not yet delivered to the group; `None` when the
    /// store cannot tell (Redis after some deletions).
    pub(crate) lag: Option<u64>,
}

/// Looking at what exists, without scanning the keyspace (the admin API, O-ADMIN-1).
/// Every call costs O(groups and consumers of one topic) or O(limit), never O(backlog).
#[async_trait]
pub(crate) trait Inspection {
    /// The topics rivulet has written to or subscribed to (the topic registry).
    async fn topics(&self) -> Result<Vec<TopicName>>;

    /// One topic's sizes, groups and consumers (groups of the topic's main log only).
    async fn topic_info(&self, topic: &TopicName) -> Result<TopicInfo>;

    /// A page of a group's pending entries in one of its two logs, after `after`
    /// (exclusive), oldest first. A group that does not exist has none.
    async fn pending_entries(
        &self,
        key: &StreamKey,
        group: &GroupName,
        lane: Lane,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>>;

    /// Deletes a consumer of a group (on both its logs) if, atomically, it has nothing
    /// pending; `false` (and nothing deleted) when it still has entries.
    async fn delete_consumer(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool>;

    /// The sizes of `topics`, in order, at bounded cost: on Redis one pipelined round
    /// trip for all of them (on a cluster, one per topic, sent concurrently), four
    /// commands per topic. A topic that does not exist samples as zeros.
    async fn sample_topics(&self, topics: &[TopicName]) -> Result<Vec<TopicSample>>;
}

/// The reads `rivulet doctor` needs (O-DOCTOR-1), and its one repair that no other
/// capability offers. Every read goes through the registries and is bounded per object:
/// nothing scans the keyspace.
#[async_trait]
pub(crate) trait Diagnostics {
    /// The store's clock (ms since the epoch), which leases and due times are kept by.
    async fn clock_ms(&self) -> Result<u64>;

    /// The settings of the store that bear on the guarantees. Never fails for a
    /// setting the server refuses to show: that reading says why instead.
    async fn server_settings(&self) -> Result<diagnostics::ServerSettings>;

    /// One log of a topic: its length, groups, consumers holding entries and retries.
    async fn log_health(
        &self,
        key: &StreamKey,
        probe: &diagnostics::Probe,
    ) -> Result<diagnostics::LogHealth>;

    /// A topic's dead-letter queue: its length and how much of it is recent.
    async fn dead_letter_health(
        &self,
        topic: &TopicName,
        probe: &diagnostics::Probe,
    ) -> Result<diagnostics::DeadLetterHealth>;

    /// One job queue: overdue leases and the parked counter against the parked sets.
    async fn queue_health(
        &self,
        queue: &QueueName,
        probe: &diagnostics::Probe,
    ) -> Result<diagnostics::QueueHealth>;

    /// Sets a queue's parked counter to the jobs in the parked sets of its paused
    /// names, atomically. Returns the counter before and after.
    async fn recount_parked(&self, queue: &QueueName) -> Result<(i64, u64)>;

    /// Entries pending on `consumer` (at most `limit`, oldest first) that have not been
    /// delivered, reclaimed or kept alive for `min_idle`: what a repair may hand back
    /// without taking an entry from a consumer that is still working on it.
    async fn stale_pending(
        &self,
        key: &StreamKey,
        group: &GroupName,
        consumer: &ConsumerName,
        min_idle: Duration,
        limit: usize,
    ) -> Result<Vec<EntryRef>>;
}

/// Everything a backend provides. See the module docs.
#[async_trait]
pub(crate) trait Backend:
    Publishing
    + Groups
    + Readers
    + Settling
    + Recovery
    + Retention
    + DeadLetterStore
    + LiveChannels
    + Inspection
    + Diagnostics
    + jobs::JobQueues
    + job_schedulers::JobSchedulers
    + flows::JobFlows
    + Send
    + Sync
    + fmt::Debug
    + 'static
{
    /// "memory", "redis", …
    fn name(&self) -> &'static str;

    /// The dispatch concurrency used when neither handler nor bus sets one.
    fn default_concurrency(&self) -> usize;

    /// A handle on the same data whose connections belong to the calling runtime. The
    /// keep-alive runs on a thread and runtime of its own, so that handlers blocking the
    /// application's runtime cannot starve it (B-REC-2); it talks to the backend through
    /// such a handle.
    async fn detach(&self) -> Result<Arc<dyn Backend>>;
}

/// A backend, ready to hand to [`Bus::builder`](crate::Bus::builder).
///
/// Obtain one from [`MemoryBackend`](crate::MemoryBackend) or, with the `redis` feature,
/// [`RedisBackend`](crate::RedisBackend). Clones share the same backend.
#[derive(Clone)]
pub struct AnyBackend(pub(crate) Arc<dyn Backend>);

impl AnyBackend {
    /// The backend's name ("memory", "redis").
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Debug for AnyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
