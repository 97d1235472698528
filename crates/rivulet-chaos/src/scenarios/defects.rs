//! The scenarios for the defect classes a review of the bus found (broadcast and regular
//! groups with overlapping names, shared-group drains, leftovers, idempotent long
//! handlers, replay after a group is gone, groups destroyed with retries scheduled,
//! broken side keys and a full Redis, shared backends).

use super::*;

pub(super) fn broadcast_overlap(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(600, 6000);
    plan.publish.rate = p.pick(120, 200);
    plan.drain_deadline_ms = p.pick(20_000, 60_000);
    plan.timing.retry = Retry {
        max_attempts: 6,
        backoff_ms: 200,
        multiplier: 2.0,
        max_delay_ms: 1000,
    };
    // The broadcast handler `cache` has the base group `chaos:<topic>__cache`; the
    // regular handlers' derived groups `chaos:<topic>__cache__warm` and `…__cache__index`
    // start with that base and `__`, as broadcast groups do, but are no broadcast groups.
    let mut cache = group(
        "cache",
        2,
        4,
        Behaviour {
            sleep_ms: [1, 5],
            ..Behaviour::default()
        },
    );
    cache.mode = SubMode::Broadcast;
    let mut warm = group("cache__warm", 2, 4, behaviour());
    warm.mode = SubMode::Derived;
    let mut index = group("cache__index", 1, 4, behaviour());
    index.mode = SubMode::Derived;
    let n = usize::try_from(plan.publish.count * 3 / 10).unwrap_or(0);
    let mut taken = BTreeSet::new();
    let failing_warm = pick_ids(rng, &plan, n, &mut taken);
    let mut taken = BTreeSet::new();
    let failing_index = pick_ids(rng, &plan, n, &mut taken);
    warm.behaviour.fail_times = failing_warm.iter().map(|id| (id.clone(), 1)).collect();
    index.behaviour.fail_times = failing_index.iter().map(|id| (id.clone(), 1)).collect();
    plan.groups = vec![cache, warm, index];
    // The broadcast processes are SIGTERMed in turn and respawned: each new one
    // subscribes again, which runs the orphan clean-up of `cache`'s broadcast groups.
    // Their handlers take a few ms against a 1 s drain timeout (healthy drains), and
    // nothing else happens to the regular groups: no duplicates allowed there either.
    let end = publish_ms(&plan);
    let broadcast = plan.slots_of(0);
    for (k, at) in times(rng, 700, end, [900, 1500]).into_iter().enumerate() {
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::Drain {
                slot: broadcast.start + k % broadcast.len(),
            },
        });
    }
    plan
}

pub(super) fn shared_group_drain(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(320, 3200);
    plan.publish.rate = p.pick(40, 60);
    // Handlers of at most 400 ms against a 3 s drain timeout: every SIGTERM is a
    // healthy drain, which repeats nothing.
    plan.timing.drain_timeout_ms = 3000;
    plan.timing.retry.max_attempts = 10;
    let mut g = group(
        "g",
        3,
        2,
        Behaviour {
            sleep_ms: [100, 400],
            ..Behaviour::default()
        },
    );
    // Two handlers of one bus in the same explicit group.
    g.subscriptions = 2;
    plan.groups = vec![g];
    let end = publish_ms(&plan);
    for at in times(rng, 1000, end, p.pick([1200, 2000], [1500, 3000])) {
        let slot = any_slot(rng, &plan);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::Drain { slot },
        });
    }
    plan
}

pub(super) fn leftovers_long_retries(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    // Published faster than three consumers at concurrency 1 handle it, so the topic has
    // a backlog whenever a retry reaches the lane: a read returns the retry and a topic
    // entry, and the topic entry waits while the retry runs.
    plan.publish.count = p.pick(300, 3000);
    plan.publish.rate = p.pick(300, 300);
    plan.timing.retry = Retry {
        max_attempts: 10,
        backoff_ms: 100,
        multiplier: 2.0,
        max_delay_ms: 1000,
    };
    plan.groups = vec![group("g", 3, 1, behaviour())];
    let count = usize::try_from(plan.publish.count).unwrap_or(0);
    let mut taken = BTreeSet::new();
    // Long retries among the earlier messages (while the backlog lasts), the other
    // failures anywhere.
    let long = pick_ids_below(rng, count / 2, p.pick(12, 60), &mut taken);
    let others = pick_ids(rng, &plan, count / 4, &mut taken);
    let b = &mut plan.groups[0].behaviour;
    b.fail_times = long
        .iter()
        .chain(&others)
        .map(|id| (id.clone(), 1))
        .collect();
    b.long = long;
    // The second attempt (the retry, read from the lane) runs 1.5 x min_idle.
    b.long_ms = plan.timing.min_idle_ms * 3 / 2;
    b.long_from_attempt = 2;
    plan
}

