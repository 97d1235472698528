//! The Redis a run talks to: one `redis-server` (AOF on), optionally behind the fault
//! proxy, or a Redis Cluster of 3 masters and 3 replicas. Everything here is blocking
//! (the test kit is synchronous); callers run it on blocking threads.

use std::time::Duration;

use rivulet_testkit::{
    ProxyMode, RedisCluster, RedisSentinel, RedisServer, SENTINEL_MASTER_NAME, TcpProxy, key_slot,
};

use crate::probe::Target;

/// How the run's Redis is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server with AOF and this `appendfsync` policy; probes go through the fault
    /// proxy when `proxy` is set, and log in as an ACL user limited to rivulet's keys
    /// and commands (`RedisBackend::acl_rules`) when `acl` is set.
    Single {
        fsync: &'static str,
        proxy: bool,
        acl: bool,
    },
    /// Three masters, three replicas (AOF `everysec`).
    Cluster,
    /// A master, a replica and three sentinels; probes connect through the sentinels.
    Sentinel,
}

/// A running Redis of some topology.
#[derive(Debug)]
pub(crate) enum Env {
    Single {
        server: Box<RedisServer>,
        proxy: Option<TcpProxy>,
        /// The probes' URL when they log in as the ACL user.
        acl_url: Option<String>,
    },
    Cluster {
        cluster: Box<RedisCluster>,
        /// Nodes killed and not yet restarted.
        down: Vec<usize>,
    },
    Sentinel {
        deployment: Box<RedisSentinel>,
    },
}

fn sentinel_target(deployment: &RedisSentinel) -> Target {
    Target::Sentinel {
        master: SENTINEL_MASTER_NAME.to_owned(),
        sentinels: deployment.sentinel_addrs(),
    }
}

/// The ACL user of `acl` runs.
const ACL_USER: &str = "rivulet-probe";
const ACL_PASSWORD: &str = "probe/pass?w#rd";

/// Settings every server of a run gets: no eviction (a queue must never lose data to
/// `maxmemory`), AOF on.
fn server_builder(fsync: &str) -> rivulet_testkit::RedisServerBuilder {
    RedisServer::builder()
        .aof(true)
        .appendfsync(fsync)
        .extra_arg("--maxmemory-policy", "noeviction")
}

impl Env {
    pub(crate) fn start(topology: Topology) -> Result<Env, String> {
        match topology {
            Topology::Single { fsync, proxy, acl } => {
                let mut builder = server_builder(fsync);
                if acl {
                    let mut rules = rivulet::RedisBackend::acl_rules("rivulet");
                    // The probes' live channels are not part of the check.
                    rules.push("allchannels".to_owned());
                    builder = builder.acl_user(ACL_USER, ACL_PASSWORD, &rules);
                }
                let server = builder.start().map_err(|e| format!("redis-server: {e}"))?;
                let acl_url = if acl {
                    server.url_for_user(ACL_USER)
                } else {
                    None
                };
                let proxy = if proxy {
                    Some(TcpProxy::for_port(server.port()).map_err(|e| format!("proxy: {e}"))?)
                } else {
                    None
                };
                Ok(Env::Single {
                    server: Box::new(server),
                    proxy,
                    acl_url,
                })
            }
            Topology::Sentinel => {
                let deployment = RedisSentinel::start().map_err(|e| format!("sentinel: {e}"))?;
                Ok(Env::Sentinel {
                    deployment: Box::new(deployment),
                })
            }
            Topology::Cluster => {
                let cluster = RedisCluster::builder()
                    .masters(3)
                    .replicas_per_master(1)
                    .aof(true)
                    .appendfsync("everysec")
                    .extra_arg("--maxmemory-policy", "noeviction")
                    .node_timeout(Duration::from_millis(2000))
                    .ready_timeout(Duration::from_secs(60))
                    .start()
                    .map_err(|e| format!("redis cluster: {e}"))?;
                Ok(Env::Cluster {
                    cluster: Box::new(cluster),
                    down: Vec::new(),
                })
            }
        }
    }

    /// Where the probes connect (through the proxy when there is one).
    pub(crate) fn probe_target(&self) -> Target {
        match self {
            Env::Single {
                proxy: Some(proxy), ..
            } => Target::Single { url: proxy.url() },
            Env::Single {
                acl_url: Some(url), ..
            } => Target::Single { url: url.clone() },
            Env::Single { server, .. } => Target::Single { url: server.url() },
            Env::Cluster { cluster, .. } => Target::Cluster {
                urls: cluster.urls(),
            },
            Env::Sentinel { deployment } => sentinel_target(deployment),
        }
    }

    /// SIGKILLs the master of a Sentinel deployment; returns its pid.
    pub(crate) fn sentinel_kill_master(&mut self) -> Result<u32, String> {
        let Env::Sentinel { deployment } = self else {
            return Err("not a Sentinel deployment".into());
        };
        let pid = deployment.servers()[0].pid();
        deployment
            .kill_master()
            .map_err(|e| format!("kill master: {e}"))?;
        Ok(pid)
    }

    /// Waits for the sentinels to promote the replica, then restarts the old master
    /// (the sentinels make it a replica of the new one). Returns a description.
    pub(crate) fn sentinel_after_failover(&mut self) -> Result<String, String> {
        let Env::Sentinel { deployment } = self else {
            return Err("not a Sentinel deployment".into());
        };
        let started = std::time::Instant::now();
        let port = deployment
            .wait_for_failover(Duration::from_secs(60))
            .map_err(|e| format!("failover: {e}"))?;
        let took = started.elapsed();
        deployment
            .restart_first_master()
            .map_err(|e| format!("restart old master: {e}"))?;
        Ok(format!(
            "port {port} promoted after {took:?}, old master restarted"
        ))
    }

