//! The admin suite (O-ADMIN-1): the admin API over every backend, through the public
//! API only. Each backend's conformance file runs it on its fixture (the bus suite's).
//!
//! A test builds a known state with buses, subscriptions and queues, then reads and
//! changes it with [`Admin`]. Waits poll with a deadline.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rivulet::admin::{Admin, PendingLog};
use rivulet::{
    DeadLetterFilter, DeadLetterReason, Delivery, ErrorKind, GroupName, HandlerError, JobState,
    RetryPolicy, TopicOptions,
};

pub use super::conformance::{Fixture, builder, topic, wait_until_async};
use super::jobs::{fast, queue, queue_name};

/// Generates one `#[tokio::test]` per behaviour, each with a fresh fixture from `$make`.
macro_rules! admin_suite {
    ($make:expr) => {
        admin_suite!(@tests $make;
            admin_topics_groups_consumers_pending_and_safe_deletes,
            admin_dead_letters_filter_replay_and_purge,
            admin_trim_dry_run_says_what_would_go,
            admin_jobs_retry_promote_and_retry_all_failed,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make.await;
                admin::$name(&fixture).await;
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Msg {
    pub n: u32,
    pub bad: bool,
}

fn msg(n: u32, bad: bool) -> Msg {
    Msg { n, bad }
}

pub async fn admin_topics_groups_consumers_pending_and_safe_deletes(f: &dyn Fixture) {
    let t = topic("admin-topics");
    let admin = Admin::new(f.backend().await);
    // A group whose only consumer hangs on its first message, then its process stops
    // (the drain gives up): that entry stays pending on a consumer that is gone.
    let hung = builder(f)
        .await
        .consumer_name("hung-consumer")
        .drain_timeout(Duration::from_millis(200))
        .build()
        .expect("bus");
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let sub = hung
        .subscribe(&t, "hang", move |_d: Delivery<Msg>| {
            let flag = flag.clone();
            async move {
                flag.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok::<(), HandlerError>(())
            }
        })
        .concurrency(1)
        .await
        .expect("subscribe");
    let hang_group = sub.group().clone();
    let hung_consumer = sub.consumer().to_string();
    // A group that subscribed once and stopped: everything after is lag.
    let idle = builder(f).await.build().expect("bus");
    let idle_sub = idle
        .subscribe(&t, "idle", |_d: Delivery<Msg>| async { Ok(()) })
        .await
        .expect("subscribe");
    let idle_group = idle_sub.group().clone();
    idle.shutdown().await;

    let publisher = builder(f).await.build().expect("bus");
    for n in 0..5 {
        publisher
            .publish(&t, &msg(n, false))
            .await
            .expect("publish");
    }
    wait_until_async("the hung handler started", WAIT, || {
        let started = started.clone();
        async move { started.load(Ordering::SeqCst) }
    })
    .await;
    hung.shutdown().await;

    let info = admin.topic(&t).await.expect("topic");
    assert_eq!(info.length, 5);
    assert_eq!(info.dead_letters, 0);
    let names: Vec<&GroupName> = info.groups.iter().map(|g| &g.group).collect();
    let mut sorted = vec![&hang_group, &idle_group];
    sorted.sort();
    assert_eq!(names, sorted, "groups by name");
    let g_idle = info
        .groups
        .iter()
        .find(|g| g.group == idle_group)
        .expect("idle");
    assert_eq!((g_idle.pending, g_idle.lag), (0, Some(5)));
    let g_hang = info
        .groups
        .iter()
        .find(|g| g.group == hang_group)
        .expect("hang");
    assert!(g_hang.pending >= 1, "the hung entry is pending: {g_hang:?}");
    let holder = g_hang
        .consumers
        .iter()
        .find(|c| c.consumer.as_str() == hung_consumer)
        .unwrap_or_else(|| panic!("{hung_consumer} is listed: {g_hang:?}"));
    assert_eq!(holder.pending, g_hang.pending);
    assert!(g_hang.oldest_pending_idle_ms.is_some());
    assert_eq!(info.max_lag(), 5);

    // The registry lists the topic; pages are bounded.
    let page = admin.topics(0, 1000).await.expect("topics");
    assert!(page.topics.iter().any(|ti| ti.topic.as_str() == t));
    let one = admin.topics(0, 1).await.expect("one topic");
    assert_eq!(one.topics.len(), 1);
    assert_eq!(one.next.is_some(), one.total > 1);

    // Pending entries, a page of one at a time.
    let first = admin
        .pending(&t, hang_group.as_str(), None, 1)
        .await
        .expect("pending");
    assert_eq!(first.entries.len(), 1);
    let e = &first.entries[0];
    assert_eq!(e.consumer.as_str(), hung_consumer);
    assert_eq!(e.log, PendingLog::Topic);
    assert!(e.deliveries >= 1);
    let mut total = first.entries.len() as u64;
    let mut cursor = first.next.clone();
    while let Some(c) = cursor {
        let p = admin
            .pending(&t, hang_group.as_str(), Some(&c), 1)
            .await
            .expect("next page");
        total += p.entries.len() as u64;
        cursor = p.next;
    }
    assert_eq!(
        total, g_hang.pending,
        "paging visits every pending entry once"
    );
    assert_eq!(
        admin
            .pending(&t, "hang", Some("zz"), 1)
            .await
            .map(|_| ())
            .map_err(|e| e.kind()),
        Err(ErrorKind::Config)
    );

    // Deleting the group with lag is refused and deletes nothing; forced, it goes.
    let refused = admin
        .delete_group(&t, idle_group.as_str(), false)
        .await
        .expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::Unsafe);
    assert!(admin.topic(&t).await.expect("topic").groups.len() == 2);
    let gone = admin
        .delete_group(&t, idle_group.as_str(), true)
        .await
        .expect("forced");
    assert_eq!(gone.lag, 5);
    let after = admin.topic(&t).await.expect("topic");
    assert!(after.groups.iter().all(|g| g.group != idle_group));
    assert_eq!(
        admin
            .delete_group(&t, idle_group.as_str(), true)
            .await
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::GroupNotFound)
    );

    // Deleting the hung consumer hands its entries back to the group first.
    let pending_before = g_hang.pending;
    let deleted = admin
        .delete_consumer(&t, hang_group.as_str(), &hung_consumer)
        .await
        .expect("delete consumer");
    assert_eq!(deleted.handed_back, pending_before);
    let after = admin.topic(&t).await.expect("topic");
    let g = after
        .groups
        .iter()
        .find(|g| g.group == hang_group)
        .expect("hang");
    assert!(
        g.consumers
            .iter()
            .all(|c| c.consumer.as_str() != hung_consumer)
    );
    assert_eq!(g.pending, 0);
    // The handed-back entries wait in the retry lane for the next consumer.
    assert!(g.lag.is_none_or(|l| l >= pending_before), "{g:?}");
    // A new consumer of the group handles them without waiting for min_idle.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = seen.clone();
    let again = builder(f).await.build().expect("bus");
    again
        .subscribe(&t, "hang", move |d: Delivery<Msg>| {
            let rec = rec.clone();
            async move {
                rec.lock().expect("lock").push(d.payload().n);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .expect("subscribe");
    wait_until_async("the handed-back entry ran", WAIT, || {
        let seen = seen.clone();
        async move { seen.lock().expect("lock").contains(&0) }
    })
    .await;
    again.shutdown().await;
    publisher.shutdown().await;
}

pub async fn admin_dead_letters_filter_replay_and_purge(f: &dyn Fixture) {
    let t = topic("admin-dlq");
    let admin = Admin::new(f.backend().await);
    let bus = builder(f).await.build().expect("bus");
    let fail = Arc::new(AtomicBool::new(true));
    let flag = fail.clone();
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = handled.clone();
    bus.subscribe(&t, "picky", move |d: Delivery<Msg>| {
        let flag = flag.clone();
        let rec = rec.clone();
        async move {
            if flag.load(Ordering::SeqCst) {
                if d.payload().bad {
                    return Err(HandlerError::permanent("bad order"));
                }
                return Err(HandlerError::retryable("flaky"));
            }
            rec.lock().expect("lock").push(d.payload().n);
            Ok(())
        }
    })
    .retry(
        RetryPolicy::default()
            .max_attempts(1)
            .backoff(Duration::from_millis(10)),
    )
    .await
    .expect("subscribe");
    for n in 0..6 {
        bus.publish(&t, &msg(n, n % 2 == 0)).await.expect("publish");
    }
    let dlq = admin.dead_letters(&t).expect("dlq");
    wait_until_async("six dead letters", WAIT, || {
        let dlq = dlq.clone();
        async move { dlq.len().await.expect("len") == 6 }
    })
    .await;
    assert_eq!(admin.topic(&t).await.expect("topic").dead_letters, 6);

    // Filters: by reason, by time; pages of two.
    let permanent = DeadLetterFilter::default().reason(DeadLetterReason::Permanent);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = admin
            .dead_letter_page(&t, &permanent, after.as_ref(), 2)
            .await
            .expect("page");
        assert!(page.dead_letters.len() <= 2);
        seen.extend(page.dead_letters.iter().map(|d| d.reason));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, vec![DeadLetterReason::Permanent; 3]);
    let future = DeadLetterFilter::default().dead_since_ms(u64::MAX / 2);
    let none = admin
        .dead_letter_page(&t, &future, None, 10)
        .await
        .expect("page");
    assert!(none.dead_letters.is_empty());

    // Replay the "attempts" ones at 50 per second, with progress; then purge the rest.
    fail.store(false, Ordering::SeqCst);
    let attempts = DeadLetterFilter::default().reason(DeadLetterReason::Attempts);
    let mut reported = Vec::new();
    let started = std::time::Instant::now();
    let n = admin
        .replay_dead_letters(&t, &attempts, Some(50), &mut |k| reported.push(k))
        .await
        .expect("replay");
    assert_eq!(n, 3);
    // Three at 50 per second take at least 60 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(55),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reported.last(), Some(&3));
    wait_until_async("replayed ones handled", WAIT, || {
        let handled = handled.clone();
        async move {
            let mut h = handled.lock().expect("lock").clone();
            h.sort_unstable();
            h == vec![1, 3, 5]
        }
    })
    .await;
    assert_eq!(dlq.len().await.expect("len"), 3);
    let purged = admin
        .purge_dead_letters(&t, &DeadLetterFilter::default(), &mut |_| {})
        .await
        .expect("purge");
    assert_eq!(purged, 3);
    assert_eq!(dlq.len().await.expect("len"), 0);
    bus.shutdown().await;
}

pub async fn admin_trim_dry_run_says_what_would_go(f: &dyn Fixture) {
    let t = topic("admin-trim");
    let admin = Admin::new(f.backend().await);
    let bus = builder(f)
        .await
        .topic(&t, TopicOptions::default().unbounded())
        .build()
        .expect("bus");
    // A group that has read nothing: safe mode keeps everything for it.
    let sub = bus
        .subscribe(&t, "late", |_d: Delivery<Msg>| async { Ok(()) })
        .await
        .expect("subscribe");
    sub.unsubscribe().await;
    for n in 0..20 {
        bus.publish(&t, &msg(n, false)).await.expect("publish");
    }
    let opts = TopicOptions::default().max_len(5);
    let dry = admin.trim(&t, &opts, true).await.expect("dry run");
    assert_eq!((dry.removed, dry.kept_unacked), (0, 15));
    let unsafe_dry = admin
        .trim(&t, &opts.clone().safe(false), true)
        .await
        .expect("unsafe dry run");
    assert_eq!(unsafe_dry.removed, 15);
    assert_eq!(
        admin.topic(&t).await.expect("topic").length,
        20,
        "a dry run removes nothing"
    );
    // Once the group is gone, a safe trim may remove them; the dry run says so first.
    admin
        .delete_group(&t, sub.group().as_str(), true)
        .await
        .expect("delete group");
    let dry = admin.trim(&t, &opts, true).await.expect("dry run");
    assert_eq!((dry.removed, dry.kept_unacked), (15, 0));
    let done = admin.trim(&t, &opts, false).await.expect("trim");
    assert_eq!(done.removed, dry.removed);
    assert_eq!(admin.topic(&t).await.expect("topic").length, 5);
    let none = TopicOptions::default().unbounded();
    assert_eq!(
        admin
            .trim(&t, &none, true)
            .await
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::Config)
    );
    bus.shutdown().await;
}

pub async fn admin_jobs_retry_promote_and_retry_all_failed(f: &dyn Fixture) {
    let name = queue_name("admin");
    let q = queue(f, &name).await;
    let admin = Admin::new(f.backend().await);
    let mut failed = Vec::new();
    for i in 0..7 {
        failed.push(q.add("bad", &i).attempts(1).await.expect("add").id);
    }
    let delayed = q
        .add("later", &0)
        .delay(Duration::from_secs(3600))
        .await
        .expect("add")
        .id;
    let worker = fast(q.worker(|job: rivulet::Job<i32>| async move {
        if job.name().as_str() == "bad" {
            return Err(HandlerError::permanent("nope"));
        }
        Ok::<_, HandlerError>(())
    }))
    .await
    .expect("worker");
    wait_until_async("seven failed", WAIT, || {
        let q = q.clone();
        async move { q.counts().await.expect("counts").failed == 7 }
    })
    .await;
    worker.shutdown().await;

    let queues = admin.queues().await.expect("queues");
    let info = queues
        .iter()
        .find(|qi| qi.queue.as_str() == name)
        .expect("listed");
    assert_eq!((info.counts.failed, info.counts.delayed), (7, 1));
    assert!(!info.paused);

    // Wrong states are refused and change nothing.
    let q2 = admin.queue(&name).expect("queue");
    assert_eq!(
        q2.promote(&failed[0]).await.map_err(|e| e.kind()).err(),
        Some(ErrorKind::WrongJobState)
    );
    assert_eq!(
        q2.retry(&delayed).await.map_err(|e| e.kind()).err(),
        Some(ErrorKind::WrongJobState)
    );
    let missing = rivulet::JobId::new("no-such-job").expect("id");
    assert_eq!(
        q2.retry(&missing).await.map_err(|e| e.kind()).err(),
        Some(ErrorKind::JobNotFound)
    );

    // One retry: waiting again, attempts counted afresh; a promote: waiting now.
    assert_eq!(q2.retry(&failed[0]).await.expect("retry"), JobState::Failed);
    let job = admin
        .job(&name, failed[0].as_str(), 10)
        .await
        .expect("job")
        .job;
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(job.error, None);
    q2.promote(&delayed).await.expect("promote");
    let job = q2.job(&delayed).await.expect("job").expect("some");
    assert_eq!((job.state, job.run_at_ms), (JobState::Waiting, None));

    // Retry all failed, three per atomic step.
    let mut steps = Vec::new();
    let n = admin
        .retry_all_failed(&name, 3, &mut |k| steps.push(k))
        .await
        .expect("retry all");
    assert_eq!(n, 6);
    assert_eq!(steps, vec![3, 6]);
    let counts = q2.counts().await.expect("counts");
    assert_eq!((counts.failed, counts.waiting), (0, 8));

    // The retried jobs run again, from attempt 1, with a handler that succeeds.
    let worker = fast(q.worker(|_job: rivulet::Job<i32>| async move { Ok::<_, HandlerError>(()) }))
        .await
        .expect("worker");
    wait_until_async("all completed", WAIT, || {
        let q = q.clone();
        async move { q.counts().await.expect("counts").completed == 8 }
    })
    .await;
    let job = q.job(&failed[3]).await.expect("job").expect("some");
    assert_eq!(job.attempt, 1, "a retried job starts its attempts afresh");
    worker.shutdown().await;

    // Removing and pausing through the same handle.
    assert_eq!(
        q2.remove(&failed[3]).await.expect("remove"),
        JobState::Completed
    );
    q2.pause_name("bad").await.expect("pause");
    let info = admin
        .queue_info(&rivulet::QueueName::new(name.as_str()).expect("name"))
        .await
        .expect("info");
    assert_eq!(info.paused_names.len(), 1);
}
