//! Jobs (J-1 … J-16): a queue of jobs with delays, priorities, dedup, pause, fenced
//! leases, cancellation, progress, logs, results, retention, counts and events.

pub mod record;
