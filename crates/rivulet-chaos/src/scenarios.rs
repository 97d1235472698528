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
use crate::probe::consumer::{Behaviour, Retry};
use crate::probe::hash64;
use crate::probe::publisher::{Retention, message_id};

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
    fn pick<T>(self, smoke: T, soak: T) -> T {
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
    pub(crate) name: String,
    pub(crate) consumers: usize,
    pub(crate) concurrency: usize,
    pub(crate) sliding: bool,
    pub(crate) idempotent: bool,
    pub(crate) current_thread: bool,
    pub(crate) behaviour: Behaviour,
}

/// The bus timings every consumer gets.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub(crate) min_idle_ms: u64,
    pub(crate) reclaim_ms: u64,
    pub(crate) block_ms: u64,
    pub(crate) drain_timeout_ms: u64,
    pub(crate) retry_scheduler_ms: u64,
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
}

/// One injected fault. Consumer faults name a slot; if that slot has no live process
/// at the time, the next live slot is used.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    Kill { slot: usize },
    Term { slot: usize },
    Stop { slot: usize, for_ms: u64 },
    KillRedis { down_ms: u64 },
    Proxy { mode: ProxyMode, for_ms: u64 },
    ClusterFailover,
    ClusterKillMaster { down_ms: u64 },
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
}

impl Plan {
    pub(crate) fn consumer_count(&self) -> usize {
        self.groups.iter().map(|g| g.consumers).sum()
    }

    /// The group and index within it of a global consumer slot.
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

/// Finds a scenario by name.
pub(crate) fn find(name: &str) -> Option<&'static Scenario> {
    CATALOG.iter().find(|s| s.name == name)
}

static CATALOG: [Scenario; 18] = [
    Scenario {
        name: "baseline",
        about: "no fault; two groups (batch and sliding dispatch) each see every message once",
        soak_only: false,
        selftest: false,
        build: baseline,
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
        consumers,
        concurrency,
        sliding: false,
        idempotent: false,
        current_thread: false,
        behaviour: b,
    }
}

fn base(p: Profile) -> Plan {
    Plan {
        topology: Topology::Single {
            fsync: "everysec",
            proxy: false,
        },
        groups: vec![group("g", p.pick(3, 4), 4, behaviour())],
        timing: Timing {
            min_idle_ms: 1000,
            reclaim_ms: 500,
            block_ms: 200,
            drain_timeout_ms: 1000,
            retry_scheduler_ms: 200,
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
        },
        planted: Vec::new(),
        poison: BTreeSet::new(),
        faults: Vec::new(),
        respawn_ms: 300,
        drain_deadline_ms: p.pick(45_000, 120_000),
        max_payload: 1024 * 1024,
        window_ms: 2000,
        dup_extra: 0,
    }
}

/// How long publishing takes, in ms.
fn publish_ms(plan: &Plan) -> u64 {
    plan.publish.count * 1000 / plan.publish.rate.max(1)
}

/// `k` distinct message ids out of the publisher's, avoiding `taken`.
fn pick_ids(
    rng: &mut StdRng,
    plan: &Plan,
    k: usize,
    taken: &mut BTreeSet<String>,
) -> BTreeSet<String> {
    let count = usize::try_from(plan.publish.count).unwrap_or(usize::MAX);
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

fn baseline(p: Profile, _rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    let mut sliding = group("g-sliding", 2, 3, behaviour());
    sliding.sliding = true;
    plan.groups = vec![group("g-batch", 2, 4, behaviour()), sliding];
    plan
}

fn consumer_kill(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.groups[0].behaviour.sleep_ms = [5, 40];
    plan.publish.count = p.pick(1500, 15_000);
    // Repeated kills may deliver one entry many times; keep B-RET-5 (dead-letter after
    // max_attempts deliveries) out of reach of an innocent message.
    plan.timing.retry.max_attempts = 10;
    let end = publish_ms(&plan);
    for at in times(rng, 1000, end, p.pick([1000, 2000], [1000, 4000])) {
        let slot = any_slot(rng, &plan);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::Kill { slot },
        });
    }
    plan
}

fn selftest_ack_early(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = consumer_kill(p, rng);
    plan.groups[0].behaviour.ack_before_handling_ms = Some(300);
    plan
}

fn redis_kills(plan: &mut Plan, rng: &mut StdRng, kills: usize) {
    let end = publish_ms(plan);
    let step = end / (kills as u64 + 1);
    for k in 0..kills as u64 {
        let at = step * (k + 1) + rng.random_range(0..=step / 4);
        let down_ms = rng.random_range(300..=1500);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::KillRedis { down_ms },
        });
    }
}

