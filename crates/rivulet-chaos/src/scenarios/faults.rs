//! The scenarios of process, Redis and network faults, poison and long handlers, and
//! the soak profile's mixed and cluster scenarios.

use super::*;

pub(super) fn baseline(p: Profile, _rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    let mut sliding = group("g-sliding", 2, 3, behaviour());
    sliding.sliding = true;
    plan.groups = vec![group("g-batch", 2, 4, behaviour()), sliding];
    plan
}

/// The baseline with every probe logged in as an ACL user limited to rivulet's keys and
/// commands: the run passing proves rivulet needs nothing else.
pub(super) fn baseline_acl(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = baseline(p, rng);
    plan.topology = Topology::Single {
        fsync: "everysec",
        proxy: false,
        acl: true,
    };
    plan
}

pub(super) fn consumer_kill(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn selftest_ack_early(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = consumer_kill(p, rng);
    plan.groups[0].behaviour.ack_before_handling_ms = Some(300);
    plan
}

pub(super) fn redis_kills(plan: &mut Plan, rng: &mut StdRng, kills: usize) {
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

pub(super) fn redis_restart(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.groups[0].behaviour.sleep_ms = [2, 30];
    redis_kills(&mut plan, rng, p.pick(2, 4));
    plan
}

pub(super) fn redis_restart_always(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = redis_restart(p, rng);
    plan.topology = Topology::Single {
        fsync: "always",
        proxy: false,
        acl: false,
    };
    plan.window_ms = 0;
    plan.faults.clear();
    redis_kills(&mut plan, rng, 3);
    plan
}

pub(super) fn consumer_pause(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn proxy_faults(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.topology = Topology::Single {
        fsync: "everysec",
        proxy: true,
        acl: false,
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

pub(super) fn poison(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn oversize(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn panics(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn long_handlers(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn long_handlers_blocking(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn retries_under_faults(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn sigterm_drain(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn idempotent_kill(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn retention_under_faults(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn mixed(p: Profile, rng: &mut StdRng) -> Plan {
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

pub(super) fn cluster_failover(p: Profile, _rng: &mut StdRng) -> Plan {
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

/// A Sentinel deployment whose master is SIGKILLed mid-run: every connection of every
/// probe must find the promoted replica by itself. A third of the messages are
/// published with `wait_for_replicas(1)`: none of those may be lost; others acknowledged
/// just before the kill may be (the replication window), and are counted apart.
pub(super) fn sentinel_failover(p: Profile, _rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.topology = Topology::Sentinel;
    plan.publish.count = p.pick(1500, 9000);
    plan.publish.wait_replicas_every = 3;
    plan.timing.retry.max_attempts = 10;
    // Asynchronous replication: what the master acknowledged in the last moments before
    // the kill may not have reached the replica.
    plan.window_ms = 1000;
    let end = publish_ms(&plan);
    plan.faults = vec![Scheduled {
        at_ms: end * 2 / 5,
        fault: Fault::SentinelKillMaster,
    }];
    plan
}
