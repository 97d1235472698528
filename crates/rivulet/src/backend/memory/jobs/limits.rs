//! A memory queue's limits and job groups (J-7, J-8): the reference of what
//! `lua/jobs_limits_lib.lua` does on Redis (see [`crate::jobs::limits`]).
//!
//! Groups with waiting jobs, room and no pause sit in `ready`, ordered by a rotation
//! counter; a group served goes to the back. A group whose rate window is full or that
//! is held sits in `timed` until then; a group at its cap or paused sits in neither and
//! comes back when one of its jobs leaves active or it is resumed. Ungrouped jobs take
//! part in the rotation as one member (`uturn`).

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::queue::{Key, MemQueue, wake};
use crate::backend::jobs::{Fetch, Leased, QueueSettings};
use crate::jobs::limits::{GroupCounts, Limits, Rate};
use crate::jobs::record::{JobEventKind, JobState};
use crate::name::{JobGroup, JobId};

/// The limits and groups of one queue.
#[derive(Debug, Default)]
pub(crate) struct Limited {
    pub(super) limits: Limits,
    /// The queue leases nothing until then (a rate-limited ungrouped job).
    held_until: u64,
    /// The queue's start stamps in its rate window.
    stamps: VecDeque<u64>,
    groups: HashMap<JobGroup, MemGroup>,
    /// Groups that may lease now, by rotation.
    ready: BTreeSet<(u64, JobGroup)>,
    /// Groups waiting for their window or hold, by time.
    timed: BTreeSet<(u64, JobGroup)>,
    rot: u64,
    /// The ungrouped jobs' place in the rotation.
    uturn: u64,
    /// Waiting jobs in groups' sets (for counts).
    pub(super) grouped_waiting: u64,
}

#[derive(Debug, Default)]
struct MemGroup {
    waiting: BTreeSet<Key>,
    active: u64,
    paused: bool,
    stamps: VecDeque<u64>,
    held_until: u64,
    /// Its key in `ready` or `timed`, when in one.
    ready_at: Option<u64>,
    timed_at: Option<u64>,
}

/// When a window of `rate` over `stamps` has room (`now` when it has), trimming stamps
/// that left it.
fn window_open(stamps: &mut VecDeque<u64>, rate: Option<Rate>, now: u64) -> u64 {
    let Some(r) = rate else { return now };
    let per = crate::deadline::millis(r.per);
    while stamps.front().is_some_and(|t| t.saturating_add(per) <= now) {
        stamps.pop_front();
    }
    if (stamps.len() as u64) < u64::from(r.max) {
        return now;
    }
    stamps.front().map_or(now, |t| t.saturating_add(per))
}

impl Limited {
    fn any(&self, now: u64) -> bool {
        self.limits.concurrency.is_some() || self.limits.rate.is_some() || self.held_until > now
    }

    fn next_rot(&mut self) -> u64 {
        self.rot += 1;
        self.rot
    }

    fn take_out(&mut self, g: &JobGroup) {
        let Some(m) = self.groups.get_mut(g) else {
            return;
        };
        if let Some(r) = m.ready_at.take() {
            self.ready.remove(&(r, g.clone()));
        }
        if let Some(t) = m.timed_at.take() {
            self.timed.remove(&(t, g.clone()));
        }
    }

    /// Puts group `g` where it belongs (see the module docs); `fresh`: it was just
    /// served, so it goes to the back. Returns whether it newly became ready.
    fn place(&mut self, g: &JobGroup, now: u64, fresh: bool) -> bool {
        let cap = self.limits.group_concurrency;
        let rate = self.limits.group_rate;
        let Some(m) = self.groups.get_mut(g) else {
            return false;
        };
        let out = m.paused || m.waiting.is_empty() || cap.is_some_and(|c| m.active >= u64::from(c));
        if out {
            self.take_out(g);
            self.forget_if_idle(g);
            return false;
        }
        let mut open = window_open(&mut m.stamps, rate, now);
        if m.held_until > now {
            open = open.max(m.held_until);
        }
        if open > now {
            self.take_out(g);
            if let Some(m) = self.groups.get_mut(g) {
                m.timed_at = Some(open);
            }
            self.timed.insert((open, g.clone()));
            return false;
        }
        if let Some(t) = m.timed_at.take() {
            self.timed.remove(&(t, g.clone()));
        }
        if m.ready_at.is_some() && !fresh {
            return false;
        }
        if let Some(r) = m.ready_at.take() {
            self.ready.remove(&(r, g.clone()));
        }
        let r = self.next_rot();
        if let Some(m) = self.groups.get_mut(g) {
            m.ready_at = Some(r);
        }
        self.ready.insert((r, g.clone()));
        !fresh
    }

