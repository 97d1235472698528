#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod backend;
mod bus;
pub mod dead_letter;
pub mod error;
mod handler;
pub mod idempotency;
pub mod live;
pub mod message;
pub mod name;
pub mod retry;
pub mod topic;

pub use backend::memory::MemoryBackend;
#[cfg(feature = "redis")]
pub use backend::redis::{RedisBackend, RedisBackendBuilder, RedisIdempotencyStore};
pub use backend::{AnyBackend, LiveMessage};
pub use bus::{
    Bus, BusBuilder, Dispatch, Publish, PublishBatch, Subscribe, Subscription, SubscriptionStats,
};
pub use dead_letter::{DeadLetter, DeadLetterFilter, DeadLetterReason, DeadLetters};
pub use error::{Error, ErrorKind, Result};
pub use handler::{Delivery, FailureKind, HandlerError, ResultExt};
pub use idempotency::{Claim, IdempotencyStore, MemoryIdempotencyStore};
pub use live::{Live, LiveSubscriber};
pub use message::{EntryId, Headers, MessageId, Published};
pub use name::{ConsumerName, GroupName, HandlerName, TopicName};
pub use retry::RetryPolicy;
pub use topic::{Backpressure, StartFrom, TopicOptions, TrimReport};
