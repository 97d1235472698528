//! The probes: separate processes that use only rivulet's public API and write what they
//! did to JSON-lines logs the checker reads afterwards.
//!
//! * [`publisher`] publishes uniquely identified messages and logs one line per call,
//!   with its outcome classified as `ok`, `fail` or `unknown`;
//! * [`consumer`] subscribes with a behaviour chosen per run and logs one line per
//!   handler event, written (one `write` system call) **before** the handler returns,
//!   so a kill between the log line and the ack is a duplicate, never a false loss.

pub(crate) mod consumer;
pub(crate) mod publisher;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a probe connects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Target {
    /// One server (possibly behind the fault proxy).
    Single {
        /// `redis://host:port/`
        url: String,
    },
    /// A Redis Cluster reached through any of these nodes.
    Cluster {
        /// Node URLs.
        urls: Vec<String>,
    },
    /// A Sentinel deployment: the master's name and the sentinels' `host:port`.
    Sentinel {
        master: String,
        sentinels: Vec<String>,
    },
}

/// Connection settings shared by both probes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Connect {
    pub(crate) target: Target,
    /// Response timeout of the shared connection.
    pub(crate) response_timeout_ms: u64,
    /// Largest payload accepted (backend and bus).
    pub(crate) max_payload: usize,
    /// How long a probe keeps trying to connect at start before giving up.
    pub(crate) start_deadline_ms: u64,
}

impl Connect {
    /// Opens a backend with the probe's timeouts.
    pub(crate) async fn backend(&self) -> rivulet::Result<rivulet::RedisBackend> {
        let builder = match &self.target {
            Target::Single { url } => rivulet::RedisBackend::builder(url.clone()),
            Target::Cluster { urls } => rivulet::backend::redis::RedisBackendBuilder::cluster(urls),
            Target::Sentinel { master, sentinels } => {
                rivulet::backend::redis::RedisBackendBuilder::sentinel(master.clone(), sentinels)
            }
        };
        builder
            .connect_timeout(Duration::from_millis(1000))
            .response_timeout(Duration::from_millis(self.response_timeout_ms))
            .build()
            .await
    }
}

/// The payload every probe message carries: its id (so raw publishes without a
/// caller-chosen message id can be traced) and padding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Msg {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) pad: String,
}

/// How a publish call ended, in Jepsen's terms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PublishResult {
    /// Acknowledged: the message must be handled or dead-lettered by every group.
    Ok,
    /// Definitely not written (invalid input, payload too large, backpressure, a server
    /// error reply).
    Fail,
    /// May or may not have been written (timeout, connection lost mid-call).
    Unknown,
}

/// One publish call, as the publisher logs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PublishRecord {
    pub(crate) id: String,
    /// Which copy of the message this call published (see `publisher`; 0 for the first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) copy: u32,
    /// Wall-clock ms when the call started.
    pub(crate) t_invoke: u64,
    /// Wall-clock ms when it returned.
    pub(crate) t_done: u64,
    pub(crate) result: PublishResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Published with `wait_for_replicas(1, …)`: acknowledged only once a replica had it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) waited: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a consumer logs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Ev {
    /// The subscription is running.
    Ready,
    /// A handler started on `id`.
    Start,
    /// The handler finished `id` successfully and is about to return `Ok`.
    Ok,
    /// The handler is about to return an error.
    Fail,
    /// The handler is about to panic.
    Panic,
    /// The process is about to exit on purpose, inside the handler.
    Exit,
    /// The process received SIGTERM and is draining.
    Term,
    /// One of the process's buses was shut down while the process keeps running.
    Closed,
}

/// One consumer event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConsumerEvent {
    pub(crate) ev: Ev,
    #[serde(default)]
    pub(crate) id: String,
    /// Wall-clock ms.
    pub(crate) t: u64,
    pub(crate) pid: u32,
    #[serde(default)]
    pub(crate) group: String,
    #[serde(default)]
    pub(crate) attempt: u32,
    #[serde(default)]
    pub(crate) delivery_count: u64,
}

/// Milliseconds since the Unix epoch (wall clock, shared by every process of a run).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An append-only JSON-lines file. Each record is one `write` call on an unbuffered file
/// opened with `O_APPEND`: once `append` returns, the line is in the kernel and survives
/// a SIGKILL of the process.
#[derive(Debug)]
pub(crate) struct JsonLines {
    file: Mutex<File>,
}

impl JsonLines {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLines {
            file: Mutex::new(file),
        })
    }

    pub(crate) fn append<T: Serialize>(&self, record: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = match self.file.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        file.write_all(&line)?;
        file.flush()
    }
}

/// Reads a JSON-lines file, skipping a torn last line (a process killed mid-write) and
/// anything else that does not parse.
pub(crate) fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Installs a `tracing` subscriber writing to stderr (the harness sends each probe's
/// stderr to a file in the run directory).
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIVULET_CHAOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false)
        .try_init();
}

/// A stable 64-bit hash (FNV-1a then a splitmix finaliser) used to derive per-id
/// choices from the run's seed, so a replay makes the same choices.
pub(crate) fn hash64(seed: u64, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
