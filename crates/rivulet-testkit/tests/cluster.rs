//! Redis Cluster setup, routing, failover and node restarts.

use std::collections::BTreeMap;

use rivulet_testkit::{RedisCluster, RedisServer, key_slot};

/// One `{kN}` key per master, keyed by the owning node's port.
fn key_per_master(cluster: &RedisCluster) -> BTreeMap<u16, String> {
    let masters = cluster.master_indices().expect("master indices").len();
    let mut keys = BTreeMap::new();
    for i in 0.. {
        let key = format!("{{k{i}}}");
        let owner = cluster
            .node_for_slot(key_slot(key.as_bytes()))
            .expect("slot owner");
        keys.entry(owner.port()).or_insert(key);
        if keys.len() == masters {
            break;
        }
    }
    keys
}

fn get_direct(node: &RedisServer, key: &str) -> Option<String> {
    let mut con = node.connection().expect("connect to node");
    redis::cmd("GET").arg(key).query(&mut con).expect("GET")
}

#[test]
fn three_masters_serve_every_slot_range_and_survive_a_restart() {
    let mut cluster = RedisCluster::start(3).expect("start cluster");
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.urls().len(), 3);
    assert_eq!(cluster.master_urls().expect("master urls").len(), 3);

    let keys = key_per_master(&cluster);
    assert_eq!(keys.len(), 3);
    let client = cluster.client().expect("cluster client");
    let mut con = client.get_connection().expect("cluster connection");
    for key in keys.values() {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut cluster.nodes()[0].connection().expect("connect"))
            .expect("CLUSTER KEYSLOT");
        assert_eq!(slot, key_slot(key.as_bytes()));
        redis::cmd("SET")
            .arg(key)
            .arg(format!("value of {key}"))
            .exec(&mut con)
            .expect("SET through the cluster client");
    }
    for (port, key) in &keys {
        let value: String = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
        assert_eq!(value, format!("value of {key}"));
        let owner = cluster
            .nodes()
            .iter()
            .find(|n| n.port() == *port)
            .expect("owner node");
        assert_eq!(get_direct(owner, key), Some(value), "stored on its owner");
    }

    // A master killed and restarted before anyone notices rejoins with its
    // data and its nodes.conf.
    cluster.kill_node(0).expect("kill node 0");
    assert!(!cluster.nodes()[0].is_running());
    cluster.restart_node(0).expect("restart node 0");
    let mut con = cluster
        .client()
        .expect("cluster client")
        .get_connection()
        .expect("cluster connection");
    for key in keys.values() {
        let value: String = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
        assert_eq!(value, format!("value of {key}"));
    }
}

#[test]
fn failover_promotes_a_replica() {
    let cluster = RedisCluster::builder()
        .masters(3)
        .replicas_per_master(1)
        .start()
        .expect("start cluster");
    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.master_indices().expect("masters"), vec![0, 1, 2]);
    assert_eq!(cluster.replica_indices().expect("replicas"), vec![3, 4, 5]);

    let key = key_per_master(&cluster)
        .remove(&cluster.nodes()[0].port())
        .expect("a key on node 0");
    let client = cluster.client().expect("cluster client");
    let mut con = client.get_connection().expect("cluster connection");
    redis::cmd("SET")
        .arg(&key)
        .arg("before failover")
        .exec(&mut con)
        .expect("SET");

    // Node 3 replicates node 0.
    cluster.failover(3).expect("failover");

    assert_eq!(cluster.replica_indices().expect("replicas"), vec![0, 4, 5]);
    let owner = cluster
        .node_for_slot(key_slot(key.as_bytes()))
        .expect("slot owner");
    assert_eq!(owner.port(), cluster.nodes()[3].port());
    assert_eq!(get_direct(owner, &key).as_deref(), Some("before failover"));
    let mut con = client.get_connection().expect("cluster connection");
    let value: String = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
    assert_eq!(value, "before failover");
    assert!(cluster.failover(2).is_err(), "node 2 is a master");
}