    /// Drops a group's entry once nothing of it is left (its pause is kept).
    fn forget_if_idle(&mut self, g: &JobGroup) {
        if self.groups.get(g).is_some_and(|m| {
            !m.paused
                && m.waiting.is_empty()
                && m.active == 0
                && m.stamps.is_empty()
                && m.held_until == 0
                && m.ready_at.is_none()
                && m.timed_at.is_none()
        }) {
            self.groups.remove(g);
        }
    }

    /// The groups in play (waiting or active jobs, or paused) after `after`, by name.
    pub(super) fn list(
        &self,
        after: Option<&JobGroup>,
        limit: usize,
    ) -> Vec<(JobGroup, GroupCounts)> {
        let mut names: Vec<&JobGroup> = self
            .groups
            .iter()
            .filter(|(_, m)| m.paused || !m.waiting.is_empty() || m.active > 0)
            .map(|(g, _)| g)
            .filter(|g| after.is_none_or(|a| g.as_str() > a.as_str()))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names
            .into_iter()
            .take(limit)
            .map(|g| (g.clone(), self.counts(g)))
            .collect()
    }

    pub(super) fn counts(&self, g: &JobGroup) -> GroupCounts {
        self.groups
            .get(g)
            .map_or_else(GroupCounts::default, |m| GroupCounts {
                waiting: m.waiting.len() as u64,
                active: m.active,
                paused: m.paused,
            })
    }
}

impl MemQueue {
    /// A job of group `g` becomes waiting (not parked) at `key`.
    pub(super) fn group_link_waiting(&mut self, g: &JobGroup, key: Key, now: u64) {
        let m = self.lim.groups.entry(g.clone()).or_default();
        if m.waiting.insert(key) {
            self.lim.grouped_waiting += 1;
        }
        if self.lim.place(g, now, false) {
            wake(&self.work);
        }
    }

    /// A waiting job of group `g` leaves it; whether it was there.
    pub(super) fn group_unlink_waiting(&mut self, g: &JobGroup, key: &Key, now: u64) -> bool {
        let Some(m) = self.lim.groups.get_mut(g) else {
            return false;
        };
        let was = m.waiting.remove(key);
        if was {
            self.lim.grouped_waiting -= 1;
        }
        self.lim.place(g, now, false);
        was
    }

    /// A job of group `g` becomes active (leased).
    pub(super) fn group_entered_active(&mut self, g: &JobGroup) {
        self.lim.groups.entry(g.clone()).or_default().active += 1;
    }

    /// A job (of group `g`, if any) leaves active.
    pub(super) fn left_active(&mut self, g: Option<&JobGroup>, now: u64) {
        if let Some(g) = g
            && let Some(m) = self.lim.groups.get_mut(g)
        {
            m.active = m.active.saturating_sub(1);
            if self.lim.place(g, now, false) {
                wake(&self.work);
            }
        }
        // A worker idle at the queue's cap may lease again.
        if self.lim.limits.concurrency.is_some() {
            wake(&self.work);
        }
    }

    /// A handler said "rate limited, retry in `ms`": holds the job's group, or the queue.
    pub(super) fn hold(&mut self, g: Option<&JobGroup>, ms: u64, now: u64) {
        let until = now.saturating_add(ms);
        match g {
            Some(g) => {
                let m = self.lim.groups.entry(g.clone()).or_default();
                m.held_until = m.held_until.max(until);
            }
            None => self.lim.held_until = self.lim.held_until.max(until),
        }
    }

    pub(super) fn set_limits(&mut self, limits: Limits) {
        self.lim.limits = limits;
        wake(&self.work);
    }

    /// Pauses or resumes group `g`; whether it changed.
    pub(super) fn pause_group(
        &mut self,
        g: &JobGroup,
        paused: bool,
        now: u64,
        s: &QueueSettings,
    ) -> bool {
        let m = self.lim.groups.entry(g.clone()).or_default();
        if m.paused == paused {
            self.lim.forget_if_idle(g);
            return false;
        }
        m.paused = paused;
        self.lim.place(g, now, false);
        let id = JobId::new(g.as_str()).ok();
        if let Some(id) = id {
            let kind = if paused {
                JobEventKind::GroupPaused
            } else {
                JobEventKind::GroupResumed
            };
            self.event(s, kind, &id, 0, Some("group".into()));
        }
        if !paused {
            wake(&self.work);
        }
        true
    }

