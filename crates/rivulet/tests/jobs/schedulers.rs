//! The job schedulers conformance suite (J-4), run on every backend by
//! `schedulers_suite!` beside `jobs_suite!`.
//!
//! Timing: intervals of 100–150 ms, runners re-checking every 200 ms; waits poll with a
//! deadline. The one sleep that is not a wait is the downtime of
//! `no_burst_after_downtime`, which is the behaviour under test.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Fixture, fast, queue, queue_name, wait_until_async};
use rivulet::{
    ErrorKind, Job, JobEventKind, JobState, Queue, Schedule, SchedulerChange, SchedulerRunner,
};

/// Generates one `#[tokio::test]` per behaviour, each with a fresh fixture from `$make`.
#[allow(unused_macros)] // not every conformance file runs this suite (TLS runs the jobs suite only)
macro_rules! schedulers_suite {
    ($make:expr) => {
        schedulers_suite!(@tests $make;
            schedulers_upsert_replace_list_and_remove,
            an_interval_scheduler_adds_one_job_per_tick_from_several_runners,
            no_burst_after_downtime,
            a_replaced_schedule_never_fires_the_old_one,
            a_cron_scheduler_adds_its_template_as_jobs,
            bad_scheduler_input_gets_typed_errors_and_writes_nothing,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make.await;
                jobs::schedulers::$name(&fixture).await;
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(20);

async fn runner(q: &Queue) -> SchedulerRunner {
    q.run_schedulers()
        .recheck_every(Duration::from_millis(200))
        .await
        .expect("runner")
}

/// The tick of a job a scheduler added (`sched:<id>:<tick>`).
fn tick_of(scheduler: &str, job: &str) -> u64 {
    let prefix = format!("sched:{scheduler}:");
    job.strip_prefix(&prefix)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{job} is not a job of scheduler {scheduler}"))
}

/// Every job of the queue in `state`, by id.
async fn ids_in(q: &Queue, state: JobState) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = q.jobs(state, cursor.as_deref(), 500).await.expect("jobs");
        out.extend(page.jobs.iter().map(|j| j.id.to_string()));
        match page.next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

// ---------------------------------------------------------------------------------------

pub async fn schedulers_upsert_replace_list_and_remove(f: &dyn Fixture) {
    let q = queue(f, &queue_name("sched-crud")).await;
    let hourly = || {
        q.scheduler("hourly")
            .every(Duration::from_secs(3600))
            .job("report", &serde_json::json!({"v": 1}))
    };
    let made = hourly().upsert().await.expect("upsert");
    assert!(
        Queue::list(f.backend().await)
            .await
            .expect("queues")
            .iter()
            .any(|n| n == q.name()),
        "a queue with a scheduler is in the queue registry"
    );
    assert_eq!(made.change, SchedulerChange::Created);
    assert_eq!(made.version, 1);
    let next = made.next_run_ms.expect("a next run");
    assert_eq!(next % 3_600_000, 0, "intervals tick at epoch multiples");

    let again = hourly().upsert().await.expect("upsert");
    assert_eq!(
        (again.change, again.version, again.next_run_ms),
        (SchedulerChange::Unchanged, 1, Some(next)),
        "the same definition again changes nothing"
    );

    let updated = q
        .scheduler("hourly")
        .every(Duration::from_secs(3600))
        .job("report", &serde_json::json!({"v": 2}))
        .priority(3)
        .upsert()
        .await
        .expect("upsert");
    assert_eq!(
        (updated.change, updated.version, updated.next_run_ms),
        (SchedulerChange::Updated, 2, Some(next)),
        "a new template keeps the next run"
    );

    q.scheduler("berlin")
        .cron("0 30 2 * * *")
        .tz("Europe/Berlin")
        .upsert()
        .await
        .expect("upsert");
    let list = q.schedulers().await.expect("list");
    assert_eq!(
        list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["berlin", "hourly"]
    );
    let berlin = &list[0];
    assert_eq!(
        berlin.schedule,
        Schedule::Cron {
            expr: "0 30 2 * * *".into(),
            tz: "Europe/Berlin".into()
        }
    );
    assert_eq!(
        berlin.job_name.as_str(),
        "berlin",
        "the name defaults to the id"
    );
    assert_eq!(berlin.job_data.as_ref(), b"null");
    assert_eq!((berlin.last_run_ms, berlin.last_job.as_ref()), (None, None));
    let hourly_info = &list[1];
    assert_eq!(
        hourly_info.schedule,
        Schedule::Every(Duration::from_secs(3600))
    );
    assert_eq!(hourly_info.job_name.as_str(), "report");
    assert_eq!(hourly_info.next_run_ms, Some(next));
    assert_eq!(hourly_info.version, 2);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&hourly_info.job_data).expect("json"),
        serde_json::json!({"v": 2})
    );

    let replaced = q
        .scheduler("hourly")
        .cron("0 0 * * * *")
        .job("report", &serde_json::json!({"v": 2}))
        .priority(3)
        .upsert()
        .await
        .expect("upsert");
    assert_eq!(
        (replaced.change, replaced.version),
        (SchedulerChange::Replaced, 3)
    );
    let list = q.schedulers().await.expect("list");
    assert_eq!(list.len(), 2, "replaced by id, not added");
    assert_eq!(
        list[1].schedule,
        Schedule::Cron {
            expr: "0 0 * * * *".into(),
            tz: "UTC".into()
        }
    );

    assert!(q.remove_scheduler("hourly").await.expect("remove"));
    assert!(!q.remove_scheduler("hourly").await.expect("remove again"));
    let list = q.schedulers().await.expect("list");
    assert_eq!(
        list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["berlin"]
    );
    assert_eq!(q.counts().await.expect("counts").unfinished(), 0);
}

pub async fn an_interval_scheduler_adds_one_job_per_tick_from_several_runners(f: &dyn Fixture) {
    let name = queue_name("sched-ticks");
    let q = queue(f, &name).await;
    let q2 = queue(f, &name).await;
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let h = handled.clone();
    // A worker fires schedulers by default; a standalone runner on another backend
    // competes with it.
    let worker = fast(q.worker(move |job: Job<serde_json::Value>| {
        let h = h.clone();
        async move {
            h.lock().expect("lock").push(job.id().to_string());
            Ok(())
        }
    }))
    .concurrency(4)
    .await
    .expect("worker");
    let r2 = runner(&q2).await;
    let mut events = q.events(None).await.expect("events");
    let up = q
        .scheduler("tick")
        .every(Duration::from_millis(100))
        .job("tick", &7)
        .upsert()
        .await
        .expect("upsert");
    let first = up.next_run_ms.expect("next");
    wait_until_async("20 ticks handled", WAIT, || async {
        handled.lock().expect("lock").len() >= 20
    })
    .await;
    assert!(q.remove_scheduler("tick").await.expect("remove"));
    let stats = r2.stats();
    r2.shutdown().await;
    wait_until_async("every job finished", WAIT, || async {
        q.counts().await.expect("counts").unfinished() == 0
    })
    .await;
    worker.shutdown().await;

    let ids = handled.lock().expect("lock").clone();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a job ran twice: {ids:?}");
    let ticks: BTreeSet<u64> = ids.iter().map(|id| tick_of("tick", id)).collect();
    assert_eq!(ticks.len(), ids.len(), "two jobs for one tick: {ids:?}");
    assert!(ticks.iter().all(|t| t % 100 == 0), "{ticks:?}");
    assert!(
        *ticks.first().expect("a tick") >= first,
        "fired before its first tick"
    );
    let span = (ticks.last().expect("a tick") - ticks.first().expect("a tick")) / 100 + 1;
    // A tick is skipped only when no runner looked at the queue in its 100 ms (the
    // documented catch-up): allow a few on a loaded machine, not a pattern.
    let gaps = span - ticks.len() as u64;
    assert!(
        gaps * 10 <= span,
        "{gaps} of {span} ticks skipped: {ticks:?}"
    );
    assert_eq!(
        q.counts().await.expect("counts").completed,
        ids.len() as u64,
        "every job added was handled once"
    );
    let fired: Vec<(String, u64)> = events
        .drain_now()
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == JobEventKind::SchedulerFired)
        .map(|e| {
            let (id, tick) = e.scheduler_tick().expect("a scheduler tick");
            assert_eq!(e.job.as_str(), format!("sched:tick:{tick}"));
            (id.to_owned(), tick)
        })
        .collect();
    assert_eq!(fired.len(), ids.len(), "one scheduler-fired event per job");
    assert!(
        fired
            .iter()
            .all(|(id, t)| id == "tick" && ticks.contains(t))
    );
    assert!(
        stats.passes > 0,
        "the standalone runner ran ({stats:?}); who fired is up to the race"
    );
}

