//! The checker: Jepsen's queue model over the histories of one run.
//!
//! Inputs are what the probes logged (publish calls, handler events), the entries the
//! harness planted itself, the dead letters read back through the library, and the
//! faults the harness injected. Per consumer group:
//!
//! | measure | definition |
//! |---|---|
//! | `lost` | acknowledged publishes (and planted entries) neither handled nor dead-lettered, excluding those in a durability window |
//! | `lost_in_fsync_window` | such losses of publishes acknowledged within the window before a Redis SIGKILL (AOF `everysec`) or a master kill (asynchronous replication): Redis's durability, not the library's |
//! | `unexpected` | handled or dead-lettered ids that were never published |
//! | `failed_but_seen` | publishes reported `fail` that were handled or dead-lettered |
//! | `recovered` | `unknown` publishes that arrived |
//! | `duplicates` | successful handler runs beyond the first, per id |
//! | `dlq_mismatch` | dead letters that were not planted poison, plus acknowledged poison that was not dead-lettered |
//! | `overlap` | (when asked for) handler runs of an id that started while another run of the same id in the same group was still running |
//!
//! A message published several times (copies under different message ids, see
//! `probe::publisher`) is one id: acknowledged when any copy was, handled once when
//! handled by any copy.
//!
//! `stuck` (entries still pending or due after the drain) comes from Redis, not from the
//! logs; see `harness::inspect`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::probe::{ConsumerEvent, Ev, PublishRecord, PublishResult};

/// A dead letter as the checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadRecord {
    pub(crate) id: String,
    pub(crate) group: String,
    pub(crate) reason: String,
}

/// An entry the harness wrote itself (poison, malformed or oversized), acknowledged by
/// Redis at `t`.
#[derive(Debug, Clone)]
pub(crate) struct Planted {
    pub(crate) id: String,
    pub(crate) t: u64,
}

/// What happened in a run.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub(crate) publishes: Vec<PublishRecord>,
    pub(crate) planted: Vec<Planted>,
    pub(crate) events: Vec<ConsumerEvent>,
    pub(crate) dead: Vec<DeadRecord>,
}

/// What the scenario promised.
#[derive(Debug, Default, Clone)]
pub(crate) struct Expect {
    /// Every group that must see every message.
    pub(crate) groups: Vec<String>,
    /// Ids that must end in every group's dead-letter queue (if acknowledged).
    pub(crate) poison: BTreeSet<String>,
    /// Wall-clock ms of events that may lose recently acknowledged writes (Redis SIGKILL
    /// with AOF `everysec`, a master killed before replicating).
    pub(crate) durability_events: Vec<u64>,
    /// How far before such an event an acknowledged write may be lost.
    pub(crate) window_ms: u64,
    /// Count overlapping runs of one id ([`overlaps`]); only meaningful without faults
    /// that kill a handler mid-run (a run that never ended would stay open).
    pub(crate) check_overlap: bool,
}

/// The checker's verdict on one run (summed over groups).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) published_ok: u64,
    pub(crate) published_unknown: u64,
    pub(crate) published_fail: u64,
    pub(crate) planted: u64,
    pub(crate) handled: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) lost: u64,
    pub(crate) lost_in_fsync_window: u64,
    /// Acknowledged with `wait_for_replicas` (a replica had it).
    pub(crate) acked_waited: u64,
    /// Of those, lost: counted in `lost` too, never excused by the window.
    pub(crate) lost_waited: u64,
    pub(crate) unexpected: u64,
    pub(crate) failed_but_seen: u64,
    pub(crate) recovered: u64,
    pub(crate) duplicates: u64,
    pub(crate) dlq_mismatch: u64,
    /// Overlapping runs of one id, when the scenario checks them.
    pub(crate) overlap: Option<u64>,
    /// A few examples of each problem, for the report.
    pub(crate) examples: BTreeMap<String, Vec<String>>,
}

const EXAMPLES: usize = 8;

impl Outcome {
    fn example(&mut self, what: &str, id: &str) {
        let list = self.examples.entry(what.to_owned()).or_default();
        if list.len() < EXAMPLES {
            list.push(id.to_owned());
        }
    }
}

