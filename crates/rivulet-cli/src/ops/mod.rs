//! The operations commands (O-CLI-1): each reads and acts through the library's admin
//! API ([`rivulet::admin::Admin`]) and prints a table for people or, with `--json`, one
//! JSON document on stdout. Field names of the JSON documents are listed in
//! `docs/operations.md`.

mod dead_letters;
mod jobs;
pub(crate) mod render;
mod topics;

use clap::{Args, Subcommand};
use rivulet::admin::Admin;
use rivulet::{RedisBackend, RedisBackendBuilder};
use serde_json::{Value, json};

pub(crate) use self::dead_letters::DeadLettersCommand;
pub(crate) use self::jobs::{JobsCommand, QueueCommand};
pub(crate) use self::topics::{ConsumerCommand, GroupCommand, TopicCommand};
use crate::error::{CliError, EXIT_NEEDS_YES};

/// The flags every operations command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Globals {
    /// The Redis to inspect: `redis://[user:password@]host[:port][/db]`, `rediss://`
    /// for TLS, `redis+sentinel://…`; comma-separated seed URLs with `--cluster`.
    #[arg(
        long,
        global = true,
        env = "RIVULET_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) redis: Option<String>,
    /// The URL(s) are seeds of a Redis Cluster.
    #[arg(long, global = true)]
    pub(crate) cluster: bool,
    /// The key prefix the application uses (default `rivulet`).
    #[arg(long, global = true, value_name = "P")]
    pub(crate) prefix: Option<String>,
    /// Print one JSON document on stdout instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// The operations commands.
#[derive(Debug, Subcommand)]
pub(crate) enum OpsCommand {
    /// List topics with their length, groups, lag, pending and dead letters.
    Topics {
        /// Skip this many topics (by name).
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Show at most this many topics.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One topic in detail.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// The pending entries of a group (delivered, not yet settled).
    Pending {
        /// The topic.
        topic: String,
        /// The group.
        #[arg(long)]
        group: String,
        /// Show at most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after a previous page (its `next`).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// List, show, replay and purge a topic's dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Apply retention to a topic now (safe mode unless --unsafe); --dry-run says what
    /// would go.
    Trim {
        /// The topic.
        topic: String,
        /// Keep about this many entries.
        #[arg(long)]
        max_len: Option<u64>,
        /// Remove entries older than this (e.g. 7d).
        #[arg(long, value_parser = render::parse_duration)]
        max_age: Option<std::time::Duration>,
        /// Also remove entries some group has not handled yet.
        #[arg(long = "unsafe")]
        unsafe_mode: bool,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Really trim.
        #[arg(long)]
        yes: bool,
    },
    /// Delete a group.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Delete a consumer (its pending entries are handed back to its group first).
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// List queues with their counts per state.
    Queues,
    /// List, show, retry, cancel, promote and remove jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Pause or resume a queue or one job name.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// A queue's job schedulers: schedule, next and last run, the last job added.
    Schedulers {
        /// The queue.
        queue: String,
    },
    /// A queue's job groups (tenants) with waiting or active jobs, or paused.
    Groups {
        /// The queue.
        queue: String,
        /// Continue after this group (the last of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Show at most this many (up to 1,000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// The context of one command: the admin API and how to print.
pub(crate) struct Ctx {
    pub(crate) admin: Admin,
    pub(crate) json: bool,
}

impl Ctx {
    /// Prints a JSON document (with `--json`) or the human text.
    #[allow(clippy::needless_pass_by_value)] // callers build the document in the call
    pub(crate) fn print(&self, doc: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{doc}");
        } else {
            print!("{}", human());
        }
    }

    /// The answer to destructive work asked for without `--yes`: says what it would do
    /// (on stdout; as `{"dry_run": true, "would": …}` with `--json`) and exits 3.
    #[allow(clippy::needless_pass_by_value)] // callers build both in the call
    pub(crate) fn needs_yes(&self, would: Value, human: String) -> Result<(), CliError> {
        self.print(json!({"dry_run": true, "would": would}), || {
            format!("{human}\nNothing was done: pass --yes to do it.\n")
        });
        Err(CliError::needs_yes())
    }
}

impl CliError {
    /// Destructive work without `--yes` (the message was printed already).
    pub(crate) fn needs_yes() -> Self {
        CliError::silent(EXIT_NEEDS_YES)
    }
}

/// Connects to the Redis of `--redis`, with `--prefix`.
async fn connect(g: &Globals) -> Result<Admin, CliError> {
    Ok(Admin::new(backend(g).await?))
}

/// The backend of `--redis` (`--cluster`), with `--prefix`.
pub(crate) async fn backend(g: &Globals) -> Result<RedisBackend, CliError> {
    let Some(url) = g.redis.as_deref() else {
        return Err(CliError::usage(
            "no Redis given: pass --redis URL or set RIVULET_REDIS_URL",
        ));
    };
    let mut builder = if g.cluster {
        let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
        RedisBackendBuilder::cluster(&seeds)
    } else {
        RedisBackend::builder(url)
    };
    if let Some(p) = &g.prefix {
        builder = builder.prefix(p.clone());
    }
    // The library's errors name the URL redacted.
    Ok(builder.build().await?)
}

/// Runs one operations command.
pub(crate) async fn run(g: Globals, command: OpsCommand) -> Result<(), CliError> {
    let url = g.redis.clone().unwrap_or_default();
    let result = run_on(g, command).await;
    if url.is_empty() {
        return result;
    }
    result.map_err(|e| e.scrub(&url))
}

async fn run_on(g: Globals, command: OpsCommand) -> Result<(), CliError> {
    let ctx = Ctx {
        admin: connect(&g).await?,
        json: g.json,
    };
    match command {
        OpsCommand::Topics { offset, limit } => topics::list(&ctx, offset, limit).await,
        OpsCommand::Topic(c) => topics::topic(&ctx, c).await,
        OpsCommand::Pending {
            topic,
            group,
            limit,
            cursor,
        } => topics::pending(&ctx, &topic, &group, limit, cursor.as_deref()).await,
        OpsCommand::DeadLetters(c) => dead_letters::run(&ctx, c).await,
        OpsCommand::Trim {
            topic,
            max_len,
            max_age,
            unsafe_mode,
            dry_run,
            yes,
        } => topics::trim(&ctx, &topic, max_len, max_age, !unsafe_mode, dry_run, yes).await,
        OpsCommand::Group(c) => topics::group(&ctx, c).await,
        OpsCommand::Consumer(c) => topics::consumer(&ctx, c).await,
        OpsCommand::Queues => jobs::queues(&ctx).await,
        OpsCommand::Jobs(c) => jobs::run(&ctx, c).await,
        OpsCommand::Queue(c) => jobs::queue(&ctx, c).await,
        OpsCommand::Schedulers { queue } => jobs::schedulers(&ctx, &queue).await,
        OpsCommand::Groups {
            queue,
            after,
            limit,
        } => jobs::groups(&ctx, &queue, after.as_deref(), limit).await,
    }
}
