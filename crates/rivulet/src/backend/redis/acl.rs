//! The minimal ACL rules of a Redis user that runs rivulet (R-3, issue 14 item 3).

use super::RedisBackend;

/// Commands rivulet sends, directly or from its Lua scripts (Redis checks a script's
/// calls against the user too). Sorted by use; `docs/operations.md` explains each group.
const COMMANDS: &[&str] = &[
    // connection set-up and health
    "+ping",
    "+hello",
    "+auth",
    "+select",
    "+role",
    // streams: topics, retry lanes, dead letters
    "+xadd",
    "+xreadgroup",
    "+xack",
    "+xgroup",
    "+xinfo|groups",
    "+xinfo|consumers",
    "+xlen",
    "+xpending",
    "+xrange",
    "+xdel",
    "+xtrim",
    "+xautoclaim",
    "+xclaim",
    // registries, markers, heartbeats, idempotency keys, retry schedules
    "+get",
    "+set",
    "+del",
    "+exists",
    "+type",
    "+pexpire",
    "+hget",
    "+hdel",
    "+hincrby",
    "+sadd",
    "+srem",
    "+smembers",
    "+sismember",
    "+zadd",
    "+zrem",
    "+zrange",
    "+zrangebyscore",
    "+zcard",
    "+zscore",
    // scripts, durable publish
    "+evalsha",
    "+eval",
    "+script|load",
    "+wait",
    // live channels
    "+publish",
    "+psubscribe",
    "+punsubscribe",
    // job queues: records, places, markers, logs, events, cancel hints
    "+hset",
    "+hmget",
    "+hgetall",
    "+scard",
    "+zpopmin",
    "+zremrangebyscore",
    "+zrank",
    "+lpush",
    "+rpush",
    "+ltrim",
    "+lrange",
    "+lpop",
    "+blpop",
    "+xread",
    "+time",
    "+subscribe",
    "+unsubscribe",
    // Redis Cluster: finding the node of a slot
    "+cluster|slots",
    "+cluster|keyslot",
];

impl RedisBackend {
    /// The ACL rules (for `ACL SETUSER <user> on >password <rules…>`, or an ACL file)
    /// that let a user run rivulet with key prefix `prefix` and nothing else: its keys
    /// only (`~<prefix>/*` and the hash-tagged `~{<prefix>/*`, which also cover the job
    /// queues' `{<prefix>/queue/…}` and `<prefix>/queues` keys), and only the commands
    /// rivulet sends.
    ///
    /// Channels: rivulet's own (the job queues' cancel hints, `<prefix>/queue/<q>/cancel`)
    /// are covered by `&<prefix>/*`. Live channel names are yours, not prefixed: add
    /// `&<pattern>` rules for the channels you publish to, and note that Redis checks
    /// a pattern subscription **literally** against them (subscribing to `orders.*` needs
    /// `&orders.*` itself); `allchannels` when channels carry nothing sensitive.
    ///
    /// ```
    /// let rules = rivulet::RedisBackend::acl_rules("myapp");
    /// assert!(rules.contains(&"~myapp/*".to_owned()));
    /// assert!(rules.contains(&"~{myapp/*".to_owned()));
    /// ```
    pub fn acl_rules(prefix: &str) -> Vec<String> {
        let mut rules = vec![
            "resetkeys".to_owned(),
            format!("~{prefix}/*"),
            format!("~{{{prefix}/*"),
            "resetchannels".to_owned(),
            format!("&{prefix}/*"),
            "-@all".to_owned(),
        ];
        rules.extend(COMMANDS.iter().map(|c| (*c).to_owned()));
        rules
    }
}
