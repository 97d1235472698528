//! The jobs checker. Its inputs come from the probes' logs and the public API only:
//! every add the adders made (with its outcome), every handler start and outcome the
//! workers logged, each job's record after the drain (`Queue::job`), the queue's O(1)
//! counts (`Queue::counts`), the queue's event stream (`Queue::events`), and the faults
//! the harness injected.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rivulet::{JobCounts, JobEvent, JobEventKind, JobInfo, JobState};
use serde::Serialize;

use super::probe::{AddRecord, AddSpec, WorkEv, WorkRecord};
use crate::checker::{FaultKind, FaultRecord};
use crate::probe::PublishResult;

/// One event of the queue's stream, as the checker reads it.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    /// When it was written, by the store's clock (the stream id's milliseconds).
    pub(crate) t: u64,
    pub(crate) job: String,
    pub(crate) kind: JobEventKind,
    pub(crate) attempt: u32,
    pub(crate) detail: Option<String>,
}

impl From<&JobEvent> for Ev {
    fn from(e: &JobEvent) -> Ev {
        Ev {
            t: e.id
                .split('-')
                .next()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0),
            job: e.job.to_string(),
            kind: e.kind,
            attempt: e.attempt,
            detail: e.detail.clone(),
        }
    }
}

/// Everything the checker reads.
#[derive(Debug, Default)]
pub(crate) struct JobHistory {
    /// What each job was planned to do, by id.
    pub(crate) planned: HashMap<String, AddSpec>,
    pub(crate) adds: Vec<AddRecord>,
    pub(crate) work: Vec<WorkRecord>,
    /// Each job's record after the drain, for every id any adder logged.
    pub(crate) finals: HashMap<String, Option<JobInfo>>,
    /// The O(1) counts of each queue of the run.
    pub(crate) counts: Vec<JobCounts>,
    pub(crate) events: Vec<Ev>,
    pub(crate) faults: Vec<FaultRecord>,
    /// How long a lease lasts (reruns after a fault are allowed within it).
    pub(crate) lease_ms: u64,
    /// How long before a Redis kill an acknowledged add may be lost by Redis.
    pub(crate) window_ms: u64,
    /// The interval of the run's scheduler, when it has one.
    pub(crate) tick_ms: Option<u64>,
    /// The queue's rate limit: at most `.0` starts per `.1` ms.
    pub(crate) rate: Option<(u32, u64)>,
    /// The cap on each job group's active jobs.
    pub(crate) group_cap: Option<u32>,
}

/// What the checker found.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct JobOutcome {
    pub(crate) added_ok: u64,
    pub(crate) added_unknown: u64,
    pub(crate) added_fail: u64,
    pub(crate) duplicates: u64,
    /// Acknowledged adds whose job has no terminal state.
    pub(crate) lost: u64,
    /// Of those, lost by Redis within the fsync window before a Redis kill.
    pub(crate) lost_in_fsync_window: u64,
    /// Handler starts of ids never added (or added as a duplicate, or refused), and
    /// records of refused adds.
    pub(crate) unexpected: u64,
    /// Jobs that ended in another terminal state than their plan says.
    pub(crate) wrong_outcome: u64,
    /// Jobs with more than one terminal outcome recorded.
    pub(crate) double_outcome: u64,
    /// Attempt outcomes (completed, failed, retried, rate-limited) recorded without a
    /// live lease: after the job's lease was revoked or handed back and before it was
    /// leased again, or for another attempt than the lease's.
    pub(crate) stale_write_accepted: u64,
    /// Handler starts beyond 1 + planned failures + stalls, hand-backs and faults.
    pub(crate) runs_over_bound: u64,
    /// Delayed jobs started before their time.
    pub(crate) early: u64,
    /// Dedup keys held by more than one added job.
    pub(crate) dedup_violations: u64,
    /// Flow parents leased before their last child finished.
    pub(crate) parent_early: u64,
    /// Jobs not finished after the drain.
    pub(crate) stuck: u64,
    /// |O(1) count − jobs actually in the state|, summed over the states.
    pub(crate) counts_mismatch: u64,
    /// The most starts (leases) in any window of the rate limit's period (less 50 ms
    /// for the clocks: see `limits`), beyond its max.
    pub(crate) limit_exceeded: u64,
    /// The most jobs of one job group active at once, beyond the cap.
    pub(crate) cap_exceeded: u64,
    /// Scheduler ticks fired more than once.
    pub(crate) tick_dup: u64,
    /// Ticks between the first and the last fired that never fired (a runner was up
    /// throughout: the scenarios kill one at a time).
    pub(crate) tick_missed: u64,
    pub(crate) ticks: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    pub(crate) starts: u64,
    pub(crate) stalls: u64,
    pub(crate) examples: BTreeMap<String, Vec<String>>,
}

