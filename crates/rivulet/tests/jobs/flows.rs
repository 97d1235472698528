//! Flows (J-9): parents waiting for children across queues, nested, with each
//! failed-child policy, and idempotent adds. Run on every backend by `flows_suite!`.
//! Queue names differ per test, so on a cluster the queues of a flow sit in different
//! slots (and the notes travel through outboxes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rivulet::{ChildRef, Job, JobEventKind, JobState, OnChildFailure, Queue};

use super::{Fixture, WAIT, fast, queue, queue_name, wait_state, wait_until_async};

/// Generates one `#[tokio::test]` per flow behaviour, each with a fresh fixture.
#[allow(unused_macros)] // not every conformance file runs the flow suite
macro_rules! flows_suite {
    ($make:expr) => {
        flows_suite!(@tests $make;
            flow_parent_waits_for_children_in_other_queues_and_reads_their_results,
            flow_nested_three_levels_runs_bottom_up,
            flow_failed_child_policies,
            flow_add_with_a_root_id_is_idempotent,
            flow_interactions_with_retention_retries_cancel_pause_and_remove,
            flow_a_failure_climbs_through_nested_parents_in_other_queues,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $make.await;
                jobs::flows::$name(&fixture).await;
            }
        )*
    };
}

/// A worker doubling `u32` data, on `q`.
async fn doubler(q: &Queue) -> rivulet::Worker {
    fast(q.worker(|job: Job<u32>| async move { Ok(job.data() * 2) }))
        .concurrency(4)
        .await
        .expect("worker")
}

fn child(q: &Queue, id: &str) -> ChildRef {
    let found = rivulet::JobId::new(id).expect("id");
    ChildRef::new(q.name().clone(), found)
}

pub async fn flow_parent_waits_for_children_in_other_queues_and_reads_their_results(
    f: &dyn Fixture,
) {
    let parents = queue(f, &queue_name("flow.parents")).await;
    let a = queue(f, &queue_name("flow.a")).await;
    let b = queue(f, &queue_name("flow.b")).await;
    let added = parents
        .flow("sum", &0u32)
        .job_id("p")
        .child(a.add("c", &1u32).job_id("a1"))
        .child(a.add("c", &2u32).job_id("a2"))
        .child(b.add("c", &3u32))
        .await
        .expect("add flow");
    assert_eq!(added.root.state, Some(JobState::WaitingChildren));
    assert_eq!(added.nodes.len(), 4);
    assert_eq!(added.nodes[3].0, child(&b, "p.2"), "a derived child id");
    let c = parents.counts().await.expect("counts");
    assert_eq!((c.waiting_children, c.waiting), (1, 0));

    let seen: Arc<std::sync::Mutex<Option<BTreeMap<ChildRef, u32>>>> = Default::default();
    let s = seen.clone();
    let pw = fast(parents.worker(move |job: Job<u32>| {
        let s = s.clone();
        async move {
            let r = job
                .children_results::<u32>()
                .await
                .map_err(rivulet::HandlerError::retryable)?;
            let total: u32 = r.values().sum();
            *s.lock().expect("lock") = Some(r);
            Ok(total)
        }
    }))
    .await
    .expect("worker");
    // Only a's children can run: the parent waits for b's.
    let aw = doubler(&a).await;
    wait_state(
        &a,
        &rivulet::JobId::new("a2").expect("id"),
        JobState::Completed,
    )
    .await;
    wait_until_async("a's notes applied", WAIT, || async {
        parents
            .children(&added.root.id)
            .await
            .expect("children")
            .pending
            == vec![child(&b, "p.2")]
    })
    .await;
    let p = parents
        .job(&added.root.id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(
        p.state,
        JobState::WaitingChildren,
        "one child is still pending"
    );
    let bw = doubler(&b).await;
    wait_state(&parents, &added.root.id, JobState::Completed).await;
    let p = parents
        .job(&added.root.id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(p.result::<u32>().expect("decode"), Some(12));
    let got = seen.lock().expect("lock").clone().expect("the parent ran");
    assert_eq!(
        got,
        BTreeMap::from([
            (child(&a, "a1"), 2),
            (child(&a, "a2"), 4),
            (child(&b, "p.2"), 6)
        ])
    );
    let mut events = parents.events(None).await.expect("events");
    let kinds: Vec<JobEventKind> = events
        .drain_now()
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&JobEventKind::WaitingChildren), "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == JobEventKind::ChildrenCompleted)
            .count(),
        1,
        "{kinds:?}"
    );
    let c = parents.counts().await.expect("counts");
    assert_eq!((c.waiting_children, c.completed), (0, 1));
    for w in [pw, aw, bw] {
        w.shutdown().await;
    }
}

