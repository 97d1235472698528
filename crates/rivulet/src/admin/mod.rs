//! The admin API (O-ADMIN-1): what the `rivulet` command and the dashboard read and do.
//!
//! [`Admin`] works over any backend (memory, Redis, Redis Cluster, Sentinel) and never
//! scans the keyspace: topics come from the topic registry and queues from the queue
//! registry, every listing is a page, and bulk actions (replay, purge, retry all failed)
//! run server-side a batch per round trip. On Redis it sends no `KEYS`, `SCAN`,
//! `MEMORY USAGE`, `DEBUG` or `CONFIG`, so it works on managed Redis and under the ACL
//! user of [`RedisBackend::acl_rules`](crate::RedisBackend::acl_rules).
//!
//! ```no_run
//! # async fn f() -> rivulet::Result<()> {
//! use rivulet::{MemoryBackend, admin::Admin};
//!
//! let admin = Admin::new(MemoryBackend::new());
//! for topic in admin.topics(0, 50).await?.topics {
//!     println!("{}: {} entries, lag {}", topic.topic, topic.length, topic.max_lag());
//! }
//! # Ok(()) }
//! ```

mod info;

use std::time::Duration;

pub use self::info::{
    ConsumerDeleted, ConsumerInfo, GroupDeleted, GroupInfo, JobDetail, PendingEntry, PendingLog,
    PendingPage, QueueInfo, TopicInfo, TopicPage,
};
use crate::backend::{AnyBackend, Lane, StreamKey};
use crate::bus::DeadLetters;
use crate::dead_letter::{DeadLetter, DeadLetterFilter};
use crate::error::{Error, Result};
use crate::jobs::{JobState, Queue};
use crate::message::EntryId;
use crate::name::{ConsumerName, GroupName, JobId, QueueName, TopicName};
use crate::topic::{TopicOptions, TrimReport};

/// The largest page any listing returns.
pub const MAX_PAGE: usize = 1_000;

/// How many pending entries a consumer hands back per round trip when it is deleted.
const HAND_BACK_BATCH: usize = 200;

/// Dead letters scanned at most per [`Admin::dead_letter_page`] call.
const DEAD_LETTER_SCAN: usize = 5_000;

/// The admin API over one backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    backend: AnyBackend,
}

/// A page of dead letters matching a filter.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeadLetterPage {
    /// The matching dead letters, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `after` for the next page; `None` after the last.
    pub next: Option<EntryId>,
}

impl Admin {
    /// The admin API over `backend`.
    pub fn new(backend: impl Into<AnyBackend>) -> Admin {
        Admin {
            backend: backend.into(),
        }
    }

    /// The backend's name ("memory", "redis").
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    // ---- topics -------------------------------------------------------------------

    /// A page of topics (by name) with their sizes, groups and consumers: `limit`
    /// topics from `offset` (`limit` at most [`MAX_PAGE`]). Reading the registry costs
    /// one call; each topic of the page a few per group.
    pub async fn topics(&self, offset: usize, limit: usize) -> Result<TopicPage> {
        let names = self.backend.0.topics().await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut topics = Vec::new();
        for name in names.iter().skip(offset).take(limit) {
            topics.push(self.backend.0.topic_info(name).await?);
        }
        let end = offset.saturating_add(topics.len());
        Ok(TopicPage {
            topics,
            total: names.len(),
            next: (end < names.len()).then_some(end),
        })
    }

