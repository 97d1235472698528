//! The job scenarios: adders and workers in their own processes on a job queue (and a
//! second queue for flows' children), faults on the pids the harness started, and a
//! checker of the fencing, retry, delay, dedup, limit, scheduler and flow promises (J-1, J-3, J-4, J-6, J-7, J-8, J-9, J-11, J-12).
//!
//! | module | concept |
//! |---|---|
//! | [`probe`] | the adder and worker processes and their logs |
//! | [`harness`] | one run: Redis, processes, faults, cancellations, the drain |
//! | [`check`] | lost / unexpected / double outcomes / stale writes / reruns / early starts / limits / ticks / flow order |
//! | [`report`] | the result line, JSON and the markdown row |
//!
//! Each plan is built from the seed; the same seed replays the same jobs and faults.

pub(crate) mod check;
pub(crate) mod harness;
pub(crate) mod probe;
pub(crate) mod report;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rivulet_testkit::ProxyMode;

use self::probe::{AddSpec, Spec};
use crate::harness::env::Topology;
use crate::probe::hash64;
use crate::scenarios::{Fault, Profile, Scheduled};

/// One worker slot.
#[derive(Debug, Clone)]
pub(crate) struct WorkerPlan {
    pub(crate) concurrency: usize,
    pub(crate) broken: bool,
    /// Works the run's second queue (the flows' children) instead of the first.
    pub(crate) kids: bool,
}

/// The worker timings every slot gets.
#[derive(Debug, Clone)]
pub(crate) struct WorkTiming {
    pub(crate) lease_ms: u64,
    pub(crate) renew_ms: u64,
    pub(crate) stall_check_ms: u64,
    pub(crate) drain_timeout_ms: u64,
    pub(crate) block_ms: u64,
    pub(crate) backoff_ms: u64,
}

/// One adder process.
#[derive(Debug, Clone)]
pub(crate) struct AdderPlan {
    pub(crate) jobs: Vec<AddSpec>,
    pub(crate) batch: usize,
    pub(crate) calls_per_sec: u64,
}

/// Everything a job run needs.
#[derive(Debug, Clone)]
pub(crate) struct JobPlan {
    pub(crate) topology: Topology,
    pub(crate) workers: Vec<WorkerPlan>,
    pub(crate) timing: WorkTiming,
    pub(crate) adders: Vec<AdderPlan>,
    pub(crate) faults: Vec<Scheduled>,
    pub(crate) respawn_ms: u64,
    pub(crate) drain_deadline_ms: u64,
    pub(crate) response_timeout_ms: u64,
    /// How long before a Redis kill an acknowledged write may be lost (AOF everysec).
    pub(crate) window_ms: u64,
    /// A job scheduler `beat` firing every this many ms while the adders run, run by
    /// every worker process.
    pub(crate) scheduler_ms: Option<u64>,
    /// The queue's rate limit: at most `.0` starts per `.1` ms.
    pub(crate) rate: Option<(u32, u64)>,
    /// The cap on each job group's active jobs.
    pub(crate) group_cap: Option<u32>,
}

/// A named job scenario.
#[derive(Debug)]
pub(crate) struct JobScenario {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) soak_only: bool,
    /// The checker self-test: passes only when a fencing violation is reported.
    pub(crate) selftest: bool,
    build: fn(Profile, &mut StdRng) -> JobPlan,
}

impl JobScenario {
    pub(crate) fn plan(&self, profile: Profile, seed: u64) -> JobPlan {
        let mut rng = StdRng::seed_from_u64(seed ^ hash64(0, self.name));
        (self.build)(profile, &mut rng)
    }
}