pub async fn flow_nested_three_levels_runs_bottom_up(f: &dyn Fixture) {
    let top = queue(f, &queue_name("flow.top")).await;
    let mid = queue(f, &queue_name("flow.mid")).await;
    let leaf = queue(f, &queue_name("flow.leaf")).await;
    let added = top
        .flow("top", &0u32)
        .child(
            mid.flow("mid", &0u32)
                .child(leaf.add("leaf", &1u32))
                .child(leaf.add("leaf", &2u32)),
        )
        .child(mid.flow("mid", &0u32).child(leaf.add("leaf", &3u32)))
        .await
        .expect("add flow");
    assert_eq!(added.nodes.len(), 6);
    assert_eq!(mid.counts().await.expect("counts").waiting_children, 2);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    // A parent's handler sums its children's results.
    let summer = |q: &Queue, tag: &'static str| {
        let order = order.clone();
        fast(q.worker(move |job: Job<u32>| {
            let order = order.clone();
            async move {
                order.lock().expect("lock").push(tag);
                let r = job
                    .children_results::<u32>()
                    .await
                    .map_err(rivulet::HandlerError::retryable)?;
                Ok(r.values().sum::<u32>() + job.data())
            }
        }))
    };
    let tw = summer(&top, "top").await.expect("worker");
    let mw = summer(&mid, "mid").await.expect("worker");
    let lw = summer(&leaf, "leaf").await.expect("worker");
    wait_state(&top, &added.root.id, JobState::Completed).await;
    let t = top.job(&added.root.id).await.expect("job").expect("exists");
    assert_eq!(t.result::<u32>().expect("decode"), Some(6));
    let order = order.lock().expect("lock").clone();
    assert_eq!(order.len(), 6);
    assert_eq!(order.last(), Some(&"top"));
    assert_eq!(
        order.iter().filter(|t| **t == "leaf").count(),
        3,
        "{order:?}"
    );
    for w in [tw, mw, lw] {
        w.shutdown().await;
    }
}

pub async fn flow_failed_child_policies(f: &dyn Fixture) {
    let parents = queue(f, &queue_name("flow.pol.p")).await;
    let kids = queue(f, &queue_name("flow.pol.c")).await;
    let bad = || kids.add("bad", &0u32).attempts(1);
    let good = || kids.add("good", &5u32);
    let failing = parents
        .flow("p", &0u32)
        .child(good())
        .child(bad())
        .await
        .expect("add");
    let ignoring = parents
        .flow("p", &0u32)
        .child(good())
        .child_with(bad(), OnChildFailure::Ignore)
        .await
        .expect("add");
    let removing = parents
        .flow("p", &0u32)
        .child(good())
        .child_with(bad(), OnChildFailure::RemoveDependency)
        .await
        .expect("add");
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let pw = fast(parents.worker(move |_job: Job<u32>| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }))
    .await
    .expect("worker");
    let kw = fast(kids.worker(|job: Job<u32>| async move {
        if job.name().as_str() == "bad" {
            Err(rivulet::HandlerError::permanent("boom"))
        } else {
            Ok(*job.data())
        }
    }))
    .await
    .expect("worker");
    wait_state(&parents, &failing.root.id, JobState::Failed).await;
    wait_state(&parents, &ignoring.root.id, JobState::Completed).await;
    wait_state(&parents, &removing.root.id, JobState::Completed).await;
    let p = parents
        .job(&failing.root.id)
        .await
        .expect("job")
        .expect("exists");
    let err = p.error.unwrap_or_default();
    assert!(
        err.contains(&format!("{}.1", failing.root.id)) && err.contains("boom"),
        "{err}"
    );
    let ign = parents.children(&ignoring.root.id).await.expect("children");
    assert_eq!(ign.results.len(), 1);
    assert_eq!(ign.failures.len(), 1, "{ign:?}");
    assert!(ign.failures.values().all(|e| e.contains("boom")), "{ign:?}");
    let rem = parents.children(&removing.root.id).await.expect("children");
    assert_eq!((rem.results.len(), rem.failures.len()), (1, 0), "{rem:?}");
    assert_eq!(
        runs.load(Ordering::Relaxed),
        2,
        "the failed parent never ran"
    );
    let mut events = parents.events(None).await.expect("events");
    let failed: Vec<_> = events
        .drain_now()
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == JobEventKind::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].job, failing.root.id);
    // A cancelled child fails its parent too.
    let cancelled = parents
        .flow("p", &0u32)
        .child(
            kids.add("held", &1u32)
                .delay(std::time::Duration::from_secs(3600)),
        )
        .await
        .expect("add");
    kids.cancel(&rivulet::JobId::new(format!("{}.0", cancelled.root.id)).expect("id"))
        .await
        .expect("cancel");
    kids.move_flow_notes().await.expect("move");
    wait_state(&parents, &cancelled.root.id, JobState::Failed).await;
    pw.shutdown().await;
    kw.shutdown().await;
}

