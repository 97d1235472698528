//! The scenarios: each turns a profile and a seeded random source into a [`Plan`]
//! (the Redis topology, the consumers and their behaviour, what is published and
//! planted, and the fault schedule). Every random choice comes from that source, so a
//! seed replays the same plan.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rivulet_testkit::ProxyMode;

use crate::harness::env::Topology;
use crate::harness::inspect::RawEntry;
use crate::probe::consumer::{Behaviour, Retry, SubMode};
use crate::probe::hash64;
use crate::probe::publisher::{Retention, message_id};

mod defects;
mod faults;

use defects::*;
use faults::*;

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Profile {
    /// Small and quick: part of the test suite (CI).
    Smoke,
    /// Larger and longer, plus the cluster scenarios: on demand.
    Soak,
}

impl Profile {
    pub(crate) fn pick<T>(self, smoke: T, soak: T) -> T {
        match self {
            Profile::Smoke => smoke,
            Profile::Soak => soak,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        self.pick("smoke", "soak")
    }
}

/// The consumers of one group.
#[derive(Debug, Clone)]
pub(crate) struct GroupPlan {
    /// The group's name in explicit mode; the handler's name in derived and broadcast
    /// modes, where the library names the group (`harness` resolves it).
    pub(crate) name: String,
    pub(crate) mode: SubMode,
    pub(crate) consumers: usize,
    pub(crate) concurrency: usize,
    pub(crate) sliding: bool,
    pub(crate) idempotent: bool,
    /// Idempotent by the payload's id (copies of one message share a key).
    pub(crate) idempotent_by_id: bool,
    pub(crate) current_thread: bool,
    /// Subscriptions per bus in this group (explicit mode).
    pub(crate) subscriptions: usize,
    /// Buses per process, on clones of one backend.
    pub(crate) buses: usize,
    /// Each process shuts its first bus down this long after it is ready.
    pub(crate) close_first_bus_after_ms: Option<u64>,
    pub(crate) behaviour: Behaviour,
}

impl GroupPlan {
    /// Whether the checker holds this group to the promise. A broadcast group belongs to
    /// one process and ends with it: it is exercised, not checked.
    pub(crate) fn checked(&self) -> bool {
        self.mode != SubMode::Broadcast
    }
}

/// The bus timings every consumer gets.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub(crate) min_idle_ms: u64,
    pub(crate) reclaim_ms: u64,
    pub(crate) block_ms: u64,
    pub(crate) drain_timeout_ms: u64,
    pub(crate) retry_mover_ms: u64,
    pub(crate) retry: Retry,
}

/// What the publisher does.
#[derive(Debug, Clone)]
pub(crate) struct PublishPlan {
    pub(crate) count: u64,
    pub(crate) rate: u64,
    pub(crate) in_flight: usize,
    pub(crate) pad: [usize; 2],
    pub(crate) oversize: BTreeSet<String>,
    pub(crate) response_timeout_ms: u64,
    /// Safe retention with a small max length, trimmed often: must remove entries, and
    /// never one a group still needs.
    pub(crate) retention: Option<Retention>,
    /// Each message is published this many times, under different message ids.
    pub(crate) copies: u32,
    /// Every n-th message waits for a replica (`wait_for_replicas`); 0: none.
    pub(crate) wait_replicas_every: u64,
}

/// One injected fault. Consumer faults name a slot; if that slot has no live process
/// at the time, the next live slot is used.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    Kill {
        slot: usize,
    },
    Term {
        slot: usize,
    },
    /// A SIGTERM the scenario promises is a healthy drain (every handler shorter than
    /// the drain timeout): no duplicates allowed for it.
    Drain {
        slot: usize,
    },
    Stop {
        slot: usize,
        for_ms: u64,
    },
    /// Waits until nothing is outstanding, stops group `group`'s consumers for good,
    /// destroys the group in Redis (as removing a handler from an application would:
    /// the group and its lane), then replays every dead letter through the library.
    RetireGroup {
        group: usize,
    },
    /// `XGROUP DESTROY` of group `group` on the topic's stream, by an admin, while its
    /// consumers keep running.
    DestroyGroup {
        group: usize,
    },
    /// The topic's retry set replaced by a string for `for_ms`, then restored (its
    /// members kept aside and put back).
    BreakRetrySet {
        for_ms: u64,
    },
    /// Redis's `maxmemory` lowered below its use (`noeviction`) for `for_ms`, then lifted.
    FillMemory {
        for_ms: u64,
    },
    KillRedis {
        down_ms: u64,
    },
    Proxy {
        mode: ProxyMode,
        for_ms: u64,
    },
    ClusterFailover,
    ClusterKillMaster {
        down_ms: u64,
    },
    /// The master of a Sentinel deployment SIGKILLed; once the sentinels promoted the
    /// replica, it is restarted (and becomes a replica of the new master).
    SentinelKillMaster,
}