fn redis_restart(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.groups[0].behaviour.sleep_ms = [2, 30];
    redis_kills(&mut plan, rng, p.pick(2, 4));
    plan
}

fn redis_restart_always(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = redis_restart(p, rng);
    plan.topology = Topology::Single {
        fsync: "always",
        proxy: false,
    };
    plan.window_ms = 0;
    plan.faults.clear();
    redis_kills(&mut plan, rng, 3);
    plan
}

fn consumer_pause(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.groups[0].behaviour.sleep_ms = [10, 60];
    plan.publish.count = p.pick(1500, 15_000);
    let stop_ms = 3 * plan.timing.min_idle_ms;
    let end = publish_ms(&plan);
    let gap = stop_ms + p.pick(1000, 3000);
    let mut at = 1500;
    while at + stop_ms < end + 1000 {
        let slot = any_slot(rng, &plan);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::Stop {
                slot,
                for_ms: stop_ms,
            },
        });
        at += gap + rng.random_range(0..1000);
    }
    plan
}

fn proxy_faults(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.topology = Topology::Single {
        fsync: "everysec",
        proxy: true,
    };
    plan.publish.count = p.pick(1500, 15_000);
    plan.publish.response_timeout_ms = 1500;
    plan.timing.retry.max_attempts = 10;
    let end = publish_ms(&plan);
    let mut at = 1000;
    while at < end {
        let delay = Duration::from_millis(rng.random_range(50..=300));
        let cycle = [
            (ProxyMode::Delay(delay), rng.random_range(1000..=2000)),
            (ProxyMode::Blackhole, rng.random_range(1000..=2500)),
            (ProxyMode::Reset, rng.random_range(300..=1000)),
            (ProxyMode::Refuse, rng.random_range(500..=1500)),
            (ProxyMode::Pass, rng.random_range(1000..=2000)),
        ];
        for (mode, for_ms) in cycle {
            plan.faults.push(Scheduled {
                at_ms: at,
                fault: Fault::Proxy { mode, for_ms },
            });
            at += for_ms;
        }
    }
    plan
}

