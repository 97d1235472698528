#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod admin;
pub mod backend;
mod bus;
pub mod dead_letter;
mod deadline;
#[cfg(test)]
mod defaults_tests;
pub mod doctor;
pub mod error;
mod glob;
mod handler;
pub mod idempotency;
pub mod jobs;
pub mod live;
mod log_limit;
mod maintenance;
pub mod message;
pub mod metrics;
pub mod name;
mod outcome;
pub mod retry;
pub mod topic;
mod trace;

pub use backend::memory::MemoryBackend;
#[cfg(feature = "redis")]
pub use backend::redis::{RedisBackend, RedisBackendBuilder, RedisIdempotencyStore, TlsOptions};
pub use backend::{AnyBackend, LiveMessage};
pub use bus::{
    Bus, BusBuilder, DeadLetters, Dispatch, Publish, PublishBatch, Subscribe, Subscription,
    SubscriptionStats,
};
pub use dead_letter::{DeadLetter, DeadLetterFilter, DeadLetterReason};
pub use error::{Error, ErrorKind, Result, TlsFailure};
pub use handler::{Delivery, FailureKind, HandlerError, ResultExt};
pub use idempotency::{Claim, IdempotencyStore, MemoryIdempotencyStore};
pub use jobs::{
    AddFlow, AddJob, CancelOutcome, ChildRef, Children, Enqueued, FlowChild, FlowEnqueued, Job,
    JobCounts, JobEvent, JobEventKind, JobEvents, JobInfo, JobPage, JobState, Keep, OnChildFailure,
    Queue, QueueBuilder, Schedule, ScheduleError, SchedulerBuilder, SchedulerChange, SchedulerInfo,
    SchedulerRunner, SchedulerRunnerBuilder, SchedulerRunnerStats, SchedulerUpsert, Worker,
    WorkerBuilder, WorkerStats,
};
pub use jobs::{GroupCounts, Limits, Rate};
pub use live::{Live, LiveSubscriber};
pub use message::{EntryId, Headers, MessageId, Published};
pub use name::{
    ConsumerName, GroupName, HandlerName, JobGroup, JobId, JobName, QueueName, TopicName,
};
pub use retry::RetryPolicy;
pub use topic::{Backpressure, StartFrom, TopicOptions, TrimReport};

/// Entry points for the Criterion benchmarks of the per-message CPU path
/// (`benches/per_message.rs`). Not a stable API.
#[doc(hidden)]
#[cfg(feature = "redis")]
pub mod __bench {
    use bytes::Bytes;

    use crate::backend::Record;
    use crate::backend::redis::{reply::RawEntry, wire};
    use crate::message::{Envelope, Headers, MessageId};
    use crate::name::GroupName;

    /// Encodes a message as the stream fields rivulet writes.
    pub fn encode(payload: Bytes, headers: Headers, attempt: u32) -> Vec<Bytes> {
        let mut env = Envelope::new(MessageId::generate(), payload, headers);
        env.attempt = attempt;
        wire::message_fields(&env, attempt > 1)
    }

    /// Decodes stream fields as the reader does; `true` when they make a valid message.
    pub fn decode(id: &str, fields: &[Bytes]) -> bool {
        let fields = fields
            .chunks(2)
            .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
            .collect();
        let raw = RawEntry {
            id: id.to_owned(),
            fields,
        };
        matches!(wire::decode_message(&raw, 1 << 20), Record::Message(_))
    }

    /// Builds the retry-set member of a retry (group, nonce and fields).
    pub fn retry_member(group: &str, fields: &[Bytes]) -> Option<Vec<u8>> {
        let group = GroupName::new(group).ok()?;
        Some(wire::retry_member(&group, &fields.to_vec()))
    }
}
