//! The operations commands end to end: a real `redis-server` (test kit) with a known
//! state built through the library, then the built `rivulet` binary against it. Every
//! command is run for its table and its `--json` document; destructive ones without
//! `--yes` first (they must say what they would do, change nothing and exit 3). The
//! server requires a password, which is in the URL every command gets: no output or
//! error of any command may show it.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rivulet::{Bus, Delivery, HandlerError, Queue, RedisBackend, RetryPolicy, TopicOptions};
use rivulet_testkit::RedisServer;
use serde_json::Value;

const PASSWORD: &str = "cli-s3cret-pw9";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {}", self.stdout))
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs the binary with `args` (the URL comes from the environment when `url` is
/// `None`); checks the password shows nowhere.
fn rivulet_env(url: Option<&str>, env_url: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rivulet"));
    cmd.env_remove("RUST_LOG").env_remove("RIVULET_REDIS_URL");
    if let Some(u) = env_url {
        cmd.env("RIVULET_REDIS_URL", u);
    }
    if let Some(u) = url {
        cmd.arg("--redis").arg(u);
    }
    let out = cmd.args(args).output().expect("the rivulet binary runs");
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(PASSWORD),
            "the password shows in the output of {args:?}: {text}"
        );
    }
    out
}

fn rivulet(url: &str, args: &[&str]) -> Out {
    rivulet_env(Some(url), None, args)
}

fn server() -> RedisServer {
    RedisServer::builder()
        .password(PASSWORD)
        .start()
        .expect("start redis-server")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    n: u32,
    bad: bool,
}

