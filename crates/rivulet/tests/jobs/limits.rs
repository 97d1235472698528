//! Limits and groups (J-7, J-8) on every backend: the queue-wide concurrency cap, rate
//! limits, groups taking turns, the group cap, group pause, the rate-limited handler
//! signal, group counts. `limits_suite!` turns the list into `#[tokio::test]`s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::{ErrorKind, HandlerError, Job, JobEventKind, JobState, Limits, Rate};

use super::{Fixture, WAIT, fast, queue, queue_name, wait_finished, wait_state};

/// Generates one `#[tokio::test]` per behaviour, each with a fresh fixture from `$make`
/// (not every file that runs the jobs suite runs this one: TLS does not).
#[allow(unused_macros)]
macro_rules! limits_suite {
    ($make:expr) => {
        limits_suite!(@tests $make;
            a_concurrency_cap_holds_across_workers,
            a_rate_limit_holds_across_workers_and_wakes_them_when_the_window_opens,
            groups_take_turns_with_each_other_and_with_ungrouped_jobs,
            a_group_rate_limit_holds_per_group,
            a_group_cap_holds_and_frees_on_every_settle_path,
            released_and_cancelled_active_jobs_free_their_group,
            a_paused_group_waits_while_others_run,
            a_rate_limited_handler_keeps_its_attempt_and_holds_its_group,
            group_counts_follow_add_cancel_remove_and_runs,
            groups_in_play_are_listed_by_name_a_page_at_a_time,
            bad_limits_are_refused_and_write_nothing,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        /// Filter with `limits::`.
        mod limits {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = $make.await;
                    jobs::limits::$name(&fixture).await;
                }
            )*
        }
    };
}

/// Counts running handlers and remembers the most at once.
#[derive(Default)]
struct Gauge {
    now: AtomicU32,
    max: AtomicU32,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn max(&self) -> u32 {
        self.max.load(Ordering::SeqCst)
    }
}

pub async fn a_concurrency_cap_holds_across_workers(f: &dyn Fixture) {
    let name = queue_name("cap");
    let q = queue(f, &name).await;
    q.set_limits(Limits::new().concurrency(3))
        .await
        .expect("limits");
    assert_eq!(q.limits().await.expect("limits").concurrency, Some(3));
    for i in 0..24u32 {
        q.add("c", &i).await.expect("add");
    }
    let gauge = Arc::new(Gauge::default());
    let mut workers = Vec::new();
    // Three handles playing three processes, 4 places each: 12 places, cap 3.
    for _ in 0..3 {
        let qi = queue(f, &name).await;
        let g = gauge.clone();
        let w = fast(qi.worker(move |_job: Job<u32>| {
            let g = g.clone();
            async move {
                g.enter();
                tokio::time::sleep(Duration::from_millis(30)).await;
                g.leave();
                Ok(())
            }
        }))
        .concurrency(4)
        .await
        .expect("worker");
        workers.push(w);
    }
    wait_finished(&q).await;
    assert_eq!(q.counts().await.expect("counts").completed, 24);
    assert!(gauge.max() <= 3, "at most 3 at once, saw {}", gauge.max());
    assert_eq!(gauge.max(), 3, "the cap is reached, not undershot");
    for w in workers {
        w.shutdown().await;
    }
}

pub async fn a_rate_limit_holds_across_workers_and_wakes_them_when_the_window_opens(
    f: &dyn Fixture,
) {
    let name = queue_name("rate");
    let q = queue(f, &name).await;
    let per = Duration::from_millis(400);
    q.set_limits(Limits::new().rate(Rate::new(5, per)))
        .await
        .expect("limits");
    for i in 0..16u32 {
        q.add("r", &i).await.expect("add");
    }
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let qi = queue(f, &name).await;
        let s = starts.clone();
        let w = fast(qi.worker(move |_job: Job<u32>| {
            let s = s.clone();
            async move {
                s.lock().expect("lock").push(Instant::now());
                Ok(())
            }
        }))
        .concurrency(8)
        // Long blocking: only the fetch reply's "limited until" can wake them in time.
        .block_timeout(Duration::from_secs(5))
        .await
        .expect("worker");
        workers.push(w);
    }
    wait_finished(&q).await;
    let took = t0.elapsed();
    let mut s = starts.lock().expect("lock").clone();
    s.sort();
    assert_eq!(s.len(), 16);
    // 16 starts at 5 per 400 ms need three full windows after the first.
    assert!(
        took >= per * 3 - Duration::from_millis(50),
        "too fast: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "woken late (a lost wake-up?): {took:?}"
    );
    // Any 5 + 1 starts span a window (less the handlers' start jitter).
    for w in s.windows(6) {
        let span = w[5] - w[0];
        assert!(
            span >= per - Duration::from_millis(60),
            "6 starts within {span:?}"
        );
    }
    for w in workers {
        w.shutdown().await;
    }
}

