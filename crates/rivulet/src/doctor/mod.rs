//! `rivulet doctor` (O-DOCTOR-1): finds the states that break a guarantee, explains each,
//! and repairs what is safe to repair.
//!
//! The doctor reads through the registries (the topic registry and the queue registry),
//! never by scanning the keyspace, and its cost is bounded per topic, group and queue.
//! Each [`Finding`] has a [`Severity`], the objects concerned, why it breaks a
//! guarantee, and the repair [`Doctor::repair`] would make (when one is safe).
//!
//! ```no_run
//! # async fn f() -> rivulet::Result<()> {
//! use rivulet::doctor::Doctor;
//! let backend = rivulet::RedisBackend::connect("redis://127.0.0.1:6379").await?;
//! let report = Doctor::new(backend).examine().await?;
//! for finding in &report.findings {
//!     println!("{}: {}", finding.severity, finding.summary);
//! }
//! # Ok(()) }
//! ```
//!
//! The checks and their repairs are described in `docs/operations.md` ("Doctor").

mod checks;
mod repair;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::backend::{AnyBackend, Backend, StreamKey};
use crate::error::{Error, Result};
use crate::name::{ConsumerName, GroupName, QueueName};

/// `n` with the noun that goes with it: "1 job", "2 jobs".
pub(crate) fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing; nothing is at risk.
    Info,
    /// A guarantee is weakened or will be if nothing changes.
    Warning,
    /// A guarantee is broken now: work is stuck or data can be lost.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// Which check a finding comes from. The snake-case names ([`Check::code`]) are stable
/// and appear in `--json` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Check {
    /// Entries pending on a consumer that has not read, claimed or kept anything alive
    /// for far longer than a claim takes.
    GoneConsumer,
    /// A registered broadcast group whose process is gone (its heartbeat expired).
    OrphanBroadcastGroup,
    /// A group so far behind that safe retention cannot trim past it.
    RetentionPinned,
    /// A group rivulet registered that is gone from its topic.
    MissingGroup,
    /// Scheduled retries due long ago that no mover picked up.
    RetryOverdue,
    /// A dead-letter queue that is large or growing fast.
    DeadLetterGrowth,
    /// Active jobs whose lease expired and that no stall check took back.
    ExpiredLease,
    /// A queue's parked-jobs counter disagrees with its parked sets.
    ParkedCount,
    /// The server does not write an append-only file.
    Durability,
    /// The server may evict keys.
    Eviction,
    /// The server is close to its memory limit.
    Memory,
    /// A server setting could not be read.
    SettingUnchecked,
    /// A topic or queue whose keys could not be read (a key of the wrong type, a script
    /// error): the other checks of that object did not run.
    Unreadable,
}