impl JobOutcome {
    fn example(&mut self, what: &str, id: &str) {
        let v = self.examples.entry(what.to_owned()).or_default();
        if v.len() < 5 {
            v.push(id.to_owned());
        }
    }
}

/// The terminal state a job's plan leads to.
pub(crate) fn expected(a: &AddSpec) -> JobState {
    let s = &a.spec;
    if s.cancel {
        JobState::Cancelled
    } else if s.permanent
        || a.timeout_ms.is_some_and(|t| t < s.ms)
        || s.fail >= a.attempts
        || (s.panic && a.attempts < 2)
    {
        JobState::Failed
    } else {
        JobState::Completed
    }
}

/// Handler starts the plan itself causes beyond the first.
fn planned_reruns(a: &AddSpec) -> u64 {
    let s = &a.spec;
    let extra = if s.permanent {
        0
    } else if a.timeout_ms.is_some_and(|t| t < s.ms) || s.fail >= a.attempts {
        a.attempts.saturating_sub(1)
    } else if s.panic {
        1
    } else {
        s.fail
    };
    u64::from(extra)
}

fn disrupts_redis(k: FaultKind) -> bool {
    matches!(
        k,
        FaultKind::RedisKill
            | FaultKind::Proxy
            | FaultKind::ClusterFailover
            | FaultKind::ClusterKillMaster
            | FaultKind::SentinelKillMaster
    )
}