/// Applies the queue model.
pub(crate) fn check(history: &History, expect: &Expect) -> Outcome {
    let mut out = Outcome::default();
    // An id published more than once (copies) counts as acknowledged when any call was,
    // at the earliest acknowledgement; else unknown when any call was; else failed.
    let rank = |r: PublishResult| match r {
        PublishResult::Ok => 2,
        PublishResult::Unknown => 1,
        PublishResult::Fail => 0,
    };
    let mut calls: HashMap<&str, &PublishRecord> = HashMap::new();
    for p in &history.publishes {
        let better = calls.get(p.id.as_str()).is_none_or(|q| {
            rank(p.result) > rank(q.result) || (p.result == q.result && p.t_done < q.t_done)
        });
        if better {
            calls.insert(p.id.as_str(), p);
        }
    }
    for p in calls.values() {
        if p.result == PublishResult::Ok && p.waited {
            out.acked_waited += 1;
        }
        match p.result {
            PublishResult::Ok => out.published_ok += 1,
            PublishResult::Unknown => out.published_unknown += 1,
            PublishResult::Fail => out.published_fail += 1,
        }
    }
    out.planted = history.planted.len() as u64;
    let planted: HashMap<&str, u64> = history
        .planted
        .iter()
        .map(|p| (p.id.as_str(), p.t))
        .collect();
    // Acknowledged ids and when they were acknowledged.
    let acked: BTreeMap<&str, u64> = calls
        .values()
        .filter(|p| p.result == PublishResult::Ok)
        .map(|p| (p.id.as_str(), p.t_done))
        .chain(planted.iter().map(|(id, t)| (*id, *t)))
        .collect();
    let in_window = |t_done: u64| {
        expect
            .durability_events
            .iter()
            .any(|&k| t_done <= k && k - t_done <= expect.window_ms)
    };

    for group in &expect.groups {
        let mut handled: HashMap<&str, u64> = HashMap::new();
        for e in history
            .events
            .iter()
            .filter(|e| e.ev == Ev::Ok && e.group == *group)
        {
            *handled.entry(e.id.as_str()).or_default() += 1;
        }
        let dead: BTreeSet<&str> = history
            .dead
            .iter()
            .filter(|d| d.group == *group)
            .map(|d| d.id.as_str())
            .collect();
        out.handled += handled.len() as u64;
        out.dead_lettered += dead.len() as u64;
        out.duplicates += handled.values().map(|n| n - 1).sum::<u64>();

        for (id, t_done) in &acked {
            if handled.contains_key(id) || dead.contains(id) {
                continue;
            }
            let waited = calls.get(id).is_some_and(|p| p.waited);
            if waited {
                out.lost_waited += 1;
                out.lost += 1;
                out.example("lost_waited", id);
            } else if in_window(*t_done) {
                out.lost_in_fsync_window += 1;
                out.example("lost_in_fsync_window", id);
            } else {
                out.lost += 1;
                out.example("lost", id);
            }
        }
        let seen: BTreeSet<&str> = handled
            .keys()
            .copied()
            .chain(dead.iter().copied())
            .collect();
        for id in &seen {
            match calls.get(id) {
                Some(p) if p.result == PublishResult::Fail => {
                    out.failed_but_seen += 1;
                    out.example("failed_but_seen", id);
                }
                Some(p) if p.result == PublishResult::Unknown => out.recovered += 1,
                Some(_) => {}
                None if planted.contains_key(id) => {}
                None => {
                    out.unexpected += 1;
                    out.example("unexpected", id);
                }
            }
        }
        for id in &dead {
            if !expect.poison.contains(*id) {
                out.dlq_mismatch += 1;
                out.example("dead_lettered_but_not_poison", id);
            }
        }
        for id in &expect.poison {
            if acked.contains_key(id.as_str())
                && !dead.contains(id.as_str())
                && !in_window(acked[id.as_str()])
            {
                out.dlq_mismatch += 1;
                out.example("poison_not_dead_lettered", id);
            }
        }
    }
    if expect.check_overlap {
        let (n, ids) = overlaps(&history.events, &expect.groups);
        out.overlap = Some(n);
        for id in ids {
            out.example("overlapping_runs", &id);
        }
    }
    out
}

