//! Faults both harnesses inject the same way: on the run's Redis (a kill and restart, a
//! proxy mode, a cluster failover or master kill) and SIGSTOP/SIGCONT of a probe slot.

use std::time::Duration;

use rivulet_testkit::ProxyMode;

use super::procs::{self, SharedConsumers};
use super::{SharedEnv, blocking, live, lock_env};
use crate::checker::{FaultKind, FaultRecord};
use crate::probe::now_ms;
use crate::scenarios::Fault;

/// Injects a fault on the run's Redis rather than on a probe: a SIGKILL and restart, a
/// proxy mode for a while, a `CLUSTER FAILOVER` or a SIGKILL of the master owning `key`
/// (restarted as a replica after `down_ms`). Returns the fault's record (`None` for the
/// proxy going back to pass); any other fault is an error.
pub(crate) async fn redis_fault(
    env: &SharedEnv,
    fault: Fault,
    key: &str,
) -> Result<Option<FaultRecord>, String> {
    let t = now_ms();
    let done = |kind, t, pid, detail| {
        Ok(Some(FaultRecord {
            t,
            t_end: now_ms(),
            kind,
            pid,
            detail,
        }))
    };
    match fault {
        Fault::KillRedis { down_ms } => {
            let e = env.clone();
            let pid = blocking(move || lock_env(&e).kill_redis()).await??;
            tokio::time::sleep(Duration::from_millis(down_ms)).await;
            let e = env.clone();
            blocking(move || lock_env(&e).restart_redis()).await??;
            let detail = format!("SIGKILL redis-server pid {pid}, restarted after {down_ms} ms");
            done(FaultKind::RedisKill, t, Some(pid), detail)
        }
        Fault::Proxy { mode, for_ms } => {
            let e = env.clone();
            blocking(move || lock_env(&e).set_proxy(mode)).await??;
            tokio::time::sleep(Duration::from_millis(for_ms)).await;
            if mode == ProxyMode::Pass {
                return Ok(None);
            }
            done(
                FaultKind::Proxy,
                t,
                None,
                format!("proxy {mode:?} {for_ms} ms"),
            )
        }
        Fault::ClusterFailover => {
            let (e, key) = (env.clone(), key.to_owned());
            let detail = blocking(move || lock_env(&e).cluster_failover(&key)).await??;
            done(
                FaultKind::ClusterFailover,
                t,
                None,
                format!("CLUSTER FAILOVER: {detail}"),
            )
        }
        Fault::ClusterKillMaster { down_ms } => {
            let (e, key) = (env.clone(), key.to_owned());
            let (node, pid) = blocking(move || lock_env(&e).cluster_kill_owner(&key)).await??;
            let t_killed = now_ms();
            tokio::time::sleep(Duration::from_millis(down_ms)).await;
            let e = env.clone();
            blocking(move || lock_env(&e).cluster_restart_down()).await??;
            let detail = format!("SIGKILL master node {node} pid {pid}, restarted as replica");
            done(FaultKind::ClusterKillMaster, t_killed, Some(pid), detail)
        }
        other => Err(format!("not a fault of Redis: {other:?}")),
    }
}

/// SIGSTOPs slot `slot`'s process (or the next live slot's) for `for_ms`, then SIGCONTs
/// it; returns the slot and the pid, `None` when no slot has a live process.
pub(crate) async fn pause_slot<C: procs::SlotConfig>(
    c: &SharedConsumers<C>,
    slot: usize,
    for_ms: u64,
) -> Result<Option<(usize, u32)>, String> {
    let (slot, pid) = {
        let mut g = procs::lock(c);
        let Some(slot) = live(&g, slot) else {
            return Ok(None);
        };
        (slot, g.stop(slot)?)
    };
    tokio::time::sleep(Duration::from_millis(for_ms)).await;
    procs::lock(c).resume(slot)?;
    Ok(Some((slot, pid)))
}