    /// Whether leasing must take the limits path (limits set, or groups in play).
    pub(super) fn limited(&self, now: u64) -> bool {
        self.lim.any(now) || !self.lim.ready.is_empty() || !self.lim.timed.is_empty()
    }

    /// Leases under the limits, taking turns between ready groups and the ungrouped
    /// jobs; returns the jobs and when a limit that held work back opens.
    pub(super) fn lease_limited(
        &mut self,
        f: &Fetch,
        now: u64,
        s: &QueueSettings,
    ) -> (Vec<Leased>, Option<u64>) {
        let mut out = Vec::new();
        let mut until: Option<u64> = None;
        let mut at = |t: u64| until = Some(until.map_or(t, |u: u64| u.min(t)));
        // Groups whose window or hold ended take part again.
        let due: Vec<JobGroup> = self
            .lim
            .timed
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(64)
            .map(|(_, g)| g.clone())
            .collect();
        for g in due {
            self.lim.take_out(&g);
            if self.lim.place(&g, now, false) {
                wake(&self.work);
            }
        }
        let mut room = f.limit;
        if self.lim.held_until > now {
            room = 0;
            at(self.lim.held_until);
        }
        if room > 0
            && let Some(cap) = self.lim.limits.concurrency
        {
            let active = self.sets.get(&JobState::Active).map_or(0, |a| a.len());
            room = room.min((cap as usize).saturating_sub(active));
        }
        let rate = self.lim.limits.rate;
        if room > 0
            && let Some(r) = rate
        {
            let open = window_open(&mut self.lim.stamps, rate, now);
            if open > now {
                room = 0;
                at(open);
            } else {
                room = room.min((r.max as usize).saturating_sub(self.lim.stamps.len()));
            }
        }
        let mut skips = f.limit.saturating_mul(4).saturating_add(16);
        while out.len() < room && skips > 0 {
            let head = self.lim.ready.iter().next().cloned();
            let ungrouped = self
                .sets
                .get(&JobState::Waiting)
                .is_some_and(|w| !w.is_empty());
            let before = out.len();
            match head {
                None if !ungrouped => break,
                Some((r, _)) if ungrouped && self.lim.uturn < r => {
                    self.lease_ungrouped(1, f, now, s, &mut out, &mut skips);
                    self.lim.uturn = self.lim.next_rot();
                }
                None => {
                    let want = room - out.len();
                    self.lease_ungrouped(want, f, now, s, &mut out, &mut skips);
                    self.lim.uturn = self.lim.next_rot();
                }
                Some((_, g)) => {
                    let key = self
                        .lim
                        .groups
                        .get(&g)
                        .and_then(|m| m.waiting.iter().next().cloned());
                    match key {
                        Some(key) => {
                            if let Some(l) = self.lease_key(key, f, now, s) {
                                if self.lim.limits.group_rate.is_some()
                                    && let Some(m) = self.lim.groups.get_mut(&g)
                                {
                                    m.stamps.push_back(now);
                                }
                                out.push(l);
                            }
                        }
                        None => skips = skips.saturating_sub(1),
                    }
                    self.lim.place(&g, now, true);
                }
            }
            if out.len() == before {
                skips = skips.saturating_sub(1);
            }
        }
        if rate.is_some() {
            for _ in 0..out.len() {
                self.lim.stamps.push_back(now);
            }
            let open = window_open(&mut self.lim.stamps, rate, now);
            if open > now {
                at(open);
            }
        }
        if let Some((t, _)) = self.lim.timed.iter().next() {
            at(*t);
        }
        (out, until)
    }

    fn lease_ungrouped(
        &mut self,
        want: usize,
        f: &Fetch,
        now: u64,
        s: &QueueSettings,
        out: &mut Vec<Leased>,
        skips: &mut usize,
    ) {
        for _ in 0..want {
            let Some(key) = self.set(JobState::Waiting).iter().next().cloned() else {
                return;
            };
            match self.lease_key(key, f, now, s) {
                Some(l) => out.push(l),
                None => *skips = skips.saturating_sub(1),
            }
        }
    }

    /// Grouped waiting jobs of paused names met by a fetch are parked there.
    pub(super) fn group_of(&self, id: &JobId) -> Option<JobGroup> {
        self.jobs.get(id).and_then(|j| j.group.clone())
    }
}