pub(super) fn idempotent_long(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(200, 2000);
    plan.publish.copies = 2;
    plan.publish.rate = p.pick(80, 150);
    plan.timing.retry.max_attempts = 10;
    plan.check_overlap = true;
    let mut g = group("g", 3, 2, behaviour());
    g.sliding = true;
    g.idempotent_by_id = true;
    plan.groups = vec![g];
    let mut taken = BTreeSet::new();
    let long = pick_ids(rng, &plan, p.pick(12, 60), &mut taken);
    let b = &mut plan.groups[0].behaviour;
    b.long = long;
    // The claim's lease is min_idle (the default).
    b.long_ms = plan.timing.min_idle_ms * 5 / 2;
    plan
}

pub(super) fn replay_after_group_gone(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(300, 3000);
    plan.timing.retry.max_attempts = 2;
    let mut taken = BTreeSet::new();
    let poison = pick_ids(rng, &plan, p.pick(15, 60), &mut taken);
    let b = Behaviour {
        fail_always: poison.clone(),
        ..behaviour()
    };
    plan.groups = vec![group("g-gone", 2, 4, b.clone()), group("g-live", 1, 4, b)];
    plan.poison = poison;
    plan.faults.push(Scheduled {
        at_ms: publish_ms(&plan) + 300,
        fault: Fault::RetireGroup { group: 0 },
    });
    plan
}

pub(super) fn group_destroyed_retries(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(900, 9000);
    plan.timing.retry = Retry {
        max_attempts: 6,
        backoff_ms: 1500,
        multiplier: 1.0,
        max_delay_ms: 1500,
    };
    let mut taken = BTreeSet::new();
    let n = usize::try_from(plan.publish.count * 2 / 5).unwrap_or(0);
    let failing = pick_ids(rng, &plan, n, &mut taken);
    let b = &mut plan.groups[0].behaviour;
    b.sleep_ms = [20, 80];
    b.fail_times = failing.iter().map(|id| (id.clone(), 1)).collect();
    let end = publish_ms(&plan);
    let destroys = p.pick(3, 8);
    for k in 0..destroys {
        let at = 1500 + (end - 1500) * k / destroys + rng.random_range(0..500);
        plan.faults.push(Scheduled {
            at_ms: at,
            fault: Fault::DestroyGroup { group: 0 },
        });
    }
    plan
}

pub(super) fn side_keys_broken(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(900, 9000);
    plan.timing.retry = Retry {
        max_attempts: 10,
        backoff_ms: 300,
        multiplier: 2.0,
        max_delay_ms: 1500,
    };
    let mut taken = BTreeSet::new();
    let n = usize::try_from(plan.publish.count * 2 / 5).unwrap_or(0);
    let failing = pick_ids(rng, &plan, n, &mut taken);
    let b = &mut plan.groups[0].behaviour;
    b.sleep_ms = [10, 40];
    b.fail_times = failing.iter().map(|id| (id.clone(), 1)).collect();
    // Over 6 s of publishing (smoke): the retry set broken, Redis full, the retry set
    // broken again; each repaired before the next.
    let end = publish_ms(&plan);
    let mut at = 1000;
    for k in 0..p.pick(3, 9) {
        let (fault, lasts) = if k % 3 == 1 {
            let for_ms = rng.random_range(800..=1200);
            (Fault::FillMemory { for_ms }, for_ms)
        } else {
            let for_ms = rng.random_range(1000..=1500);
            (Fault::BreakRetrySet { for_ms }, for_ms)
        };
        plan.faults.push(Scheduled { at_ms: at, fault });
        at += lasts + rng.random_range(300..=600);
        if at >= end {
            break;
        }
    }
    plan
}

pub(super) fn shared_backend(p: Profile, rng: &mut StdRng) -> Plan {
    let mut plan = base(p);
    plan.publish.count = p.pick(600, 6000);
    plan.publish.rate = p.pick(100, 200);
    // A consumer that stopped consuming shows as stuck; no need to wait long for that.
    plan.drain_deadline_ms = p.pick(15_000, 60_000);
    let mut g = group("g", 2, 2, behaviour());
    g.buses = 2;
    let end = publish_ms(&plan);
    g.close_first_bus_after_ms = Some(rng.random_range(end / 4..=end / 2));
    plan.groups = vec![g];
    plan
}