fn poison(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(600, 6000);
    plan.timing.retry.max_attempts = 4;
    let mut taken = BTreeSet::new();
    let k = p.pick(10, 50);
    let fail_always = pick_ids(rng, &plan, k, &mut taken);
    let permanent = pick_ids(rng, &plan, k, &mut taken);
    let fail_twice = pick_ids(rng, &plan, k, &mut taken);
    let b = &mut plan.groups[0].behaviour;
    b.fail_always = fail_always.clone();
    b.permanent = permanent.clone();
    b.fail_times = fail_twice
        .iter()
        .map(|id| (id.clone(), 2))
        .collect::<BTreeMap<_, _>>();
    plan.poison.extend(fail_always);
    plan.poison.extend(permanent);
    for n in 0..p.pick(5, 20) {
        let entries = [
            // No payload field: malformed.
            raw(
                format!("raw-nopayload-{n}"),
                &[("id", format!("raw-nopayload-{n}").as_bytes())],
            ),
            // Not JSON: the typed handler cannot decode it.
            raw(
                format!("raw-notjson-{n}"),
                &[
                    ("id", format!("raw-notjson-{n}").as_bytes()),
                    ("payload", b"\xff\xfe not json"),
                ],
            ),
            // JSON of the wrong shape.
            raw(
                format!("raw-wrongshape-{n}"),
                &[
                    ("id", format!("raw-wrongshape-{n}").as_bytes()),
                    ("payload", br#"{"x":1}"#),
                ],
            ),
            // A valid payload with a corrupt attempt field.
            raw(
                format!("raw-badattempt-{n}"),
                &[
                    ("id", format!("raw-badattempt-{n}").as_bytes()),
                    (
                        "payload",
                        format!(r#"{{"id":"raw-badattempt-{n}"}}"#).as_bytes(),
                    ),
                    ("attempt", b"zero"),
                ],
            ),
            // No id field at all (the payload still says who it is).
            raw(
                format!("raw-noid-{n}"),
                &[
                    ("payload", format!(r#"{{"id":"raw-noid-{n}"}}"#).as_bytes()),
                    ("ts", b"soon"),
                ],
            ),
        ];
        for e in entries {
            plan.poison.insert(e.id.clone());
            plan.planted.push(e);
        }
    }
    plan
}

fn oversize(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.max_payload = 64 * 1024;
    plan.publish.count = p.pick(400, 4000);
    plan.publish.rate = p.pick(80, 150);
    plan.publish.pad = [1024, 63 * 1024];
    let mut taken = BTreeSet::new();
    plan.publish.oversize = pick_ids(rng, &plan, p.pick(10, 40), &mut taken);
    let big = format!(
        r#"{{"id":"PLACEHOLDER","pad":"{}"}}"#,
        "y".repeat(100 * 1024)
    );
    for n in 0..p.pick(5, 20) {
        let id = format!("raw-oversize-{n}");
        let payload = big.replace("PLACEHOLDER", &id);
        plan.poison.insert(id.clone());
        plan.planted.push(raw(
            id.clone(),
            &[("id", id.as_bytes()), ("payload", payload.as_bytes())],
        ));
    }
    plan
}

fn panics(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(800, 8000);
    plan.timing.retry.max_attempts = 4;
    let mut taken = BTreeSet::new();
    let twice = pick_ids(rng, &plan, p.pick(60, 600), &mut taken);
    let always = pick_ids(rng, &plan, p.pick(8, 40), &mut taken);
    let b = &mut plan.groups[0].behaviour;
    b.panic_times = twice.iter().map(|id| (id.clone(), 2)).collect();
    b.panic_always = always.clone();
    plan.poison.extend(always);
    plan
}

fn long_handlers(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(600, 6000);
    plan.publish.rate = p.pick(100, 200);
    plan.timing.min_idle_ms = 1500;
    let mut g = group("g", p.pick(2, 3), 4, behaviour());
    g.sliding = true;
    plan.groups = vec![g];
    let mut taken = BTreeSet::new();
    let long = pick_ids(rng, &plan, p.pick(10, 60), &mut taken);
    let b = &mut plan.groups[0].behaviour;
    b.long = long;
    b.long_ms = plan.timing.min_idle_ms * 5 / 2;
    plan
}

fn long_handlers_blocking(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(600, 6000);
    plan.publish.rate = p.pick(100, 200);
    let mut g = group("g", 2, 2, behaviour());
    g.sliding = true;
    g.current_thread = true;
    plan.groups = vec![g];
    let mut taken = BTreeSet::new();
    let long = pick_ids(rng, &plan, p.pick(6, 30), &mut taken);
    let long_ms = plan.timing.min_idle_ms * 9 / 5;
    // Each long handler freezes its whole process for long_ms, so the bus's own tasks
    // cannot extend the leases of the entries it holds. The promise is still no
    // duplicates (bound 0): a live process's entries must not be run twice.
    plan.dup_extra = 0;
    plan.timing.retry.max_attempts = 10;
    let b = &mut plan.groups[0].behaviour;
    b.long = long;
    b.long_ms = long_ms;
    b.long_blocking = true;
    plan
}

fn retries_under_faults(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(1200, 12_000);
    plan.timing.retry = Retry {
        max_attempts: 10,
        backoff_ms: 200,
        multiplier: 2.0,
        max_delay_ms: 1500,
    };
    let mut taken = BTreeSet::new();
    let n = usize::try_from(plan.publish.count * 2 / 5).unwrap_or(0);
    let failing = pick_ids(rng, &plan, n, &mut taken);
    plan.groups[0].behaviour.fail_times = failing.iter().map(|id| (id.clone(), 2)).collect();
    let end = publish_ms(&plan);
    let mut faults: Vec<Scheduled> = times(rng, 1200, end, p.pick([1800, 3000], [1500, 4000]))
        .into_iter()
        .map(|at| Scheduled {
            at_ms: at,
            fault: Fault::Kill {
                slot: any_slot(rng, &plan),
            },
        })
        .collect();
    // Redis goes down once (smoke) or three times (soak) in between.
    let kills = p.pick(1, 3);
    for k in 0..kills {
        let at = end * (2 * k + 1) / (2 * kills) + 300;
        faults.retain(|f| f.at_ms + 200 < at || f.at_ms > at + 2000);
        faults.push(Scheduled {
            at_ms: at,
            fault: Fault::KillRedis {
                down_ms: rng.random_range(400..=1200),
            },
        });
    }
    faults.sort_by_key(|f| f.at_ms);
    plan.faults = faults;
    plan
}

fn sigterm_drain(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.timing.drain_timeout_ms = 1000;
    plan.publish.count = p.pick(1200, 12_000);
    plan.groups[0].behaviour.sleep_ms = [5, 40];
    let mut taken = BTreeSet::new();
    let over_long = pick_ids(rng, &plan, p.pick(12, 80), &mut taken);
    plan.groups[0].behaviour.long = over_long;
    plan.groups[0].behaviour.long_ms = 2500;
    plan.timing.retry.max_attempts = 10;
    let end = publish_ms(&plan);
    for at in times(rng, 1000, end, p.pick([1200, 2500], [1000, 3000])) {
        let slot = any_slot(rng, &plan);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::Term { slot },
        });
    }
    plan
}

fn idempotent_kill(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(1000, 10_000);
    plan.groups[0].idempotent = true;
    plan.groups[0].behaviour.sleep_ms = [10, 50];
    plan.timing.retry.max_attempts = 10;
    let mut taken = BTreeSet::new();
    let before = pick_ids(rng, &plan, p.pick(4, 20), &mut taken);
    let after = pick_ids(rng, &plan, p.pick(4, 20), &mut taken);
    plan.groups[0].behaviour.exit_before = before;
    plan.groups[0].behaviour.exit_after = after;
    let end = publish_ms(&plan);
    for at in times(rng, 1500, end, p.pick([2000, 3500], [1500, 4000])) {
        let slot = any_slot(rng, &plan);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::Kill { slot },
        });
    }
    plan
}

