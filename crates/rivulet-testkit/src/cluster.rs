//! A Redis Cluster made of [`RedisServer`] nodes.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};
use crate::server::{POLL_INTERVAL, RedisServer, RedisServerBuilder};

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16_384;

const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The hash slot of `key`, as computed by Redis Cluster (CRC16 of the key, or
/// of its `{hash tag}`, modulo 16384).
///
/// ```
/// assert_eq!(rivulet_testkit::key_slot(b"foo"), 12182);
/// assert_eq!(rivulet_testkit::key_slot(b"{user1}.a"), rivulet_testkit::key_slot(b"user1"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOT_COUNT
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |mut crc, &byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// Configuration for a [`RedisCluster`]; obtained from [`RedisCluster::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas_per_master: usize,
    node_timeout: Duration,
    ready_timeout: Duration,
    node: RedisServerBuilder,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas_per_master: 0,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            node: RedisServer::builder().aof(true),
        }
    }
}

impl RedisClusterBuilder {
    /// Number of masters the slots are split over (3 by default).
    pub fn masters(mut self, masters: usize) -> Self {
        self.masters = masters;
        self
    }

    /// Number of replicas attached to each master (0 by default).
    pub fn replicas_per_master(mut self, replicas: usize) -> Self {
        self.replicas_per_master = replicas;
        self
    }

    /// `--cluster-node-timeout` of every node (2 s by default). Failure
    /// detection and automatic failover take a small multiple of this.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// How long [`start`](Self::start), [`RedisCluster::failover`] and
    /// [`RedisCluster::restart_node`] wait for the cluster to be healthy
    /// (30 s by default).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Every node serves TLS only (cluster bus and replication too), with one CA and
    /// server certificate generated for all of them (see [`RedisServer::tls_ca`]).
    pub fn tls(mut self) -> Result<Self> {
        let names: Vec<&str> = crate::tls::DEFAULT_SERVER_NAMES.to_vec();
        let ca = crate::tls::TestCa::generate(&names)?;
        self.node = self.node.tls_certificates(ca);
        Ok(self)
    }

    /// Turns the append-only file of every node on or off (on by default).
    pub fn aof(mut self, enabled: bool) -> Self {
        self.node = self.node.aof(enabled);
        self
    }

    /// Sets `--appendfsync` on every node.
    pub fn appendfsync(mut self, policy: impl Into<String>) -> Self {
        self.node = self.node.appendfsync(policy);
        self
    }

    /// Appends a configuration option to every node, see
    /// [`RedisServerBuilder::extra_arg`].
    pub fn extra_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.node = self.node.extra_arg(name, value);
        self
    }

    /// Starts the nodes, assigns the slots evenly over the masters, joins the
    /// nodes, attaches the replicas and waits until every node agrees the
    /// cluster is healthy.
    ///
    /// Node `i < masters` is a master; the replicas of master `m` are nodes
    /// `masters + m * replicas_per_master ..` (until a failover changes roles).
    pub fn start(self) -> Result<RedisCluster> {
        if self.masters == 0 || self.masters > usize::from(SLOT_COUNT) {
            return Err(TestkitError::Cluster(format!(
                "cannot split {SLOT_COUNT} slots over {} masters",
                self.masters
            )));
        }
        let total = self.masters * (1 + self.replicas_per_master);
        let node_builder = self.node.clone().cluster_node(self.node_timeout);
        let nodes = (0..total)
            .map(|_| node_builder.clone().start())
            .collect::<Result<Vec<_>>>()?;
        let cluster = RedisCluster {
            nodes,
            masters: self.masters,
            replicas_per_master: self.replicas_per_master,
            ready_timeout: self.ready_timeout,
        };
        cluster.form()?;
        Ok(cluster)
    }
}

/// A Redis Cluster of real `redis-server` processes on 127.0.0.1.
///
/// Every node is a [`RedisServer`] with `--cluster-enabled yes` and, by
/// default, AOF on, so nodes can be killed and restarted with their data and
/// their `nodes.conf`. Dropping the cluster kills every node.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use rivulet_testkit::RedisCluster;
///
/// let cluster = RedisCluster::builder().masters(3).replicas_per_master(1).start()?;
/// let mut con = cluster.client()?.get_connection()?;
/// redis::cmd("SET").arg("{user1}.name").arg("ada").exec(&mut con)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
    replicas_per_master: usize,
    ready_timeout: Duration,
}

impl RedisCluster {
    /// Starts a cluster of `masters` masters without replicas.
    pub fn start(masters: usize) -> Result<Self> {
        Self::builder().masters(masters).start()
    }

