//! Metric handles of one subscription, registered once so the per-message path does not
//! build label sets (O-OBS-1). Handles bind to the recorder installed when the
//! subscription starts: install a recorder before subscribing.

use metrics::{Counter, Histogram, Label};

use crate::dead_letter::DeadLetterReason;

pub(crate) struct SubMetrics {
    labels: Vec<Label>,
    pub(crate) ok: Counter,
    pub(crate) retryable: Counter,
    pub(crate) permanent: Counter,
    pub(crate) panic: Counter,
    pub(crate) decode: Counter,
    pub(crate) duration: Histogram,
    pub(crate) retries: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) reclaimed: Counter,
    pub(crate) missing: Counter,
    pub(crate) task_restarts: Counter,
    pub(crate) dropped: Counter,
}

impl SubMetrics {
    pub(crate) fn new(topic: &str, group: &str) -> Self {
        let labels = vec![
            Label::new("topic", topic.to_owned()),
            Label::new("group", group.to_owned()),
        ];
        let handled = |outcome: &'static str| {
            let mut l = labels.clone();
            l.push(Label::new("outcome", outcome));
            metrics::counter!("rivulet_handled_total", l)
        };
        SubMetrics {
            ok: handled("ok"),
            retryable: handled("retryable"),
            permanent: handled("permanent"),
            panic: handled("panic"),
            decode: handled("decode"),
            duration: metrics::histogram!("rivulet_handler_duration_seconds", labels.clone()),
            retries: metrics::counter!("rivulet_retries_total", labels.clone()),
            duplicates: metrics::counter!("rivulet_duplicates_total", labels.clone()),
            reclaimed: metrics::counter!("rivulet_reclaimed_total", labels.clone()),
            missing: metrics::counter!("rivulet_reclaim_missing_total", labels.clone()),
            task_restarts: metrics::counter!("rivulet_task_restarts_total", labels.clone()),
            dropped: metrics::counter!("rivulet_dropped_total", labels.clone()),
            labels,
        }
    }

    /// Dead letters are rare: this one builds its label set when called.
    /// The counter of one outcome (its label is [`Outcome::label`](crate::outcome::Outcome::label)).
    pub(crate) fn outcome(&self, outcome: &crate::outcome::Outcome) -> &Counter {
        use crate::outcome::Outcome;
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Retryable { .. } => &self.retryable,
            Outcome::Permanent { .. } => &self.permanent,
            Outcome::Panic { .. } => &self.panic,
            Outcome::Undecodable { .. } => &self.decode,
        }
    }

    pub(crate) fn dead_lettered(&self, reason: DeadLetterReason) {
        let mut l = self.labels.clone();
        l.push(Label::new("reason", reason.as_str()));
        metrics::counter!("rivulet_dead_lettered_total", l).increment(1);
    }
}