/// A fault and when it starts, in ms after publishing began. Faults run one after the
/// other: one that lasts holds back the next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheduled {
    pub(crate) at_ms: u64,
    pub(crate) fault: Fault,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) topology: Topology,
    pub(crate) groups: Vec<GroupPlan>,
    pub(crate) timing: Timing,
    pub(crate) publish: PublishPlan,
    pub(crate) planted: Vec<RawEntry>,
    /// Ids that must end in every group's dead-letter queue.
    pub(crate) poison: BTreeSet<String>,
    pub(crate) faults: Vec<Scheduled>,
    pub(crate) respawn_ms: u64,
    pub(crate) drain_deadline_ms: u64,
    pub(crate) max_payload: usize,
    /// How long before a Redis kill an acknowledged write may be lost by Redis.
    pub(crate) window_ms: u64,
    /// Extra duplicates the scenario allows (explained where it is set).
    pub(crate) dup_extra: u64,
    /// Count overlapping runs of one id; any is a violation.
    pub(crate) check_overlap: bool,
}

impl Plan {
    pub(crate) fn consumer_count(&self) -> usize {
        self.groups.iter().map(|g| g.consumers).sum()
    }

    /// How many publish calls the publisher makes (every copy is a call).
    pub(crate) fn publish_calls(&self) -> u64 {
        self.publish.count * u64::from(self.publish.copies.max(1))
    }

    /// The consumer slots of group `index` (slots are numbered group after group).
    pub(crate) fn slots_of(&self, index: usize) -> std::ops::Range<usize> {
        let start: usize = self.groups[..index].iter().map(|g| g.consumers).sum();
        start..start + self.groups.get(index).map_or(0, |g| g.consumers)
    }

    /// The group of every consumer slot, in slot order.
    pub(crate) fn slots(&self) -> Vec<&GroupPlan> {
        self.groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(g, g.consumers))
            .collect()
    }
}

/// A named scenario.
#[derive(Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    /// Runs only in the soak profile.
    pub(crate) soak_only: bool,
    /// The checker self-test: the run must report a loss.
    pub(crate) selftest: bool,
    build: fn(Profile, &mut StdRng) -> Plan,
}

impl Scenario {
    /// The plan for `profile` and `seed`.
    pub(crate) fn plan(&self, profile: Profile, seed: u64) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed ^ hash64(0, self.name));
        (self.build)(profile, &mut rng)
    }
}

/// Every scenario, in the order `run all` runs them.
pub(crate) fn catalog() -> &'static [Scenario] {
    &CATALOG
}

/// Finds a scenario by name (`main` looks through both catalogs itself).
#[cfg(test)]
pub(crate) fn find(name: &str) -> Option<&'static Scenario> {
    CATALOG.iter().find(|s| s.name == name)
}