pub(crate) fn check(h: &JobHistory) -> JobOutcome {
    let mut o = JobOutcome::default();
    // Adds.
    let mut added: BTreeSet<&str> = BTreeSet::new(); // ids that may exist
    let mut acked: BTreeMap<&str, &AddRecord> = BTreeMap::new();
    let mut refused: BTreeSet<&str> = BTreeSet::new();
    for a in &h.adds {
        match a.result {
            PublishResult::Ok if a.duplicate => {
                o.duplicates += 1;
                refused.insert(&a.id);
            }
            PublishResult::Ok => {
                o.added_ok += 1;
                added.insert(&a.id);
                acked.insert(&a.id, a);
            }
            PublishResult::Unknown => {
                o.added_unknown += 1;
                added.insert(&a.id);
            }
            PublishResult::Fail => {
                o.added_fail += 1;
                refused.insert(&a.id);
            }
        }
    }
    // A refused id that was also added by a later call is not refused.
    refused.retain(|id| !added.contains(id));
    // A scheduler's jobs: added by the tick that fired them, acknowledged by its event.
    let fired: BTreeSet<&str> = h
        .events
        .iter()
        .filter(|e| e.kind == JobEventKind::SchedulerFired)
        .map(|e| e.job.as_str())
        .collect();
    added.extend(fired.iter().copied());

    // Dedup: each key held by at most one job that exists.
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in h.adds.iter().filter(|a| added.contains(a.id.as_str())) {
        if let (Some(k), Some(Some(_))) = (&a.dedup, h.finals.get(&a.id)) {
            holders.entry(k).or_default().insert(&a.id);
        }
    }
    for (k, ids) in holders {
        if ids.len() > 1 {
            o.dedup_violations += 1;
            o.example("dedup_violations", k);
        }
    }

    // Final records.
    let kills: Vec<&FaultRecord> = h
        .faults
        .iter()
        .filter(|f| matches!(f.kind, FaultKind::RedisKill | FaultKind::ClusterKillMaster))
        .collect();
    for (id, info) in &h.finals {
        let state = info.as_ref().map(|i| i.state);
        if refused.contains(id.as_str()) && info.is_some() {
            o.unexpected += 1;
            o.example("unexpected", id);
        }
        match state {
            Some(JobState::Completed) => o.completed += 1,
            Some(JobState::Failed) => o.failed += 1,
            Some(JobState::Cancelled) => o.cancelled += 1,
            Some(_) if added.contains(id.as_str()) => {
                o.stuck += 1;
                o.example("stuck", id);
            }
            _ => {}
        }
        if let Some(a) = acked.get(id.as_str()) {
            match state {
                Some(s) if s.is_terminal() => {
                    if let Some(p) = h.planned.get(id)
                        && expected(p) != s
                    {
                        o.wrong_outcome += 1;
                        o.example("wrong_outcome", id);
                    }
                }
                _ => {
                    let in_window = state.is_none()
                        && h.window_ms > 0
                        && kills
                            .iter()
                            .any(|k| a.t_done + h.window_ms >= k.t && a.t_done <= k.t);
                    if in_window {
                        o.lost_in_fsync_window += 1;
                    } else {
                        o.lost += 1;
                        o.example("lost", id);
                    }
                }
            }
        }
    }
    for id in acked.keys() {
        if !h.finals.contains_key(*id) {
            o.lost += 1;
            o.example("lost", id);
        }
    }
    for id in &fired {
        let done = h
            .finals
            .get(*id)
            .and_then(Option::as_ref)
            .is_some_and(|i| i.state.is_terminal());
        if !done && !acked.contains_key(id) {
            o.lost += 1;
            o.example("lost", id);
        }
    }
    ticks(h, &mut o);
    limits(h, &mut o);
    parents(h, &mut o);

    // Counts: the O(1) figures against the records.
    let mut actual: HashMap<JobState, u64> = HashMap::new();
    for info in h.finals.values().flatten() {
        *actual.entry(info.state).or_default() += 1;
    }
    for s in JobState::ALL {
        let a = actual.get(&s).copied().unwrap_or(0);
        let counted: u64 = h.counts.iter().map(|c| c.of(s)).sum();
        o.counts_mismatch += counted.abs_diff(a);
    }

    // Events: outcomes per job, in stream order. An attempt's outcome (completed,
    // failed, retried, rate-limited) must follow a lease (`active`) that was not revoked
    // (`stalled`) or handed back (`released`) in between, and carry that lease's attempt:
    // anything else was written by a run that no longer held the job.
    let mut leased: HashMap<&str, Option<u32>> = HashMap::new();
    let mut outcomes: HashMap<&str, u32> = HashMap::new();
    let mut stalls: HashMap<&str, u64> = HashMap::new();
    for e in &h.events {
        let id = e.job.as_str();
        match e.kind {
            JobEventKind::Active => {
                leased.insert(id, Some(e.attempt));
            }
            JobEventKind::Stalled | JobEventKind::Released => {
                leased.insert(id, None);
                *stalls.entry(id).or_default() += 1;
                if e.kind == JobEventKind::Stalled {
                    o.stalls += 1;
                }
            }
            JobEventKind::Completed
            | JobEventKind::Failed
            | JobEventKind::Retried
            | JobEventKind::RateLimited => {
                if matches!(e.kind, JobEventKind::Completed | JobEventKind::Failed) {
                    *outcomes.entry(id).or_default() += 1;
                }
                let held = leased.insert(id, None).flatten();
                // A failed attempt straight after a stall is the stall check giving
                // up on a job that stalled too often, not a late write.
                let stall_gave_up = matches!(e.kind, JobEventKind::Failed | JobEventKind::Retried)
                    && held.is_none()
                    && e.detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with("stalled "));
                if held != Some(e.attempt) && !stall_gave_up {
                    o.stale_write_accepted += 1;
                    o.example("stale_write_accepted", id);
                }
            }
            _ => {}
        }
    }
    for (id, n) in &outcomes {
        let cancelled = h
            .finals
            .get(*id)
            .and_then(Option::as_ref)
            .is_some_and(|i| i.state == JobState::Cancelled);
        if *n > 1 || cancelled {
            o.double_outcome += 1;
            o.example("double_outcome", id);
        }
    }

    // Handler starts.
    let mut starts: HashMap<&str, Vec<&WorkRecord>> = HashMap::new();
    for w in h.work.iter().filter(|w| w.ev == WorkEv::Start) {
        o.starts += 1;
        if !added.contains(w.id.as_str()) {
            o.unexpected += 1;
            o.example("unexpected", &w.id);
        }
        starts.entry(&w.id).or_default().push(w);
    }
    let ended = |w: &WorkRecord, before: u64| {
        h.work.iter().any(|e| {
            e.pid == w.pid
                && e.id == w.id
                && e.attempt == w.attempt
                && e.t <= before
                && matches!(
                    e.ev,
                    WorkEv::Ok | WorkEv::Fail | WorkEv::Panic | WorkEv::Cancelled
                )
        })
    };
    for (id, runs) in &starts {
        let planned = h.planned.get(*id).map_or(0, planned_reruns);
        let faults = h
            .faults
            .iter()
            .filter(|f| {
                runs.iter().any(|w| {
                    if disrupts_redis(f.kind) {
                        w.t + h.lease_ms + 2000 >= f.t && w.t <= f.t_end + h.lease_ms + 2000
                    } else {
                        f.pid == Some(w.pid) && w.t <= f.t && !ended(w, f.t)
                    }
                })
            })
            .count() as u64;
        let allowed = 1 + planned + stalls.get(id).copied().unwrap_or(0) + faults;
        let n = runs.len() as u64;
        if n > allowed {
            o.runs_over_bound += n - allowed;
            o.example("runs_over_bound", id);
        }
        if let Some(run_at) = acked.get(id).and_then(|a| a.run_at_ms)
            && runs.iter().any(|w| w.t < run_at)
        {
            o.early += 1;
            o.example("early", id);
        }
    }
    o
}