static CATALOG: [JobScenario; 13] = [
    JobScenario {
        name: "jobs_baseline",
        about: "no faults: retries, poison, permanent failures, panics, timeouts, cancellations, delays, priorities",
        soak_only: false,
        selftest: false,
        build: baseline,
    },
    JobScenario {
        name: "jobs_worker_kill",
        about: "workers SIGKILLed mid-job and respawned",
        soak_only: false,
        selftest: false,
        build: worker_kill,
    },
    JobScenario {
        name: "jobs_worker_pause",
        about: "a worker SIGSTOPped past its lease, then SIGCONT: its late outcomes must be refused",
        soak_only: false,
        selftest: false,
        build: worker_pause,
    },
    JobScenario {
        name: "jobs_worker_term",
        about: "SIGTERM while jobs run longer than the drain timeout: handed back, run again",
        soak_only: false,
        selftest: false,
        build: worker_term,
    },
    JobScenario {
        name: "jobs_redis_restart",
        about: "Redis SIGKILLed and restarted (appendfsync always) with delayed jobs in flight",
        soak_only: false,
        selftest: false,
        build: redis_restart,
    },
    JobScenario {
        name: "jobs_redis_restart_everysec",
        about: "Redis SIGKILLed and restarted (appendfsync everysec): losses only within the fsync window",
        soak_only: false,
        selftest: false,
        build: redis_restart_everysec,
    },
    JobScenario {
        name: "jobs_proxy_faults",
        about: "the TCP proxy's delay / blackhole / reset / refuse cycle between probes and Redis",
        soak_only: false,
        selftest: false,
        build: proxy_faults,
    },
    JobScenario {
        name: "jobs_dedup_race",
        about: "three adder processes adding the same dedup keys at once",
        soak_only: false,
        selftest: false,
        build: dedup_race,
    },
    JobScenario {
        name: "jobs_limits_kill",
        about: "a rate limit, job-group caps and a scheduler run by three workers, SIGKILLed in turn",
        soak_only: false,
        selftest: false,
        build: limits_kill,
    },
    JobScenario {
        name: "jobs_flows_kill",
        about: "flows (a parent, three children in a second queue) while the workers of both queues are SIGKILLed",
        soak_only: false,
        selftest: false,
        build: flows_kill,
    },
    JobScenario {
        name: "jobs_selftest_unfenced",
        about: "self-test: a worker that completes without honouring its lease must be caught",
        soak_only: false,
        selftest: true,
        build: selftest_unfenced,
    },
    JobScenario {
        name: "jobs_flows_cluster",
        about: "flows across two queues in different Cluster slots (the flow mover) with failovers, master and worker kills",
        soak_only: true,
        selftest: false,
        build: flows_cluster,
    },
    JobScenario {
        name: "jobs_cluster_failover",
        about: "a 3+3 Cluster: the queue's master failed over and killed while workers run",
        soak_only: true,
        selftest: false,
        build: cluster_failover,
    },
];

/// Every job scenario, in report order.
pub(crate) fn catalog() -> &'static [JobScenario] {
    &CATALOG
}

fn base(p: Profile) -> JobPlan {
    JobPlan {
        topology: Topology::Single {
            fsync: "everysec",
            proxy: false,
            acl: false,
        },
        workers: vec![
            WorkerPlan {
                concurrency: 8,
                broken: false,
                kids: false,
            };
            2
        ],
        timing: WorkTiming {
            lease_ms: 1500,
            renew_ms: 300,
            stall_check_ms: 250,
            drain_timeout_ms: 1000,
            block_ms: 500,
            backoff_ms: 50,
        },
        adders: Vec::new(),
        faults: Vec::new(),
        respawn_ms: 300,
        drain_deadline_ms: p.pick(30_000, 180_000),
        response_timeout_ms: 2000,
        window_ms: 0,
        scheduler_ms: None,
        rate: None,
        group_cap: None,
    }
}

/// How the jobs of a mix behave, in percent (the rest run normally).
#[derive(Debug, Clone, Copy, Default)]
struct Mix {
    fail_once: u32,
    poison: u32,
    permanent: u32,
    panic: u32,
    timeout: u32,
    cancel: u32,
    delayed: u32,
    /// Handler time of a normal job, ms.
    ms: (u64, u64),
    /// Largest delay of a delayed job, ms.
    max_delay_ms: u64,
    /// Jobs in one of five job groups `t0`…`t4`.
    grouped: u32,
}

