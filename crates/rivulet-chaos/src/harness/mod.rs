//! The harness: sets up Redis, spawns the probes, injects the scheduled faults on pids it
//! started, heals, drains, then hands the histories to the checker.

pub(crate) mod env;
pub(crate) mod faults;
pub(crate) mod inspect;
pub(crate) mod procs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use self::env::Env;
pub(crate) use self::faults::{pause_slot, redis_fault};
use self::inspect::Outstanding;
use self::procs::{Consumers, PublisherProc, SharedConsumers};
use crate::checker::{self, BoundInputs, Expect, FaultKind, FaultRecord, History, Planted};
use crate::probe::PublishResult;
use crate::probe::consumer::ConsumerConfig;
use crate::probe::consumer::SubMode;
use crate::probe::publisher::PublisherConfig;
use crate::probe::{Connect, ConsumerEvent, PublishRecord, now_ms, read_lines};
use crate::report::{Measured, Report};
use crate::scenarios::{self, Fault, GroupPlan, Plan, Profile, Scenario};

/// Options of `run`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOpts {
    /// Keep the run directory even when the run passed.
    pub(crate) keep: bool,
    /// Progress on stderr.
    pub(crate) verbose: bool,
    /// Where run directories go (default: the system temp directory).
    pub(crate) out: Option<PathBuf>,
}

pub(crate) type SharedEnv = Arc<Mutex<Env>>;

pub(crate) fn lock_env(env: &SharedEnv) -> MutexGuard<'_, Env> {
    match env.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Runs blocking work (the test kit, sync Redis, process waits) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task: {e}"))
}

/// Runs one scenario and returns its report.
pub(crate) async fn run(
    scenario: &Scenario,
    profile: Profile,
    seed: u64,
    opts: &RunOpts,
) -> Report {
    let started = Instant::now();
    let plan = scenario.plan(profile, seed);
    let base = opts.out.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "rivulet-chaos-{}-{}-{}-{}",
        scenario.name,
        profile.name(),
        seed,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(dir.join("markers")) {
        return Report::error(
            scenario.name,
            profile.name(),
            seed,
            scenario.selftest,
            &format!("run dir: {e}"),
        );
    }
    let _ = std::fs::write(dir.join("plan.txt"), format!("seed {seed}\n{plan:#?}\n"));
    let mut run = Run {
        name: scenario.name,
        plan,
        seed,
        dir: dir.clone(),
        topic: format!("chaos.{}", scenario.name),
        verbose: opts.verbose,
        faults: Vec::new(),
        problems: Vec::new(),
    };
    let mut report = match run.execute().await {
        Ok(measured) => {
            let mut m = measured;
            m.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            Report::new(
                scenario.name,
                profile.name(),
                seed,
                scenario.selftest,
                &m,
                run.problems,
            )
        }
        Err(e) => Report::error(scenario.name, profile.name(), seed, scenario.selftest, &e),
    };
    let _ = std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    );
    if report.pass && !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        report.run_dir = Some(dir.display().to_string());
    }
    report
}

struct Run {
    name: &'static str,
    plan: Plan,
    seed: u64,
    dir: PathBuf,
    topic: String,
    verbose: bool,
    faults: Vec<FaultRecord>,
    problems: Vec<String>,
}

