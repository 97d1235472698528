//! Runs every program in `examples/` and checks that it kept its promise: each exits by
//! itself with status 0 when what it shows really happened (it checks its own counters).
//!
//! The binaries are the ones cargo builds into `target/<profile>/examples/` (a plain
//! `cargo test` builds every example). So that `cargo test --test examples` works on its
//! own too, the first test to need a binary runs `cargo build --examples` once, which is a
//! no-op when they are up to date. Examples that use Redis run against a `redis-server`
//! the test starts on a free port, passed in `RIVULET_REDIS_URL`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any example may run.
const DEADLINE: Duration = Duration::from_secs(60);

/// The directory cargo puts examples in for the profile this test was built with:
/// the test binary is `target/<profile>/deps/examples-<hash>`.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary under target/<profile>/deps");
    profile_dir.join("examples")
}

/// Builds the examples once per test run (a no-op when cargo already built them).
fn build_examples() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = examples_dir()
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|p| p.to_str())
            .map(|p| if p == "debug" { "dev" } else { p }.to_owned())
            .unwrap_or_else(|| "dev".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "rivulet", "--examples"])
            .args(["--profile", &profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if cfg!(not(feature = "redis")) {
            cmd.arg("--no-default-features");
        }
        let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cargo build --examples failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
}

fn example_path(name: &str) -> PathBuf {
    if let Err(e) = build_examples() {
        panic!("{e}");
    }
    let path = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example binary not found at {}",
        path.display()
    );
    path
}

/// A running example: its stdout arrives line by line, stderr is collected.
struct Running {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

/// How an example ended.
struct Finished {
    status: ExitStatus,
    stdout: Vec<String>,
}

impl Running {
    /// Starts example `name`, with `RIVULET_REDIS_URL` set to `redis_url` or removed.
    fn start(name: &str, redis_url: Option<&str>) -> Running {
        let mut cmd = Command::new(example_path(name));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match redis_url {
            Some(url) => cmd.env("RIVULET_REDIS_URL", url),
            None => cmd.env_remove("RIVULET_REDIS_URL"),
        };
        let mut child = cmd.spawn().expect("spawn example");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = String::new();
            let _ = err_pipe.read_to_string(&mut buf);
            sink.lock().expect("stderr lock").push_str(&buf);
        });
        Running {
            name: name.to_owned(),
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// What the example printed so far, for failure messages.
    fn transcript(&self) -> String {
        let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        format!(
            "--- stdout of {}\n{}\n--- stderr\n{stderr}",
            self.name,
            self.stdout.join("\n")
        )
    }

    /// Kills the example (it missed its deadline) and fails the test.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        thread::sleep(Duration::from_millis(50)); // let the pipe readers catch up
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push(line);
        }
        panic!("{}: {why}\n{}", self.name, self.transcript());
    }

    /// Waits for a stdout line satisfying `pred`, up to `within`.
    #[cfg(feature = "redis")]
    fn wait_for_line(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        use std::sync::mpsc::RecvTimeoutError;

        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.fail("expected line not printed in time"),
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail("exited before printing the expected line")
                }
            }
        }
    }

    /// Waits for the example to exit by itself, up to `within`.
    fn finish(mut self, within: Duration) -> Finished {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("still running after {within:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The process is gone: its stdout ends once the reader thread drained it.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(line);
        }
        if !status.success() {
            self.fail(&format!("exited with {status}"));
        }
        Finished {
            status,
            stdout: self.stdout,
        }
    }
}

/// Runs example `name` to completion and checks it exited with status 0 and printed
/// its final `ok:` line.
fn run_to_success(name: &str, redis_url: Option<&str>) -> Finished {
    let done = Running::start(name, redis_url).finish(DEADLINE);
    assert!(done.status.success());
    assert!(
        done.stdout.iter().any(|l| l.starts_with("ok:")),
        "{name}: no `ok:` line in\n{}",
        done.stdout.join("\n")
    );
    done
}

#[test]
fn quick_start() {
    run_to_success("quick_start", None);
}

#[test]
fn invoice_jobs_on_memory() {
    let done = run_to_success("invoice_jobs", None);
    assert!(
        done.stdout
            .iter()
            .any(|l| l.starts_with("invoiced order 3 (attempt 2)")),
        "the transient failure was not retried"
    );
}

#[cfg(feature = "redis")]
mod redis {
    use std::time::Duration;

    use rivulet_testkit::RedisServer;

    use super::{DEADLINE, Running, run_to_success};

    fn server() -> RedisServer {
        RedisServer::start().expect("start redis-server")
    }

    #[test]
    fn redis_retries() {
        let redis = server();
        let done = run_to_success("redis_retries", Some(&redis.url()));
        assert!(
            done.stdout
                .iter()
                .any(|l| l.starts_with("dead letter ") && l.contains("reason attempts")),
            "the dead letter was not listed"
        );
    }

    #[test]
    fn invoice_jobs_on_redis() {
        let redis = server();
        run_to_success("invoice_jobs", Some(&redis.url()));
    }

    #[test]
    fn broadcast_on_memory() {
        run_to_success("broadcast", None);
    }

    #[test]
    fn broadcast_on_redis() {
        let redis = server();
        run_to_success("broadcast", Some(&redis.url()));
    }

    #[test]
    fn live_channels_on_memory() {
        run_to_success("live_channels", None);
    }

    #[test]
    fn live_channels_on_redis() {
        let redis = server();
        run_to_success("live_channels", Some(&redis.url()));
    }

    /// Sends SIGTERM once a handler is running; the example must drain and exit 0 with
    /// its summary line, with the in-flight handlers finished.
    fn graceful_shutdown(redis_url: Option<&str>) {
        let mut running = Running::start("graceful_shutdown", redis_url);
        running.wait_for_line(Duration::from_secs(30), |l| l.starts_with("handling job"));
        let pid = running.child.id().to_string();
        // `kill(1)`: the workspace forbids `unsafe`, so no `libc::kill`.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let done = running.finish(DEADLINE);
        let summary = done
            .stdout
            .iter()
            .find(|l| l.starts_with("drained: "))
            .unwrap_or_else(|| panic!("no summary line in\n{}", done.stdout.join("\n")));
        let field = |name: &str| -> u64 {
            summary
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name}=N in {summary:?}"))
        };
        let (handled, in_flight) = (field("handled"), field("in_flight_at_signal"));
        // A handler takes 1 s and the signal follows its first line at once, so at least
        // that one was in flight; each of them finished and counts as handled.
        assert!(
            in_flight >= 1,
            "nothing was in flight at the signal: {summary}"
        );
        assert!(handled >= in_flight, "{summary}");
    }

    #[test]
    fn graceful_shutdown_on_redis() {
        let redis = server();
        graceful_shutdown(Some(&redis.url()));
    }

    #[test]
    fn graceful_shutdown_on_memory() {
        graceful_shutdown(None);
    }
}