/// How far the stream's clock may run ahead of `finished_at` (both the store's time,
/// taken at slightly different moments of a script).
const CLOCK_SLACK_MS: u64 = 5;

/// A flow's parent is leased only after each of its children finished: its first
/// `active` event is no earlier than the latest child's finish time.
fn parents(h: &JobHistory, o: &mut JobOutcome) {
    let mut first_lease: HashMap<&str, u64> = HashMap::new();
    for e in h.events.iter().filter(|e| e.kind == JobEventKind::Active) {
        first_lease.entry(e.job.as_str()).or_insert(e.t);
    }
    let finished: HashMap<&str, u64> = h
        .finals
        .iter()
        .filter_map(|(id, i)| {
            let i = i.as_ref().filter(|i| i.state.is_terminal())?;
            Some((id.as_str(), i.finished_at_ms?))
        })
        .collect();
    for id in early_parents(&h.planned, &first_lease, &finished) {
        o.parent_early += 1;
        o.example("parent_early", id);
    }
}

/// The flow parents first leased (`first_lease`) before the latest finish time of their
/// children (`finished`: the finished jobs), or while a child had not finished.
fn early_parents<'a>(
    planned: &'a HashMap<String, AddSpec>,
    first_lease: &HashMap<&str, u64>,
    finished: &HashMap<&str, u64>,
) -> Vec<&'a str> {
    let mut early = Vec::new();
    for (id, plan) in planned.iter().filter(|(_, p)| !p.children.is_empty()) {
        let Some(leased) = first_lease.get(id.as_str()) else {
            continue;
        };
        let last_child = plan
            .children
            .iter()
            .map(|c| finished.get(c.id.as_str()).copied())
            .try_fold(0, |a, t| t.map(|t| a.max(t)));
        if last_child.is_none_or(|t| leased + CLOCK_SLACK_MS < t) {
            early.push(id.as_str());
        }
    }
    early
}