pub async fn groups_take_turns_with_each_other_and_with_ungrouped_jobs(f: &dyn Fixture) {
    let q = queue(f, &queue_name("turns")).await;
    q.pause().await.expect("pause");
    // A big tenant first, then two small ones and a few ungrouped jobs.
    let big: Vec<_> = (0..40u32)
        .map(|i| q.add("t", &("a", i)).group("a"))
        .collect();
    q.add_bulk(big).await.expect("add");
    for i in 0..3u32 {
        q.add("t", &("b", i)).group("b").await.expect("add");
        q.add("t", &("c", i)).group("c").await.expect("add");
        q.add("t", &("-", i)).await.expect("add");
    }
    assert_eq!(q.counts().await.expect("counts").waiting, 49);
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let o = order.clone();
    let worker = fast(q.worker(move |job: Job<(String, u32)>| {
        let o = o.clone();
        async move {
            o.lock().expect("lock").push(job.data().0.clone());
            Ok(())
        }
    }))
    .concurrency(1)
    .await
    .expect("worker");
    q.resume().await.expect("resume");
    wait_finished(&q).await;
    let order = order.lock().expect("lock").clone();
    assert_eq!(order.len(), 49);
    // Round robin: the first 12 starts are 3 rounds of the 4 members.
    let mut first: HashMap<&str, usize> = HashMap::new();
    for g in &order[..12] {
        *first.entry(g.as_str()).or_default() += 1;
    }
    for g in ["a", "b", "c", "-"] {
        assert_eq!(
            first.get(g),
            Some(&3),
            "3 turns each in 3 rounds: {order:?}"
        );
    }
    // And the rest is the big tenant alone.
    assert!(order[12..].iter().all(|g| g == "a"), "{order:?}");
    worker.shutdown().await;
}

pub async fn a_group_rate_limit_holds_per_group(f: &dyn Fixture) {
    let q = queue(f, &queue_name("grate")).await;
    let per = Duration::from_millis(300);
    q.set_limits(Limits::new().group_rate(Rate::new(3, per)))
        .await
        .expect("limits");
    assert_eq!(
        q.limits().await.expect("limits").group_rate,
        Some(Rate::new(3, per))
    );
    q.pause().await.expect("pause");
    for i in 0..7u32 {
        q.add("g", &("a", i)).group("a").await.expect("add");
        q.add("g", &("b", i)).group("b").await.expect("add");
    }
    let starts: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let s = starts.clone();
    let worker = fast(q.worker(move |job: Job<(String, u32)>| {
        let s = s.clone();
        async move {
            s.lock()
                .expect("lock")
                .push((job.data().0.clone(), Instant::now()));
            Ok(())
        }
    }))
    .concurrency(8)
    .block_timeout(Duration::from_secs(5))
    .await
    .expect("worker");
    let t0 = Instant::now();
    q.resume().await.expect("resume");
    wait_finished(&q).await;
    let took = t0.elapsed();
    let s = starts.lock().expect("lock").clone();
    for g in ["a", "b"] {
        let at: Vec<Instant> = s.iter().filter(|(n, _)| n == g).map(|(_, t)| *t).collect();
        assert_eq!(at.len(), 7);
        // Any 3 + 1 starts of one group span its window.
        for w in at.windows(4) {
            assert!(
                w[3] - w[0] >= per - Duration::from_millis(60),
                "{g}: {:?}",
                w[3] - w[0]
            );
        }
    }
    // 7 per group at 3 per window: two windows after the first, both groups at once.
    assert!(
        took >= per * 2 - Duration::from_millis(50),
        "too fast: {took:?}"
    );
    assert!(
        took < per * 2 + Duration::from_millis(1500),
        "woken late: {took:?}"
    );
    worker.shutdown().await;
}