impl Check {
    /// The stable name of the check (`gone_consumer`, `retry_overdue`, …).
    pub fn code(self) -> &'static str {
        match self {
            Check::GoneConsumer => "gone_consumer",
            Check::OrphanBroadcastGroup => "orphan_broadcast_group",
            Check::RetentionPinned => "retention_pinned",
            Check::MissingGroup => "missing_group",
            Check::RetryOverdue => "retry_overdue",
            Check::DeadLetterGrowth => "dead_letter_growth",
            Check::ExpiredLease => "expired_lease",
            Check::ParkedCount => "parked_count",
            Check::Durability => "durability",
            Check::Eviction => "eviction",
            Check::Memory => "memory",
            Check::SettingUnchecked => "setting_unchecked",
            Check::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One object a finding is about: its kind (`topic`, `dead_letters`, `group`,
/// `consumer`, `queue`, `setting`) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Object {
    /// `topic`, `dead_letters` (a topic's dead-letter queue, as a log groups consume),
    /// `group`, `consumer`, `queue` or `setting`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
}

impl Object {
    pub(crate) fn new(kind: &'static str, name: impl Into<String>) -> Self {
        Object {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// The repair behind a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Hand the consumer's pending entries back to the group's retry lane.
    HandBack {
        key: StreamKey,
        group: GroupName,
        consumer: ConsumerName,
    },
    /// Remove the log's orphan broadcast groups.
    RemoveOrphans { key: StreamKey },
    /// Move the log's due retries into their lanes.
    MoveRetries { key: StreamKey },
    /// Run the stall check of the queue.
    ReturnStalled { queue: QueueName },
    /// Recompute the queue's parked counter.
    RecountParked { queue: QueueName },
}

/// One thing the doctor found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// The check that found it.
    pub check: Check,
    /// How bad it is.
    pub severity: Severity,
    /// What it is about, outermost first (topic, group, consumer).
    pub objects: Vec<Object>,
    /// One line: what was found, with the numbers.
    pub summary: String,
    /// Why it breaks (or weakens) a guarantee.
    pub explanation: String,
    /// What [`Doctor::repair`] does about it, or what an operator should do when no
    /// repair is safe.
    pub fix: String,
    /// Whether [`Doctor::repair`] repairs it.
    pub fixable: bool,
    #[serde(skip)]
    pub(crate) action: Option<Action>,
}

/// Whether the server settings were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SettingsChecked {
    /// Every setting was read.
    Checked,
    /// Some settings could not be read (see the `setting_unchecked` findings).
    Partly,
    /// The backend has no server settings (memory).
    NotApplicable,
}

/// A repair the doctor made.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Repair {
    /// The check whose finding it repairs.
    pub check: Check,
    /// The objects repaired.
    pub objects: Vec<Object>,
    /// What was done, with the numbers.
    pub done: String,
    /// Why the repair failed, if it did (nothing else stops).
    pub error: Option<String>,
}

/// What a doctor run found (and repaired).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The backend examined (`memory`, `redis`).
    pub backend: &'static str,
    /// The store's clock when the examination started (ms since the epoch).
    pub checked_at_ms: u64,
    /// Topics examined (from the topic registry).
    pub topics: usize,
    /// Queues examined (from the queue registry).
    pub queues: usize,
    /// Whether the server settings were checked.
    pub settings: SettingsChecked,
    /// Error-level findings.
    pub errors: usize,
    /// Warning-level findings.
    pub warnings: usize,
    /// Info-level findings.
    pub infos: usize,
    /// What was found; after a repair, what remains.
    pub findings: Vec<Finding>,
    /// The repairs made (empty for [`Doctor::examine`]).
    pub repairs: Vec<Repair>,
}

impl Report {
    pub(crate) fn new(
        backend: &'static str,
        checked_at_ms: u64,
        topics: usize,
        queues: usize,
        settings: SettingsChecked,
        mut findings: Vec<Finding>,
    ) -> Self {
        findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(&b.check)));
        let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
        Report {
            backend,
            checked_at_ms,
            topics,
            queues,
            settings,
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            infos: count(Severity::Info),
            findings,
            repairs: Vec::new(),
        }
    }

    /// Whether an error-level finding remains.
    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }

    /// The findings of one check.
    pub fn of(&self, check: Check) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.check == check)
    }
}

/// The limits the checks apply. Every limit has a default suited to production; tests
/// and small deployments can shorten them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DoctorOptions {
    pub(crate) gone_after: Duration,
    pub(crate) retry_overdue: Duration,
    pub(crate) retry_grace: Duration,
    pub(crate) lag_limit: u64,
    pub(crate) dead_letter_limit: u64,
    pub(crate) dead_letter_recent: u64,
    pub(crate) dead_letter_window: Duration,
    pub(crate) stall_grace: Duration,
    pub(crate) max_stalled: u32,
    pub(crate) memory_ratio: f64,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            gone_after: Duration::from_secs(600),
            retry_overdue: Duration::from_secs(300),
            retry_grace: Duration::from_secs(300),
            lag_limit: 100_000,
            dead_letter_limit: 10_000,
            dead_letter_recent: 1_000,
            dead_letter_window: Duration::from_secs(3600),
            stall_grace: Duration::from_secs(60),
            max_stalled: 1,
            memory_ratio: 0.9,
        }
    }
}

impl DoctorOptions {
    /// A consumer holding entries that has not read, claimed or kept one alive for this
    /// long is gone (default 10 minutes, ten times the bus's default `min_idle`).
    pub fn gone_after(mut self, d: Duration) -> Self {
        self.gone_after = d;
        self
    }