static CATALOG: [Scenario; 28] = [
    Scenario {
        name: "baseline",
        about: "no fault; two groups (batch and sliding dispatch) each see every message once",
        soak_only: false,
        selftest: false,
        build: baseline,
    },
    Scenario {
        name: "sentinel-failover",
        about: "the master of a Sentinel deployment SIGKILLed mid-run; a third of the messages wait for a replica (none may be lost)",
        soak_only: false,
        selftest: false,
        build: sentinel_failover,
    },
    Scenario {
        name: "baseline-acl",
        about: "the baseline with every probe logged in as an ACL user limited to rivulet's keys and commands",
        soak_only: false,
        selftest: false,
        build: baseline_acl,
    },
    Scenario {
        name: "consumer-kill",
        about: "consumers SIGKILLed every few seconds mid-handler and restarted",
        soak_only: false,
        selftest: false,
        build: consumer_kill,
    },
    Scenario {
        name: "redis-restart",
        about: "redis-server SIGKILLed and restarted twice (AOF everysec, same port and directory)",
        soak_only: false,
        selftest: false,
        build: redis_restart,
    },
    Scenario {
        name: "consumer-pause",
        about: "a consumer SIGSTOPped for 3 x min_idle (a partition), then SIGCONTed",
        soak_only: false,
        selftest: false,
        build: consumer_pause,
    },
    Scenario {
        name: "proxy-faults",
        about: "every client behind a TCP proxy cycling delay, blackhole, reset, refuse",
        soak_only: false,
        selftest: false,
        build: proxy_faults,
    },
    Scenario {
        name: "poison",
        about: "malformed raw entries, handlers that always fail and permanent failures go to the dead-letter queue",
        soak_only: false,
        selftest: false,
        build: poison,
    },
    Scenario {
        name: "oversize",
        about: "oversized publishes fail with nothing written; oversized raw entries are dead-lettered; near-limit payloads flow",
        soak_only: false,
        selftest: false,
        build: oversize,
    },
    Scenario {
        name: "panics",
        about: "handlers that panic on some attempts (retried) or always (dead-lettered)",
        soak_only: false,
        selftest: false,
        build: panics,
    },
    Scenario {
        name: "long-handlers",
        about: "handlers running 2.5 x min_idle with lease extension: no duplicates allowed",
        soak_only: false,
        selftest: false,
        build: long_handlers,
    },
    Scenario {
        name: "long-handlers-blocking",
        about: "handlers blocking their runtime thread 1.8 x min_idle in a live process: no duplicates allowed",
        soak_only: false,
        selftest: false,
        build: long_handlers_blocking,
    },
    Scenario {
        name: "retries-under-faults",
        about: "handlers failing their first attempts while consumers and redis-server are killed",
        soak_only: false,
        selftest: false,
        build: retries_under_faults,
    },
    Scenario {
        name: "sigterm-drain",
        about: "consumers SIGTERMed (graceful drain) with short and over-long handlers",
        soak_only: false,
        selftest: false,
        build: sigterm_drain,
    },
    Scenario {
        name: "idempotent-kill",
        about: "idempotent handlers; processes exit right after the claim and right before done, plus SIGKILLs",
        soak_only: false,
        selftest: false,
        build: idempotent_kill,
    },
    Scenario {
        name: "retention-under-faults",
        about: "safe trimming to ~100 entries every 200 ms while consumers are killed and stopped: trims, loses nothing",
        soak_only: false,
        selftest: false,
        build: retention_under_faults,
    },
    Scenario {
        name: "broadcast-overlap",
        about: "a broadcast handler `cache` restarting (orphan cleanup) next to regular handlers `cache__warm` and `cache__index` with retries on one topic",
        soak_only: false,
        selftest: false,
        build: broadcast_overlap,
    },
    Scenario {
        name: "shared-group-drain",
        about: "two subscriptions of one bus in one explicit group, slow handlers, SIGTERM while busy: healthy drains, no duplicates allowed",
        soak_only: false,
        selftest: false,
        build: shared_group_drain,
    },
    Scenario {
        name: "leftovers-long-retries",
        about: "concurrency 1, retries longer than min_idle read together with topic entries, 3 consumers, no fault: no duplicates allowed",
        soak_only: false,
        selftest: false,
        build: leftovers_long_retries,
    },
    Scenario {
        name: "idempotent-long",
        about: "every message published twice under different message ids, idempotent by payload id, some handlers 2.5 x the claim lease: no overlap, no duplicates",
        soak_only: false,
        selftest: false,
        build: idempotent_long,
    },
    Scenario {
        name: "replay-after-group-gone",
        about: "dead letters of two groups; one group removed (consumers stopped, group and lane destroyed), then every dead letter replayed: none may vanish",
        soak_only: false,
        selftest: false,
        build: replay_after_group_gone,
    },
    Scenario {
        name: "group-destroyed-retries",
        about: "XGROUP DESTROY of the group on the topic by an admin, 3x, while retries with a 1.5 s backoff are scheduled and consumers run",
        soak_only: false,
        selftest: false,
        build: group_destroyed_retries,
    },
    Scenario {
        name: "side-keys-broken",
        about: "the retry set replaced by a string (2x), and Redis at maxmemory (noeviction), while handlers fail and retry; then repaired",
        soak_only: false,
        selftest: false,
        build: side_keys_broken,
    },
    Scenario {
        name: "shared-backend",
        about: "two buses on clones of one backend per process; the first shut down mid-run, the second must keep consuming",
        soak_only: false,
        selftest: false,
        build: shared_backend,
    },
    Scenario {
        name: "selftest-ack-early",
        about: "checker self-test: a consumer that acks before handling, SIGKILLed; the checker must report lost > 0",
        soak_only: false,
        selftest: true,
        build: selftest_ack_early,
    },
    Scenario {
        name: "redis-restart-fsync-always",
        about: "redis-server SIGKILLed and restarted three times with appendfsync always: no window at all",
        soak_only: true,
        selftest: false,
        build: redis_restart_always,
    },
    Scenario {
        name: "mixed",
        about: "everything at once: kills, stops, SIGTERMs, redis restarts, retries, panics and poison",
        soak_only: true,
        selftest: false,
        build: mixed,
    },
    Scenario {
        name: "cluster-failover",
        about: "Redis Cluster 3 masters + 3 replicas: a coordinated failover, then the topic's master SIGKILLed",
        soak_only: true,
        selftest: false,
        build: cluster_failover,
    },
];