const ATTEMPTS: u32 = 3;

/// `n` jobs `<prefix>000001…` drawn from `mix`.
fn jobs(prefix: &str, n: usize, mix: Mix, rng: &mut StdRng) -> Vec<AddSpec> {
    (1..=n)
        .map(|i| {
            let mut a = AddSpec {
                spec: Spec {
                    id: format!("{prefix}{i:06}"),
                    ms: rng.random_range(mix.ms.0..=mix.ms.1),
                    pad: "x".repeat(rng.random_range(10..=200)),
                    ..Spec::default()
                },
                attempts: ATTEMPTS,
                priority: rng.random_bool(0.5).then(|| rng.random_range(0..=5)),
                ..AddSpec::default()
            };
            let roll = rng.random_range(0..100);
            let mut edge = 0;
            let mut next = |pct: u32| {
                edge += pct;
                roll < edge
            };
            if next(mix.fail_once) {
                a.spec.fail = 1;
            } else if next(mix.poison) {
                a.spec.fail = ATTEMPTS + 5;
            } else if next(mix.permanent) {
                a.spec.permanent = true;
            } else if next(mix.panic) {
                a.spec.panic = true;
            } else if next(mix.timeout) {
                a.spec.ms = 2000;
                a.timeout_ms = Some(150);
                a.attempts = 2;
            } else if next(mix.cancel) {
                a.spec.cancel = true;
                a.spec.ms = 60_000;
            }
            if mix.delayed > 0 && rng.random_range(0..100) < mix.delayed {
                a.delay_ms = Some(rng.random_range(50..=mix.max_delay_ms.max(50)));
            }
            if mix.grouped > 0 && rng.random_range(0..100) < mix.grouped {
                a.group = Some(format!("t{}", rng.random_range(0..5)));
            }
            a
        })
        .collect()
}

fn full_mix() -> Mix {
    Mix {
        fail_once: 10,
        poison: 3,
        permanent: 3,
        panic: 3,
        timeout: 3,
        cancel: 3,
        delayed: 20,
        ms: (5, 60),
        max_delay_ms: 3000,
        grouped: 0,
    }
}

fn one_adder(jobs: Vec<AddSpec>, batch: usize, calls_per_sec: u64) -> Vec<AdderPlan> {
    vec![AdderPlan {
        jobs,
        batch,
        calls_per_sec,
    }]
}

/// How long the adders of a plan take (ms).
pub(crate) fn adding_ms(plan: &JobPlan) -> u64 {
    plan.adders
        .iter()
        .map(|a| a.jobs.len().div_ceil(a.batch.max(1)) as u64 * 1000 / a.calls_per_sec.max(1))
        .max()
        .unwrap_or(0)
}

fn baseline(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    let n = p.pick(600, 6000);
    plan.adders = one_adder(jobs("j", n, full_mix(), rng), 20, 10);
    plan
}

/// Worker faults every `every` ms (±30 %) over the adding time and a little after.
fn worker_faults(plan: &mut JobPlan, every: u64, rng: &mut StdRng, fault: impl Fn(usize) -> Fault) {
    let end = adding_ms(plan) + 2000;
    let mut at = 800;
    while at < end {
        let slot = rng.random_range(0..plan.workers.len());
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: fault(slot),
        });
        at += rng.random_range(every * 7 / 10..=every * 13 / 10);
    }
}

fn worker_kill(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    plan.workers = vec![
        WorkerPlan {
            concurrency: 8,
            broken: false,
            kids: false,
        };
        3
    ];
    let mix = Mix {
        fail_once: 10,
        ms: (20, 300),
        delayed: 10,
        max_delay_ms: 2000,
        ..Mix::default()
    };
    plan.adders = one_adder(jobs("k", p.pick(800, 8000), mix, rng), 20, 8);
    worker_faults(&mut plan, 1200, rng, |slot| Fault::Kill { slot });
    plan
}