    /// A retry due this long ago is overdue (default 5 minutes; a running bus moves
    /// retries within about a second of their due time).
    pub fn retry_overdue(mut self, d: Duration) -> Self {
        self.retry_overdue = d;
        self
    }

    /// The `vanished_group_grace` the retry repair uses for retries of a group that is
    /// gone (default 5 minutes, the bus's default).
    pub fn retry_grace(mut self, d: Duration) -> Self {
        self.retry_grace = d;
        self
    }

    /// A group with more undelivered entries than this pins retention (default 100,000).
    pub fn lag_limit(mut self, entries: u64) -> Self {
        self.lag_limit = entries;
        self
    }

    /// A dead-letter queue longer than this is reported (default 10,000).
    pub fn dead_letter_limit(mut self, entries: u64) -> Self {
        self.dead_letter_limit = entries;
        self
    }

    /// More dead letters than `entries` within `window` are reported as growth (default
    /// 1,000 in an hour).
    pub fn dead_letter_growth(mut self, entries: u64, window: Duration) -> Self {
        self.dead_letter_recent = entries;
        self.dead_letter_window = window;
        self
    }

    /// An active job whose lease expired this long ago was missed by the stall check
    /// (default 1 minute; a running worker checks every few seconds).
    pub fn stall_grace(mut self, d: Duration) -> Self {
        self.stall_grace = d;
        self
    }

    /// The `max_stalled` the stall repair uses (default 1, the worker's default).
    pub fn max_stalled(mut self, n: u32) -> Self {
        self.max_stalled = n;
        self
    }

    /// Used memory above this share of `maxmemory` is reported (default 0.9; more than
    /// 0, at most 1).
    pub fn memory_ratio(mut self, ratio: f64) -> Self {
        self.memory_ratio = ratio;
        self
    }

    /// Refuses limits that would report a healthy store as broken.
    fn check(&self) -> Result<()> {
        let zero = [
            ("gone_after", self.gone_after),
            ("retry_overdue", self.retry_overdue),
            ("stall_grace", self.stall_grace),
            ("the dead-letter growth window", self.dead_letter_window),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, d)| d.is_zero()) {
            return Err(Error::config(format!(
                "doctor option {name} must be longer than zero"
            )));
        }
        if !(self.memory_ratio > 0.0 && self.memory_ratio <= 1.0) {
            return Err(Error::config(
                "doctor option memory_ratio must be more than 0 and at most 1",
            ));
        }
        if self.lag_limit == 0 {
            return Err(Error::config("doctor option lag_limit must be at least 1"));
        }
        Ok(())
    }
}

/// Examines a backend and repairs what is safe. See the module docs.
#[derive(Clone)]
pub struct Doctor {
    backend: Arc<dyn Backend>,
    options: DoctorOptions,
}

impl fmt::Debug for Doctor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doctor")
            .field("backend", &self.backend.name())
            .field("options", &self.options)
            .finish()
    }
}

impl Doctor {
    /// A doctor for `backend`, with default limits.
    pub fn new(backend: impl Into<AnyBackend>) -> Self {
        Doctor {
            backend: backend.into().0,
            options: DoctorOptions::default(),
        }
    }

    /// Replaces the limits.
    pub fn options(mut self, options: DoctorOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs every check; changes nothing. Fails with [`Error::Config`] for limits that
    /// make no sense (a zero duration, a memory ratio outside (0, 1]).
    pub async fn examine(&self) -> Result<Report> {
        self.options.check()?;
        checks::examine(self.backend.as_ref(), &self.options).await
    }

    /// Runs every check, repairs the findings that are safe to repair, and runs the
    /// checks again: the report holds what remains and the repairs made. A repair that
    /// fails is reported in [`Repair::error`]; the others still run.
    pub async fn repair(&self) -> Result<Report> {
        let before = self.examine().await?;
        let repairs = repair::run(self.backend.as_ref(), &self.options, &before).await;
        let mut after = self.examine().await?;
        after.repairs = repairs;
        Ok(after)
    }
}
