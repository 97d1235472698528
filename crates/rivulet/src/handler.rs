//! What a handler receives ([`Delivery`]) and what it returns on failure ([`HandlerError`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::message::{EntryId, Headers, MessageId};
use crate::name::{GroupName, TopicName};

/// How a handler failed, which decides what happens to the message (B-RET-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// Try again later, with backoff, until the attempts run out.
    Retryable,
    /// Never try again: dead-letter at once.
    Permanent,
}

/// A handler's failure: retryable (the default, and what `?` produces) or permanent.
///
/// ```
/// use rivulet::HandlerError;
/// # fn charge() -> Result<(), std::io::Error> { Ok(()) }
/// # fn f() -> Result<(), HandlerError> {
/// charge()?; // any error converts into a retryable failure
/// charge().map_err(HandlerError::permanent)?; // this one will not be retried
/// # Ok(()) }
/// ```
pub struct HandlerError {
    kind: FailureKind,
    message: String,
    retry_after: Option<Duration>,
    rate_limited: bool,
}

impl HandlerError {
    /// A failure that is retried with the subscription's backoff.
    pub fn retryable(error: impl fmt::Display) -> Self {
        HandlerError {
            kind: FailureKind::Retryable,
            message: error.to_string(),
            retry_after: None,
            rate_limited: false,
        }
    }

    /// The handler met a rate limit (say, an upstream answered 429): try again in
    /// `delay` (at most 7 days). For a job (J-7) this is **not a failed attempt**: the job
    /// goes back delayed with its attempt count unchanged, and its group (an ungrouped
    /// job: its whole queue) leases nothing for `delay`, in every process. For a bus
    /// message it is a retryable failure with [`retry_after`](Self::retry_after)`(delay)`.
    pub fn rate_limited(delay: Duration) -> Self {
        HandlerError {
            kind: FailureKind::Retryable,
            message: format!("rate limited, retry in {}", crate::deadline::human(delay)),
            retry_after: Some(delay),
            rate_limited: true,
        }
    }

    /// Whether the handler met a rate limit ([`rate_limited`](Self::rate_limited)).
    pub fn is_rate_limited(&self) -> bool {
        self.rate_limited
    }

    /// A failure that sends the message straight to the dead-letter queue.
    pub fn permanent(error: impl fmt::Display) -> Self {
        HandlerError {
            kind: FailureKind::Permanent,
            message: error.to_string(),
            retry_after: None,
            rate_limited: false,
        }
    }

    /// Asks for the next attempt no earlier than `delay` from now, instead of the
    /// policy's backoff (still bounded by the policy's attempts). Delays longer than
    /// [`MAX_RETRY_DELAY`](crate::retry::MAX_RETRY_DELAY) (7 days) are cut to it.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Retryable or permanent.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// Whether the failure is retryable.
    pub fn is_retryable(&self) -> bool {
        self.kind == FailureKind::Retryable
    }

    /// The error message as it will be recorded.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn requested_delay(&self) -> Option<Duration> {
        self.retry_after
            .map(|d| d.min(crate::retry::MAX_RETRY_DELAY))
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::retryable(e)
    }
}

/// Extension methods to mark a `Result`'s error as retryable or permanent.
pub trait ResultExt<T> {
    /// Maps the error into a retryable [`HandlerError`].
    fn retryable(self) -> Result<T, HandlerError>;
    /// Maps the error into a permanent [`HandlerError`].
    fn permanent(self) -> Result<T, HandlerError>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::retryable)
    }
    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }
}

/// Everything about one delivery except the payload.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryMeta {
    pub(crate) topic: TopicName,
    pub(crate) group: GroupName,
    pub(crate) handler: Arc<str>,
    pub(crate) message_id: MessageId,
    pub(crate) entry_id: EntryId,
    pub(crate) headers: Headers,
    pub(crate) attempt: u32,
    pub(crate) delivery_count: u64,
    pub(crate) published_at_ms: u64,
}

/// One message handed to a handler: the decoded payload plus its metadata.
#[derive(Debug)]
pub struct Delivery<T> {
    payload: T,
    meta: Arc<DeliveryMeta>,
    cancel: CancellationToken,
}

impl<T> Delivery<T> {
    pub(crate) fn new(payload: T, meta: Arc<DeliveryMeta>, cancel: CancellationToken) -> Self {
        Delivery {
            payload,
            meta,
            cancel,
        }
    }

    /// The decoded payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the payload out of the delivery.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The topic the message was published to.
    pub fn topic(&self) -> &TopicName {
        &self.meta.topic
    }

    /// The consumer group this delivery belongs to.
    pub fn group(&self) -> &GroupName {
        &self.meta.group
    }

    /// The handler's name.
    pub fn handler(&self) -> &str {
        &self.meta.handler
    }

    /// The message id (stable across retries and replays).
    pub fn message_id(&self) -> &MessageId {
        &self.meta.message_id
    }

    /// The entry id of this delivery (changes on retry).
    pub fn entry_id(&self) -> &EntryId {
        &self.meta.entry_id
    }

    /// All headers.
    pub fn headers(&self) -> &Headers {
        &self.meta.headers
    }

    /// One header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.meta.headers.get(name).map(String::as_str)
    }

    /// The attempt number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.meta.attempt
    }

    /// How many times this entry has been delivered to the group (more than 1 after a
    /// consumer crashed while handling it).
    pub fn delivery_count(&self) -> u64 {
        self.meta.delivery_count
    }

    /// When the message was first published, in milliseconds since the Unix epoch.
    pub fn published_at_ms(&self) -> u64 {
        self.meta.published_at_ms
    }

    /// Cancelled when the bus shuts down and the drain timeout has passed; long handlers
    /// may watch it to stop early.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Replaces the payload, keeping the metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Delivery<U> {
        Delivery {
            payload: f(self.payload),
            meta: self.meta,
            cancel: self.cancel,
        }
    }
}