pub async fn flow_add_with_a_root_id_is_idempotent(f: &dyn Fixture) {
    let parents = queue(f, &queue_name("flow.idem.p")).await;
    let kids = queue(f, &queue_name("flow.idem.c")).await;
    let add = || {
        parents
            .flow("p", &0u32)
            .job_id("root")
            .child(kids.add("c", &1u32))
            .child(kids.add("c", &2u32))
    };
    let first = add().await.expect("add");
    assert!(!first.root.duplicate);
    let again = add().await.expect("add again");
    assert!(again.root.duplicate);
    assert!(again.nodes.iter().all(|(_, e)| e.duplicate), "{again:?}");
    assert_eq!(kids.counts().await.expect("counts").waiting, 2);
    assert_eq!(parents.counts().await.expect("counts").waiting_children, 1);
    // A job outside the flow with a child's id is a conflict.
    kids.add("c", &0u32).job_id("other").await.expect("add");
    let err = parents
        .flow("p", &0u32)
        .job_id("root2")
        .child(kids.add("c", &1u32).job_id("other"))
        .await
        .expect_err("conflict");
    assert_eq!(err.kind(), rivulet::ErrorKind::Config, "{err}");
    assert_eq!(
        parents
            .job(&rivulet::JobId::new("root2").expect("id"))
            .await
            .expect("job"),
        None,
        "a refused flow writes nothing"
    );
    // Bad flows are refused before anything is written.
    let before = parents.counts().await.expect("counts");
    let e = parents
        .flow("p", &0u32)
        .child(kids.add("c", &1u32).dedup("k"))
        .await
        .expect_err("dedup");
    assert_eq!(e.kind(), rivulet::ErrorKind::Config, "{e}");
    assert!(parents.flow("p", &0u32).await.is_err(), "no children");
    assert_eq!(parents.counts().await.expect("counts"), before);
    // The tree runs once.
    let kw = doubler(&kids).await;
    let pw = doubler(&parents).await;
    wait_state(&parents, &first.root.id, JobState::Completed).await;
    super::wait_finished(&kids).await;
    // The two children once each, and the job that was in the way.
    assert_eq!(kids.counts().await.expect("counts").completed, 3);
    kw.shutdown().await;
    pw.shutdown().await;
}

