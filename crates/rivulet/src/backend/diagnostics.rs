//! What a backend reports to `rivulet doctor` (O-DOCTOR-1): plain observations, read
//! from the registries and bounded per object. The doctor (`crate::doctor`) turns them
//! into findings; the backends only read.

/// The limits a backend reads against. Times are ms by the store's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// The store's clock now.
    pub(crate) now_ms: u64,
    /// A retry due before this is overdue.
    pub(crate) overdue_before_ms: u64,
    /// Dead letters written from this time on count as recent.
    pub(crate) recent_since_ms: u64,
    /// The most recent dead letters counted (the count stops there).
    pub(crate) recent_cap: usize,
    /// An active job whose lease expired before this is overdue for the stall check.
    pub(crate) lease_expired_before_ms: u64,
}

/// One reading of a server setting: its value, or why it could not be read.
pub(crate) type Reading<T> = std::result::Result<T, String>;

/// The settings of the store that bear on the guarantees.
#[derive(Debug, Clone)]
pub(crate) enum ServerSettings {
    /// The store has no such settings (the memory backend).
    NotApplicable,
    /// What the server said.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Read {
        /// `CONFIG GET appendonly`.
        appendonly: Reading<String>,
        /// `CONFIG GET maxmemory-policy`.
        eviction: Reading<String>,
        /// `INFO memory`: (`used_memory`, `maxmemory`; 0 = no limit).
        memory: Reading<(u64, u64)>,
    },
}

/// One consumer of a group, over both of the group's logs.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerHealth {
    pub(crate) name: String,
    /// Since the consumer last read, claimed or kept an entry alive (Redis: the
    /// smaller of `idle` on the topic and on the lane; memory: of its pending entries).
    pub(crate) idle_ms: u64,
    /// Entries pending on it.
    pub(crate) pending: u64,
}

/// One group of a log.
#[derive(Debug, Clone)]
pub(crate) struct GroupHealth {
    pub(crate) name: String,
    /// In the group registry.
    pub(crate) registered: bool,
    /// The group exists on the log.
    pub(crate) exists: bool,
    /// Registered as a broadcast group.
    pub(crate) broadcast: bool,
    /// Its broadcast heartbeat is alive (meaningful for broadcast groups).
    pub(crate) heartbeat: bool,
    /// Entries of the log not yet delivered to the group, when known.
    pub(crate) lag: Option<u64>,
    /// Entries pending on the group's consumers (topic and lane).
    pub(crate) pending: u64,
    /// Its consumers with entries pending (consumers holding nothing are left out).
    pub(crate) consumers: Vec<ConsumerHealth>,
}

/// One log of a topic (the topic itself or its dead-letter queue).
#[derive(Debug, Clone, Default)]
pub(crate) struct LogHealth {
    /// Entries in the log.
    pub(crate) length: u64,
    /// The groups on the log or in its registry.
    pub(crate) groups: Vec<GroupHealth>,
    /// Scheduled retries due before [`Probe::overdue_before_ms`].
    pub(crate) retries_overdue: u64,
    /// Due time of the earliest scheduled retry.
    pub(crate) earliest_retry_ms: Option<u64>,
}

/// A topic's dead-letter queue.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeadLetterHealth {
    pub(crate) length: u64,
    /// Dead letters written since [`Probe::recent_since_ms`], up to the cap.
    pub(crate) recent: u64,
}

/// One job queue.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueHealth {
    /// Active jobs whose lease expired before [`Probe::lease_expired_before_ms`].
    pub(crate) leases_expired: u64,
    /// The earliest lease expiry among active jobs.
    pub(crate) earliest_lease_ms: Option<u64>,
    /// The parked-jobs counter (`meta.parked`).
    pub(crate) parked_counter: i64,
    /// Jobs in the parked sets of the paused names.
    pub(crate) parked_jobs: u64,
}