/// Topic `orders`: 6 messages, group `app:orders__billing` dead-lettered the 3 bad ones
/// (reason `permanent`) and handled the rest; group `app:orders__hung` has one entry
/// pending on consumer `hung-consumer:1` (the bus's consumer name, subscription 1) of
/// a stopped process; group `app:orders__late`
/// never read anything (lag 6).
fn bus_state(url: &str) {
    runtime().block_on(async {
        let backend = RedisBackend::connect(url).await.expect("connect");
        let bus = |name: &str| {
            Bus::builder(backend.clone())
                .app("app")
                .consumer_name(name)
                .block_timeout(Duration::from_millis(200))
                .drain_timeout(Duration::from_millis(200))
                .topic("orders", TopicOptions::default().unbounded())
                .build()
                .expect("bus")
        };
        let late = bus("late-consumer");
        late.subscribe("orders", "late", |_d: Delivery<Order>| async { Ok(()) })
            .await
            .expect("subscribe");
        late.shutdown().await;
        let billing = bus("billing-consumer");
        billing
            .subscribe("orders", "billing", |d: Delivery<Order>| async move {
                if d.payload().bad {
                    return Err(HandlerError::permanent("customer unknown"));
                }
                Ok(())
            })
            .retry(RetryPolicy::default().max_attempts(1))
            .await
            .expect("subscribe");
        let hung = bus("hung-consumer");
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        hung.subscribe("orders", "hung", move |_d: Delivery<Order>| {
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
        for n in 0..6 {
            billing
                .publish("orders", &Order { n, bad: n % 2 == 0 })
                .header("customer", "acme")
                .await
                .expect("publish");
        }
        let dlq = billing.dead_letters("orders").expect("dlq");
        wait_for("3 dead letters", || {
            let dlq = dlq.clone();
            async move { dlq.len().await.expect("len") == 3 }
        })
        .await;
        wait_for("the hung handler", || {
            let s = started.clone();
            async move { s.load(Ordering::SeqCst) }
        })
        .await;
        hung.shutdown().await;
        billing.shutdown().await;
    });
}

/// Queue `invoices`: 3 failed jobs (`bad`, permanent error), 2 completed, 1 delayed by
/// an hour (`later`), 1 waiting (`fresh`). Returns the ids: (failed, delayed, waiting).
fn job_state(url: &str) -> (Vec<String>, String, String) {
    runtime().block_on(async {
        let backend = RedisBackend::connect(url).await.expect("connect");
        let q = Queue::new(backend, "invoices").expect("queue");
        let mut failed = Vec::new();
        for i in 0..3 {
            failed.push(
                q.add("bad", &serde_json::json!({"order": i}))
                    .attempts(1)
                    .await
                    .expect("add")
                    .id
                    .to_string(),
            );
        }
        for i in 0..2 {
            q.add("ok", &serde_json::json!({"order": 10 + i}))
                .await
                .expect("add");
        }
        let delayed = q
            .add("later", &serde_json::json!({"order": 20}))
            .delay(Duration::from_secs(3600))
            .await
            .expect("add")
            .id
            .to_string();
        let worker = q
            .worker(|job: rivulet::Job<Value>| async move {
                if job.name().as_str() == "bad" {
                    return Err(HandlerError::permanent("no such customer"));
                }
                job.log("sent").await.ok();
                Ok(serde_json::json!({"sent": true}))
            })
            .block_timeout(Duration::from_millis(200))
            .await
            .expect("worker");
        wait_for("5 finished", || {
            let q = q.clone();
            async move {
                let c = q.counts().await.expect("counts");
                c.failed == 3 && c.completed == 2
            }
        })
        .await;
        worker.shutdown().await;
        let waiting = q
            .add("fresh", &serde_json::json!({"order": 30}))
            .await
            .expect("add")
            .id
            .to_string();
        (failed, delayed, waiting)
    })
}

fn group<'a>(topic: &'a Value, name: &str) -> &'a Value {
    topic["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == name)
        .unwrap_or_else(|| panic!("group {name} in {topic}"))
}

#[test]
fn topics_topic_show_and_pending() {
    let server = server();
    let url = server.url();
    bus_state(&url);

    let t = rivulet(&url, &["topics"]).ok();
    let header = t.stdout.lines().next().expect("a header");
    assert!(header.starts_with("TOPIC"), "{}", t.stdout);
    assert!(
        header.contains("MAX LAG") && header.contains("DEAD"),
        "{header}"
    );
    let row = t
        .stdout
        .lines()
        .find(|l| l.starts_with("orders "))
        .expect("orders row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], &["orders", "6", "3", "6"], "{row}");
    // Columns line up: each header word starts where its cells start.
    let col = header.find("LENGTH").expect("LENGTH");
    assert_eq!(&row[col..col + 1], "6", "aligned:\n{}", t.stdout);

    let j = rivulet(&url, &["--json", "topics"]).ok().json();
    assert_eq!(j["total"], 1);
    assert_eq!(j["next"], Value::Null);
    let orders = &j["topics"][0];
    assert_eq!(orders["topic"], "orders");
    assert_eq!(orders["length"], 6);
    assert_eq!(orders["dead_letters"], 3);
    assert_eq!(orders["max_lag"], 6);
    assert_eq!(group(orders, "app:orders__late")["lag"], 6);
    assert_eq!(group(orders, "app:orders__billing")["pending"], 0);

    let show = rivulet(&url, &["topic", "show", "orders"]).ok();
    assert!(
        show.stdout.starts_with("topic orders: 6 entries"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("hung-consumer"), "{}", show.stdout);
    let j = rivulet(&url, &["--json", "topic", "show", "orders"])
        .ok()
        .json();
    let hung = group(&j, "app:orders__hung");
    assert_eq!(hung["pending"], 1);
    assert!(hung["oldest_pending_idle_ms"].as_u64().is_some());
    let consumer = hung["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .find(|c| c["consumer"] == "hung-consumer:1")
        .unwrap_or_else(|| panic!("hung-consumer in {hung}"));
    assert_eq!(consumer["pending"], 1);
    assert!(consumer["idle_ms"].as_u64().is_some());

    let p = rivulet(&url, &["pending", "orders", "--group", "app:orders__hung"]).ok();
    assert!(p.stdout.lines().next().expect("header").starts_with("ID"));
    assert!(
        p.stdout.contains("hung-consumer") && p.stdout.contains("topic"),
        "{}",
        p.stdout
    );
    let j = rivulet(
        &url,
        &["--json", "pending", "orders", "--group", "app:orders__hung"],
    )
    .ok()
    .json();
    let entries = j["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["consumer"], "hung-consumer:1");
    assert_eq!(entries[0]["log"], "topic");
    assert_eq!(entries[0]["deliveries"], 1);
    assert_eq!(j["next"], Value::Null);

    // A topic nobody used is empty, not an error; a bad name is a usage error.
    let j = rivulet(&url, &["--json", "topic", "show", "nothing"])
        .ok()
        .json();
    assert_eq!(
        (j["length"].as_u64(), j["groups"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    let bad = rivulet(&url, &["topic", "show", "bad topic"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.starts_with("error: invalid topic name"),
        "{}",
        bad.stderr
    );
    assert_eq!(bad.stderr.lines().count(), 1);
}

#[test]
fn dead_letters_list_show_replay_and_purge() {
    let server = server();
    let url = server.url();
    bus_state(&url);

    let l = rivulet(&url, &["dead-letters", "list", "orders"]).ok();
    assert!(l.stdout.starts_with("ID"), "{}", l.stdout);
    assert_eq!(
        l.stdout.matches("customer unknown").count(),
        3,
        "{}",
        l.stdout
    );
    let j = rivulet(
        &url,
        &["--json", "dead-letters", "list", "orders", "--limit", "2"],
    )
    .ok()
    .json();
    assert_eq!(j["total"], 3);
    let page = j["dead_letters"].as_array().expect("dead letters");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["reason"], "permanent");
    assert_eq!(page[0]["group"], "app:orders__billing");
    assert_eq!(page[0]["attempts"], 1);
    let next = j["next"].as_str().expect("a next page");
    let j2 = rivulet(
        &url,
        &[
            "--json",
            "dead-letters",
            "list",
            "orders",
            "--limit",
            "2",
            "--after",
            next,
        ],
    )
    .ok()
    .json();
    assert_eq!(j2["dead_letters"].as_array().map(Vec::len), Some(1));
    let none = rivulet(
        &url,
        &[
            "--json",
            "dead-letters",
            "list",
            "orders",
            "--reason",
            "decode",
        ],
    )
    .ok()
    .json();
    assert_eq!(none["dead_letters"].as_array().map(Vec::len), Some(0));
    let recent = rivulet(
        &url,
        &[
            "--json",
            "dead-letters",
            "list",
            "orders",
            "--since",
            "1h",
            "--group",
            "app:orders__billing",
        ],
    )
    .ok()
    .json();
    assert_eq!(recent["dead_letters"].as_array().map(Vec::len), Some(3));

    let id = page[0]["id"].as_str().expect("id").to_owned();
    let s = rivulet(&url, &["dead-letters", "show", "orders", &id]).ok();
    assert!(
        s.stdout.contains("customer unknown") && s.stdout.contains("acme"),
        "{}",
        s.stdout
    );
    let j = rivulet(&url, &["--json", "dead-letters", "show", "orders", &id])
        .ok()
        .json();
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["headers"]["customer"], "acme");
    assert!(
        j["payload"]
            .as_str()
            .expect("payload")
            .contains("\"bad\":true")
    );
    let missing = rivulet(&url, &["dead-letters", "show", "orders", "1-0"]);
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    let bad_id = rivulet(&url, &["dead-letters", "show", "orders", "nope"]);
    assert_eq!(bad_id.code, 2, "{}", bad_id.stderr);

    // Replay one by id (no --yes needed), then the rest, which needs --yes.
    let j = rivulet(&url, &["--json", "dead-letters", "replay", "orders", &id])
        .ok()
        .json();
    assert_eq!(j["replayed"], 1);
    let refused = rivulet(&url, &["dead-letters", "replay", "orders", "--all"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stdout.contains("would deliver up to 2"),
        "{}",
        refused.stdout
    );
    assert!(refused.stdout.contains("--yes"), "{}", refused.stdout);
    let refused = rivulet(
        &url,
        &["--json", "dead-letters", "replay", "orders", "--all"],
    );
    assert_eq!(refused.code, 3);
    let j = refused.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["would"]["dead_letters_in_queue"], 2);
    let nothing = rivulet(&url, &["dead-letters", "replay", "orders"]);
    assert_eq!(nothing.code, 2, "{}", nothing.stderr);
    let j = rivulet(
        &url,
        &[
            "--json",
            "dead-letters",
            "replay",
            "orders",
            "--all",
            "--rate",
            "100",
            "--yes",
        ],
    )
    .ok()
    .json();
    assert_eq!(j["replayed"], 2);

    // The replayed messages fail again once a consumer runs; here nobody runs, so the
    // queue is empty. Purge: refused without --yes, then done.
    let j = rivulet(&url, &["--json", "dead-letters", "list", "orders"])
        .ok()
        .json();
    assert_eq!(j["total"], 0);
    // Put three back by replaying through a consumer that fails them again.
    runtime().block_on(async {
        let backend = RedisBackend::connect(&url).await.expect("connect");
        let bus = Bus::builder(backend)
            .app("app")
            .block_timeout(Duration::from_millis(200))
            .build()
            .expect("bus");
        bus.subscribe("orders", "billing", |_d: Delivery<Order>| async {
            Err::<(), _>(HandlerError::permanent("still unknown"))
        })
        .await
        .expect("subscribe");
        let dlq = bus.dead_letters("orders").expect("dlq");
        wait_for("3 dead letters again", || {
            let dlq = dlq.clone();
            async move { dlq.len().await.expect("len") == 3 }
        })
        .await;
        bus.shutdown().await;
    });
    let refused = rivulet(&url, &["dead-letters", "purge", "orders", "--all"]);
    assert_eq!(refused.code, 3);
    assert!(
        refused.stdout.contains("would delete up to 3"),
        "{}",
        refused.stdout
    );
    let j = rivulet(&url, &["--json", "dead-letters", "list", "orders"])
        .ok()
        .json();
    assert_eq!(j["total"], 3, "a refused purge deletes nothing");
    let p = rivulet(&url, &["dead-letters", "purge", "orders", "--all", "--yes"]).ok();
    assert_eq!(p.stdout, "Purged 3 dead letters of orders.\n");
    let j = rivulet(
        &url,
        &[
            "--json",
            "dead-letters",
            "purge",
            "orders",
            "--all",
            "--yes",
        ],
    )
    .ok()
    .json();
    assert_eq!(j["purged"], 0);
}

#[test]
fn trim_and_safe_group_and_consumer_deletes() {
    let server = server();
    let url = server.url();
    bus_state(&url);

    // Safe mode keeps everything `late` has not read.
    let dry = rivulet(
        &url,
        &["--json", "trim", "orders", "--max-len", "2", "--dry-run"],
    )
    .ok()
    .json();
    assert_eq!(
        (dry["removed"].as_u64(), dry["kept_unhandled"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(dry["dry_run"], true);
    let refused = rivulet(&url, &["trim", "orders", "--max-len", "2", "--unsafe"]);
    assert_eq!(refused.code, 3);
    assert!(
        refused.stdout.contains("would remove up to 4 entries"),
        "{}",
        refused.stdout
    );
    let j = rivulet(&url, &["--json", "topic", "show", "orders"])
        .ok()
        .json();
    assert_eq!(j["length"], 6, "nothing trimmed without --yes");
    let none = rivulet(&url, &["trim", "orders"]);
    assert_eq!(none.code, 2);

    // The `late` group has lag: deleting it is refused without --force (exit 5).
    let refused = rivulet(&url, &["group", "delete", "orders", "app:orders__late"]);
    assert_eq!(refused.code, 3);
    assert!(
        refused.stdout.contains("6 undelivered"),
        "{}",
        refused.stdout
    );
    let unsafe_delete = rivulet(
        &url,
        &["group", "delete", "orders", "app:orders__late", "--yes"],
    );
    assert_eq!(unsafe_delete.code, 5, "{}", unsafe_delete.stderr);
    assert!(
        unsafe_delete.stderr.starts_with("error: refused:"),
        "{}",
        unsafe_delete.stderr
    );
    let j = rivulet(
        &url,
        &[
            "--json",
            "group",
            "delete",
            "orders",
            "app:orders__late",
            "--force",
            "--yes",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        (j["deleted"].as_bool(), j["lag"].as_u64()),
        (Some(true), Some(6))
    );
    let missing = rivulet(&url, &["group", "delete", "orders", "app:orders__late"]);
    assert_eq!(missing.code, 4);

    // The hung consumer: its entry goes back to the group first.
    let refused = rivulet(
        &url,
        &[
            "consumer",
            "delete",
            "orders",
            "app:orders__hung",
            "hung-consumer:1",
        ],
    );
    assert_eq!(refused.code, 3);
    assert!(
        refused.stdout.contains("hand its 1 pending"),
        "{}",
        refused.stdout
    );
    let j = rivulet(
        &url,
        &[
            "--json",
            "consumer",
            "delete",
            "orders",
            "app:orders__hung",
            "hung-consumer:1",
            "--yes",
        ],
    )
    .ok()
    .json();
    assert_eq!(j["handed_back"], 1);
    let j = rivulet(&url, &["--json", "topic", "show", "orders"])
        .ok()
        .json();
    let hung = group(&j, "app:orders__hung");
    assert_eq!(hung["pending"], 0);
    assert!(
        hung["consumers"]
            .as_array()
            .expect("consumers")
            .iter()
            .all(|c| c["consumer"] != "hung-consumer:1")
    );

    // With `late` gone, the oldest entry (handed back: in the hung group's retry lane
    // now) is the only one every group has done with; the hung group never read the
    // other five. A real trim removes just that one.
    let t = rivulet(&url, &["trim", "orders", "--max-len", "2", "--yes"]).ok();
    assert!(t.stdout.starts_with("Trimmed orders"), "{}", t.stdout);
    assert!(
        t.stdout.contains("removed 1 entries, kept 3"),
        "{}",
        t.stdout
    );
    let j = rivulet(&url, &["--json", "topic", "show", "orders"])
        .ok()
        .json();
    assert_eq!(j["length"], 5);
}

#[test]
fn schedulers_with_their_next_and_last_runs() {
    let server = server();
    let url = server.url();
    runtime().block_on(async {
        let backend = RedisBackend::connect(&url).await.expect("connect");
        let q = Queue::new(backend, "reports").expect("queue");
        q.scheduler("nightly")
            .cron("0 30 2 * * *")
            .tz("Europe/Berlin")
            .job("report", &serde_json::json!({"kind": "nightly"}))
            .upsert()
            .await
            .expect("upsert nightly");
        q.scheduler("hourly")
            .every(Duration::from_secs(3600))
            .upsert()
            .await
            .expect("upsert hourly");
    });

    let t = rivulet(&url, &["schedulers", "reports"]).ok();
    let lines: Vec<&str> = t.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", t.stdout);
    assert!(lines[0].starts_with("ID"), "{}", t.stdout);
    // Sorted by id; neither has fired yet, both fire in the future.
    assert!(lines[1].starts_with("hourly"), "{}", t.stdout);
    assert!(lines[2].starts_with("nightly"), "{}", t.stdout);
    assert!(lines[2].contains("Europe/Berlin"), "{}", t.stdout);
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l.contains(" in ") && l.contains("never"))
    );

    let j = rivulet(&url, &["--json", "schedulers", "reports"])
        .ok()
        .json();
    let all = j["schedulers"].as_array().expect("schedulers");
    assert_eq!(all.len(), 2, "{j}");
    let nightly = &all[1];
    assert_eq!(
        (
            nightly["id"].as_str(),
            nightly["kind"].as_str(),
            nightly["schedule"].as_str(),
            nightly["tz"].as_str(),
            nightly["job_name"].as_str(),
            nightly["job_data"]["kind"].as_str(),
        ),
        (
            Some("nightly"),
            Some("cron"),
            Some("0 30 2 * * *"),
            Some("Europe/Berlin"),
            Some("report"),
            Some("nightly")
        )
    );
    assert!(nightly["last_run_ms"].is_null() && nightly["last_job"].is_null());
    let hourly = &all[0];
    assert_eq!(
        (hourly["kind"].as_str(), hourly["schedule"].as_u64()),
        (Some("every"), Some(3_600_000))
    );
    let next = hourly["next_run_ms"].as_u64().expect("next run");
    // The next multiple of an hour since the epoch.
    assert_eq!(next % 3_600_000, 0, "{hourly}");

    let none = rivulet(&url, &["schedulers", "elsewhere"]).ok();
    assert_eq!(none.stdout, "No schedulers on queue elsewhere.\n");
}

#[test]
fn job_groups_listed_paused_and_resumed() {
    let server = server();
    let url = server.url();
    runtime().block_on(async {
        let backend = RedisBackend::connect(&url).await.expect("connect");
        let q = Queue::new(backend, "mail").expect("queue");
        q.set_limits(rivulet::Limits::new().group_concurrency(2))
            .await
            .expect("limits");
        for (g, n) in [("acme", 3u32), ("globex", 1)] {
            for i in 0..n {
                q.add("send", &i).group(g).await.expect("add");
            }
        }
    });
    let t = rivulet(&url, &["groups", "mail"]).ok();
    let lines: Vec<&str> = t.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", t.stdout);
    assert!(lines[0].starts_with("GROUP"), "{}", t.stdout);
    let acme: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(acme, ["acme", "3", "0", "2", "no"], "{}", t.stdout);

    let j = rivulet(
        &url,
        &["--json", "queue", "pause", "mail", "--group", "globex"],
    )
    .ok()
    .json();
    assert_eq!(
        (j["group"].as_str(), j["paused"].as_bool()),
        (Some("globex"), Some(true))
    );
    let j = rivulet(&url, &["--json", "groups", "mail", "--limit", "1"])
        .ok()
        .json();
    assert_eq!(j["group_cap"], 2);
    assert_eq!(j["groups"][0]["group"], "acme");
    assert_eq!(j["next"], "acme");
    let j = rivulet(&url, &["--json", "groups", "mail", "--after", "acme"])
        .ok()
        .json();
    assert_eq!(
        (
            j["groups"][0]["group"].as_str(),
            j["groups"][0]["paused"].as_bool()
        ),
        (Some("globex"), Some(true))
    );
    assert!(j["next"].is_null(), "{j}");
    let r = rivulet(&url, &["queue", "resume", "mail", "--group", "globex"]).ok();
    assert_eq!(r.stdout, "Job group globex of mail is resumed.\n");
    let none = rivulet(&url, &["groups", "elsewhere"]).ok();
    assert_eq!(none.stdout, "No job groups in play on queue elsewhere.\n");
    // A name and a group at once is a usage error.
    let both = rivulet(
        &url,
        &[
            "queue", "pause", "mail", "--name", "send", "--group", "acme",
        ],
    );
    assert_eq!(both.code, 2, "{}", both.stderr);
}

#[test]
fn queues_and_jobs() {
    let server = server();
    let url = server.url();
    let (failed, delayed, waiting) = job_state(&url);

    let q = rivulet(&url, &["queues"]).ok();
    let header = q.stdout.lines().next().expect("header");
    assert!(
        header.starts_with("QUEUE") && header.contains("FAILED"),
        "{header}"
    );
    let row: Vec<&str> = q
        .stdout
        .lines()
        .find(|l| l.starts_with("invoices"))
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(row, ["invoices", "1", "1", "0", "2", "3", "0", "no"]);
    let j = rivulet(&url, &["--json", "queues"]).ok().json();
    let c = &j["queues"][0]["counts"];
    assert_eq!(j["queues"][0]["queue"], "invoices");
    assert_eq!(
        (
            c["waiting"].as_u64(),
            c["delayed"].as_u64(),
            c["failed"].as_u64(),
            c["completed"].as_u64()
        ),
        (Some(1), Some(1), Some(3), Some(2))
    );

    let l = rivulet(&url, &["jobs", "list", "invoices", "--state", "failed"]).ok();
    assert_eq!(
        l.stdout.matches("no such customer").count(),
        3,
        "{}",
        l.stdout
    );
    let j = rivulet(
        &url,
        &[
            "--json", "jobs", "list", "invoices", "--state", "failed", "--limit", "2",
        ],
    )
    .ok()
    .json();
    assert_eq!(j["total"], 3);
    assert_eq!(j["jobs"].as_array().map(Vec::len), Some(2));
    assert_eq!(j["jobs"][0]["state"], "failed");
    let next = j["next"].as_str().expect("next");
    let j = rivulet(
        &url,
        &[
            "--json", "jobs", "list", "invoices", "--state", "failed", "--cursor", next,
        ],
    )
    .ok()
    .json();
    assert_eq!(j["jobs"].as_array().map(Vec::len), Some(1));
    let bad = rivulet(&url, &["jobs", "list", "invoices", "--state", "sleeping"]);
    assert_eq!(bad.code, 2);

    let j = rivulet(
        &url,
        &["--json", "jobs", "list", "invoices", "--state", "completed"],
    )
    .ok()
    .json();
    let done = j["jobs"][0]["id"].as_str().expect("id").to_owned();
    let s = rivulet(&url, &["jobs", "show", "invoices", &done]).ok();
    assert!(
        s.stdout.contains("completed") && s.stdout.contains("sent"),
        "{}",
        s.stdout
    );
    let j = rivulet(&url, &["--json", "jobs", "show", "invoices", &done])
        .ok()
        .json();
    assert_eq!(j["result"]["sent"], true);
    assert_eq!(j["logs"][0], "sent");
    assert_eq!(j["attempt"], 1);
    let j = rivulet(&url, &["--json", "jobs", "show", "invoices", &failed[0]])
        .ok()
        .json();
    assert_eq!(j["error"], "permanent: no such customer");
    assert_eq!(j["data"]["order"], 0);
    let missing = rivulet(&url, &["jobs", "show", "invoices", "nope"]);
    assert_eq!(missing.code, 4, "{}", missing.stderr);

    // Retry one; the wrong state is refused (exit 5).
    let j = rivulet(&url, &["--json", "jobs", "retry", "invoices", &failed[0]])
        .ok()
        .json();
    assert_eq!(
        (j["retried"].as_u64(), j["was"].as_str()),
        (Some(1), Some("failed"))
    );
    let wrong = rivulet(&url, &["jobs", "retry", "invoices", &delayed]);
    assert_eq!(wrong.code, 5, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("is delayed"), "{}", wrong.stderr);
    // Promote the delayed one.
    let p = rivulet(&url, &["jobs", "promote", "invoices", &delayed]).ok();
    assert!(p.stdout.contains("waiting now"), "{}", p.stdout);
    let wrong = rivulet(&url, &["jobs", "promote", "invoices", &delayed]);
    assert_eq!(wrong.code, 5);
    // Retry all failed.
    let j = rivulet(
        &url,
        &[
            "--json",
            "jobs",
            "retry",
            "invoices",
            "--all-failed",
            "--batch",
            "1",
        ],
    )
    .ok()
    .json();
    assert_eq!(j["retried"], 2);
    let j = rivulet(&url, &["--json", "queues"]).ok().json();
    let c = &j["queues"][0]["counts"];
    assert_eq!(
        (c["waiting"].as_u64(), c["failed"].as_u64()),
        (Some(5), Some(0))
    );

    // Cancel and remove need --yes.
    let refused = rivulet(&url, &["jobs", "cancel", "invoices", &waiting]);
    assert_eq!(refused.code, 3);
    assert!(refused.stdout.contains("(waiting)"), "{}", refused.stdout);
    let j = rivulet(&url, &["--json", "jobs", "show", "invoices", &waiting])
        .ok()
        .json();
    assert_eq!(j["state"], "waiting", "a refused cancel changes nothing");
    let j = rivulet(
        &url,
        &["--json", "jobs", "cancel", "invoices", &waiting, "--yes"],
    )
    .ok()
    .json();
    assert_eq!(j["outcome"], "cancelled");
    let refused = rivulet(&url, &["--json", "jobs", "remove", "invoices", &waiting]);
    assert_eq!(refused.code, 3);
    assert_eq!(refused.json()["would"]["state"], "cancelled");
    let r = rivulet(&url, &["jobs", "remove", "invoices", &waiting, "--yes"]).ok();
    assert!(r.stdout.starts_with("Removed job"), "{}", r.stdout);
    let gone = rivulet(&url, &["jobs", "remove", "invoices", &waiting, "--yes"]);
    assert_eq!(gone.code, 4);

    // Pause and resume a queue and a name.
    let p = rivulet(&url, &["queue", "pause", "invoices"]).ok();
    assert_eq!(p.stdout, "Queue invoices is paused.\n");
    let j = rivulet(
        &url,
        &["--json", "queue", "pause", "invoices", "--name", "bad"],
    )
    .ok()
    .json();
    assert_eq!(
        (j["paused"].as_bool(), j["paused_names"][0].as_str()),
        (Some(true), Some("bad"))
    );
    let q = rivulet(&url, &["queues"]).ok();
    assert!(q.stdout.contains("yes"), "{}", q.stdout);
    rivulet(&url, &["queue", "resume", "invoices"]).ok();
    let j = rivulet(
        &url,
        &["--json", "queue", "resume", "invoices", "--name", "bad"],
    )
    .ok()
    .json();
    assert_eq!(
        (
            j["paused"].as_bool(),
            j["paused_names"].as_array().map(Vec::len)
        ),
        (Some(false), Some(0))
    );
}

#[test]
fn urls_errors_and_exit_codes_never_show_the_password() {
    let server = server();
    let url = server.url();
    // The URL may come from the environment.
    let j = rivulet_env(None, Some(&url), &["--json", "queues"])
        .ok()
        .json();
    assert_eq!(j["queues"].as_array().map(Vec::len), Some(0));
    // No URL at all: a usage error in one line.
    let none = rivulet_env(None, None, &["topics"]);
    assert_eq!(none.code, 2);
    assert_eq!(
        none.stderr,
        "error: no Redis given: pass --redis URL or set RIVULET_REDIS_URL\n"
    );
    // A wrong password and a port nobody listens on: exit 6, one line, no password.
    let wrong = url.replace(PASSWORD, "not-the-password");
    let denied = rivulet(&wrong, &["topics"]);
    assert_ne!(denied.code, 0);
    assert_eq!(denied.stderr.lines().count(), 1, "{}", denied.stderr);
    assert!(
        !denied.stderr.contains("not-the-password"),
        "{}",
        denied.stderr
    );
    let port = server.port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let unreachable = url.replace(&format!(":{port}/"), &format!(":{closed}/"));
    let out = rivulet(&unreachable, &["topics"]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(":***@"),
        "the URL shows redacted: {}",
        out.stderr
    );
    // The same through the environment and with --json.
    let out = rivulet_env(
        None,
        Some(&unreachable),
        &["--json", "topic", "show", "orders"],
    );
    assert_eq!(out.code, 6);
    assert!(out.stdout.is_empty());
    // Help shows where the URL may come from, never its value.
    let help = rivulet_env(None, Some(&url), &["--help"]).ok();
    assert!(help.stdout.contains("RIVULET_REDIS_URL"), "{}", help.stdout);
    // An unknown flag: clap's usage error (exit 2), the URL not echoed.
    let bad = rivulet(&url, &["topics", "--bogus"]);
    assert_eq!(bad.code, 2);
    // A bad prefix is a usage error before any connection.
    let out = rivulet(&url, &["--prefix", "a/b", "topics"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn a_cluster_through_its_seed_urls() {
    let cluster = rivulet_testkit::RedisCluster::start(3).expect("start a 3-master cluster");
    let urls = cluster.urls();
    runtime().block_on(async {
        let backend = RedisBackend::cluster(&urls).await.expect("connect");
        let q = Queue::new(backend.clone(), "cluster-jobs").expect("queue");
        let job = q
            .add("later", &1)
            .delay(Duration::from_secs(3600))
            .await
            .expect("add");
        let bus = Bus::builder(backend).build().expect("bus");
        for n in 0..3 {
            bus.publish("cluster-topic", &Order { n, bad: false })
                .await
                .expect("publish");
        }
        bus.shutdown().await;
        let seeds = urls.join(",");
        let j = rivulet(&seeds, &["--cluster", "--json", "topics"])
            .ok()
            .json();
        assert_eq!(j["topics"][0]["topic"], "cluster-topic");
        assert_eq!(j["topics"][0]["length"], 3);
        let j = rivulet(&seeds, &["--cluster", "--json", "queues"])
            .ok()
            .json();
        assert_eq!(j["queues"][0]["counts"]["delayed"], 1);
        rivulet(
            &seeds,
            &[
                "--cluster",
                "jobs",
                "promote",
                "cluster-jobs",
                job.id.as_str(),
            ],
        )
        .ok();
        let j = rivulet(&seeds, &["--cluster", "--json", "queues"])
            .ok()
            .json();
        assert_eq!(j["queues"][0]["counts"]["waiting"], 1);
    });
}
