//! Following a queue's event stream (J-15): read from an id (or the oldest retained) and
//! on, live. Every in-process listener is one of these; each has its own connection.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use super::queue::Queue;
use super::record::JobEvent;
use crate::backend::jobs::EventReader;
use crate::error::Result;

/// How many events one read asks for.
const PAGE: usize = 256;

/// A follower of a queue's events, from [`Queue::events`]. Events are read a page at a
/// time; [`next`](JobEvents::next) waits for the next one.
pub struct JobEvents {
    reader: Box<dyn EventReader>,
    after: Option<String>,
    buffered: VecDeque<JobEvent>,
    block: Duration,
}

impl fmt::Debug for JobEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobEvents")
            .field("after", &self.after)
            .field("buffered", &self.buffered.len())
            .finish()
    }
}

impl JobEvents {
    /// The next event, waiting for it as long as it takes. Cancel-safe: dropping the
    /// future loses no event already read.
    pub async fn next(&mut self) -> Result<JobEvent> {
        loop {
            if let Some(e) = self.take() {
                return Ok(e);
            }
            self.fill(Some(self.block)).await?;
        }
    }

    /// The next event if one arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<JobEvent>> {
        if let Some(e) = self.take() {
            return Ok(Some(e));
        }
        self.fill(Some(wait.max(Duration::from_millis(1)))).await?;
        Ok(self.take())
    }

    /// The events already in the stream after the current position, without waiting.
    pub async fn drain_now(&mut self) -> Result<Vec<JobEvent>> {
        let mut out: Vec<JobEvent> = self.buffered.drain(..).collect();
        if let Some(last) = out.last() {
            self.after = Some(last.id.clone());
        }
        loop {
            let before = out.len();
            self.fill(None).await?;
            out.extend(self.buffered.drain(..));
            if let Some(last) = out.last() {
                self.after = Some(last.id.clone());
            }
            if out.len() - before < PAGE {
                return Ok(out);
            }
        }
    }

    fn take(&mut self) -> Option<JobEvent> {
        let e = self.buffered.pop_front()?;
        self.after = Some(e.id.clone());
        Some(e)
    }

    async fn fill(&mut self, block: Option<Duration>) -> Result<()> {
        let after = self
            .buffered
            .back()
            .map(|e| e.id.clone())
            .or_else(|| self.after.clone());
        let events = self.reader.read(after.as_deref(), PAGE, block).await?;
        self.buffered.extend(events);
        Ok(())
    }
}

impl Queue {
    /// Follows the queue's events after `after` (an event id), or from the oldest
    /// retained when `None`. Events carry ids and small facts, never data or results.
    pub async fn events(&self, after: Option<&str>) -> Result<JobEvents> {
        let reader = self.shared.store().event_reader(&self.shared.name).await?;
        Ok(JobEvents {
            reader,
            after: after.map(str::to_owned),
            buffered: VecDeque::new(),
            block: Duration::from_secs(5),
        })
    }
}