    /// Returns a builder to configure the cluster before starting it.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// All nodes, masters first (see [`RedisClusterBuilder::start`]).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The URLs of all nodes, in [`nodes`](Self::nodes) order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The URLs of the nodes that currently are masters (asked with `ROLE`;
    /// nodes that are down are skipped).
    pub fn master_urls(&self) -> Result<Vec<String>> {
        Ok(self
            .master_indices()?
            .into_iter()
            .map(|i| self.nodes[i].url())
            .collect())
    }

    /// Indices into [`nodes`](Self::nodes) of the running nodes that currently
    /// are masters.
    pub fn master_indices(&self) -> Result<Vec<usize>> {
        self.indices_with_role("master")
    }

    /// Indices into [`nodes`](Self::nodes) of the running nodes that currently
    /// are replicas.
    pub fn replica_indices(&self) -> Result<Vec<usize>> {
        self.indices_with_role("slave")
    }

    /// The node currently serving `slot`, according to the first running node
    /// that answers `CLUSTER NODES`.
    pub fn node_for_slot(&self, slot: u16) -> Result<&RedisServer> {
        let mut last_error = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match cluster_nodes(node) {
                Ok(view) => {
                    let owner = view
                        .iter()
                        .find(|n| n.is_master() && n.serves(slot))
                        .ok_or_else(|| {
                            TestkitError::Cluster(format!("no node serves slot {slot}"))
                        })?;
                    return self
                        .nodes
                        .iter()
                        .find(|n| n.port() == owner.port)
                        .ok_or_else(|| {
                            TestkitError::Cluster(format!("unknown node port {}", owner.port))
                        });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| TestkitError::Cluster("no node is running".to_owned())))
    }

    /// A cluster client seeded with every node.
    pub fn client(&self) -> Result<redis::cluster::ClusterClient> {
        redis::cluster::ClusterClient::new(self.urls())
            .map_err(|e| TestkitError::redis("building a cluster client", e))
    }

    /// Promotes the replica at `replica_index` (an index into
    /// [`nodes`](Self::nodes)) with a coordinated `CLUSTER FAILOVER`, then
    /// waits until it reports role master, every node sees it as a master and
    /// the cluster is healthy again ([`wait_ok`](Self::wait_ok)).
    ///
    /// The cluster must be healthy to start with (this waits for it). If Redis
    /// aborts the manual failover (it gives up after 5 s, e.g. when failing
    /// back over too soon), `CLUSTER FAILOVER` is sent again.
    pub fn failover(&self, replica_index: usize) -> Result<()> {
        const REQUEST_AGAIN_AFTER: Duration = Duration::from_millis(5_500);
        let node = self.node(replica_index)?;
        if role(node)? != "slave" {
            return Err(TestkitError::Cluster(format!(
                "node {replica_index} (port {}) is not a replica",
                node.port()
            )));
        }
        // Its master only cooperates once it knows this node as its replica.
        self.wait_ok(self.ready_timeout)?;
        let request = || {
            query::<()>(
                node,
                redis::cmd("CLUSTER").arg("FAILOVER"),
                "CLUSTER FAILOVER",
            )
        };
        request()?;
        let mut requested = Instant::now();
        let port = node.port();
        poll(
            self.ready_timeout,
            &format!("node {replica_index} (port {port}) to be seen as master by every node"),
            || {
                let role = role(node).map_err(|e| e.to_string())?;
                if role != "master" {
                    if requested.elapsed() >= REQUEST_AGAIN_AFTER {
                        request().map_err(|e| e.to_string())?;
                        requested = Instant::now();
                    }
                    return Err(format!("ROLE is still {role}"));
                }
                for other in self.running_nodes() {
                    let view = cluster_nodes(other).map_err(|e| e.to_string())?;
                    if !view.iter().any(|n| n.port == port && n.is_master()) {
                        return Err(format!("port {} does not see it as master", other.port()));
                    }
                }
                Ok(())
            },
        )?;
        self.wait_ok(self.ready_timeout)
    }