// ---------------------------------------------------------------------------------
// Building blocks

fn behaviour() -> Behaviour {
    Behaviour {
        sleep_ms: [2, 20],
        ..Behaviour::default()
    }
}

fn group(name: &str, consumers: usize, concurrency: usize, b: Behaviour) -> GroupPlan {
    GroupPlan {
        name: name.into(),
        mode: SubMode::Explicit,
        consumers,
        concurrency,
        sliding: false,
        idempotent: false,
        idempotent_by_id: false,
        current_thread: false,
        subscriptions: 1,
        buses: 1,
        close_first_bus_after_ms: None,
        behaviour: b,
    }
}

fn base(p: Profile) -> Plan {
    Plan {
        topology: Topology::Single {
            fsync: "everysec",
            proxy: false,
            acl: false,
        },
        groups: vec![group("g", p.pick(3, 4), 4, behaviour())],
        timing: Timing {
            min_idle_ms: 1000,
            reclaim_ms: 500,
            block_ms: 200,
            drain_timeout_ms: 1000,
            retry_mover_ms: 200,
            retry: Retry {
                max_attempts: 5,
                backoff_ms: 100,
                multiplier: 2.0,
                max_delay_ms: 1000,
            },
        },
        publish: PublishPlan {
            count: p.pick(1000, 15_000),
            rate: p.pick(150, 300),
            in_flight: 8,
            pad: [16, 256],
            oversize: BTreeSet::new(),
            response_timeout_ms: 2000,
            retention: None,
            copies: 1,
            wait_replicas_every: 0,
        },
        planted: Vec::new(),
        poison: BTreeSet::new(),
        faults: Vec::new(),
        respawn_ms: 300,
        drain_deadline_ms: p.pick(45_000, 120_000),
        max_payload: 1024 * 1024,
        window_ms: 2000,
        dup_extra: 0,
        check_overlap: false,
    }
}

/// How long publishing takes, in ms.
pub(crate) fn publish_ms(plan: &Plan) -> u64 {
    plan.publish_calls() * 1000 / plan.publish.rate.max(1)
}

/// `k` distinct message ids out of the publisher's, avoiding `taken`.
fn pick_ids(
    rng: &mut StdRng,
    plan: &Plan,
    k: usize,
    taken: &mut BTreeSet<String>,
) -> BTreeSet<String> {
    let count = usize::try_from(plan.publish.count).unwrap_or(usize::MAX);
    pick_ids_below(rng, count, k, taken)
}