pub async fn a_group_cap_holds_and_frees_on_every_settle_path(f: &dyn Fixture) {
    let q = queue(f, &queue_name("gcap")).await;
    q.set_limits(Limits::new().group_concurrency(2))
        .await
        .expect("limits");
    let gauge = Arc::new(Gauge::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let (g, r) = (gauge.clone(), runs.clone());
    // Every settle path: complete, retry (delayed then promoted), permanent fail.
    let worker = fast(q.worker(move |job: Job<u32>| {
        let (g, r) = (g.clone(), r.clone());
        async move {
            g.enter();
            r.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            g.leave();
            match (job.data() % 3, job.attempt()) {
                (1, 1) => Err(HandlerError::retryable("once more")),
                (2, _) => Err(HandlerError::permanent("no")),
                _ => Ok(()),
            }
        }
    }))
    .concurrency(8)
    .await
    .expect("worker");
    for i in 0..18u32 {
        q.add("g", &i).group("t").await.expect("add");
    }
    wait_finished(&q).await;
    let c = q.counts().await.expect("counts");
    assert_eq!((c.completed, c.failed), (12, 6));
    assert!(
        gauge.max() <= 2,
        "at most 2 of the group at once: {}",
        gauge.max()
    );
    assert_eq!(gauge.max(), 2);
    let gc = q.group_counts("t").await.expect("group counts");
    assert_eq!((gc.waiting, gc.active), (0, 0), "{gc:?}");
    worker.shutdown().await;
}

pub async fn released_and_cancelled_active_jobs_free_their_group(f: &dyn Fixture) {
    let name = queue_name("gfree");
    let q = queue(f, &name).await;
    q.set_limits(Limits::new().group_concurrency(1))
        .await
        .expect("limits");
    // Released: a stopping worker gives back the job that holds "s"'s only place.
    let hung = fast(q.worker(|_job: Job<u32>| async move {
        std::future::pending::<()>().await;
        Ok(())
    }))
    .drain_timeout(Duration::from_millis(50))
    .await
    .expect("worker");
    let first = q.add("s", &1u32).group("s").await.expect("add").id;
    wait_state(&q, &first, JobState::Active).await;
    let second = q.add("s", &2u32).group("s").await.expect("add").id;
    assert_eq!(q.group_counts("s").await.expect("counts").active, 1);
    hung.shutdown().await;
    assert_eq!(q.group_counts("s").await.expect("counts").active, 0);
    let q2 = queue(f, &name).await;
    let ok = fast(q2.worker(|job: Job<u32>| async move {
        // "c": waits for its cancellation, then returns Ok (it still ends cancelled).
        if *job.data() == 10 {
            job.cancellation().cancelled().await;
        }
        Ok(())
    }))
    .concurrency(4)
    .await
    .expect("worker");
    wait_state(&q, &first, JobState::Completed).await;
    wait_state(&q, &second, JobState::Completed).await;
    // Cancelled while active: the group's place is freed too.
    let c = q.add("c", &10u32).group("c").await.expect("add").id;
    let after = q.add("c", &11u32).group("c").await.expect("add").id;
    wait_state(&q, &c, JobState::Active).await;
    assert_eq!(
        q.job(&after).await.expect("job").expect("exists").state,
        JobState::Waiting
    );
    q.cancel(&c).await.expect("cancel");
    wait_state(&q, &c, JobState::Cancelled).await;
    wait_state(&q, &after, JobState::Completed).await;
    for g in ["s", "c"] {
        let gc = q.group_counts(g).await.expect("counts");
        assert_eq!((gc.waiting, gc.active), (0, 0), "{g}: {gc:?}");
    }
    ok.shutdown().await;
}

pub async fn a_paused_group_waits_while_others_run(f: &dyn Fixture) {
    let q = queue(f, &queue_name("gpause")).await;
    let mut events = q.events(None).await.expect("events");
    q.pause_group("b").await.expect("pause group");
    for i in 0..4u32 {
        q.add("p", &i).group("a").await.expect("add");
        q.add("p", &i).group("b").await.expect("add");
    }
    let worker = fast(q.worker(|_job: Job<u32>| async move { Ok(()) }))
        .concurrency(4)
        .await
        .expect("worker");
    super::wait_until_async("group a done", WAIT, || async {
        q.group_counts("a").await.expect("counts").waiting == 0
            && q.counts().await.expect("counts").completed == 4
    })
    .await;
    let b = q.group_counts("b").await.expect("counts");
    assert_eq!((b.waiting, b.active, b.paused), (4, 0, true));
    assert_eq!(q.counts().await.expect("counts").waiting, 4);
    q.resume_group("b").await.expect("resume group");
    wait_finished(&q).await;
    assert_eq!(q.counts().await.expect("counts").completed, 8);
    assert!(!q.group_counts("b").await.expect("counts").paused);
    let all = events.drain_now().await.expect("events");
    let kinds: Vec<_> = all
        .iter()
        .filter(|e| e.job.as_str() == "b" && e.detail.as_deref() == Some("group"))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![JobEventKind::GroupPaused, JobEventKind::GroupResumed]
    );
    worker.shutdown().await;
}