fn worker_pause(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    for w in &mut plan.workers {
        w.concurrency = 16;
    }
    let mix = Mix {
        ms: (200, 2500),
        ..Mix::default()
    };
    // Soak: 2,000 jobs of 1.35 s on average are 85 s of work for the 32 slots.
    plan.adders = one_adder(jobs("s", p.pick(400, 2000), mix, rng), 10, 4);
    let lease = plan.timing.lease_ms;
    let end = adding_ms(&plan);
    let mut at = 1500;
    while at < end {
        let for_ms = rng.random_range(lease * 2..=lease * 3);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::Stop {
                slot: rng.random_range(0..plan.workers.len()),
                for_ms,
            },
        });
        at += for_ms + rng.random_range(1000..=2000);
    }
    plan
}

fn worker_term(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    for w in &mut plan.workers {
        w.concurrency = 16;
    }
    let mix = Mix {
        ms: (100, 3000),
        fail_once: 5,
        ..Mix::default()
    };
    // Soak: 2,000 jobs of 1.55 s on average are 100 s of work for the 32 slots.
    plan.adders = one_adder(jobs("t", p.pick(300, 2000), mix, rng), 10, 5);
    worker_faults(&mut plan, 2000, rng, |slot| Fault::Term { slot });
    plan
}

fn redis_restart(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    plan.topology = Topology::Single {
        fsync: "always",
        proxy: false,
        acl: false,
    };
    let mix = Mix {
        delayed: 40,
        max_delay_ms: 6000,
        ..full_mix()
    };
    plan.adders = one_adder(jobs("r", p.pick(800, 8000), mix, rng), 20, 8);
    let end = adding_ms(&plan);
    let mut at = 1500;
    while at < end + 3000 {
        let down_ms = rng.random_range(300..=1500);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::KillRedis { down_ms },
        });
        at += down_ms + rng.random_range(2000..=3500);
    }
    plan
}

/// The restart scenario on the default durability: an acknowledged add may be lost if
/// Redis dies within the second before its fsync (`lost_in_fsync_window`, reported).
fn redis_restart_everysec(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = redis_restart(p, rng);
    plan.topology = Topology::Single {
        fsync: "everysec",
        proxy: false,
        acl: false,
    };
    plan.window_ms = 2000;
    plan
}

fn proxy_faults(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    plan.topology = Topology::Single {
        fsync: "always",
        proxy: true,
        acl: false,
    };
    plan.response_timeout_ms = 1500;
    let mix = Mix {
        delayed: 20,
        max_delay_ms: 3000,
        ..full_mix()
    };
    plan.adders = one_adder(jobs("p", p.pick(600, 6000), mix, rng), 10, 10);
    let end = adding_ms(&plan);
    let mut at = 1000;
    while at < end {
        let delay = std::time::Duration::from_millis(rng.random_range(50..=300));
        for (mode, for_ms) in [
            (ProxyMode::Delay(delay), rng.random_range(1000..=2000)),
            (ProxyMode::Blackhole, rng.random_range(1000..=2500)),
            (ProxyMode::Reset, rng.random_range(300..=1000)),
            (ProxyMode::Refuse, rng.random_range(500..=1500)),
            (ProxyMode::Pass, rng.random_range(1000..=2000)),
        ] {
            plan.faults.push(Scheduled {
                at_ms: at,
                fault: Fault::Proxy { mode, for_ms },
            });
            at += for_ms;
        }
    }
    plan
}

fn dedup_race(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    let keys = p.pick(150, 1500);
    let mix = Mix {
        ms: (5, 50),
        ..Mix::default()
    };
    plan.adders = (0..3)
        .map(|a| {
            let mut js = jobs(&format!("d{a}-"), keys, mix, rng);
            for (i, j) in js.iter_mut().enumerate() {
                j.dedup = Some(format!("key-{i:05}"));
            }
            AdderPlan {
                jobs: js,
                batch: if a == 0 { 10 } else { 1 },
                calls_per_sec: if a == 0 { 5 } else { 50 },
            }
        })
        .collect();
    plan
}