pub async fn no_burst_after_downtime(f: &dyn Fixture) {
    let q = queue(f, &queue_name("sched-downtime")).await;
    // A worker that does not fire schedulers (paused queue: it runs nothing either)
    // leaves the scheduler alone.
    q.pause().await.expect("pause");
    let idle = fast(q.worker(|_job: Job<serde_json::Value>| async { Ok(()) }))
        .schedulers(false)
        .await
        .expect("worker");
    let up = q
        .scheduler("beat")
        .every(Duration::from_millis(100))
        .upsert()
        .await
        .expect("upsert");
    let first = up.next_run_ms.expect("next");
    // Nobody fires for about 8 ticks.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(q.counts().await.expect("counts").waiting, 0);
    idle.shutdown().await;
    let r = runner(&q).await;
    wait_until_async("a tick after the downtime", WAIT, || async {
        q.counts().await.expect("counts").waiting >= 1
    })
    .await;
    let after_first = ids_in(&q, JobState::Waiting).await;
    let catch_up = after_first
        .iter()
        .map(|id| tick_of("beat", id))
        .min()
        .expect("a job");
    assert!(
        catch_up >= first + 700,
        "the first fire after downtime is the latest missed tick, not the first one: \
         {catch_up} vs first tick {first}"
    );
    wait_until_async("two more ticks", WAIT, || async {
        q.counts().await.expect("counts").waiting >= 3
    })
    .await;
    r.shutdown().await;
    let ticks: BTreeSet<u64> = ids_in(&q, JobState::Waiting)
        .await
        .iter()
        .map(|id| tick_of("beat", id))
        .collect();
    assert!(
        ticks.iter().all(|t| *t >= catch_up),
        "no tick of the downtime fired: {ticks:?}"
    );
    let info = q.schedulers().await.expect("list");
    assert_eq!(info[0].last_run_ms, ticks.last().copied());
    assert_eq!(
        info[0].last_job.as_ref().map(|j| j.to_string()),
        ticks.last().map(|t| format!("sched:beat:{t}"))
    );
}