pub async fn a_rate_limited_handler_keeps_its_attempt_and_holds_its_group(f: &dyn Fixture) {
    let q = queue(f, &queue_name("limited")).await;
    let hold = Duration::from_millis(300);
    let starts: Arc<Mutex<Vec<(String, u32, Instant)>>> = Arc::default();
    let s = starts.clone();
    let worker = fast(q.worker(move |job: Job<String>| {
        let s = s.clone();
        async move {
            let first = {
                let mut s = s.lock().expect("lock");
                let first = !s.iter().any(|(n, _, _)| n == job.data());
                s.push((job.data().clone(), job.attempt(), Instant::now()));
                first
            };
            if first && job.data() == "x1" {
                return Err(HandlerError::rate_limited(hold));
            }
            Ok(())
        }
    }))
    .concurrency(1)
    .await
    .expect("worker");
    let x1 = q
        .add("l", &"x1".to_owned())
        .group("x")
        .attempts(1)
        .await
        .expect("add")
        .id;
    wait_state(&q, &x1, JobState::Delayed).await;
    // Its group is held: a second job of it waits too; another group runs.
    let x2 = q
        .add("l", &"x2".to_owned())
        .group("x")
        .await
        .expect("add")
        .id;
    let y = q
        .add("l", &"y".to_owned())
        .group("y")
        .await
        .expect("add")
        .id;
    wait_state(&q, &y, JobState::Completed).await;
    wait_state(&q, &x1, JobState::Completed).await;
    wait_state(&q, &x2, JobState::Completed).await;
    let done = q.job(&x1).await.expect("job").expect("exists");
    // One attempt allowed, and it completed: the rate-limited run did not spend it.
    assert_eq!(done.attempt, 1);
    let s = starts.lock().expect("lock").clone();
    let at = |n: &str| -> Vec<Instant> {
        s.iter()
            .filter(|(d, _, _)| d == n)
            .map(|(_, _, t)| *t)
            .collect()
    };
    let (x1s, x2s, ys) = (at("x1"), at("x2"), at("y"));
    assert_eq!(x1s.len(), 2);
    assert!(s.iter().all(|(_, a, _)| *a == 1), "{s:?}");
    assert!(x1s[1] - x1s[0] >= hold - Duration::from_millis(20));
    assert!(
        x2s[0] - x1s[0] >= hold - Duration::from_millis(20),
        "x2 waited for the hold"
    );
    assert!(ys[0] < x1s[1], "the other group was not held");
    let mut events = q.events(None).await.expect("events");
    let all = events.drain_now().await.expect("events");
    assert!(
        all.iter()
            .any(|e| e.job == x1 && e.kind == JobEventKind::RateLimited)
    );
    worker.shutdown().await;
}

pub async fn group_counts_follow_add_cancel_remove_and_runs(f: &dyn Fixture) {
    let q = queue(f, &queue_name("gcounts")).await;
    q.pause().await.expect("pause");
    let mut ids = Vec::new();
    for i in 0..6u32 {
        ids.push(q.add("n", &i).group("t").await.expect("add").id);
    }
    // A dedup duplicate adds nothing to the group.
    let d1 = q.add("n", &9u32).group("t").dedup("k").await.expect("add");
    let d2 = q.add("n", &9u32).group("t").dedup("k").await.expect("add");
    assert!(!d1.duplicate && d2.duplicate);
    let gc = q.group_counts("t").await.expect("counts");
    assert_eq!((gc.waiting, gc.active), (7, 0));
    assert_eq!(q.counts().await.expect("counts").waiting, 7);
    q.cancel(&ids[0]).await.expect("cancel");
    assert_eq!(q.remove(&ids[1]).await.expect("remove"), JobState::Waiting);
    assert_eq!(q.group_counts("t").await.expect("counts").waiting, 5);
    assert_eq!(q.counts().await.expect("counts").waiting, 5);
    // A paused job name holds its grouped jobs back and gives them back on resume.
    q.pause_name("n").await.expect("pause name");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let worker = fast(q.worker(move |_job: Job<u32>| {
        let g = g.clone();
        async move {
            let _p = g.acquire().await.map_err(HandlerError::retryable)?;
            Ok(())
        }
    }))
    .concurrency(2)
    .await
    .expect("worker");
    q.resume().await.expect("resume");
    super::wait_until_async("parked", WAIT, || async {
        q.counts().await.expect("counts").parked > 0
    })
    .await;
    assert_eq!(q.counts().await.expect("counts").active, 0);
    q.resume_name("n").await.expect("resume name");
    super::wait_until_async("two active", WAIT, || async {
        q.group_counts("t").await.expect("counts").active == 2
    })
    .await;
    let c = q.counts().await.expect("counts");
    assert_eq!((c.active, c.waiting), (2, 3));
    gate.add_permits(100);
    wait_finished(&q).await;
    let gc = q.group_counts("t").await.expect("counts");
    assert_eq!((gc.waiting, gc.active, gc.paused), (0, 0, false));
    assert_eq!(q.counts().await.expect("counts").completed, 5);
    worker.shutdown().await;
}

