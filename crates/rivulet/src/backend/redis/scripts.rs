//! The Lua scripts, one per file under `lua/`. Every script touches only the keys it
//! receives, all in one slot, and does work bounded by its arguments.
//!
//! Scripts run with EVALSHA; when the server does not know a script (after a restart or
//! `SCRIPT FLUSH`) it is loaded and the call repeated ([`redis::Script`] does this, and
//! [`super::conn`] does the same for scripts sent in a pipeline).

use std::sync::LazyLock;

use redis::Script;

/// Every script of the backend.
pub(crate) struct Scripts {
    pub(crate) retry_later: Script,
    pub(crate) settle_append: Script,
    pub(crate) move_retries: Script,
    pub(crate) reclaim: Script,
    pub(crate) hand_back: Script,
    pub(crate) hand_back_orphans: Script,
    pub(crate) publish_dedup: Script,
    pub(crate) replay: Script,
    pub(crate) destroy_group: Script,
    pub(crate) ensure_group: Script,
    pub(crate) keep_alive: Script,
    pub(crate) retry_dead_letter: Script,
    pub(crate) trim: Script,
    pub(crate) claim: Script,
    pub(crate) release: Script,
    pub(crate) renew: Script,
    pub(crate) delete_consumer: Script,
    /// The scripts of the job queues (`lua/jobs_*.lua`, each with `lua/jobs_lib.lua`,
    /// `lua/jobs_limits_lib.lua` and `lua/jobs_flow_lib.lua` in front).
    pub(crate) jobs: JobScripts,
}

/// The scripts of the job queues, one per transition.
pub(crate) struct JobScripts {
    pub(crate) add: Script,
    pub(crate) fetch: Script,
    pub(crate) settle: Script,
    pub(crate) renew: Script,
    pub(crate) stalled: Script,
    pub(crate) cancel: Script,
    pub(crate) remove: Script,
    pub(crate) requeue: Script,
    pub(crate) resume: Script,
    pub(crate) progress: Script,
    pub(crate) log: Script,
    pub(crate) list: Script,
    /// Flows (`lua/jobs_flow_*.lua`).
    pub(crate) flow_add: Script,
    pub(crate) flow_take: Script,
    pub(crate) flow_apply: Script,
    pub(crate) flow_ack: Script,
    pub(crate) group: Script,
    pub(crate) groups: Script,
}

/// A job script: the shared library and its flow part, then the script's own body.
macro_rules! job_script {
    ($($file:literal),+) => {
        Script::new(concat!(
            include_str!("lua/jobs_lib.lua"),
            "\n",
            include_str!("lua/jobs_limits_lib.lua"),
            "\n",
            include_str!("lua/jobs_flow_lib.lua"),
            $("\n", include_str!(concat!("lua/", $file))),+
        ))
    };
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    retry_later: Script::new(include_str!("lua/retry_later.lua")),
    settle_append: Script::new(include_str!("lua/settle_append.lua")),
    move_retries: Script::new(include_str!("lua/move_retries.lua")),
    reclaim: Script::new(include_str!("lua/reclaim.lua")),
    hand_back: Script::new(include_str!("lua/hand_back.lua")),
    hand_back_orphans: Script::new(include_str!("lua/hand_back_orphans.lua")),
    publish_dedup: Script::new(include_str!("lua/publish_dedup.lua")),
    replay: Script::new(include_str!("lua/replay.lua")),
    destroy_group: Script::new(include_str!("lua/destroy_group.lua")),
    ensure_group: Script::new(include_str!("lua/ensure_group.lua")),
    keep_alive: Script::new(include_str!("lua/keep_alive.lua")),
    retry_dead_letter: Script::new(include_str!("lua/retry_dead_letter.lua")),
    trim: Script::new(include_str!("lua/trim.lua")),
    claim: Script::new(include_str!("lua/claim.lua")),
    release: Script::new(include_str!("lua/release.lua")),
    renew: Script::new(include_str!("lua/renew.lua")),
    delete_consumer: Script::new(include_str!("lua/delete_consumer.lua")),
    jobs: JobScripts {
        add: job_script!("jobs_add.lua"),
        fetch: job_script!("jobs_fetch.lua"),
        settle: job_script!("jobs_settle.lua"),
        renew: job_script!("jobs_renew.lua"),
        stalled: job_script!("jobs_stalled.lua"),
        cancel: job_script!("jobs_cancel.lua"),
        remove: job_script!("jobs_remove.lua"),
        requeue: job_script!("jobs_requeue.lua"),
        resume: job_script!("jobs_resume.lua"),
        progress: job_script!("jobs_progress.lua"),
        log: job_script!("jobs_log.lua"),
        list: job_script!("jobs_list.lua"),
        flow_add: job_script!(
            "jobs_flow_add_head.lua",
            "jobs_add.lua",
            "jobs_flow_add.lua"
        ),
        flow_take: job_script!("jobs_flow_take.lua"),
        flow_apply: job_script!("jobs_flow_apply.lua"),
        flow_ack: job_script!("jobs_flow_ack.lua"),
        group: job_script!("jobs_group.lua"),
        groups: job_script!("jobs_groups.lua"),
    },
});