    /// One topic's sizes, groups and consumers.
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        let topic = TopicName::new(topic)?;
        self.backend.0.topic_info(&topic).await
    }

    /// A page of a group's pending entries: those of the topic, then those of the
    /// group's retry lane, each oldest first. Pass the previous page's `next` as
    /// `cursor`. A group that does not exist has none.
    pub async fn pending(
        &self,
        topic: &str,
        group: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<PendingPage> {
        let key = StreamKey::main(TopicName::new(topic)?);
        let group = GroupName::new(group)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let (mut lane, mut after) = match cursor {
            None => (Lane::Main, None),
            Some(c) => parse_pending_cursor(c)?,
        };
        let mut entries = Vec::new();
        loop {
            let want = limit - entries.len();
            let page = self
                .backend
                .0
                .pending_entries(&key, &group, lane, after.as_ref(), want)
                .await?;
            let full = page.len() >= want;
            entries.extend(page);
            if full {
                let next = entries.last().map(|e| {
                    let which = match lane {
                        Lane::Main => "t",
                        Lane::Retry => "r",
                    };
                    format!("{which}:{}", e.id)
                });
                return Ok(PendingPage { entries, next });
            }
            if lane == Lane::Retry {
                return Ok(PendingPage {
                    entries,
                    next: None,
                });
            }
            lane = Lane::Retry;
            after = None;
        }
    }

    /// Applies retention to a topic now with `opts` (its max length, max age and safe
    /// mode), or with `dry_run` says what it would remove and keep, removing nothing.
    pub async fn trim(
        &self,
        topic: &str,
        opts: &TopicOptions,
        dry_run: bool,
    ) -> Result<TrimReport> {
        let topic = TopicName::new(topic)?;
        if opts.max_len.is_none() && opts.max_age.is_none() {
            return Err(Error::config("a trim needs a max length or a max age"));
        }
        if opts
            .max_age
            .is_some_and(|a| a > Duration::from_secs(3650 * 24 * 3600))
        {
            return Err(Error::config("a max age must be at most 3650 days"));
        }
        if dry_run {
            self.backend.0.trim_dry_run(&topic, opts).await
        } else {
            self.backend.0.trim(&topic, opts).await
        }
    }

    /// Deletes a consumer of a group safely: its pending entries are first handed back
    /// to the group (its retry lane, where any consumer takes them at once), then the
    /// consumer is deleted, only if it then holds nothing (checked atomically).
    /// [`Error::Unsafe`] when entries stay pending on it (dead-letter queue entries or
    /// entries whose data was trimmed are not handed back; reclaim takes them after
    /// `min_idle`). Delete consumers of stopped processes: a running one goes on reading.
    pub async fn delete_consumer(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<ConsumerDeleted> {
        let key = StreamKey::main(TopicName::new(topic)?);
        let group = GroupName::new(group)?;
        let consumer = ConsumerName::new(consumer)?;
        let store = &self.backend.0;
        let mut handed_back = 0u64;
        loop {
            let held = store
                .pending_of(&key, &group, &consumer, HAND_BACK_BATCH)
                .await?;
            if held.is_empty() {
                break;
            }
            let n = store.hand_back(&key, &group, &consumer, &held).await?;
            handed_back += n as u64;
            if n == 0 {
                break; // what is left cannot be handed back
            }
        }
        if store.delete_consumer(&key, &group, &consumer).await? {
            Ok(ConsumerDeleted { handed_back })
        } else {
            Err(Error::Unsafe(format!(
                "consumer {consumer:?} of group {group:?} still holds entries that cannot be \
                 handed back (handed back {handed_back}); they are reclaimed after min_idle, \
                 then delete it again"
            )))
        }
    }

    /// Deletes a group with its pending list and retry lane. Unless `force`, refuses
    /// with [`Error::Unsafe`] (deleting nothing) while the group has entries pending or
    /// not yet delivered: they would be lost for it. Its scheduled retries wait for it to
    /// come back and are then dead-lettered (reason `group_gone`). Stop its subscribers
    /// first: a running subscription re-creates its group.
    pub async fn delete_group(
        &self,
        topic: &str,
        group: &str,
        force: bool,
    ) -> Result<GroupDeleted> {
        let topic = TopicName::new(topic)?;
        let group = GroupName::new(group)?;
        let info = self.backend.0.topic_info(&topic).await?;
        let Some(g) = info.groups.iter().find(|g| g.group == group) else {
            return Err(Error::GroupNotFound {
                topic: topic.to_string(),
                group: group.to_string(),
            });
        };
        let report = GroupDeleted {
            pending: g.pending,
            lag: g.lag.unwrap_or(0),
        };
        if !force && (report.pending > 0 || report.lag > 0) {
            return Err(Error::Unsafe(format!(
                "group {group:?} of topic {topic:?} has {} pending and {} undelivered \
                 entries that deleting it would lose; force it to delete anyway",
                report.pending, report.lag
            )));
        }
        self.backend
            .0
            .destroy_group(&StreamKey::main(topic), &group)
            .await?;
        Ok(report)
    }

    // ---- dead letters -------------------------------------------------------------

    /// A topic's dead-letter queue: count, show, replay (one, a filter, all,
    /// rate-limited) and purge.
    pub fn dead_letters(&self, topic: &str) -> Result<DeadLetters> {
        Ok(DeadLetters {
            backend: self.backend.clone(),
            topic: TopicName::new(topic)?,
        })
    }

    /// A page of up to `limit` dead letters of `topic` matching `filter`, after `after`,
    /// oldest first. Looks at most at a few thousand dead letters per call; `next` is
    /// set whenever there may be more.
    pub async fn dead_letter_page(
        &self,
        topic: &str,
        filter: &DeadLetterFilter,
        after: Option<&EntryId>,
        limit: usize,
    ) -> Result<DeadLetterPage> {
        let queue = self.dead_letters(topic)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut out = Vec::new();
        let mut cursor = after.cloned();
        let mut scanned = 0;
        loop {
            let page = queue.list(cursor.as_ref(), limit).await?;
            scanned += page.len();
            let last = page.last().map(|d| d.id.clone());
            let exhausted = page.len() < limit;
            for d in page {
                if filter.matches(&d) {
                    let id = d.id.clone();
                    out.push(d);
                    if out.len() == limit {
                        return Ok(DeadLetterPage {
                            dead_letters: out,
                            next: Some(id),
                        });
                    }
                }
            }
            if exhausted {
                return Ok(DeadLetterPage {
                    dead_letters: out,
                    next: None,
                });
            }
            cursor = last;
            if scanned >= DEAD_LETTER_SCAN {
                return Ok(DeadLetterPage {
                    dead_letters: out,
                    next: cursor,
                });
            }
        }
    }

    /// Replays the dead letters of `topic` matching `filter` (see
    /// [`DeadLetters::replay_where`]), telling `progress` the running count.
    pub async fn replay_dead_letters(
        &self,
        topic: &str,
        filter: &DeadLetterFilter,
        per_second: Option<u32>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        self.dead_letters(topic)?
            .replay_observed(filter, per_second, progress)
            .await
    }

    /// Deletes the dead letters of `topic` matching `filter` (see
    /// [`DeadLetters::purge_where`]), telling `progress` the running count.
    pub async fn purge_dead_letters(
        &self,
        topic: &str,
        filter: &DeadLetterFilter,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        self.dead_letters(topic)?
            .purge_observed(filter, progress)
            .await
    }

    // ---- queues and jobs ----------------------------------------------------------

    /// Every queue of the queue registry with its counts (O(1) per queue) and pause
    /// state.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let mut out = Vec::new();
        for name in Queue::list(self.backend.clone()).await? {
            out.push(self.queue_info(&name).await?);
        }
        Ok(out)
    }

    /// One queue's counts and pause state.
    pub async fn queue_info(&self, queue: &QueueName) -> Result<QueueInfo> {
        let q = self.queue(queue.as_str())?;
        let counts = q.counts().await?;
        let (paused, paused_names) = q.paused().await?;
        Ok(QueueInfo {
            queue: queue.clone(),
            counts,
            paused,
            paused_names,
        })
    }

    /// A handle on a queue, for listing jobs by state ([`Queue::jobs`]) and for
    /// [`Queue::retry`], [`Queue::cancel`], [`Queue::promote`], [`Queue::remove`],
    /// [`Queue::pause`] and [`Queue::resume`]. Transitions it makes apply the default
    /// retention and event cap.
    pub fn queue(&self, queue: &str) -> Result<Queue> {
        Queue::new(self.backend.clone(), queue)
    }

    /// One job with its last `log_lines` log lines; [`Error::JobNotFound`] when there
    /// is none.
    pub async fn job(&self, queue: &str, id: &str, log_lines: usize) -> Result<JobDetail> {
        let q = self.queue(queue)?;
        let id = JobId::new(id)?;
        let Some(job) = q.job(&id).await? else {
            return Err(Error::JobNotFound {
                queue: queue.to_owned(),
                job: id.to_string(),
            });
        };
        let logs = if log_lines == 0 {
            Vec::new()
        } else {
            q.logs(&id, 0, log_lines.min(MAX_PAGE)).await?
        };
        Ok(JobDetail { job, logs })
    }

    /// Retries every failed job of `queue`, `batch` per atomic step (one script on
    /// Redis), telling `progress` the running count. Returns how many were retried.
    /// It stops when no failed job is left or when it has retried as many as there
    /// were at the start (jobs that fail again meanwhile are not chased for ever).
    pub async fn retry_all_failed(
        &self,
        queue: &str,
        batch: usize,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        let q = self.queue(queue)?;
        let start = q.counts().await?.of(JobState::Failed);
        let mut total = 0;
        loop {
            let (moved, left) = q.retry_failed(batch).await?;
            total += moved;
            progress(total);
            if left == 0 || moved == 0 || total >= start {
                break;
            }
        }
        Ok(total)
    }
}

fn parse_pending_cursor(c: &str) -> Result<(Lane, Option<EntryId>)> {
    let bad = || Error::config(format!("not a pending-entries cursor: {c:?}"));
    let (which, id) = c.split_once(':').ok_or_else(bad)?;
    let lane = match which {
        "t" => Lane::Main,
        "r" => Lane::Retry,
        _ => return Err(bad()),
    };
    let id = EntryId::parse(id).map_err(|_| bad())?;
    Ok((lane, Some(id)))
}
