//! Probe processes: spawning them from this executable, signalling them by pid, and a
//! supervisor that restarts consumers that died (as an orchestrator would).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::probe::consumer::ConsumerConfig;
use crate::probe::publisher::PublisherConfig;
use crate::probe::read_lines;

/// The configuration of a supervised probe process (a bus consumer or a job worker):
/// which hidden subcommand runs it and how each process of a slot gets its own name and
/// log.
pub(crate) trait SlotConfig: Clone + serde::Serialize {
    /// The subcommand of this executable that runs it.
    const SUBCOMMAND: &'static str;
    /// The configuration of one process: `name` unique per slot and generation.
    fn for_process(&self, name: String, log: PathBuf) -> Self;
    /// The base name processes of a slot derive theirs from.
    fn base_name(&self) -> &str;
}

impl SlotConfig for ConsumerConfig {
    const SUBCOMMAND: &'static str = "consumer";

    fn for_process(&self, name: String, log: PathBuf) -> Self {
        let mut cfg = self.clone();
        cfg.consumer_name = name;
        cfg.log = log;
        cfg
    }

    fn base_name(&self) -> &str {
        &self.consumer_name
    }
}

/// The event every probe log line carries, to find its `ready` line without knowing
/// the probe.
#[derive(serde::Deserialize)]
struct AnyEvent {
    ev: String,
}

/// Sends a signal with `kill(1)` (the workspace forbids `unsafe`, so no `libc::kill`).
pub(crate) fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("kill -{sig} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{sig} {pid}: {status}"))
    }
}

/// Spawns `<this exe> <subcommand> --config <file>` with stderr to `<stem>.stderr`.
///
/// Probes run with `RUST_BACKTRACE=1` whatever the caller's environment, as on these
/// machines and in much of production: in a debug build, capturing a backtrace for each
/// planned panic holds a runtime thread for up to a second, the case the keep-alive's own
/// thread exists for (B-REC-2). Fixing it makes every run face the harder case.
fn spawn_probe(exe: &Path, sub: &str, config: &Path, stderr: &Path) -> Result<Child, String> {
    let err = File::create(stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
    Command::new(exe)
        .arg(sub)
        .arg("--config")
        .arg(config)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn {sub}: {e}"))
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| format!("encode: {e}"))?;
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A running publisher process.
#[derive(Debug)]
pub(crate) struct PublisherProc {
    child: Child,
}

impl PublisherProc {
    pub(crate) fn spawn(
        exe: &Path,
        dir: &Path,
        name: &str,
        cfg: &PublisherConfig,
    ) -> Result<Self, String> {
        Self::spawn_as(exe, dir, "publisher", name, cfg)
    }

    /// Spawns the probe `sub` (any probe that runs to its end: the publisher, a job
    /// adder) with `cfg` written to `<name>.json`.
    pub(crate) fn spawn_as<T: serde::Serialize>(
        exe: &Path,
        dir: &Path,
        sub: &str,
        name: &str,
        cfg: &T,
    ) -> Result<Self, String> {
        let config = dir.join(format!("{name}.json"));
        write_json(&config, cfg)?;
        let child = spawn_probe(exe, sub, &config, &dir.join(format!("{name}.stderr")))?;
        Ok(PublisherProc { child })
    }

    /// Waits (polling, so the async caller can run this on a blocking thread) up to
    /// `limit` for the publisher to finish; kills it after that.
    pub(crate) fn wait(mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("publisher exited with {status}")),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("publisher still running after {limit:?}; killed"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("publisher wait: {e}")),
            }
        }
    }
}

/// One consumer position: it is restarted (a new generation, a new consumer name and
/// log) whenever its process dies, unless the run is shutting down.
#[derive(Debug)]
struct Slot<C> {
    base: C,
    generation: u32,
    child: Option<Child>,
    pid: Option<u32>,
    /// When the current process was seen dead; respawned `respawn` later.
    died: Option<Instant>,
    stopped: bool,
    /// Stopped for good (its group was removed): never restarted.
    retired: bool,
    logs: Vec<PathBuf>,
}

/// Every consumer (or job worker) process of a run.
#[derive(Debug)]
pub(crate) struct Consumers<C: SlotConfig = ConsumerConfig> {
    exe: PathBuf,
    dir: PathBuf,
    respawn: Duration,
    slots: Vec<Slot<C>>,
    /// Set at the end of the run: no more restarts.
    closing: bool,
}

/// A shared handle on the run's consumers.
pub(crate) type SharedConsumers<C = ConsumerConfig> = Arc<Mutex<Consumers<C>>>;