/// Handler runs that started while another run of the same id in the same group was
/// still running (between its `start` and its `ok`, `fail` or `panic`), over every
/// process. Returns the count and the ids. Events of one millisecond order ends before
/// starts, so back-to-back runs do not overlap.
pub(crate) fn overlaps(events: &[ConsumerEvent], groups: &[String]) -> (u64, Vec<String>) {
    let mut by_key: BTreeMap<(&str, &str), Vec<(u64, bool)>> = BTreeMap::new();
    for e in events {
        let is_start = match e.ev {
            Ev::Start => true,
            Ev::Ok | Ev::Fail | Ev::Panic => false,
            _ => continue,
        };
        if !groups.contains(&e.group) {
            continue;
        }
        by_key
            .entry((e.group.as_str(), e.id.as_str()))
            .or_default()
            .push((e.t, is_start));
    }
    let (mut n, mut ids) = (0, Vec::new());
    for ((_, id), mut evs) in by_key {
        evs.sort_unstable();
        let mut open = 0u64;
        let mut here = 0;
        for (_, is_start) in evs {
            if is_start {
                if open > 0 {
                    here += 1;
                }
                open += 1;
            } else {
                open = open.saturating_sub(1);
            }
        }
        if here > 0 {
            n += here;
            ids.push(id.to_owned());
        }
    }
    (n, ids)
}

/// What the harness did, for duplicate bounds and reclaim latency.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultRecord {
    /// Wall-clock ms when the fault began.
    pub(crate) t: u64,
    /// When it was healed (equal to `t` for instantaneous faults).
    pub(crate) t_end: u64,
    pub(crate) kind: FaultKind,
    /// The process it hit, when it hit one.
    pub(crate) pid: Option<u32>,
    pub(crate) detail: String,
}

/// Kinds of injected faults.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultKind {
    ConsumerKill,
    ConsumerTerm,
    /// A SIGTERM while every handler is shorter than the drain timeout: a healthy
    /// drain, which must not repeat anything.
    ConsumerDrain,
    ConsumerStop,
    RedisKill,
    Proxy,
    ClusterFailover,
    ClusterKillMaster,
    /// The master of a Sentinel deployment killed, the replica promoted.
    SentinelKillMaster,
    /// A group's consumers stopped for good and the group destroyed (an application
    /// that removed a handler), then the dead letters replayed.
    GroupRetired,
    /// A group destroyed on the topic by an admin while its consumers run.
    GroupDestroyed,
    /// The retry set replaced by a value of the wrong type, then restored.
    RetrySetBroken,
    /// Redis at its `maxmemory` (`noeviction`): writes refused, then the limit lifted.
    MemoryFull,
}

impl FaultKind {
    /// Faults that cut consumers off from Redis or from part of their state (acks may
    /// fail, state may roll back or be re-created).
    fn disrupts_redis(self) -> bool {
        matches!(
            self,
            FaultKind::RedisKill
                | FaultKind::Proxy
                | FaultKind::ClusterFailover
                | FaultKind::ClusterKillMaster
                | FaultKind::SentinelKillMaster
                | FaultKind::GroupDestroyed
                | FaultKind::RetrySetBroken
                | FaultKind::MemoryFull
        )
    }
}

/// The inputs of the duplicate bound.
#[derive(Debug, Clone, Default)]
pub(crate) struct BoundInputs {
    /// Largest number of entries one consumer process handles at once.
    pub(crate) concurrency: u64,
    /// Consumer processes running at once.
    pub(crate) consumers: u64,
    /// Slack around Redis-side disruptions (the durability window).
    pub(crate) window_ms: u64,
    /// A scenario-specific allowance (none of the scenarios needs one today).
    pub(crate) extra: u64,
}