impl Run {
    fn say(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("[{}] {}", self.name, msg.as_ref());
        }
    }

    /// The name of the group a plan's group consumes in: its own name when explicit,
    /// the library's derived name otherwise (a broadcast group's base: each process
    /// adds its own suffix).
    fn group_name(&self, g: &GroupPlan) -> String {
        match g.mode {
            SubMode::Explicit => g.name.clone(),
            SubMode::Derived | SubMode::Broadcast => derived_group(&self.topic, &g.name),
        }
    }

    /// The groups the checker holds to the promise.
    fn group_names(&self) -> Vec<String> {
        self.plan
            .groups
            .iter()
            .filter(|g| g.checked())
            .map(|g| self.group_name(g))
            .collect()
    }

    fn consumer_configs(&self, connect: &Connect) -> Vec<ConsumerConfig> {
        let t = &self.plan.timing;
        self.plan
            .slots()
            .into_iter()
            .map(|g| ConsumerConfig {
                connect: connect.clone(),
                topic: self.topic.clone(),
                group: self.group_name(g),
                handler: match g.mode {
                    SubMode::Explicit => "probe".into(),
                    SubMode::Derived | SubMode::Broadcast => g.name.clone(),
                },
                consumer_name: g.name.clone(),
                concurrency: g.concurrency,
                sliding: g.sliding,
                min_idle_ms: t.min_idle_ms,
                reclaim_interval_ms: t.reclaim_ms,
                block_timeout_ms: t.block_ms,
                drain_timeout_ms: t.drain_timeout_ms,
                retry_mover_interval_ms: t.retry_mover_ms,
                retry: t.retry.clone(),
                idempotent: g.idempotent,
                current_thread: g.current_thread,
                behaviour: g.behaviour.clone(),
                seed: self.seed,
                log: PathBuf::new(),
                markers: self.dir.join("markers"),
                mode: g.mode,
                subscriptions: g.subscriptions,
                buses: g.buses,
                close_first_bus_after_ms: g.close_first_bus_after_ms,
                idempotent_by_id: g.idempotent_by_id,
            })
            .collect()
    }

    async fn execute(&mut self) -> Result<Measured, String> {
        let topology = self.plan.topology;
        let env = blocking(move || Env::start(topology)).await??;
        self.say(env.describe());
        let (probe_target, direct) = (env.probe_target(), env.direct_target());
        let env: SharedEnv = Arc::new(Mutex::new(env));
        let connect = Connect {
            target: probe_target,
            response_timeout_ms: self.plan.publish.response_timeout_ms,
            max_payload: self.plan.max_payload,
            start_deadline_ms: 60_000,
        };
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let consumers: SharedConsumers = Arc::new(Mutex::new(Consumers::new(
            exe.clone(),
            self.dir.clone(),
            Duration::from_millis(self.plan.respawn_ms),
            self.consumer_configs(&connect),
        )));
        procs::lock(&consumers).spawn_all()?;
        let closing = Arc::new(AtomicBool::new(false));
        let supervisor = tokio::spawn(supervise(consumers.clone(), closing.clone()));
        let result = self
            .with_consumers(&exe, &connect, &direct, &env, &consumers)
            .await;
        // Whatever happened, end every process we started.
        closing.store(true, Ordering::SeqCst);
        let _ = supervisor.await;
        let grace = Duration::from_millis(self.plan.timing.drain_timeout_ms + 5000);
        let c = consumers.clone();
        blocking(move || procs::lock(&c).shutdown(grace)).await?;
        let (stuck, quiesce_ms) = result?;

        let publishes: Vec<PublishRecord> = read_lines(&self.dir.join("publisher.jsonl"))
            .map_err(|e| format!("publisher log: {e}"))?;
        let calls = self.plan.publish_calls();
        if publishes.len() as u64 != calls {
            self.problems.push(format!(
                "the publisher logged {} of {calls} calls",
                publishes.len(),
            ));
        }
        // After a failover, publishing must resume (both kinds, when some wait for a
        // replica): a library that never finds the new master would leave every later
        // call `unknown`, which the queue model alone does not count as a loss.
        if let Some(end) = self
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::SentinelKillMaster)
            .map(|f| f.t_end)
            .max()
        {
            let after = |waited: bool| {
                publishes.iter().any(|p| {
                    p.t_invoke > end && p.result == PublishResult::Ok && p.waited == waited
                })
            };
            if !after(false) {
                self.problems
                    .push("no publish acknowledged after the failover".to_owned());
            }
            if self.plan.publish.wait_replicas_every > 0 && !after(true) {
                self.problems
                    .push("no publish acknowledged by a replica after the failover".to_owned());
            }
        }
        let mut events: Vec<ConsumerEvent> = Vec::new();
        for log in procs::lock(&consumers).logs() {
            events.extend(
                read_lines::<ConsumerEvent>(&log).map_err(|e| format!("consumer log: {e}"))?,
            );
        }
        let dead = inspect::dead_letters(&direct, &self.topic).await?;
        let planted = read_planted(&self.dir)?;
        drop(blocking(move || drop(env)).await);

        let durability_events = self
            .faults
            .iter()
            .filter(|f| {
                matches!(
                    f.kind,
                    FaultKind::RedisKill
                        | FaultKind::ClusterKillMaster
                        | FaultKind::SentinelKillMaster
                )
            })
            .map(|f| f.t)
            .collect();
        let expect = Expect {
            groups: self.group_names(),
            poison: self.plan.poison.clone(),
            durability_events,
            window_ms: self.plan.window_ms,
            check_overlap: self.plan.check_overlap,
        };
        let history = History {
            publishes,
            planted,
            events,
            dead,
        };
        let outcome = checker::check(&history, &expect);
        let inputs = BoundInputs {
            concurrency: self
                .plan
                .groups
                .iter()
                .map(|g| g.concurrency as u64)
                .max()
                .unwrap_or(1),
            consumers: self.plan.consumer_count() as u64,
            window_ms: self.plan.window_ms.max(1000),
            extra: self.plan.dup_extra,
        };
        let bound = checker::duplicate_bound(&self.faults, &history.events, &inputs);
        let reclaim_max_ms = checker::reclaim_max_ms(&self.faults, &history.events);
        let _ = std::fs::write(
            self.dir.join("faults.json"),
            serde_json::to_vec_pretty(&self.faults).unwrap_or_default(),
        );
        Ok(Measured {
            outcome,
            bound,
            stuck,
            reclaim_max_ms,
            quiesce_ms,
            faults: self.faults.len(),
            elapsed_ms: 0,
        })
    }

    /// Publishing, faults, healing and the drain, while the consumers run. Returns what
    /// is stuck after the drain and how long quiescence took.
    async fn with_consumers(
        &mut self,
        exe: &Path,
        connect: &Connect,
        direct: &crate::probe::Target,
        env: &SharedEnv,
        consumers: &SharedConsumers,
    ) -> Result<(u64, Option<u64>), String> {
        let ready_by = Instant::now() + Duration::from_secs(60);
        while !procs::lock(consumers).all_ready() {
            if Instant::now() >= ready_by {
                return Err("consumers not ready within 60 s (see consumer-*.stderr)".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.say("consumers ready");
        if !self.plan.planted.is_empty() {
            let (target, topic, entries) = (
                direct.clone(),
                self.topic.clone(),
                self.plan.planted.clone(),
            );
            let planted = blocking(move || inspect::plant(&target, &topic, &entries)).await??;
            write_planted(&self.dir, &planted)?;
        }
        let pcfg = PublisherConfig {
            connect: connect.clone(),
            topic: self.topic.clone(),
            id_prefix: "m".into(),
            count: self.plan.publish.count,
            rate_per_sec: self.plan.publish.rate,
            in_flight: self.plan.publish.in_flight,
            pad: self.plan.publish.pad,
            oversize: self.plan.publish.oversize.clone(),
            retention: self.plan.publish.retention,
            copies: self.plan.publish.copies,
            wait_replicas_every: self.plan.publish.wait_replicas_every,
            seed: self.seed,
            log: self.dir.join("publisher.jsonl"),
        };
        let publisher = PublisherProc::spawn(exe, &self.dir, "publisher", &pcfg)?;
        let t0 = Instant::now();
        let publish_ms = scenarios::publish_ms(&self.plan);
        let limit = Duration::from_millis(publish_ms * 3 + 60_000);
        let waiting = tokio::task::spawn_blocking(move || publisher.wait(limit));
        self.inject(t0, direct, env, consumers).await;
        match waiting.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.problems.push(e),
            Err(e) => self.problems.push(format!("publisher wait: {e}")),
        }
        self.say(format!("publishing done after {:?}", t0.elapsed()));
        if let Some(r) = self.plan.publish.retention {
            let (target, topic) = (direct.clone(), self.topic.clone());
            let (len, added) = blocking(move || inspect::stream_counts(&target, &topic)).await??;
            self.say(format!("retention: {len} entries kept of {added} added"));
            if added.saturating_sub(len) == 0 {
                self.problems.push(format!(
                    "retention to ~{} entries trimmed nothing ({len} of {added} kept)",
                    r.max_len
                ));
            }
        }

        // Heal: Redis up, proxy passing, every consumer running.
        let e = env.clone();
        blocking(move || lock_env(&e).heal()).await??;
        procs::lock(consumers).heal()?;
        self.drain(direct).await
    }

    /// Polls Redis until nothing is pending, undelivered or scheduled for three polls in
    /// a row, or the deadline passes.
    async fn drain(&mut self, direct: &crate::probe::Target) -> Result<(u64, Option<u64>), String> {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(self.plan.drain_deadline_ms);
        let groups = self.group_names();
        let mut streak: Option<Instant> = None;
        let mut zeros = 0;
        let mut last = Outstanding::default();
        let mut last_error: Option<String>;
        loop {
            let (target, topic, names) = (direct.clone(), self.topic.clone(), groups.clone());
            match blocking(move || inspect::outstanding(&target, &topic, &names)).await? {
                Ok(o) => {
                    last = o;
                    last_error = None;
                    if o.total() == 0 {
                        zeros += 1;
                        let first = *streak.get_or_insert_with(Instant::now);
                        if zeros >= 3 {
                            let ms = u64::try_from(first.duration_since(start).as_millis())
                                .unwrap_or(u64::MAX);
                            self.say(format!("quiescent after {ms} ms"));
                            let (target, topic, names) =
                                (direct.clone(), self.topic.clone(), groups.clone());
                            let dump =
                                blocking(move || inspect::dump(&target, &topic, &names)).await?;
                            let _ = std::fs::write(self.dir.join("redis-state.txt"), dump);
                            return Ok((0, Some(ms)));
                        }
                    } else {
                        zeros = 0;
                        streak = None;
                    }
                }
                Err(e) => {
                    zeros = 0;
                    streak = None;
                    last_error = Some(e);
                }
            }
            if Instant::now() >= deadline {
                if let Some(e) = last_error {
                    self.problems
                        .push(format!("drain: cannot inspect Redis: {e}"));
                }
                self.say(format!("drain deadline passed with {last:?}"));
                let (target, topic, groups) = (direct.clone(), self.topic.clone(), groups.clone());
                let dump = blocking(move || inspect::dump(&target, &topic, &groups)).await?;
                let _ = std::fs::write(self.dir.join("redis-state.txt"), dump);
                self.problems.push(format!(
                    "drain deadline ({} ms) passed: pending={} undelivered={} scheduled={}",
                    self.plan.drain_deadline_ms, last.pending, last.undelivered, last.scheduled
                ));
                return Ok((last.total().max(1), None));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn record(&mut self, kind: FaultKind, t: u64, pid: Option<u32>, detail: String) {
        let t_end = now_ms();
        self.say(format!("fault {kind:?} {detail} ({} ms)", t_end - t));
        self.faults.push(FaultRecord {
            t,
            t_end,
            kind,
            pid,
            detail,
        });
    }

    /// Runs the fault schedule, one fault after the other.
    async fn inject(
        &mut self,
        t0: Instant,
        direct: &crate::probe::Target,
        env: &SharedEnv,
        consumers: &SharedConsumers,
    ) {
        let schedule = self.plan.faults.clone();
        for s in schedule {
            tokio::time::sleep_until((t0 + Duration::from_millis(s.at_ms)).into()).await;
            if let Err(e) = self.inject_one(s.fault, direct, env, consumers).await {
                self.problems.push(format!("fault {:?}: {e}", s.fault));
            }
        }
    }

    /// Waits (up to `limit`) until nothing is outstanding for the run's groups.
    async fn wait_quiet(&self, direct: &crate::probe::Target, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut zeros = 0;
        while Instant::now() < deadline {
            let (target, topic, names) = (direct.clone(), self.topic.clone(), self.group_names());
            match blocking(move || inspect::outstanding(&target, &topic, &names)).await {
                Ok(Ok(o)) if o.total() == 0 => zeros += 1,
                _ => zeros = 0,
            }
            if zeros >= 3 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Stops group `index`'s consumers for good, destroys the group and its lane, and
    /// replays every dead letter. Returns a description.
    async fn retire_group(
        &mut self,
        index: usize,
        direct: &crate::probe::Target,
        consumers: &SharedConsumers,
    ) -> Result<String, String> {
        let g = self.plan.groups.get(index).ok_or("no such group")?.clone();
        let name = self.group_name(&g);
        // Every publish has returned (a message published after the group is gone
        // would be lost for it by the scenario, not by the library) ...
        let calls = self.plan.publish_calls();
        let log = self.dir.join("publisher.jsonl");
        let deadline = Instant::now() + Duration::from_secs(30);
        while (read_lines::<PublishRecord>(&log).map_or(0, |l| l.len()) as u64) < calls
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ... and the group has handled or dead-lettered everything.
        if !self.wait_quiet(direct, Duration::from_secs(20)).await {
            self.say("retire: still outstanding after 20 s; retiring anyway");
        }
        let slots = self.plan.slots_of(index);
        let mut pids = Vec::new();
        for i in slots.clone() {
            pids.extend(procs::lock(consumers).retire(i)?);
        }
        let deadline =
            Instant::now() + Duration::from_millis(self.plan.timing.drain_timeout_ms + 5000);
        while slots.clone().any(|i| procs::lock(consumers).has_process(i)) {
            if Instant::now() >= deadline {
                let mut c = procs::lock(consumers);
                for i in slots.clone() {
                    if c.has_process(i) {
                        c.kill(i)?;
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (target, topic, group) = (direct.clone(), self.topic.clone(), name.clone());
        let existed =
            blocking(move || inspect::destroy_group(&target, &topic, &group, true)).await??;
        let r = inspect::replay_dead_letters(direct, &self.topic).await?;
        Ok(format!(
            "retired group {name} (pids {pids:?}), destroyed it (existed: {existed}) and its lane; replayed {} of {} dead letters, {} refused{}",
            r.replayed,
            r.listed,
            r.refused,
            if r.errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.errors.join("; "))
            }
        ))
    }

    async fn inject_one(
        &mut self,
        fault: Fault,
        direct: &crate::probe::Target,
        env: &SharedEnv,
        consumers: &SharedConsumers,
    ) -> Result<(), String> {
        let t = now_ms();
        match fault {
            Fault::Drain { slot } => {
                let mut c = procs::lock(consumers);
                let Some(slot) = live(&c, slot) else {
                    return Ok(());
                };
                let pid = c.term(slot)?;
                drop(c);
                self.record(
                    FaultKind::ConsumerDrain,
                    t,
                    Some(pid),
                    format!("SIGTERM (healthy drain) consumer slot {slot} pid {pid}"),
                );
            }
            Fault::RetireGroup { group } => {
                let detail = self.retire_group(group, direct, consumers).await?;
                self.record(FaultKind::GroupRetired, now_ms(), None, detail);
            }
            Fault::DestroyGroup { group } => {
                let g = self.plan.groups.get(group).ok_or("no such group")?;
                let name = self.group_name(g);
                let (target, topic, n) = (direct.clone(), self.topic.clone(), name.clone());
                let existed =
                    blocking(move || inspect::destroy_group(&target, &topic, &n, false)).await??;
                self.record(
                    FaultKind::GroupDestroyed,
                    t,
                    None,
                    format!("XGROUP DESTROY of {name} on the topic (existed: {existed})"),
                );
            }
            Fault::BreakRetrySet { for_ms } => {
                let (target, topic) = (direct.clone(), self.topic.clone());
                let aside = blocking(move || inspect::break_retry_set(&target, &topic)).await??;
                tokio::time::sleep(Duration::from_millis(for_ms)).await;
                let (target, topic) = (direct.clone(), self.topic.clone());
                let back = blocking(move || inspect::repair_retry_set(&target, &topic)).await??;
                self.record(
                    FaultKind::RetrySetBroken,
                    t,
                    None,
                    format!(
                        "retry set replaced by a string for {for_ms} ms ({aside} members set aside, {back} put back)"
                    ),
                );
            }
            Fault::FillMemory { for_ms } => {
                let target = direct.clone();
                let before = blocking(move || inspect::set_maxmemory(&target, "1")).await??;
                tokio::time::sleep(Duration::from_millis(for_ms)).await;
                let (target, b) = (direct.clone(), before.clone());
                blocking(move || inspect::set_maxmemory(&target, &b)).await??;
                self.record(
                    FaultKind::MemoryFull,
                    t,
                    None,
                    format!("maxmemory 1 (noeviction) for {for_ms} ms, then {before} again"),
                );
            }
            Fault::Kill { slot } => {
                let mut c = procs::lock(consumers);
                let Some(slot) = live(&c, slot) else {
                    return Ok(());
                };
                let pid = c.kill(slot)?;
                drop(c);
                self.record(
                    FaultKind::ConsumerKill,
                    t,
                    Some(pid),
                    format!("SIGKILL consumer slot {slot} pid {pid}"),
                );
            }
            Fault::Term { slot } => {
                let mut c = procs::lock(consumers);
                let Some(slot) = live(&c, slot) else {
                    return Ok(());
                };
                let pid = c.term(slot)?;
                drop(c);
                self.record(
                    FaultKind::ConsumerTerm,
                    t,
                    Some(pid),
                    format!("SIGTERM consumer slot {slot} pid {pid}"),
                );
            }
            Fault::Stop { slot, for_ms } => {
                let Some((slot, pid)) = pause_slot(consumers, slot, for_ms).await? else {
                    return Ok(());
                };
                self.record(
                    FaultKind::ConsumerStop,
                    t,
                    Some(pid),
                    format!("SIGSTOP consumer slot {slot} pid {pid}, then SIGCONT"),
                );
            }
            f @ (Fault::KillRedis { .. }
            | Fault::Proxy { .. }
            | Fault::ClusterFailover
            | Fault::ClusterKillMaster { .. }) => {
                let key = inspect::stream_key(&self.topic);
                if let Some(r) = redis_fault(env, f, &key).await? {
                    self.say(format!("fault {:?} {}", r.kind, r.detail));
                    self.faults.push(r);
                }
            }
            Fault::SentinelKillMaster => {
                let e = env.clone();
                let pid = blocking(move || lock_env(&e).sentinel_kill_master()).await??;
                let t_killed = now_ms();
                let e = env.clone();
                let detail = blocking(move || lock_env(&e).sentinel_after_failover()).await??;
                self.faults.push(FaultRecord {
                    t: t_killed,
                    t_end: now_ms(),
                    kind: FaultKind::SentinelKillMaster,
                    pid: Some(pid),
                    detail: format!("SIGKILL master pid {pid}; {detail}"),
                });
                self.say("fault SentinelKillMaster");
            }
        }
        Ok(())
    }
}

/// The group the library derives for `handler` on `topic` (`Bus::derived_group` with
/// the probes' app name).
fn derived_group(topic: &str, handler: &str) -> String {
    rivulet::Bus::builder(rivulet::MemoryBackend::new())
        .app("chaos")
        .build()
        .and_then(|bus| bus.derived_group(topic, handler))
        .map_or_else(|_| format!("chaos:{topic}__{handler}"), |g| g.to_string())
}

/// `slot` if it has a live, running process, else the next slot that does.
pub(crate) fn live<C: procs::SlotConfig>(c: &Consumers<C>, slot: usize) -> Option<usize> {
    let live = c.live_slots();
    (0..c.len())
        .map(|k| (slot + k) % c.len().max(1))
        .find(|s| live.contains(s))
}

/// Restarts dead probe processes until `closing` is set.
pub(crate) async fn supervise<C: procs::SlotConfig + Send + 'static>(
    consumers: SharedConsumers<C>,
    closing: Arc<AtomicBool>,
) {
    while !closing.load(Ordering::SeqCst) {
        procs::lock(&consumers).supervise();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_planted(dir: &Path, planted: &[Planted]) -> Result<(), String> {
    let lines: Vec<String> = planted
        .iter()
        .map(|p| serde_json::json!({"id": p.id, "t": p.t}).to_string())
        .collect();
    std::fs::write(dir.join("planted.jsonl"), lines.join("\n"))
        .map_err(|e| format!("planted log: {e}"))
}

fn read_planted(dir: &Path) -> Result<Vec<Planted>, String> {
    #[derive(serde::Deserialize)]
    struct Line {
        id: String,
        t: u64,
    }
    Ok(read_lines::<Line>(&dir.join("planted.jsonl"))
        .map_err(|e| format!("planted log: {e}"))?
        .into_iter()
        .map(|l| Planted { id: l.id, t: l.t })
        .collect())
}