fn retention_under_faults(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(1500, 15_000);
    plan.publish.retention = Some(Retention {
        max_len: 100,
        trim_interval_ms: 200,
    });
    plan.groups[0].behaviour.sleep_ms = [5, 60];
    plan.timing.retry.max_attempts = 10;
    let mut taken = BTreeSet::new();
    // Retries keep entries in lanes and the retry set while the topic is trimmed.
    let failing = pick_ids(rng, &plan, p.pick(150, 1500), &mut taken);
    plan.groups[0].behaviour.fail_times = failing.iter().map(|id| (id.clone(), 1)).collect();
    let end = publish_ms(&plan);
    let mut at = 1000;
    while at < end {
        let slot = any_slot(rng, &plan);
        let fault = if rng.random_bool(0.5) {
            Fault::Kill { slot }
        } else {
            Fault::Stop {
                slot,
                for_ms: 2 * plan.timing.min_idle_ms,
            }
        };
        plan.faults.push(Scheduled { at_ms: at, fault });
        at += rng.random_range(1500..=2500);
    }
    plan
}

fn mixed(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.timing.retry.max_attempts = 10;
    let mut taken = BTreeSet::new();
    let failing = pick_ids(rng, &plan, 2000, &mut taken);
    let panicking = pick_ids(rng, &plan, 500, &mut taken);
    let poison = pick_ids(rng, &plan, 40, &mut taken);
    let long = pick_ids(rng, &plan, 40, &mut taken);
    let b = &mut plan.groups[0].behaviour;
    b.sleep_ms = [2, 60];
    b.fail_times = failing.iter().map(|id| (id.clone(), 2)).collect();
    b.panic_times = panicking.iter().map(|id| (id.clone(), 1)).collect();
    b.fail_always = poison.clone();
    b.long = long;
    b.long_ms = 2500;
    plan.poison = poison;
    let end = publish_ms(&plan);
    let mut at = 1500;
    while at < end {
        let slot = any_slot(rng, &plan);
        let fault = match rng.random_range(0..10) {
            0..=3 => Fault::Kill { slot },
            4..=5 => Fault::Term { slot },
            6..=7 => Fault::Stop {
                slot,
                for_ms: 3 * plan.timing.min_idle_ms,
            },
            _ => Fault::KillRedis {
                down_ms: rng.random_range(300..=1500),
            },
        };
        plan.faults.push(Scheduled { at_ms: at, fault });
        at += rng.random_range(1500..=4000);
    }
    plan
}

fn cluster_failover(p: Profile, _rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.topology = Topology::Cluster;
    plan.publish.count = p.pick(3000, 9000);
    plan.publish.rate = 150;
    plan.timing.retry.max_attempts = 10;
    let end = publish_ms(&plan);
    plan.faults = vec![
        Scheduled {
            at_ms: end / 4,
            fault: Fault::ClusterFailover,
        },
        Scheduled {
            at_ms: end / 2,
            fault: Fault::ClusterKillMaster { down_ms: 8000 },
        },
    ];
    plan
}

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
    fn poison_is_disjoint_from_other_behaviour() {
        let plan = find("poison").expect("scenario").plan(Profile::Smoke, 7);
        let b = &plan.groups[0].behaviour;
        assert!(b.fail_always.is_disjoint(&b.permanent));
        assert!(b.fail_times.keys().all(|id| !plan.poison.contains(id)));
        assert_eq!(plan.poison.len(), 10 + 10 + 5 * 5);
    }
}