/// The most duplicates the promise allows for this run, with the reasoning:
///
/// * a consumer killed, terminated past its drain timeout or exiting inside a handler
///   may have handled (and logged) up to `concurrency` entries it had not acknowledged;
/// * a healthy drain (SIGTERM with every handler shorter than the drain timeout) and a
///   retired group allow nothing;
/// * a stopped consumer may finish up to `concurrency` entries that were reclaimed
///   meanwhile, plus up to `concurrency` entries already in its socket buffer;
/// * while Redis is unreachable, rolls back, refuses writes, or a group or side key is
///   destroyed under the consumers, every success handled from `window_ms` before the
///   fault to `window_ms` after it healed may lose its ack (or be delivered again by a
///   re-created group), plus every consumer's in-flight entries;
/// * plus the scenario's own allowance.
pub(crate) fn duplicate_bound(
    faults: &[FaultRecord],
    events: &[ConsumerEvent],
    inputs: &BoundInputs,
) -> u64 {
    let c = inputs.concurrency;
    let mut bound = inputs.extra;
    let exits = events.iter().filter(|e| e.ev == Ev::Exit).count() as u64;
    bound += exits * c;
    for f in faults {
        bound += match f.kind {
            FaultKind::ConsumerKill | FaultKind::ConsumerTerm => c,
            FaultKind::ConsumerStop => 2 * c,
            k if k.disrupts_redis() => {
                let from = f.t.saturating_sub(inputs.window_ms);
                let to = f.t_end.saturating_add(inputs.window_ms);
                let oks = events
                    .iter()
                    .filter(|e| e.ev == Ev::Ok && e.t >= from && e.t <= to)
                    .count() as u64;
                oks + inputs.consumers * c
            }
            _ => 0,
        };
    }
    bound
}