/// `k` distinct ids among the first `count` messages, avoiding `taken`.
fn pick_ids_below(
    rng: &mut StdRng,
    count: usize,
    k: usize,
    taken: &mut BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for i in sample(rng, count, count.min(k + taken.len())) {
        if out.len() == k {
            break;
        }
        let id = message_id("m", i as u64);
        if taken.insert(id.clone()) {
            out.insert(id);
        }
    }
    out
}

/// Fault times from `from` to `to` ms with gaps drawn from `gap`.
fn times(rng: &mut StdRng, from: u64, to: u64, gap: [u64; 2]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        out.push(t);
        t += rng.random_range(gap[0]..=gap[1]);
    }
    out
}

fn any_slot(rng: &mut StdRng, plan: &Plan) -> usize {
    rng.random_range(0..plan.consumer_count().max(1))
}

fn raw(id: String, fields: &[(&str, &[u8])]) -> RawEntry {
    RawEntry {
        id,
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------
// Scenarios

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_plans_replay() {
        let mut names = BTreeSet::new();
        for s in catalog() {
            assert!(names.insert(s.name), "duplicate {}", s.name);
            for profile in [Profile::Smoke, Profile::Soak] {
                let a = format!("{:?}", s.plan(profile, 42));
                let b = format!("{:?}", s.plan(profile, 42));
                assert_eq!(a, b, "{} does not replay", s.name);
            }
        }
    }

    #[test]
    fn fault_schedules_depend_on_the_seed() {
        let s = find("consumer-kill").expect("scenario");
        let a = format!("{:?}", s.plan(Profile::Smoke, 1).faults);
        let b = format!("{:?}", s.plan(Profile::Smoke, 2).faults);
        assert_ne!(a, b);
    }

    #[test]
    fn the_defect_scenarios_aim_at_their_defects() {
        let plan = |name| find(name).expect("scenario").plan(Profile::Smoke, 7);
        // Only the broadcast processes are restarted.
        let b = plan("broadcast-overlap");
        assert!(!b.faults.is_empty());
        assert!(
            b.faults
                .iter()
                .all(|f| matches!(f.fault, Fault::Drain { slot } if b.slots_of(0).contains(&slot)))
        );
        assert!(!b.groups[0].checked() && b.groups[1].checked());
        // Every long run is a retry, at concurrency 1.
        let l = plan("leftovers-long-retries");
        let lb = &l.groups[0].behaviour;
        assert_eq!(l.groups[0].concurrency, 1);
        assert!(!lb.long.is_empty());
        assert!(lb.long.iter().all(|id| lb.fail_times.get(id) == Some(&1)));
        assert!(lb.long_ms > l.timing.min_idle_ms && lb.long_from_attempt == 2);
        // The retry set is broken twice, Redis filled once, all while publishing.
        let k = plan("side-keys-broken");
        let count = |f: fn(&Fault) -> bool| k.faults.iter().filter(|s| f(&s.fault)).count();
        assert_eq!(count(|f| matches!(f, Fault::BreakRetrySet { .. })), 2);
        assert_eq!(count(|f| matches!(f, Fault::FillMemory { .. })), 1);
        assert!(k.faults.iter().all(|s| s.at_ms < publish_ms(&k)));
        // Copies double the calls; handlers outlast the claim's lease.
        let i = plan("idempotent-long");
        assert_eq!(i.publish_calls(), 2 * i.publish.count);
        assert!(i.groups[0].behaviour.long_ms > i.timing.min_idle_ms);
    }

    #[test]
    fn poison_is_disjoint_from_other_behaviour() {
        let plan = find("poison").expect("scenario").plan(Profile::Smoke, 7);
        let b = &plan.groups[0].behaviour;
        assert!(b.fail_always.is_disjoint(&b.permanent));
        assert!(b.fail_times.keys().all(|id| !plan.poison.contains(id)));
        assert_eq!(plan.poison.len(), 10 + 10 + 5 * 5);
    }
}