pub async fn flow_interactions_with_retention_retries_cancel_pause_and_remove(f: &dyn Fixture) {
    let parents = queue(f, &queue_name("flow.int.p")).await;
    let kids = queue(f, &queue_name("flow.int.c")).await;
    // Retention deletes the child at once; a child fails once, then succeeds.
    let kept = parents
        .flow("p", &0u32)
        .child(kids.add("gone", &1u32).remove_on_complete())
        .child(kids.add("flaky", &2u32).attempts(3))
        .await
        .expect("add");
    // Cancelled while its child runs: stays cancelled, the child's end changes nothing.
    let cancelled = parents
        .flow("p", &0u32)
        .child(kids.add("slow", &3u32))
        .await
        .expect("add");
    // Its child is removed before it runs: the parent fails.
    let orphaned = parents
        .flow("p", &0u32)
        .child(
            kids.add("held", &4u32)
                .delay(std::time::Duration::from_secs(3600)),
        )
        .await
        .expect("add");
    parents.pause().await.expect("pause");
    let flaky_runs = Arc::new(AtomicU32::new(0));
    let fr = flaky_runs.clone();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let kw = fast(kids.worker(move |job: Job<u32>| {
        let (fr, g) = (fr.clone(), g.clone());
        async move {
            match job.name().as_str() {
                "flaky" if fr.fetch_add(1, Ordering::Relaxed) == 0 => {
                    Err(rivulet::HandlerError::retryable("once"))
                }
                "slow" => {
                    g.notified().await;
                    Ok(*job.data())
                }
                _ => Ok(job.data() * 100),
            }
        }
    }))
    .concurrency(4)
    .await
    .expect("worker");
    let slow = rivulet::JobId::new(format!("{}.0", cancelled.root.id)).expect("id");
    wait_state(&kids, &slow, JobState::Active).await;
    assert_eq!(
        parents.cancel(&cancelled.root.id).await.expect("cancel"),
        rivulet::CancelOutcome::Cancelled
    );
    gate.notify_one();
    wait_state(&kids, &slow, JobState::Completed).await;
    kids.remove(&rivulet::JobId::new(format!("{}.0", orphaned.root.id)).expect("id"))
        .await
        .expect("remove");
    kids.move_flow_notes().await.expect("move");
    // The paused queue's parent becomes waiting, and waits there.
    wait_state(&parents, &kept.root.id, JobState::Waiting).await;
    wait_state(&parents, &orphaned.root.id, JobState::Failed).await;
    let o = parents
        .job(&orphaned.root.id)
        .await
        .expect("job")
        .expect("exists");
    assert!(o.error.unwrap_or_default().contains("removed"));
    let got = parents.children(&kept.root.id).await.expect("children");
    assert_eq!(
        got.results_as::<u32>()
            .expect("decode")
            .into_values()
            .collect::<Vec<_>>(),
        vec![100, 200],
        "the deleted child's result is kept on the parent's side"
    );
    assert_eq!(flaky_runs.load(Ordering::Relaxed), 2);
    assert_eq!(
        kids.job(&rivulet::JobId::new(format!("{}.0", kept.root.id)).expect("id"))
            .await
            .expect("job"),
        None,
        "removed on completion"
    );
    let pw = doubler(&parents).await;
    let c = parents
        .job(&cancelled.root.id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(c.state, JobState::Cancelled);
    parents.resume().await.expect("resume");
    wait_state(&parents, &kept.root.id, JobState::Completed).await;
    let c = parents
        .job(&cancelled.root.id)
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(
        c.state,
        JobState::Cancelled,
        "a cancelled parent stays cancelled"
    );
    assert_eq!(parents.counts().await.expect("counts").waiting_children, 0);
    pw.shutdown().await;
    kw.shutdown().await;
}

pub async fn flow_a_failure_climbs_through_nested_parents_in_other_queues(f: &dyn Fixture) {
    let top = queue(f, &queue_name("flow.climb.top")).await;
    let mid = queue(f, &queue_name("flow.climb.mid")).await;
    let leaf = queue(f, &queue_name("flow.climb.leaf")).await;
    let added = top
        .flow("top", &0u32)
        .child(
            mid.flow("mid", &0u32)
                .child(leaf.add("leaf", &0u32).attempts(1)),
        )
        .await
        .expect("add flow");
    let lw = fast(leaf.worker(|_job: Job<u32>| async move {
        Err::<u32, _>(rivulet::HandlerError::permanent("leaf broke"))
    }))
    .await
    .expect("worker");
    wait_state(&top, &added.root.id, JobState::Failed).await;
    let m = mid
        .job(&rivulet::JobId::new(format!("{}.0", added.root.id)).expect("id"))
        .await
        .expect("job")
        .expect("exists");
    assert_eq!(m.state, JobState::Failed);
    let t = top.job(&added.root.id).await.expect("job").expect("exists");
    let err = t.error.unwrap_or_default();
    assert!(err.contains(&format!("{}.0", added.root.id)), "{err}");
    assert!(err.contains("leaf broke"), "the cause travels up: {err}");
    lw.shutdown().await;
}