/// The longest time from a consumer's death (or stop) to another consumer starting one
/// of the entries it had in flight; `None` when no entry was taken over.
pub(crate) fn reclaim_max_ms(faults: &[FaultRecord], events: &[ConsumerEvent]) -> Option<u64> {
    let mut deaths: Vec<(u32, u64)> = faults
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                FaultKind::ConsumerKill
                    | FaultKind::ConsumerTerm
                    | FaultKind::ConsumerDrain
                    | FaultKind::ConsumerStop
            )
        })
        .filter_map(|f| f.pid.map(|p| (p, f.t)))
        .collect();
    deaths.extend(
        events
            .iter()
            .filter(|e| e.ev == Ev::Exit)
            .map(|e| (e.pid, e.t)),
    );
    let mut by_pid: HashMap<u32, Vec<&ConsumerEvent>> = HashMap::new();
    for e in events {
        by_pid.entry(e.pid).or_default().push(e);
    }
    let mut starts: HashMap<&str, Vec<&ConsumerEvent>> = HashMap::new();
    for e in events.iter().filter(|e| e.ev == Ev::Start) {
        starts.entry(e.id.as_str()).or_default().push(e);
    }
    let mut worst: Option<u64> = None;
    for (pid, t_death) in deaths {
        let Some(own) = by_pid.get(&pid) else {
            continue;
        };
        // Entries this process had started and not finished by its death.
        let mut open: BTreeMap<&str, u64> = BTreeMap::new();
        let mut mine: Vec<&&ConsumerEvent> = own.iter().filter(|e| e.t <= t_death).collect();
        mine.sort_by_key(|e| e.t);
        for e in mine {
            match e.ev {
                Ev::Start => {
                    open.insert(e.id.as_str(), e.t);
                }
                Ev::Ok | Ev::Fail | Ev::Panic => {
                    open.remove(e.id.as_str());
                }
                _ => {}
            }
        }
        for id in open.keys() {
            let next = starts
                .get(id)
                .into_iter()
                .flatten()
                .filter(|s| s.pid != pid && s.t >= t_death)
                .map(|s| s.t)
                .min();
            if let Some(t) = next {
                let latency = t - t_death;
                worst = Some(worst.map_or(latency, |w| w.max(latency)));
            }
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(id: &str, t: u64, result: PublishResult) -> PublishRecord {
        PublishRecord {
            id: id.into(),
            copy: 0,
            t_invoke: t,
            t_done: t + 1,
            result,
            error: None,
            waited: false,
        }
    }

    fn event(ev: Ev, id: &str, t: u64, pid: u32) -> ConsumerEvent {
        ConsumerEvent {
            ev,
            id: id.into(),
            t,
            pid,
            group: "g".into(),
            attempt: 1,
            delivery_count: 1,
        }
    }

    fn expect() -> Expect {
        Expect {
            groups: vec!["g".into()],
            window_ms: 2000,
            ..Expect::default()
        }
    }

    #[test]
    fn a_clean_history_is_clean() {
        let h = History {
            publishes: vec![
                publish("a", 10, PublishResult::Ok),
                publish("b", 20, PublishResult::Ok),
            ],
            events: vec![event(Ev::Ok, "a", 30, 1), event(Ev::Ok, "b", 40, 1)],
            ..History::default()
        };
        let o = check(&h, &expect());
        assert_eq!(
            (o.lost, o.unexpected, o.duplicates, o.dlq_mismatch),
            (0, 0, 0, 0)
        );
        assert_eq!((o.published_ok, o.handled), (2, 2));
    }

    #[test]
    fn an_acknowledged_message_never_handled_is_lost() {
        let h = History {
            publishes: vec![
                publish("a", 10, PublishResult::Ok),
                publish("b", 20, PublishResult::Ok),
            ],
            events: vec![event(Ev::Start, "b", 25, 1), event(Ev::Ok, "a", 30, 1)],
            ..History::default()
        };
        let o = check(&h, &expect());
        assert_eq!(o.lost, 1);
        assert_eq!(o.examples["lost"], vec!["b".to_owned()]);
    }

    #[test]
    fn a_lost_message_that_waited_for_a_replica_is_never_excused() {
        let mut waited = publish("waited", 9_990, PublishResult::Ok);
        waited.waited = true;
        let h = History {
            publishes: vec![waited, publish("plain", 9_990, PublishResult::Ok)],
            ..History::default()
        };
        let mut e = expect();
        e.durability_events = vec![10_000];
        e.window_ms = 1_000;
        let o = check(&h, &e);
        assert_eq!((o.acked_waited, o.lost_waited, o.lost), (1, 1, 1));
        assert_eq!(o.lost_in_fsync_window, 1);
        assert_eq!(o.examples["lost_waited"], vec!["waited".to_owned()]);
    }

    #[test]
    fn losses_just_before_a_redis_kill_are_counted_apart() {
        let h = History {
            publishes: vec![
                publish("old", 1_000, PublishResult::Ok),
                publish("recent", 9_500, PublishResult::Ok),
                publish("after", 12_000, PublishResult::Ok),
            ],
            ..History::default()
        };
        let mut e = expect();
        e.durability_events = vec![10_000];
        let o = check(&h, &e);
        assert_eq!(o.lost_in_fsync_window, 1);
        assert_eq!(o.lost, 2);
    }

    #[test]
    fn unknown_fail_and_unexpected_are_told_apart() {
        let h = History {
            publishes: vec![
                publish("u1", 10, PublishResult::Unknown),
                publish("u2", 10, PublishResult::Unknown),
                publish("f", 10, PublishResult::Fail),
            ],
            events: vec![
                event(Ev::Ok, "u1", 30, 1),
                event(Ev::Ok, "f", 30, 1),
                event(Ev::Ok, "ghost", 30, 1),
            ],
            ..History::default()
        };
        let o = check(&h, &expect());
        assert_eq!(o.recovered, 1);
        assert_eq!(o.failed_but_seen, 1);
        assert_eq!(o.unexpected, 1);
        assert_eq!(o.lost, 0);
    }

    #[test]
    fn duplicates_and_dead_letters() {
        let h = History {
            publishes: vec![
                publish("a", 10, PublishResult::Ok),
                publish("p", 10, PublishResult::Ok),
                publish("q", 10, PublishResult::Ok),
                publish("x", 10, PublishResult::Ok),
            ],
            planted: vec![Planted {
                id: "raw".into(),
                t: 5,
            }],
            events: vec![
                event(Ev::Ok, "a", 30, 1),
                event(Ev::Ok, "a", 40, 2),
                event(Ev::Ok, "a", 50, 3),
            ],
            dead: vec![
                DeadRecord {
                    id: "p".into(),
                    group: "g".into(),
                    reason: "attempts".into(),
                },
                DeadRecord {
                    id: "raw".into(),
                    group: "g".into(),
                    reason: "decode".into(),
                },
                DeadRecord {
                    id: "x".into(),
                    group: "g".into(),
                    reason: "deliveries".into(),
                },
            ],
        };
        let mut e = expect();
        e.poison = ["p", "q", "raw"].into_iter().map(String::from).collect();
        let o = check(&h, &e);
        assert_eq!(o.duplicates, 2);
        // x dead-lettered but not poison; q poison but never dead-lettered (and lost).
        assert_eq!(o.dlq_mismatch, 2);
        assert_eq!(o.lost, 1);
        assert_eq!(o.unexpected, 0);
    }

    #[test]
    fn every_group_must_see_every_message() {
        let mut ok_b = event(Ev::Ok, "a", 30, 2);
        ok_b.group = "h".into();
        let h = History {
            publishes: vec![
                publish("a", 10, PublishResult::Ok),
                publish("b", 10, PublishResult::Ok),
            ],
            events: vec![event(Ev::Ok, "a", 30, 1), event(Ev::Ok, "b", 30, 1), ok_b],
            ..History::default()
        };
        let mut e = expect();
        e.groups.push("h".into());
        let o = check(&h, &e);
        assert_eq!(o.lost, 1);
        assert_eq!(o.handled, 3);
    }

    #[test]
    fn copies_of_a_message_are_one_id() {
        let mut copy = publish("a", 50, PublishResult::Ok);
        copy.copy = 1;
        let h = History {
            publishes: vec![
                publish("a", 10, PublishResult::Unknown),
                copy,
                publish("b", 10, PublishResult::Fail),
                publish("b", 20, PublishResult::Unknown),
            ],
            events: vec![event(Ev::Ok, "a", 60, 1)],
            ..History::default()
        };
        let o = check(&h, &expect());
        assert_eq!((o.published_ok, o.published_unknown), (1, 1));
        assert_eq!((o.lost, o.handled, o.duplicates), (0, 1, 0));
    }

    #[test]
    fn overlapping_runs_of_one_id_are_counted() {
        let events = vec![
            event(Ev::Start, "a", 10, 1),
            event(Ev::Start, "a", 20, 2),
            event(Ev::Ok, "a", 30, 2),
            event(Ev::Ok, "a", 40, 1),
            // Back to back: not an overlap.
            event(Ev::Start, "b", 10, 1),
            event(Ev::Fail, "b", 20, 1),
            event(Ev::Start, "b", 20, 2),
            event(Ev::Ok, "b", 25, 2),
        ];
        assert_eq!(
            overlaps(&events, &["g".to_owned()]),
            (1, vec!["a".to_owned()])
        );
        let mut e = expect();
        e.check_overlap = true;
        let h = History {
            events,
            ..History::default()
        };
        assert_eq!(check(&h, &e).overlap, Some(1));
        assert_eq!(check(&h, &expect()).overlap, None);
    }

    #[test]
    fn the_bound_grows_with_faults() {
        let inputs = BoundInputs {
            concurrency: 4,
            consumers: 3,
            window_ms: 1000,
            extra: 0,
        };
        assert_eq!(duplicate_bound(&[], &[], &inputs), 0);
        let kill = FaultRecord {
            t: 100,
            t_end: 100,
            kind: FaultKind::ConsumerKill,
            pid: Some(7),
            detail: String::new(),
        };
        let stop = FaultRecord {
            kind: FaultKind::ConsumerStop,
            ..kill.clone()
        };
        let redis = FaultRecord {
            t: 10_000,
            t_end: 11_000,
            kind: FaultKind::RedisKill,
            pid: None,
            detail: String::new(),
        };
        let events = vec![
            event(Ev::Ok, "a", 9_500, 1),
            event(Ev::Ok, "b", 11_900, 1),
            event(Ev::Ok, "c", 13_000, 1),
            event(Ev::Exit, "d", 13_000, 1),
        ];
        let bound = duplicate_bound(&[kill, stop, redis], &events, &inputs);
        // kill 4 + stop 8 + redis (2 oks in window + 3 × 4) + exit 4
        assert_eq!(bound, 4 + 8 + 2 + 12 + 4);
    }

    #[test]
    fn reclaim_latency_is_measured_from_the_death() {
        let kill = FaultRecord {
            t: 1_000,
            t_end: 1_000,
            kind: FaultKind::ConsumerKill,
            pid: Some(1),
            detail: String::new(),
        };
        let events = vec![
            event(Ev::Start, "a", 900, 1),
            event(Ev::Start, "b", 950, 1),
            event(Ev::Ok, "b", 990, 1),
            event(Ev::Start, "a", 2_600, 2),
            event(Ev::Ok, "a", 2_700, 2),
        ];
        assert_eq!(
            reclaim_max_ms(std::slice::from_ref(&kill), &events),
            Some(1_600)
        );
        assert_eq!(reclaim_max_ms(&[], &events), None);
    }
}