/// Each tick of the scheduler fired once, and none skipped between the first and last.
fn ticks(h: &JobHistory, o: &mut JobOutcome) {
    let Some(every) = h.tick_ms.filter(|t| *t > 0) else {
        return;
    };
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for e in h
        .events
        .iter()
        .filter(|e| e.kind == JobEventKind::SchedulerFired)
    {
        let tick = e
            .detail
            .as_deref()
            .and_then(|d| d.rsplit_once('@'))
            .and_then(|(_, t)| t.parse().ok())
            .unwrap_or(0);
        *seen.entry(tick).or_default() += 1;
    }
    o.ticks = seen.len() as u64;
    for (tick, n) in &seen {
        if *n > 1 {
            o.tick_dup += n - 1;
            o.example("tick_dup", &tick.to_string());
        }
    }
    let ticks: Vec<u64> = seen.keys().copied().collect();
    for w in ticks.windows(2) {
        let missing = (w[1] - w[0]) / every - 1;
        if missing > 0 {
            o.tick_missed += missing;
            o.example("tick_missed", &format!("after {}", w[0]));
        }
    }
}

/// How much shorter than the rate limit's period the checked windows are.
const RATE_SLACK_MS: u64 = 50;

/// The queue's rate limit and its job groups' cap, from the leases and their ends in
/// the event stream (the store's clock and commit order).
fn limits(h: &JobHistory, o: &mut JobOutcome) {
    if let Some((max, per)) = h.rate {
        // Starts are read off the event stream's clock (its ids), which can run a
        // script's duration apart from the clock the limiter stamps leases with: a
        // window is taken `RATE_SLACK_MS` shorter, so only a real excess counts.
        let per = per.saturating_sub(RATE_SLACK_MS).max(1);
        let starts: Vec<u64> = h
            .events
            .iter()
            .filter(|e| e.kind == JobEventKind::Active)
            .map(|e| e.t)
            .collect();
        let mut from = 0;
        let mut most = 0;
        for (i, t) in starts.iter().enumerate() {
            while starts[from] + per <= *t {
                from += 1;
            }
            most = most.max(i + 1 - from);
        }
        o.limit_exceeded = (most as u64).saturating_sub(u64::from(max));
    }
    if let Some(cap) = h.group_cap {
        let mut active: HashMap<&str, u64> = HashMap::new();
        let mut running: BTreeSet<&str> = BTreeSet::new();
        let mut most: u64 = 0;
        for e in &h.events {
            let Some(group) = h.planned.get(&e.job).and_then(|p| p.group.as_deref()) else {
                continue;
            };
            let ends = match e.kind {
                JobEventKind::Cancelled => e.detail.as_deref() != Some("requested"),
                k => matches!(
                    k,
                    JobEventKind::Completed
                        | JobEventKind::Failed
                        | JobEventKind::Retried
                        | JobEventKind::RateLimited
                        | JobEventKind::Stalled
                        | JobEventKind::Released
                ),
            };
            if e.kind == JobEventKind::Active && running.insert(&e.job) {
                let n = active.entry(group).or_default();
                *n += 1;
                most = most.max(*n);
            } else if ends && running.remove(e.job.as_str()) {
                *active.entry(group).or_default() -= 1;
            }
        }
        o.cap_exceeded = most.saturating_sub(u64::from(cap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::probe::Spec;

    fn add(id: &str) -> AddRecord {
        AddRecord {
            id: id.into(),
            t_invoke: 1,
            t_done: 2,
            result: PublishResult::Ok,
            duplicate: false,
            holder: Some(id.into()),
            run_at_ms: None,
            dedup: None,
            error: None,
        }
    }

    fn plan(id: &str) -> AddSpec {
        AddSpec {
            spec: Spec {
                id: id.into(),
                ..Spec::default()
            },
            attempts: 3,
            ..AddSpec::default()
        }
    }

    #[test]
    fn expected_outcomes_follow_the_plan() {
        let mut a = plan("a");
        assert_eq!(expected(&a), JobState::Completed);
        a.spec.fail = 2;
        assert_eq!(expected(&a), JobState::Completed);
        assert_eq!(planned_reruns(&a), 2);
        a.spec.fail = 3;
        assert_eq!(expected(&a), JobState::Failed);
        assert_eq!(planned_reruns(&a), 2);
        let mut t = plan("t");
        t.spec.ms = 500;
        t.timeout_ms = Some(100);
        assert_eq!(expected(&t), JobState::Failed);
    }

    fn ev(job: &str, kind: JobEventKind, attempt: u32) -> Ev {
        Ev {
            t: 0,
            job: job.into(),
            kind,
            attempt,
            detail: None,
        }
    }

    fn work(ev: WorkEv, id: &str, attempt: u32, t: u64, pid: u32) -> WorkRecord {
        WorkRecord {
            ev,
            id: id.into(),
            attempt,
            t,
            pid,
        }
    }

    #[test]
    fn an_outcome_after_a_revoked_lease_is_a_stale_write() {
        use JobEventKind as K;
        let h = JobHistory {
            events: vec![
                ev("a", K::Active, 1),
                ev("a", K::Stalled, 1),
                ev("a", K::Completed, 1),
                ev("b", K::Active, 1),
                ev("b", K::Retried, 1),
                ev("b", K::Active, 2),
                ev("b", K::Completed, 2),
            ],
            ..JobHistory::default()
        };
        let o = check(&h);
        assert_eq!(o.stale_write_accepted, 1);
        assert_eq!(o.examples["stale_write_accepted"], vec!["a".to_owned()]);
        assert_eq!(o.double_outcome, 0);
        assert_eq!(o.stalls, 1);
    }

    #[test]
    fn two_outcomes_of_one_job_are_a_double_outcome() {
        use JobEventKind as K;
        let h = JobHistory {
            events: vec![
                ev("a", K::Active, 1),
                ev("a", K::Completed, 1),
                ev("a", K::Active, 1),
                ev("a", K::Completed, 1),
            ],
            ..JobHistory::default()
        };
        let o = check(&h);
        assert_eq!(o.double_outcome, 1);
        assert_eq!(o.stale_write_accepted, 0);
    }

    #[test]
    fn a_stall_check_giving_up_is_not_a_stale_write() {
        let h = JobHistory {
            events: vec![
                ev("a", JobEventKind::Active, 1),
                ev("a", JobEventKind::Stalled, 1),
                Ev {
                    detail: Some("stalled 2 times (its lease expired)".into()),
                    ..ev("a", JobEventKind::Failed, 1)
                },
            ],
            ..JobHistory::default()
        };
        assert_eq!(check(&h).stale_write_accepted, 0);
    }

    #[test]
    fn reruns_are_bounded_by_the_plan_and_the_faults() {
        let mut h = JobHistory {
            adds: vec![add("a")],
            planned: [("a".to_owned(), plan("a"))].into_iter().collect(),
            ..JobHistory::default()
        };
        h.work = vec![
            work(WorkEv::Start, "a", 1, 10, 7),
            work(WorkEv::Start, "a", 1, 20, 8),
        ];
        assert_eq!(check(&h).runs_over_bound, 1, "a second run with no cause");
        // A SIGKILL of the first run's process while it ran allows the second.
        h.faults = vec![FaultRecord {
            t: 15,
            t_end: 15,
            kind: FaultKind::ConsumerKill,
            pid: Some(7),
            detail: String::new(),
        }];
        assert_eq!(check(&h).runs_over_bound, 0);
        // Not if the first run had already ended when the kill came.
        h.work.insert(1, work(WorkEv::Ok, "a", 1, 12, 7));
        assert_eq!(check(&h).runs_over_bound, 1);
    }

    #[test]
    fn a_delayed_job_started_before_its_time_is_early() {
        let mut a = add("a");
        a.run_at_ms = Some(100);
        let h = JobHistory {
            adds: vec![a],
            work: vec![work(WorkEv::Start, "a", 1, 99, 7)],
            ..JobHistory::default()
        };
        assert_eq!(check(&h).early, 1);
    }

    #[test]
    fn ticks_fired_twice_or_skipped_are_counted() {
        let fire = |tick: u64| Ev {
            detail: Some(format!("beat@{tick}")),
            ..ev(
                &format!("sched:beat:{tick}"),
                JobEventKind::SchedulerFired,
                0,
            )
        };
        let h = JobHistory {
            tick_ms: Some(100),
            events: vec![fire(1000), fire(1100), fire(1100), fire(1400)],
            ..JobHistory::default()
        };
        let o = check(&h);
        assert_eq!((o.ticks, o.tick_dup, o.tick_missed), (3, 1, 2));
        // Each tick's job must end: none of these has a record.
        assert_eq!(o.lost, 3);
    }

    #[test]
    fn starts_beyond_the_rate_and_the_group_cap_are_counted() {
        let at = |t: u64, job: &str, kind| Ev {
            t,
            ..ev(job, kind, 1)
        };
        let mut grouped = plan("a");
        grouped.group = Some("g".into());
        let mut h = JobHistory {
            rate: Some((2, 1000)),
            group_cap: Some(1),
            planned: [("a".to_owned(), grouped.clone()), ("b".to_owned(), grouped)]
                .into_iter()
                .collect(),
            events: vec![
                at(0, "a", JobEventKind::Active),
                at(10, "a", JobEventKind::Completed),
                at(500, "b", JobEventKind::Active),
                at(940, "b", JobEventKind::Completed),
                at(1500, "c", JobEventKind::Active),
            ],
            ..JobHistory::default()
        };
        let o = check(&h);
        assert_eq!((o.limit_exceeded, o.cap_exceeded), (0, 0));
        h.events.insert(3, at(900, "a", JobEventKind::Active));
        let o = check(&h);
        assert_eq!(o.limit_exceeded, 1, "three starts within one second");
        assert_eq!(o.cap_exceeded, 1, "a and b of group g active at once");
    }

    #[test]
    fn a_parent_leased_before_its_last_child_finished_is_early() {
        let mut parent = plan("p");
        parent.spec.id = "p".into();
        parent.children = ["p-c1", "p-c2"]
            .map(|id| Spec {
                id: id.into(),
                ..Spec::default()
            })
            .to_vec();
        let planned: HashMap<String, AddSpec> = [("p".to_owned(), parent)].into_iter().collect();
        let lease = |t: u64| [("p", t)].into_iter().collect::<HashMap<&str, u64>>();
        let done: HashMap<&str, u64> = [("p-c1", 100), ("p-c2", 200)].into_iter().collect();
        assert!(early_parents(&planned, &lease(200), &done).is_empty());
        assert_eq!(early_parents(&planned, &lease(150), &done), vec!["p"]);
        // A child not finished at all: any lease of the parent is early.
        let half: HashMap<&str, u64> = [("p-c1", 100)].into_iter().collect();
        assert_eq!(early_parents(&planned, &lease(500), &half), vec!["p"]);
        // A parent never leased (a child failed it) is not judged here.
        assert!(early_parents(&planned, &HashMap::new(), &half).is_empty());
    }

    #[test]
    fn an_acked_add_without_a_record_is_lost() {
        let h = JobHistory {
            adds: vec![add("a"), add("b")],
            finals: [("a".to_owned(), None)].into_iter().collect(),
            ..JobHistory::default()
        };
        let o = check(&h);
        assert_eq!(o.lost, 2);
        assert_eq!(o.added_ok, 2);
    }
}
