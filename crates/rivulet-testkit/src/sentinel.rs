//! A Sentinel deployment: a master, a replica and three sentinels, all real processes.

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};
use crate::server::{POLL_INTERVAL, RedisServer};

/// The master name the sentinels monitor.
pub const SENTINEL_MASTER_NAME: &str = "rivulet-master";
const SENTINELS: usize = 3;
const QUORUM: usize = 2;
const DOWN_AFTER: Duration = Duration::from_millis(1000);
const FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A master, one replica and three sentinels (quorum 2, `down-after-milliseconds`
/// 1000), on free ports with their own data directories; everything is killed on drop.
///
/// ```no_run
/// # fn main() -> Result<(), rivulet_testkit::TestkitError> {
/// use rivulet_testkit::RedisSentinel;
///
/// let mut deployment = RedisSentinel::start()?;
/// let sentinels = deployment.sentinel_addrs(); // ["127.0.0.1:…", …]
/// deployment.kill_master()?;
/// let new_master_port = deployment.wait_for_failover(std::time::Duration::from_secs(20))?;
/// # Ok(()) }
/// ```
pub struct RedisSentinel {
    /// `servers[0]` is the first master, `servers[1]` its replica.
    servers: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    master_port: u16,
}

impl fmt::Debug for RedisSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSentinel")
            .field("master_port", &self.master_port)
            .field(
                "servers",
                &self
                    .servers
                    .iter()
                    .map(RedisServer::port)
                    .collect::<Vec<_>>(),
            )
            .field(
                "sentinels",
                &self
                    .sentinels
                    .iter()
                    .map(RedisServer::port)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A configuration-file argument in double quotes, with `\` and `"` escaped.
fn config_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// Options for a [`RedisSentinel`]; obtained from [`RedisSentinel::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RedisSentinelBuilder {
    password: Option<String>,
    sentinel_password: Option<String>,
    tls: bool,
}

impl RedisSentinelBuilder {
    /// Requires this password on the master and the replica (`requirepass`,
    /// `masterauth`; the sentinels get it as `auth-pass`).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Requires this password on the sentinels (`requirepass`, and `sentinel-pass` for
    /// their talk with each other).
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// Every process serves TLS only (replication and sentinel links too), with one CA
    /// (see [`RedisServer::tls_ca`] of any of them).
    pub fn tls(mut self, enabled: bool) -> Self {
        self.tls = enabled;
        self
    }

    /// Starts the deployment and waits until the replica is in sync and every sentinel
    /// sees the master, the replica and the other sentinels.
    pub fn start(self) -> Result<RedisSentinel> {
        let ca = if self.tls {
            Some(crate::tls::TestCa::generate(
                crate::tls::DEFAULT_SERVER_NAMES,
            )?)
        } else {
            None
        };
        let data_node = || {
            let mut b = RedisServer::builder().extra_arg("repl-diskless-sync-delay", "0");
            if let Some(p) = &self.password {
                b = b.password(p.clone());
            }
            if let Some(ca) = &ca {
                b = b.tls_certificates(ca.clone());
            }
            b
        };
        let master = data_node().start()?;
        let replica = data_node().start()?;
        redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(master.port())
            .exec(&mut replica.connection()?)
            .map_err(|e| TestkitError::redis("REPLICAOF", e))?;
        let master_port = master.port();
        let mut config = format!(
            "sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} {}\n\
             sentinel failover-timeout {SENTINEL_MASTER_NAME} {}\n\
             sentinel parallel-syncs {SENTINEL_MASTER_NAME} 1\n",
            DOWN_AFTER.as_millis(),
            FAILOVER_TIMEOUT.as_millis()
        );
        if let Some(p) = &self.password {
            config.push_str(&format!(
                "sentinel auth-pass {SENTINEL_MASTER_NAME} {}\n",
                config_quote(p)
            ));
        }
        if let Some(p) = &self.sentinel_password {
            config.push_str(&format!("sentinel sentinel-pass {}\n", config_quote(p)));
        }
        let sentinels = (0..SENTINELS)
            .map(|_| {
                let mut b = RedisServer::builder().sentinel(config.clone());
                if let Some(p) = &self.sentinel_password {
                    b = b.password(p.clone());
                }
                if let Some(ca) = &ca {
                    b = b.tls_certificates(ca.clone());
                }
                b.start()
            })
            .collect::<Result<Vec<_>>>()?;
        let deployment = RedisSentinel {
            servers: vec![master, replica],
            sentinels,
            master_port,
        };
        deployment.wait_ready()?;
        Ok(deployment)
    }
}

impl RedisSentinel {
    /// A deployment with default options (no passwords, no TLS).
    pub fn start() -> Result<RedisSentinel> {
        RedisSentinelBuilder::default().start()
    }

    /// Options for a deployment.
    pub fn builder() -> RedisSentinelBuilder {
        RedisSentinelBuilder::default()
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let state = self.readiness();
            match state {
                Ok(()) => return Ok(()),
                Err(what) if Instant::now() >= deadline => {
                    return Err(TestkitError::Timeout {
                        what: format!("the Sentinel deployment to be ready: {what}"),
                        waited: READY_TIMEOUT,
                    });
                }
                Err(_) => thread::sleep(POLL_INTERVAL * 5),
            }
        }
    }

    fn readiness(&self) -> std::result::Result<(), String> {
        let replica = &self.servers[1];
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.connection().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        if info_field(&info, "master_link_status").as_deref() != Some("up") {
            return Err("replica not in sync".to_owned());
        }
        for s in &self.sentinels {
            let mut con = s.connection().map_err(|e| e.to_string())?;
            let master: Vec<(String, String)> = redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(SENTINEL_MASTER_NAME)
                .query::<Vec<String>>(&mut con)
                .map_err(|e| e.to_string())?
                .chunks(2)
                .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone())))
                .collect();
            let field = |name: &str| {
                master
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            if field("num-slaves") != Some("1") {
                return Err(format!("sentinel {} does not see the replica", s.port()));
            }
            if field("num-other-sentinels") != Some(&(SENTINELS - 1).to_string()) {
                return Err(format!("sentinel {} does not see the others", s.port()));
            }
        }
        Ok(())
    }

    /// The URL of each sentinel, with its password (`redis://` or `rediss://`).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The CA and certificates of a TLS deployment.
    pub fn tls_ca(&self) -> Option<&crate::tls::TestCa> {
        self.servers[0].tls_ca()
    }

    /// `127.0.0.1:<port>` of each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect()
    }

    /// A `redis+sentinel://` URL for the deployment.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://{}/{SENTINEL_MASTER_NAME}",
            self.sentinel_addrs().join(",")
        )
    }

    /// The port of the master the deployment started with.
    pub fn first_master_port(&self) -> u16 {
        self.master_port
    }

    /// The master and the replica (index 0 is the first master).
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// Restarts the first master (same port and data directory) after a
    /// [`kill_master`](Self::kill_master); the sentinels make it a replica of the new
    /// master.
    pub fn restart_first_master(&mut self) -> Result<()> {
        self.servers[0].restart()
    }

    /// Kills the first master with `SIGKILL`.
    pub fn kill_master(&mut self) -> Result<()> {
        self.servers[0].kill()
    }

    /// Asks a sentinel for a failover (`SENTINEL FAILOVER`): the master is demoted to a
    /// replica while still running, the replica is promoted.
    pub fn failover(&self) -> Result<()> {
        let mut con = self.sentinels[0].connection()?;
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SENTINEL_MASTER_NAME)
            .exec(&mut con)
            .map_err(|e| TestkitError::redis("SENTINEL FAILOVER", e))
    }

    /// The master's address as the first answering sentinel reports it.
    pub fn reported_master_port(&self) -> Result<u16> {
        let mut last = None;
        for s in &self.sentinels {
            let reply = s.connection().and_then(|mut con| {
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(SENTINEL_MASTER_NAME)
                    .query::<(String, u16)>(&mut con)
                    .map_err(|e| TestkitError::redis("SENTINEL get-master-addr-by-name", e))
            });
            match reply {
                Ok((_, port)) => return Ok(port),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::Cluster("no sentinel".to_owned())))
    }

    /// Waits until the sentinels name a new master that says it is one; returns its port.
    pub fn wait_for_failover(&self, timeout: Duration) -> Result<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(port) = self.reported_master_port()
                && port != self.master_port
                && self.is_master(port)
            {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: "the sentinels to promote the replica".to_owned(),
                    waited: timeout,
                });
            }
            thread::sleep(POLL_INTERVAL * 5);
        }
    }

    fn is_master(&self, port: u16) -> bool {
        let Some(server) = self.servers.iter().find(|s| s.port() == port) else {
            return false;
        };
        let role = server
            .connection()
            .ok()
            .and_then(|mut con| redis::cmd("ROLE").query::<redis::Value>(&mut con).ok());
        matches!(role, Some(redis::Value::Array(items))
            if matches!(items.first(), Some(redis::Value::BulkString(b)) if b.as_slice() == b"master"))
    }
}
