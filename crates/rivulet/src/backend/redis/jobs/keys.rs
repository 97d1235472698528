//! Key names of a job queue (`docs/wire-format.md`, "Jobs", has the full table).
//!
//! Every key of a queue shares the hash tag `{<prefix>/queue/<queue>}`, so each script
//! runs in one slot. The fixed keys are passed to every script as `KEYS`; the per-job
//! keys (`/job/<id>`, `/logs/<id>`, `/dedup/<key>`, `/parked/<name>`) are built inside
//! the scripts from the tag, because a fetch cannot know the ids before it runs (see
//! `docs/decisions.md`, "Job scripts build per-job keys from the queue's tag").

use crate::name::{JobId, QueueName};

/// The queue registry (a set of queue names, not in any queue's slot).
pub(crate) fn queues(prefix: &str) -> String {
    format!("{prefix}/queues")
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    /// `{<prefix>/queue/<queue>}`
    pub(crate) tag: String,
    /// The cancel-hint channel, `<prefix>/queue/<queue>/cancel` (under the prefix, so an
    /// ACL `&<prefix>/*` covers it).
    pub(crate) channel: String,
}

/// The fixed keys, in the order the scripts expect them (`lua/jobs_lib.lua`).
const FIXED: [&str; 11] = [
    "meta",
    "waiting",
    "delayed",
    "active",
    "completed",
    "failed",
    "cancelled",
    "events",
    "marker",
    "paused-names",
    "waiting-children",
];

impl QueueKeys {
    pub(crate) fn new(prefix: &str, queue: &QueueName) -> Self {
        QueueKeys {
            tag: format!("{{{prefix}/queue/{queue}}}"),
            channel: format!("{prefix}/queue/{queue}/cancel"),
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}/{what}", self.tag)
    }

    /// The keys every job script receives, in order.
    pub(crate) fn fixed(&self) -> Vec<String> {
        FIXED.iter().map(|k| self.key(k)).collect()
    }

    pub(crate) fn meta(&self) -> String {
        self.key("meta")
    }

    pub(crate) fn marker(&self) -> String {
        self.key("marker")
    }

    pub(crate) fn events(&self) -> String {
        self.key("events")
    }

    pub(crate) fn paused_names(&self) -> String {
        self.key("paused-names")
    }

    /// The set of a state (`waiting`, `delayed`, …, `waiting-children`).
    pub(crate) fn state_set(&self, state: &str) -> String {
        self.key(state)
    }

    pub(crate) fn job(&self, id: &JobId) -> String {
        format!("{}/job/{id}", self.tag)
    }

    /// A job's data, beside its record (see `data_key` in `jobs_lib.lua`).
    pub(crate) fn data(&self, id: &JobId) -> String {
        format!("{}/data/{id}", self.tag)
    }

    pub(crate) fn logs(&self, id: &JobId) -> String {
        format!("{}/logs/{id}", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_queue_shares_one_hash_tag() {
        let q = QueueName::new("mail:out").expect("queue");
        let k = QueueKeys::new("rivulet", &q);
        let id = JobId::new("j-1").expect("id");
        let mut all = k.fixed();
        all.push(k.job(&id));
        all.push(k.logs(&id));
        for key in &all {
            assert!(key.starts_with("{rivulet/queue/mail:out}/"), "{key}");
        }
        assert_eq!(all[0], "{rivulet/queue/mail:out}/meta");
        assert_eq!(k.marker(), "{rivulet/queue/mail:out}/marker");
        assert_eq!(k.channel, "rivulet/queue/mail:out/cancel");
        assert_eq!(queues("rivulet"), "rivulet/queues");
    }
}