pub async fn a_replaced_schedule_never_fires_the_old_one(f: &dyn Fixture) {
    let name = queue_name("sched-replace");
    let q = queue(f, &name).await;
    let q2 = queue(f, &name).await;
    let r1 = runner(&q).await;
    let r2 = runner(&q2).await;
    q.scheduler("s")
        .every(Duration::from_millis(100))
        .job("old", &1)
        .upsert()
        .await
        .expect("upsert");
    wait_until_async("two old ticks", WAIT, || async {
        q.counts().await.expect("counts").waiting >= 2
    })
    .await;
    let up = q
        .scheduler("s")
        .every(Duration::from_millis(150))
        .job("new", &2)
        .upsert()
        .await
        .expect("replace");
    assert_eq!(up.change, SchedulerChange::Replaced);
    let new_first = up.next_run_ms.expect("next");
    assert_eq!(new_first % 150, 0);
    let names_now = |q: Queue| async move {
        let page = q.jobs(JobState::Waiting, None, 1000).await.expect("jobs");
        page.jobs
            .iter()
            .filter(|j| j.name.as_str() == "old")
            .count()
    };
    let old_at_replace = names_now(q.clone()).await;
    let at_replace = q.counts().await.expect("counts").waiting;
    wait_until_async("three new ticks", WAIT, || async {
        q.counts().await.expect("counts").waiting >= at_replace + 3
    })
    .await;
    r1.shutdown().await;
    r2.shutdown().await;
    let page = q.jobs(JobState::Waiting, None, 1000).await.expect("jobs");
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for j in &page.jobs {
        let t = tick_of("s", j.id.as_str());
        match j.name.as_str() {
            "old" => old.push(t),
            "new" => new.push(t),
            other => panic!("unexpected job name {other}"),
        }
    }
    assert!(new.len() >= 3, "{new:?}");
    assert!(
        new.iter().all(|t| t % 150 == 0 && *t >= new_first),
        "{new:?}"
    );
    assert_eq!(
        old.len(),
        old_at_replace,
        "the old schedule fired after the replacing upsert returned: {old:?} vs {new:?}"
    );
}