/// Limits and schedulers across processes that die: three workers, each also running
/// the queue's schedulers, SIGKILLed in turn; jobs added faster than the rate limit,
/// half of them in five job groups capped at two active each; a scheduler firing every
/// 500 ms throughout.
fn limits_kill(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    plan.workers = vec![
        WorkerPlan {
            concurrency: 8,
            broken: false,
            kids: false,
        };
        3
    ];
    plan.scheduler_ms = Some(500);
    plan.rate = Some((40, 1000));
    plan.group_cap = Some(2);
    let mix = Mix {
        fail_once: 10,
        ms: (20, 300),
        grouped: 50,
        ..Mix::default()
    };
    plan.adders = one_adder(jobs("l", p.pick(400, 4000), mix, rng), 10, 5);
    worker_faults(&mut plan, 1500, rng, |slot| Fault::Kill { slot });
    plan
}

/// `n` flows `<prefix>000001…`: a parent and three children each (10 % of the children
/// fail once), one `add` call per flow.
fn flows(prefix: &str, n: usize, rng: &mut StdRng) -> Vec<AddSpec> {
    (1..=n)
        .map(|i| {
            let id = format!("{prefix}{i:06}");
            let children = (1..=3)
                .map(|c| Spec {
                    id: format!("{id}-c{c}"),
                    ms: rng.random_range(20..=300),
                    fail: u32::from(rng.random_bool(0.1)),
                    pad: "x".repeat(rng.random_range(10..=100)),
                    ..Spec::default()
                })
                .collect();
            AddSpec {
                spec: Spec {
                    id,
                    ms: rng.random_range(5..=50),
                    ..Spec::default()
                },
                attempts: ATTEMPTS,
                children,
                ..AddSpec::default()
            }
        })
        .collect()
}

/// Two workers on the parents' queue and two on the children's.
fn flow_workers() -> Vec<WorkerPlan> {
    [false, false, true, true]
        .into_iter()
        .map(|kids| WorkerPlan {
            concurrency: 8,
            broken: false,
            kids,
        })
        .collect()
}

fn flows_kill(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    plan.workers = flow_workers();
    plan.adders = one_adder(flows("f", p.pick(150, 1500), rng), 1, 20);
    worker_faults(&mut plan, 1200, rng, |slot| Fault::Kill { slot });
    plan
}

fn flows_cluster(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    plan.topology = Topology::Cluster;
    plan.window_ms = 1500;
    plan.workers = flow_workers();
    plan.adders = one_adder(flows("g", p.pick(150, 1500), rng), 1, 20);
    cluster_faults(&mut plan, rng);
    plan
}

/// Every 4–7 s while the adders run, in turn: a failover of the queue's master, a worker
/// SIGKILL, a SIGKILL of the queue's master for 1–3 s.
fn cluster_faults(plan: &mut JobPlan, rng: &mut StdRng) {
    let end = adding_ms(plan);
    let mut at = 2000;
    let mut k = 0;
    while at < end {
        let fault = match k % 3 {
            0 => Fault::ClusterFailover,
            1 => Fault::Kill {
                slot: rng.random_range(0..plan.workers.len()),
            },
            _ => Fault::ClusterKillMaster {
                down_ms: rng.random_range(1000..=3000),
            },
        };
        plan.faults.push(Scheduled { at_ms: at, fault });
        at += rng.random_range(4000..=7000);
        k += 1;
    }
}

fn selftest_unfenced(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = worker_pause(p, rng);
    plan.workers[0].broken = true;
    for s in &mut plan.faults {
        if let Fault::Stop { slot, .. } = &mut s.fault {
            *slot = 0;
        }
    }
    plan
}

fn cluster_failover(p: Profile, rng: &mut StdRng) -> JobPlan {
    let mut plan = base(p);
    plan.topology = Topology::Cluster;
    plan.window_ms = 1500;
    plan.workers = vec![
        WorkerPlan {
            concurrency: 8,
            broken: false,
            kids: false,
        };
        3
    ];
    plan.adders = one_adder(jobs("c", p.pick(600, 6000), full_mix(), rng), 20, 8);
    cluster_faults(&mut plan, rng);
    plan
}
