//! A child process that is this test binary run again for one test (`--exact NAME`),
//! with environment variables telling it what to play: the multi-process tests' workers
//! and runners. Its stdout lines are collected; it is killed (after a SIGCONT, in case a
//! test froze it) when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process running one test of this binary.
pub(crate) struct ChildProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ChildProcess {
    /// Runs test `test` of this binary with `env` set.
    pub(crate) fn spawn(test: &str, env: &[(&str, &str)]) -> ChildProcess {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child process");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                l.lock().expect("lock").push(line);
            }
        });
        ChildProcess { child, lines }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (`KILL`, `STOP`, `CONT`, …) to the process.
    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Waits for the process to end (after a signal, say).
    pub(crate) fn wait(&mut self) {
        let _ = self.child.wait();
    }

    /// SIGKILLs the process and waits for it.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every line printed so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// The first line the process printed that holds `prefix`, from `prefix` on (the
    /// test harness may print `test child_worker ... ` before it on the same line).
    pub(crate) fn said(&self, prefix: &str) -> Option<String> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .find_map(|l| l.find(prefix).map(|i| l[i..].to_owned()))
    }

    /// Waits up to `wait` for a line holding `prefix` (see [`said`](Self::said)).
    pub(crate) async fn wait_said(&self, prefix: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(l) = self.said(prefix) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "the child process never said {prefix:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