pub async fn bad_scheduler_input_gets_typed_errors_and_writes_nothing(f: &dyn Fixture) {
    let q = queue(f, &queue_name("sched-bad")).await;
    let kind = |r: rivulet::Result<rivulet::SchedulerUpsert>| r.expect_err("refused").kind();
    let every = Duration::from_secs(60);
    assert_eq!(
        kind(q.scheduler("a").cron("61 * * * *").upsert().await),
        ErrorKind::InvalidSchedule
    );
    assert_eq!(
        kind(q.scheduler("a").cron("every day").upsert().await),
        ErrorKind::InvalidSchedule
    );
    let tz = q
        .scheduler("a")
        .cron("* * * * *")
        .tz("Mars/Olympus")
        .upsert()
        .await
        .expect_err("refused");
    assert!(
        matches!(
            &tz,
            rivulet::Error::InvalidSchedule(rivulet::ScheduleError::UnknownTimeZone(z)) if z == "Mars/Olympus"
        ),
        "{tz}"
    );
    let zero = q
        .scheduler("a")
        .every(Duration::ZERO)
        .upsert()
        .await
        .expect_err("refused");
    assert!(
        matches!(
            zero,
            rivulet::Error::InvalidSchedule(rivulet::ScheduleError::ZeroInterval)
        ),
        "{zero}"
    );
    assert_eq!(
        kind(q.scheduler("a").upsert().await),
        ErrorKind::InvalidSchedule,
        "no schedule"
    );
    assert_eq!(
        kind(
            q.scheduler("a")
                .cron("* * * * *")
                .every(every)
                .upsert()
                .await
        ),
        ErrorKind::InvalidSchedule,
        "both"
    );
    assert_eq!(
        kind(q.scheduler("a").every(every).tz("UTC").upsert().await),
        ErrorKind::InvalidSchedule,
        "a time zone for an interval"
    );
    assert_eq!(
        kind(q.scheduler("a").cron("0 0 30 2 *").upsert().await),
        ErrorKind::InvalidSchedule,
        "February 30th never comes"
    );
    assert_eq!(
        kind(q.scheduler("bad id").every(every).upsert().await),
        ErrorKind::InvalidName
    );
    assert_eq!(
        kind(q.scheduler(&"x".repeat(161)).every(every).upsert().await),
        ErrorKind::InvalidName
    );
    assert_eq!(
        kind(q.scheduler("").every(every).upsert().await),
        ErrorKind::InvalidName
    );
    assert_eq!(
        kind(
            q.scheduler("a")
                .every(every)
                .job("bad name", &1)
                .upsert()
                .await
        ),
        ErrorKind::InvalidName
    );
    assert_eq!(
        kind(
            q.scheduler("a")
                .every(every)
                .priority(u32::MAX)
                .upsert()
                .await
        ),
        ErrorKind::Config
    );
    assert_eq!(
        kind(q.scheduler("a").every(every).attempts(0).upsert().await),
        ErrorKind::Config
    );
    assert_eq!(
        q.remove_scheduler("bad id")
            .await
            .expect_err("refused")
            .kind(),
        ErrorKind::InvalidName
    );
    assert_eq!(
        q.run_schedulers()
            .recheck_every(Duration::ZERO)
            .await
            .expect_err("refused")
            .kind(),
        ErrorKind::Config
    );
    assert!(
        q.schedulers().await.expect("list").is_empty(),
        "nothing was written"
    );
    // A 160-byte id is fine.
    q.scheduler(&"x".repeat(160))
        .every(every)
        .upsert()
        .await
        .expect("a 160-byte id");
}

pub async fn a_cron_scheduler_adds_its_template_as_jobs(f: &dyn Fixture) {
    let q = queue(f, &queue_name("sched-cron")).await;
    let r = runner(&q).await;
    q.scheduler("every-second")
        .cron("* * * * * *")
        .tz("Asia/Kolkata")
        .job("report", &serde_json::json!({"kind": "summary"}))
        .priority(5)
        .attempts(2)
        .timeout(Duration::from_secs(9))
        .upsert()
        .await
        .expect("upsert");
    wait_until_async("two ticks", WAIT, || async {
        q.counts().await.expect("counts").waiting >= 2
    })
    .await;
    r.shutdown().await;
    let page = q.jobs(JobState::Waiting, None, 100).await.expect("jobs");
    let ticks: BTreeSet<u64> = page
        .jobs
        .iter()
        .map(|j| tick_of("every-second", j.id.as_str()))
        .collect();
    assert_eq!(ticks.len(), page.jobs.len());
    assert!(
        ticks.iter().all(|t| t % 1000 == 0),
        "whole seconds: {ticks:?}"
    );
    for j in &page.jobs {
        assert_eq!(j.name.as_str(), "report");
        assert_eq!(
            j.data::<serde_json::Value>().expect("data"),
            serde_json::json!({"kind": "summary"})
        );
        assert_eq!((j.priority, j.max_attempts), (5, 2));
    }
    let info = &q.schedulers().await.expect("list")[0];
    assert_eq!(info.last_run_ms, ticks.last().copied());
    assert!(info.next_run_ms > info.last_run_ms);
}