pub(crate) fn lock<C: SlotConfig>(c: &SharedConsumers<C>) -> MutexGuard<'_, Consumers<C>> {
    match c.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl<C: SlotConfig> Consumers<C> {
    pub(crate) fn new(exe: PathBuf, dir: PathBuf, respawn: Duration, configs: Vec<C>) -> Self {
        Consumers {
            exe,
            dir,
            respawn,
            slots: configs
                .into_iter()
                .map(|base| Slot {
                    base,
                    generation: 0,
                    child: None,
                    pid: None,
                    died: None,
                    stopped: false,
                    retired: false,
                    logs: Vec::new(),
                })
                .collect(),
            closing: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn spawn_slot(&mut self, i: usize) -> Result<(), String> {
        let (exe, dir) = (self.exe.clone(), self.dir.clone());
        let slot = &mut self.slots[i];
        slot.generation += 1;
        let stem = format!("{}-{i}-{}", C::SUBCOMMAND, slot.generation);
        let log = dir.join(format!("{stem}.jsonl"));
        let name = format!("{}-s{i}-g{}", slot.base.base_name(), slot.generation);
        let cfg = slot.base.for_process(name, log.clone());
        write_json(&dir.join(format!("{stem}.json")), &cfg)?;
        let child = spawn_probe(
            &exe,
            C::SUBCOMMAND,
            &dir.join(format!("{stem}.json")),
            &dir.join(format!("{stem}.stderr")),
        )?;
        slot.pid = Some(child.id());
        slot.child = Some(child);
        slot.died = None;
        slot.stopped = false;
        slot.logs.push(log);
        Ok(())
    }

    /// Starts every slot's first process.
    pub(crate) fn spawn_all(&mut self) -> Result<(), String> {
        for i in 0..self.slots.len() {
            self.spawn_slot(i)?;
        }
        Ok(())
    }

    /// Whether the current process of every slot logged `ready`.
    pub(crate) fn all_ready(&self) -> bool {
        self.slots.iter().all(|s| {
            s.logs.last().is_some_and(|log| {
                read_lines::<AnyEvent>(log)
                    .map(|evs| evs.iter().any(|e| e.ev == "ready"))
                    .unwrap_or(false)
            })
        })
    }

    /// Reaps dead processes and restarts them after the respawn delay. Returns the pids
    /// that were found dead.
    pub(crate) fn supervise(&mut self) -> Vec<u32> {
        let mut dead = Vec::new();
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if let Some(child) = slot.child.as_mut()
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                slot.child = None;
                slot.died = Some(now);
                if let Some(pid) = slot.pid.take() {
                    dead.push(pid);
                }
            }
            let due = slot.child.is_none()
                && slot
                    .died
                    .is_some_and(|d| now.duration_since(d) >= self.respawn);
            if due
                && !self.closing
                && !slot.retired
                && let Err(e) = self.spawn_slot(i)
            {
                eprintln!("rivulet-chaos: respawning consumer {i}: {e}");
            }
        }
        dead
    }

    /// The pid of slot `i`'s live process.
    pub(crate) fn pid(&self, i: usize) -> Option<u32> {
        self.slots
            .get(i)
            .and_then(|s| s.child.as_ref().map(Child::id))
    }

    /// Slots with a live, running (not stopped, not retired) process.
    pub(crate) fn live_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.child.is_some() && !s.stopped && !s.retired
            })
            .collect()
    }

    /// Stops slot `i` for good: SIGTERM (it drains and exits) and no restart. Returns
    /// the pid, if it had a process.
    pub(crate) fn retire(&mut self, i: usize) -> Result<Option<u32>, String> {
        let slot = self.slots.get_mut(i).ok_or("no such slot")?;
        slot.retired = true;
        match slot.child.as_ref().map(Child::id) {
            Some(pid) => {
                if slot.stopped {
                    signal(pid, "CONT")?;
                    slot.stopped = false;
                }
                signal(pid, "TERM")?;
                Ok(Some(pid))
            }
            None => Ok(None),
        }
    }

    /// Whether slot `i` still has a process (the supervisor reaps exited ones).
    pub(crate) fn has_process(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.child.is_some())
    }

    /// SIGKILLs slot `i`; returns the pid.
    pub(crate) fn kill(&mut self, i: usize) -> Result<u32, String> {
        let slot = self.slots.get_mut(i).ok_or("no such slot")?;
        let mut child = slot.child.take().ok_or("slot has no process")?;
        let pid = child.id();
        child.kill().map_err(|e| format!("kill {pid}: {e}"))?;
        let _ = child.wait();
        slot.pid = None;
        slot.died = Some(Instant::now());
        slot.stopped = false;
        Ok(pid)
    }

    /// Sends SIGTERM to slot `i` (it drains and exits; the supervisor restarts it).
    pub(crate) fn term(&mut self, i: usize) -> Result<u32, String> {
        let pid = self.pid(i).ok_or("slot has no process")?;
        signal(pid, "TERM")?;
        Ok(pid)
    }

    /// SIGSTOPs slot `i`.
    pub(crate) fn stop(&mut self, i: usize) -> Result<u32, String> {
        let pid = self.pid(i).ok_or("slot has no process")?;
        signal(pid, "STOP")?;
        self.slots[i].stopped = true;
        Ok(pid)
    }

    /// SIGCONTs slot `i` if it is stopped.
    pub(crate) fn resume(&mut self, i: usize) -> Result<(), String> {
        if let Some(pid) = self.pid(i)
            && self.slots[i].stopped
        {
            signal(pid, "CONT")?;
        }
        self.slots[i].stopped = false;
        Ok(())
    }

    /// Resumes every stopped process and restarts every dead one now.
    pub(crate) fn heal(&mut self) -> Result<(), String> {
        for i in 0..self.slots.len() {
            self.resume(i)?;
            if self.slots[i].child.is_none() && !self.slots[i].retired {
                self.spawn_slot(i)?;
            }
        }
        Ok(())
    }

    /// Ends the run: SIGTERM to everyone, SIGKILL to whoever is still there after
    /// `grace`.
    pub(crate) fn shutdown(&mut self, grace: Duration) {
        self.closing = true;
        for s in &mut self.slots {
            if let Some(pid) = s.child.as_ref().map(Child::id) {
                if s.stopped {
                    let _ = signal(pid, "CONT");
                }
                let _ = signal(pid, "TERM");
            }
        }
        let deadline = Instant::now() + grace;
        for s in &mut self.slots {
            if let Some(mut child) = s.child.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() >= deadline => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        }
    }

    /// Every consumer log of the run.
    pub(crate) fn logs(&self) -> Vec<PathBuf> {
        self.slots
            .iter()
            .flat_map(|s| s.logs.iter().cloned())
            .collect()
    }
}

impl<C: SlotConfig> Drop for Consumers<C> {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if let Some(mut child) = s.child.take() {
                let _ = signal(child.id(), "CONT");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
