//! One job run: Redis, the worker processes (supervised, respawned), the adders, the
//! scheduled faults, an in-harness canceller, healing, the drain, and the collection of
//! everything the checker reads.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::{JobState, Limits, Queue, Rate};

use super::check::{self, JobHistory};
use super::probe::{self, AddRecord, AdderConfig, QueueOpts, WorkRecord, WorkerConfig};
use super::report::JobReport;
use super::{JobPlan, JobScenario};
use crate::checker::{FaultKind, FaultRecord};
use crate::harness::env::Env;
use crate::harness::procs::{self, Consumers, PublisherProc, SharedConsumers};
use crate::harness::{
    RunOpts, SharedEnv, blocking, live, lock_env, pause_slot, redis_fault, supervise,
};
use crate::probe::{Connect, now_ms, read_lines};
use crate::scenarios::{Fault, Profile};

type Workers = SharedConsumers<WorkerConfig>;

/// The scheduler of the scenarios that have one.
const BEAT: &str = "beat";

/// Runs one job scenario and returns its report.
pub(crate) async fn run(
    scenario: &JobScenario,
    profile: Profile,
    seed: u64,
    opts: &RunOpts,
) -> JobReport {
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
    let mut report = match std::fs::create_dir_all(&dir) {
        Err(e) => JobReport::error(scenario, profile, seed, &format!("run dir: {e}")),
        Ok(()) => {
            let _ = std::fs::write(dir.join("plan.txt"), format!("seed {seed}\n{plan:#?}\n"));
            let mut run = Run {
                name: scenario.name,
                queue: QueueOpts {
                    name: format!("chaos.{}", scenario.name),
                    backoff_ms: plan.timing.backoff_ms,
                },
                plan,
                dir: dir.clone(),
                verbose: opts.verbose,
                faults: Vec::new(),
                problems: Vec::new(),
            };
            match run.execute().await {
                Ok(outcome) => {
                    let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
                    JobReport::new(
                        scenario,
                        profile,
                        seed,
                        outcome,
                        run.faults.len(),
                        elapsed,
                        run.problems,
                    )
                }
                Err(e) => JobReport::error(scenario, profile, seed, &e),
            }
        }
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
    queue: QueueOpts,
    plan: JobPlan,
    dir: PathBuf,
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

    fn worker_configs(&self, connect: &Connect) -> Vec<WorkerConfig> {
        let t = &self.plan.timing;
        self.plan
            .workers
            .iter()
            .map(|w| WorkerConfig {
                connect: connect.clone(),
                queue: if w.kids {
                    self.kids()
                } else {
                    self.queue.clone()
                },
                name: if w.broken { "broken" } else { "w" }.into(),
                concurrency: w.concurrency,
                lease_ms: t.lease_ms,
                renew_ms: t.renew_ms,
                stall_check_ms: t.stall_check_ms,
                drain_timeout_ms: t.drain_timeout_ms,
                block_ms: t.block_ms,
                schedulers: self.plan.scheduler_ms.is_some(),
                broken: w.broken,
                log: PathBuf::new(),
            })
            .collect()
    }

    /// The run's second queue: the flows' children.
    fn kids(&self) -> QueueOpts {
        QueueOpts {
            name: probe::kids_queue(&self.queue.name),
            ..self.queue.clone()
        }
    }

    /// The ids whose plan is to be cancelled while they run.
    fn cancel_ids(&self) -> Vec<String> {
        self.plan
            .adders
            .iter()
            .flat_map(|a| &a.jobs)
            .filter(|j| j.spec.cancel)
            .map(|j| j.spec.id.clone())
            .collect()
    }

    async fn execute(&mut self) -> Result<check::JobOutcome, String> {
        let topology = self.plan.topology;
        let env = blocking(move || Env::start(topology)).await??;
        self.say(env.describe());
        let (probe_target, direct) = (env.probe_target(), env.direct_target());
        let env: SharedEnv = Arc::new(Mutex::new(env));
        let connect = Connect {
            target: probe_target,
            response_timeout_ms: self.plan.response_timeout_ms,
            max_payload: 1 << 20,
            start_deadline_ms: 60_000,
        };
        let harness_connect = Connect {
            target: direct,
            response_timeout_ms: 5000,
            ..connect.clone()
        };
        let queue = self.queue.open(&harness_connect).await?;
        let kids = self.kids().open(&harness_connect).await?;
        self.configure(&queue).await?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let workers: Workers = Arc::new(Mutex::new(Consumers::new(
            exe.clone(),
            self.dir.clone(),
            Duration::from_millis(self.plan.respawn_ms),
            self.worker_configs(&connect),
        )));
        procs::lock(&workers).spawn_all()?;
        let closing = Arc::new(AtomicBool::new(false));
        let supervisor = tokio::spawn(supervise(workers.clone(), closing.clone()));
        let result = self
            .with_workers(&exe, &connect, [&queue, &kids], &env, &workers)
            .await;
        closing.store(true, Ordering::SeqCst);
        let _ = supervisor.await;
        let grace = Duration::from_millis(self.plan.timing.drain_timeout_ms + 5000);
        let w = workers.clone();
        blocking(move || procs::lock(&w).shutdown(grace)).await?;
        result?;

        let mut history = JobHistory {
            lease_ms: self.plan.timing.lease_ms,
            window_ms: self.plan.window_ms,
            tick_ms: self.plan.scheduler_ms,
            rate: self.plan.rate,
            group_cap: self.plan.group_cap,
            ..JobHistory::default()
        };
        for a in &self.plan.adders {
            for j in &a.jobs {
                history.planned.insert(j.spec.id.clone(), j.clone());
                for c in &j.children {
                    let child = probe::AddSpec {
                        spec: c.clone(),
                        attempts: j.attempts,
                        ..probe::AddSpec::default()
                    };
                    history.planned.insert(c.id.clone(), child);
                }
            }
        }
        for i in 0..self.plan.adders.len() {
            let log = adder_log(&self.dir, i);
            let adds: Vec<AddRecord> = read_lines(&log).map_err(|e| format!("adder log: {e}"))?;
            let planned: usize = self.plan.adders[i]
                .jobs
                .iter()
                .map(|j| 1 + j.children.len())
                .sum();
            if adds.len() != planned {
                self.problems.push(format!(
                    "adder {i} logged {} of its {planned} jobs",
                    adds.len()
                ));
            }
            history.adds.extend(adds);
        }
        for log in procs::lock(&workers).logs() {
            history
                .work
                .extend(read_lines::<WorkRecord>(&log).map_err(|e| format!("worker log: {e}"))?);
        }
        for q in [&queue, &kids] {
            history
                .counts
                .push(q.counts().await.map_err(|e| format!("counts: {e}"))?);
            history.events.extend(
                q.events(None)
                    .await
                    .map_err(|e| format!("events: {e}"))?
                    .drain_now()
                    .await
                    .map_err(|e| format!("events: {e}"))?
                    .iter()
                    .map(check::Ev::from),
            );
        }
        // Every job any adder logged, and every job a scheduler tick added.
        let ids: BTreeSet<String> = history
            .adds
            .iter()
            .map(|a| a.id.clone())
            .chain(
                history
                    .events
                    .iter()
                    .filter(|e| e.kind == rivulet::JobEventKind::SchedulerFired)
                    .map(|e| e.job.clone()),
            )
            .collect();
        for id in ids {
            let job = probe::job_id(&id)?;
            let mut info = None;
            for q in [&queue, &kids] {
                if info.is_none() {
                    info = q.job(&job).await.map_err(|e| format!("job {id}: {e}"))?;
                }
            }
            history.finals.insert(id, info);
        }
        history.faults = self.faults.clone();
        drop((queue, kids));
        drop(blocking(move || drop(env)).await);
        let _ = std::fs::write(
            self.dir.join("faults.json"),
            serde_json::to_vec_pretty(&self.faults).unwrap_or_default(),
        );
        let _ = std::fs::write(
            self.dir.join("events.txt"),
            history
                .events
                .iter()
                .map(|e| {
                    format!(
                        "{} {} {} {} {:?}\n",
                        e.t,
                        e.job,
                        e.kind.as_str(),
                        e.attempt,
                        e.detail
                    )
                })
                .collect::<String>(),
        );
        Ok(check::check(&history))
    }

    /// Adding, faults, cancellations, healing and the drain, while the workers run.
    async fn with_workers(
        &mut self,
        exe: &Path,
        connect: &Connect,
        [queue, kids]: [&Queue; 2],
        env: &SharedEnv,
        workers: &Workers,
    ) -> Result<(), String> {
        let ready_by = Instant::now() + Duration::from_secs(60);
        while !procs::lock(workers).all_ready() {
            if Instant::now() >= ready_by {
                return Err("workers not ready within 60 s (see job-worker-*.stderr)".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.say("workers ready");
        let mut adders = Vec::new();
        for (i, a) in self.plan.adders.iter().enumerate() {
            let cfg = AdderConfig {
                connect: connect.clone(),
                queue: self.queue.clone(),
                jobs: a.jobs.clone(),
                batch: a.batch,
                calls_per_sec: a.calls_per_sec,
                log: adder_log(&self.dir, i),
            };
            adders.push(PublisherProc::spawn_as(
                exe,
                &self.dir,
                "job-adder",
                &format!("adder-{i}"),
                &cfg,
            )?);
        }
        let t0 = Instant::now();
        let limit = Duration::from_millis(super::adding_ms(&self.plan) * 3 + 60_000);
        let waiting: Vec<_> = adders
            .into_iter()
            .map(|a| tokio::task::spawn_blocking(move || a.wait(limit)))
            .collect();
        let cancelling = Arc::new(AtomicBool::new(true));
        let canceller = tokio::spawn(cancel_running(
            queue.clone(),
            self.cancel_ids(),
            cancelling.clone(),
        ));
        self.inject(t0, env, workers).await;
        for w in waiting {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.problems.push(format!("adder: {e}")),
                Err(e) => self.problems.push(format!("adder wait: {e}")),
            }
        }
        self.say(format!("adding done after {:?}", t0.elapsed()));
        if self.plan.scheduler_ms.is_some() {
            // Removed while every worker runs: no tick after this.
            let mut removed = queue.remove_scheduler(BEAT).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            while removed.is_err() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                removed = queue.remove_scheduler(BEAT).await;
            }
            if let Err(e) = removed {
                self.problems.push(format!("remove scheduler: {e}"));
            }
        }

        // Heal: Redis up, proxy passing, every worker running.
        let e = env.clone();
        blocking(move || lock_env(&e).heal()).await??;
        procs::lock(workers).heal()?;
        // Give the canceller a lease's time to catch jobs that start now, then cancel
        // what is left of the planned cancellations in whatever state it is.
        tokio::time::sleep(Duration::from_millis(self.plan.timing.lease_ms)).await;
        cancelling.store(false, Ordering::SeqCst);
        let _ = canceller.await;
        for id in self.cancel_ids() {
            let job = probe::job_id(&id)?;
            if let Err(e) = queue.cancel(&job).await
                && e.kind() != rivulet::ErrorKind::JobNotFound
            {
                self.problems.push(format!("cancel {id}: {e}"));
            }
        }
        self.drain([queue, kids]).await;
        Ok(())
    }

    /// The queue's limits and its scheduler, before any worker starts.
    async fn configure(&self, queue: &Queue) -> Result<(), String> {
        let mut limits = Limits::new();
        if let Some((max, per)) = self.plan.rate {
            limits = limits.rate(Rate::new(max, Duration::from_millis(per)));
        }
        if let Some(cap) = self.plan.group_cap {
            limits = limits.group_concurrency(cap);
        }
        queue
            .set_limits(limits)
            .await
            .map_err(|e| format!("set_limits: {e}"))?;
        if let Some(ms) = self.plan.scheduler_ms {
            let data = probe::Spec {
                ms: 20,
                ..probe::Spec::default()
            };
            queue
                .scheduler(BEAT)
                .every(Duration::from_millis(ms))
                .job("probe", &data)
                .attempts(3)
                .upsert()
                .await
                .map_err(|e| format!("scheduler: {e}"))?;
        }
        Ok(())
    }

    /// Polls the O(1) counts until nothing is unfinished three polls in a row, or the
    /// deadline passes.
    async fn drain(&mut self, queues: [&Queue; 2]) {
        let deadline = Instant::now() + Duration::from_millis(self.plan.drain_deadline_ms);
        let mut zeros = 0;
        let mut last = None;
        while Instant::now() < deadline {
            let mut idle = true;
            for q in queues {
                match q.counts().await {
                    Ok(c) if c.unfinished() == 0 => {}
                    Ok(c) => {
                        idle = false;
                        last = Some(format!("{c:?}"));
                    }
                    Err(e) => {
                        idle = false;
                        last = Some(e.to_string());
                    }
                }
            }
            if idle {
                zeros += 1;
            } else {
                zeros = 0;
            }
            if zeros >= 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.problems.push(format!(
            "drain deadline ({} ms) passed: {}",
            self.plan.drain_deadline_ms,
            last.unwrap_or_default()
        ));
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

    async fn inject(&mut self, t0: Instant, env: &SharedEnv, workers: &Workers) {
        for s in self.plan.faults.clone() {
            tokio::time::sleep_until((t0 + Duration::from_millis(s.at_ms)).into()).await;
            if let Err(e) = self.inject_one(s.fault, env, workers).await {
                self.problems.push(format!("fault {:?}: {e}", s.fault));
            }
        }
    }

    async fn inject_one(
        &mut self,
        fault: Fault,
        env: &SharedEnv,
        workers: &Workers,
    ) -> Result<(), String> {
        let t = now_ms();
        let key = format!("{{rivulet/queue/{}}}", self.queue.name);
        match fault {
            Fault::Kill { slot } | Fault::Term { slot } | Fault::Drain { slot } => {
                let mut w = procs::lock(workers);
                let Some(slot) = live(&w, slot) else {
                    return Ok(());
                };
                let (kind, pid, what) = match fault {
                    Fault::Kill { .. } => (FaultKind::ConsumerKill, w.kill(slot)?, "SIGKILL"),
                    Fault::Term { .. } => (FaultKind::ConsumerTerm, w.term(slot)?, "SIGTERM"),
                    _ => (FaultKind::ConsumerDrain, w.term(slot)?, "SIGTERM (drain)"),
                };
                drop(w);
                self.record(
                    kind,
                    t,
                    Some(pid),
                    format!("{what} worker slot {slot} pid {pid}"),
                );
            }
            Fault::Stop { slot, for_ms } => {
                let Some((slot, pid)) = pause_slot(workers, slot, for_ms).await? else {
                    return Ok(());
                };
                self.record(
                    FaultKind::ConsumerStop,
                    t,
                    Some(pid),
                    format!("SIGSTOP worker slot {slot} pid {pid} for {for_ms} ms, then SIGCONT"),
                );
            }
            f @ (Fault::KillRedis { .. }
            | Fault::Proxy { .. }
            | Fault::ClusterFailover
            | Fault::ClusterKillMaster { .. }) => {
                if let Some(r) = redis_fault(env, f, &key).await? {
                    self.say(format!("fault {:?} {}", r.kind, r.detail));
                    self.faults.push(r);
                }
            }
            other => return Err(format!("not a job fault: {other:?}")),
        }
        Ok(())
    }
}

fn adder_log(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("adder-{i}.jsonl"))
}

/// Cancels each planned job once it is running (from this process: the worker that runs
/// it learns of it through Redis), until `on` is cleared. Errors (Redis down) are retried
/// on the next round.
async fn cancel_running(queue: Queue, ids: Vec<String>, on: Arc<AtomicBool>) {
    let mut open: HashMap<String, rivulet::JobId> = ids
        .into_iter()
        .filter_map(|id| probe::job_id(&id).ok().map(|j| (id, j)))
        .collect();
    while on.load(Ordering::SeqCst) && !open.is_empty() {
        let mut done = Vec::new();
        for (id, job) in &open {
            match queue.job(job).await {
                Ok(Some(info)) if info.state.is_terminal() || info.cancel_requested => {
                    done.push(id.clone());
                }
                Ok(Some(info))
                    if info.state == JobState::Active && queue.cancel(job).await.is_ok() =>
                {
                    done.push(id.clone());
                }
                _ => {}
            }
        }
        for id in done {
            open.remove(&id);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
