//! `rivulet doctor` end to end: runs the built binary against a real `redis-server`
//! holding a stuck job, and checks its JSON, its text and its exit codes before and
//! after `--fix`.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use rivulet::{Queue, RedisBackend};
use rivulet_testkit::RedisServer;
use serde_json::Value;

fn rivulet(args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rivulet"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("RIVULET_REDIS_URL");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    cmd.output().expect("the rivulet binary runs")
}

fn json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn checks(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["check"].as_str().expect("check").to_owned())
        .collect()
}

/// A job left active by a worker that crashed a minute ago, with no worker since.
async fn stuck_job(server: &RedisServer, prefix: &str) {
    let backend = RedisBackend::builder(server.url())
        .prefix(prefix)
        .build()
        .await
        .expect("connect");
    let q = Queue::new(backend, "mail").expect("queue");
    let id = q.add("send", &1u32).await.expect("add").id;
    let tag = format!("{{{prefix}/queue/mail}}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut con = server
        .client()
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::pipe()
        .cmd("ZREM")
        .arg(format!("{tag}/waiting"))
        .arg(id.as_str())
        .ignore()
        .cmd("ZADD")
        .arg(format!("{tag}/active"))
        .arg(now - 600_000)
        .arg(id.as_str())
        .ignore()
        .cmd("HSET")
        .arg(format!("{tag}/job/{id}"))
        .arg("state")
        .arg("active")
        .arg("attempt")
        .arg(1)
        .ignore()
        .query_async(&mut con)
        .await
        .expect("fake a crashed worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_in_json_and_text_fixes_and_exits_by_what_remains() {
    let server = tokio::task::spawn_blocking(|| RedisServer::builder().aof(true).start())
        .await
        .expect("spawn_blocking")
        .expect("redis-server");
    let url = server.url();
    stuck_job(&server, "app").await;

    // Under the default prefix there is nothing: exit 0, no findings.
    let out = rivulet(&["doctor", "--redis", &url, "--json"], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out);
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["settings"], "checked");
    assert_eq!(v["backend"], "redis");

    // Under the application's prefix, through the environment variable: the stuck job
    // is an error, so exit 7.
    let env = Some(("RIVULET_REDIS_URL", url.as_str()));
    let out = rivulet(&["doctor", "--prefix", "app", "--json"], env);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let v = json(&out);
    assert_eq!(checks(&v), vec!["expired_lease"], "{v}");
    let f = &v["findings"][0];
    assert_eq!(f["severity"], "error");
    assert_eq!(f["fixable"], true);
    assert_eq!(f["objects"][0]["kind"], "queue");
    assert_eq!(f["objects"][0]["name"], "mail");
    for field in ["summary", "explanation", "fix"] {
        assert!(
            f[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {f}"
        );
    }
    assert_eq!(
        (v["errors"].as_u64(), v["queues"].as_u64()),
        (Some(1), Some(1))
    );

    // The text report says the same for people.
    let out = rivulet(&["doctor", "--prefix", "app"], env);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ERROR   expired_lease  [queue mail]"),
        "{text}"
    );
    assert!(text.contains("rivulet doctor --fix does this"), "{text}");

    // --fix returns the job and exits 0; a second run finds nothing.
    let out = rivulet(&["doctor", "--prefix", "app", "--fix", "--json"], env);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out);
    assert_eq!(checks(&v), Vec::<String>::new(), "{v}");
    assert_eq!(v["repairs"][0]["check"], "expired_lease");
    assert!(v["repairs"][0]["error"].is_null());
    let out = rivulet(&["doctor", "--prefix", "app", "--json"], env);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Usage and connection errors have their own codes.
    let out = rivulet(&["doctor"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = rivulet(&["doctor", "--prefix", "a b"], env);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = rivulet(&["doctor", "--redis", "http://nope"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = rivulet(&["doctor", "--gone-after", "0"], env);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = rivulet(&["doctor", "--gone-after", "60", "--json"], env);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = rivulet(&["doctor", "--redis", "redis://127.0.0.1:1"], None);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
}