pub async fn groups_in_play_are_listed_by_name_a_page_at_a_time(f: &dyn Fixture) {
    let q = queue(f, &queue_name("glist")).await;
    assert!(q.groups(None, 10).await.expect("groups").is_empty());
    q.set_limits(Limits::new().group_concurrency(1))
        .await
        .expect("limits");
    // c has 3 waiting, a 1, b 2; e is paused with nothing in it; d gets a job that runs.
    for (g, n) in [("c", 3u32), ("a", 1), ("b", 2)] {
        for i in 0..n {
            q.add("n", &i).group(g).await.expect("add");
        }
    }
    q.pause_group("e").await.expect("pause e");
    let names = |page: &[(rivulet::JobGroup, rivulet::GroupCounts)]| {
        page.iter().map(|(g, _)| g.to_string()).collect::<Vec<_>>()
    };
    let all = q.groups(None, 10).await.expect("groups");
    assert_eq!(names(&all), ["a", "b", "c", "e"]);
    let waiting: Vec<u64> = all.iter().map(|(_, c)| c.waiting).collect();
    assert_eq!(waiting, [1, 2, 3, 0]);
    assert!(all[3].1.paused && !all[0].1.paused);
    // Pages: two, then after the last name.
    let first = q.groups(None, 2).await.expect("page 1");
    assert_eq!(names(&first), ["a", "b"]);
    let next = q.groups(Some("b"), 2).await.expect("page 2");
    assert_eq!(names(&next), ["c", "e"]);
    assert!(q.groups(Some("e"), 2).await.expect("page 3").is_empty());
    // A group with only an active job (at its cap, out of the rotation) is listed; one
    // drained and not paused is not.
    let q2 = q.clone();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let worker = fast(q2.worker(move |job: Job<u32>| {
        let g = g.clone();
        async move {
            if job.name().as_str() == "hold" {
                let _p = g.acquire().await.map_err(HandlerError::retryable)?;
            }
            Ok(())
        }
    }))
    .concurrency(4)
    .await
    .expect("worker");
    q.add("hold", &0u32).group("d").await.expect("add d");
    super::wait_until_async("a, b and c drained, d active", WAIT, || async {
        let page = q.groups(None, 10).await.expect("groups");
        names(&page) == ["d", "e"]
    })
    .await;
    let page = q.groups(None, 10).await.expect("groups");
    assert_eq!((page[0].1.waiting, page[0].1.active), (0, 1));
    gate.add_permits(1);
    wait_finished(&q).await;
    assert_eq!(names(&q.groups(None, 10).await.expect("groups")), ["e"]);
    worker.shutdown().await;
    // A bad group name is a typed error.
    let err = q.groups(Some("bad name"), 10).await.expect_err("bad name");
    assert_eq!(err.kind(), ErrorKind::InvalidName);
}

pub async fn bad_limits_are_refused_and_write_nothing(f: &dyn Fixture) {
    let q = queue(f, &queue_name("badlimits")).await;
    let bad = [
        Limits::new().concurrency(0),
        Limits::new().group_concurrency(0),
        Limits::new().rate(Rate::new(0, Duration::from_secs(1))),
        Limits::new().rate(Rate::new(1, Duration::ZERO)),
        Limits::new().group_rate(Rate::new(1, Duration::from_secs(2 * 86_400))),
    ];
    for l in bad {
        let e = q.set_limits(l).await.expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    }
    assert_eq!(q.limits().await.expect("limits"), Limits::new());
    let e = q.add("n", &1u32).group("bad group").await.expect_err("bad");
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
    assert_eq!(q.counts().await.expect("counts").waiting, 0);
    let e = q.pause_group("").await.expect_err("bad");
    assert_eq!(e.kind(), ErrorKind::InvalidName, "{e}");
}