    /// Kills node `i` with `SIGKILL` (see [`RedisServer::kill`]).
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        self.node_mut(i)?.kill()
    }

    /// Restarts node `i` on its port with its data directory (including its
    /// `nodes.conf`), then waits until the cluster is healthy
    /// ([`wait_ok`](Self::wait_ok)).
    pub fn restart_node(&mut self, i: usize) -> Result<()> {
        self.node_mut(i)?.restart()?;
        self.wait_ok(self.ready_timeout)
    }

    /// Waits until every running node reports `cluster_state:ok`, all of them
    /// agree on the topology (which node serves which slots, which nodes are
    /// replicas of which master), and every running replica has its link to
    /// its master up.
    ///
    /// A [paused](RedisServer::pause) node counts as running, so this times
    /// out while a node is paused.
    pub fn wait_ok(&self, timeout: Duration) -> Result<()> {
        poll(timeout, "the cluster to be healthy", || {
            let mut first: Option<(u16, Topology)> = None;
            for node in self.running_nodes() {
                let port = node.port();
                let info: String = query(node, redis::cmd("CLUSTER").arg("INFO"), "CLUSTER INFO")
                    .map_err(|e| e.to_string())?;
                if info_field(&info, "cluster_state") != Some("ok") {
                    return Err(format!("port {port}: cluster_state is not ok"));
                }
                let topology = Topology::of(&cluster_nodes(node).map_err(|e| e.to_string())?);
                match &first {
                    None => first = Some((port, topology)),
                    Some((first, expected)) if *expected != topology => {
                        return Err(format!("ports {first} and {port} disagree on the topology"));
                    }
                    Some(_) => {}
                }
                check_replica_link(node)?;
            }
            Ok(())
        })
    }

    fn node(&self, i: usize) -> Result<&RedisServer> {
        self.nodes.get(i).ok_or_else(|| self.no_such_node(i))
    }

    fn node_mut(&mut self, i: usize) -> Result<&mut RedisServer> {
        let err = self.no_such_node(i);
        self.nodes.get_mut(i).ok_or(err)
    }

    fn no_such_node(&self, i: usize) -> TestkitError {
        TestkitError::Cluster(format!(
            "no node {i}: the cluster has {} nodes",
            self.nodes.len()
        ))
    }

    fn running_nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    fn indices_with_role(&self, wanted: &str) -> Result<Vec<usize>> {
        let mut indices = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.is_running() && role(node)? == wanted {
                indices.push(i);
            }
        }
        Ok(indices)
    }

    /// Turns freshly started, empty nodes into a healthy cluster.
    fn form(&self) -> Result<()> {
        let masters = &self.nodes[..self.masters];
        let ids = self
            .nodes
            .iter()
            .map(|n| query::<String>(n, redis::cmd("CLUSTER").arg("MYID"), "CLUSTER MYID"))
            .collect::<Result<Vec<_>>>()?;

        // Distinct config epochs avoid a round of epoch-collision resolution.
        for (epoch, node) in (1u64..).zip(&self.nodes) {
            query::<()>(
                node,
                redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(epoch),
                "CLUSTER SET-CONFIG-EPOCH",
            )?;
        }
        let count = u32::try_from(self.masters).expect("checked to be at most 16384");
        for (i, node) in (0u32..).zip(masters) {
            let first = i * u32::from(SLOT_COUNT) / count;
            let last = (i + 1) * u32::from(SLOT_COUNT) / count - 1;
            query::<()>(
                node,
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(first)
                    .arg(last),
                "CLUSTER ADDSLOTSRANGE",
            )?;
        }
        let (seed, others) = self.nodes.split_first().expect("a cluster has a node");
        for node in others {
            query::<()>(
                seed,
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(node.port()),
                "CLUSTER MEET",
            )?;
        }

        let total = self.nodes.len();
        for (r, replica) in self.nodes[self.masters..].iter().enumerate() {
            let master_id = &ids[r / self.replicas_per_master];
            poll(
                self.ready_timeout,
                &format!("port {} to learn about master {master_id}", replica.port()),
                || {
                    let view = cluster_nodes(replica).map_err(|e| e.to_string())?;
                    if view.iter().any(|n| &n.id == master_id && !n.in_handshake()) {
                        Ok(())
                    } else {
                        Err(format!("knows {} nodes", view.len()))
                    }
                },
            )?;
            query::<()>(
                replica,
                redis::cmd("CLUSTER").arg("REPLICATE").arg(master_id),
                "CLUSTER REPLICATE",
            )?;
        }

        // Every node must know the complete, final topology.
        let replicas = total - self.masters;
        poll(
            self.ready_timeout,
            "every node to see the full topology",
            || {
                for node in &self.nodes {
                    let view = cluster_nodes(node).map_err(|e| e.to_string())?;
                    let seen_masters = view.iter().filter(|n| n.is_master()).count();
                    let seen_replicas = view.iter().filter(|n| n.has_flag("slave")).count();
                    if view.len() != total
                        || seen_masters != self.masters
                        || seen_replicas != replicas
                        || view.iter().any(ClusterNode::is_unhealthy)
                    {
                        return Err(format!(
                            "port {} sees {} nodes, {seen_masters} masters, {seen_replicas} replicas",
                            node.port(),
                            view.len()
                        ));
                    }
                }
                Ok(())
            },
        )?;
        self.wait_ok(self.ready_timeout)
    }
}