    /// Where the harness itself connects: never through the proxy.
    pub(crate) fn direct_target(&self) -> Target {
        match self {
            Env::Single { server, .. } => Target::Single { url: server.url() },
            Env::Cluster { cluster, .. } => Target::Cluster {
                urls: cluster.urls(),
            },
            Env::Sentinel { deployment } => sentinel_target(deployment),
        }
    }

    /// SIGKILLs `redis-server`, returns its pid.
    pub(crate) fn kill_redis(&mut self) -> Result<u32, String> {
        match self {
            Env::Single { server, .. } => {
                let pid = server.pid();
                server.kill().map_err(|e| format!("kill redis: {e}"))?;
                Ok(pid)
            }
            _ => Err("kill_redis needs a single server".into()),
        }
    }

    /// Restarts `redis-server` on the same port and directory (AOF replayed).
    pub(crate) fn restart_redis(&mut self) -> Result<(), String> {
        match self {
            Env::Single { server, .. } => {
                server.restart().map_err(|e| format!("restart redis: {e}"))
            }
            _ => Err("restart_redis needs a single server".into()),
        }
    }

    pub(crate) fn set_proxy(&self, mode: ProxyMode) -> Result<(), String> {
        match self {
            Env::Single {
                proxy: Some(proxy), ..
            } => proxy.set_mode(mode).map_err(|e| format!("proxy: {e}")),
            _ => Err("this run has no proxy".into()),
        }
    }

    /// The node index currently serving the slot of `key`.
    fn owner_of(&self, key: &str) -> Result<usize, String> {
        let Env::Cluster { cluster, .. } = self else {
            return Err("not a cluster".into());
        };
        let node = cluster
            .node_for_slot(key_slot(key.as_bytes()))
            .map_err(|e| format!("slot owner: {e}"))?;
        let port = node.port();
        cluster
            .nodes()
            .iter()
            .position(|n| n.port() == port)
            .ok_or_else(|| format!("no node on port {port}"))
    }

    /// A replica of the master serving `key` (an index into the nodes).
    fn replica_of_owner(&self, key: &str) -> Result<usize, String> {
        let Env::Cluster { cluster, .. } = self else {
            return Err("not a cluster".into());
        };
        let owner = cluster.nodes()[self.owner_of(key)?].port();
        for i in cluster
            .replica_indices()
            .map_err(|e| format!("replicas: {e}"))?
        {
            let mut con = cluster.nodes()[i]
                .connection()
                .map_err(|e| format!("replica connection: {e}"))?;
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query(&mut con)
                .map_err(|e| format!("ROLE: {e}"))?;
            let master_port = role.get(2).and_then(|v| match v {
                redis::Value::Int(p) => u16::try_from(*p).ok(),
                _ => None,
            });
            if master_port == Some(owner) {
                return Ok(i);
            }
        }
        Err(format!("no replica of the master on port {owner}"))
    }

    /// A coordinated failover of the master serving `key`. Returns a description.
    pub(crate) fn cluster_failover(&self, key: &str) -> Result<String, String> {
        let replica = self.replica_of_owner(key)?;
        let Env::Cluster { cluster, .. } = self else {
            return Err("not a cluster".into());
        };
        cluster
            .failover(replica)
            .map_err(|e| format!("failover: {e}"))?;
        Ok(format!("promoted node {replica}"))
    }

    /// SIGKILLs the master serving `key`; returns its index and pid.
    pub(crate) fn cluster_kill_owner(&mut self, key: &str) -> Result<(usize, u32), String> {
        let owner = self.owner_of(key)?;
        let Env::Cluster { cluster, down } = self else {
            return Err("not a cluster".into());
        };
        let pid = cluster.nodes()[owner].pid();
        cluster
            .kill_node(owner)
            .map_err(|e| format!("kill node: {e}"))?;
        down.push(owner);
        Ok((owner, pid))
    }

    /// Restarts every killed cluster node and waits for the cluster to be healthy.
    pub(crate) fn cluster_restart_down(&mut self) -> Result<(), String> {
        let Env::Cluster { cluster, down } = self else {
            return Ok(());
        };
        for i in std::mem::take(down) {
            cluster
                .restart_node(i)
                .map_err(|e| format!("restart node {i}: {e}"))?;
        }
        cluster
            .wait_ok(Duration::from_secs(60))
            .map_err(|e| format!("cluster health: {e}"))
    }

    /// Heals everything: proxy back to pass, killed nodes restarted.
    pub(crate) fn heal(&mut self) -> Result<(), String> {
        match self {
            Env::Single { server, proxy, .. } => {
                if !server.is_running() {
                    server
                        .restart()
                        .map_err(|e| format!("restart redis: {e}"))?;
                }
                if let Some(p) = proxy {
                    p.set_mode(ProxyMode::Pass)
                        .map_err(|e| format!("proxy: {e}"))?;
                }
                Ok(())
            }
            Env::Cluster { .. } => self.cluster_restart_down(),
            Env::Sentinel { deployment } => {
                if !deployment.servers()[0].is_running() {
                    deployment
                        .restart_first_master()
                        .map_err(|e| format!("restart old master: {e}"))?;
                }
                Ok(())
            }
        }
    }

    /// A short description for the run's log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Env::Single { server, proxy, .. } => format!(
                "redis-server pid {} port {} dir {}{}",
                server.pid(),
                server.port(),
                server.data_dir().display(),
                proxy
                    .as_ref()
                    .map(|p| format!(", proxy port {}", p.port()))
                    .unwrap_or_default()
            ),
            Env::Cluster { cluster, .. } => format!("redis cluster {:?}", cluster.urls()),
            Env::Sentinel { deployment } => format!("sentinel deployment {}", deployment.url()),
        }
    }
}