/// Fails unless `node` is a master or a replica whose master link is up.
fn check_replica_link(node: &RedisServer) -> Result<(), String> {
    let info: String = query(
        node,
        redis::cmd("INFO").arg("replication"),
        "INFO replication",
    )
    .map_err(|e| e.to_string())?;
    if info_field(&info, "role") == Some("slave")
        && info_field(&info, "master_link_status") != Some("up")
    {
        return Err(format!("port {}: master link is not up", node.port()));
    }
    Ok(())
}

/// Polls `check` every few milliseconds until it succeeds or `timeout`
/// elapses; the last failure description ends up in the timeout error.
fn poll(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = match check() {
            Ok(()) => return Ok(()),
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(TestkitError::Timeout {
                what: format!("{what} (last state: {state})"),
                waited: timeout,
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

fn query<T: redis::FromRedisValue>(node: &RedisServer, cmd: &redis::Cmd, what: &str) -> Result<T> {
    let mut con = node.connection()?;
    cmd.query(&mut con)
        .map_err(|e| TestkitError::redis(format!("{what} on port {}", node.port()), e))
}

/// The first element of `ROLE`: `master`, `slave` or `sentinel`.
fn role(node: &RedisServer) -> Result<String> {
    let reply: Vec<redis::Value> = query(node, &redis::cmd("ROLE"), "ROLE")?;
    match reply.first() {
        Some(redis::Value::BulkString(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Some(redis::Value::SimpleString(s)) => Ok(s.clone()),
        other => Err(TestkitError::Cluster(format!(
            "unexpected ROLE reply from port {}: {other:?}",
            node.port()
        ))),
    }
}

fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterNode {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The id of the node's master, `-` for masters.
    master: String,
    slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    fn in_handshake(&self) -> bool {
        self.has_flag("handshake")
    }

    fn is_unhealthy(&self) -> bool {
        ["handshake", "noaddr", "fail", "fail?"]
            .iter()
            .any(|f| self.has_flag(f))
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

fn cluster_nodes(node: &RedisServer) -> Result<Vec<ClusterNode>> {
    let text: String = query(node, redis::cmd("CLUSTER").arg("NODES"), "CLUSTER NODES")?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            parse_node_line(line).ok_or_else(|| {
                TestkitError::Cluster(format!("unparsable CLUSTER NODES line: {line:?}"))
            })
        })
        .collect()
}

/// Parses `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong>
/// <epoch> <link> <slot>...`.
fn parse_node_line(line: &str) -> Option<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let address = fields.get(1)?.split(['@', ',']).next()?;
    let port = address.rsplit_once(':')?.1.parse().ok()?;
    let slots = fields
        .get(8..)
        .unwrap_or_default()
        .iter()
        // `[slot->-id]` / `[slot-<-id]` entries are migrations, not ownership.
        .filter(|s| !s.starts_with('['))
        .map(|s| match s.split_once('-') {
            Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
            None => s.parse().ok().map(|slot| (slot, slot)),
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ClusterNode {
        id: (*fields.first()?).to_owned(),
        port,
        flags: fields.get(2)?.split(',').map(str::to_owned).collect(),
        master: (*fields.get(3)?).to_owned(),
        slots,
    })
}

/// What every node of a converged cluster agrees on.
#[derive(Debug, PartialEq, Eq)]
struct Topology {
    /// Slot ranges and the port of the master serving them.
    slots: BTreeMap<(u16, u16), u16>,
    /// Each node's port, whether it is a master, and its master's id.
    roles: BTreeMap<u16, (bool, String)>,
}

impl Topology {
    fn of(view: &[ClusterNode]) -> Self {
        Self {
            slots: view
                .iter()
                .filter(|n| n.is_master())
                .flat_map(|n| n.slots.iter().map(move |&range| (range, n.port)))
                .collect(),
            roles: view
                .iter()
                .map(|n| (n.port, (n.is_master(), n.master.clone())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slot_matches_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn parses_cluster_nodes_lines() {
        let line = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host \
                    slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected";
        let node = parse_node_line(line).expect("replica line");
        assert_eq!(node.port, 30004);
        assert!(node.has_flag("slave") && !node.is_master());
        assert_eq!(node.master, "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca");
        assert!(node.slots.is_empty());

        let line = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 \
                    myself,master - 0 0 1 connected 0-5460 5462 [5461->-abc]";
        let node = parse_node_line(line).expect("master line");
        assert!(node.is_master());
        assert_eq!(node.slots, vec![(0, 5460), (5462, 5462)]);
        assert!(node.serves(0) && node.serves(5462) && !node.serves(5461));
    }
}
