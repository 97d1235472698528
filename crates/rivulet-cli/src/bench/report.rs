//! Medians, ratios, targets, and the two output forms (table and JSON).

use std::fmt::Write as _;

use serde_json::json;

/// Every scenario, in report order.
pub(crate) const SCENARIOS: &[&str] = &[
    "e2e",
    "e2e_1k",
    "drain",
    "drain_1k",
    "publish_latency_p50",
    "publish_latency_p99",
    "publish_latency_p50_50subs",
    "handle_latency_p50",
    "handle_latency_p99",
    "retry",
    "redis_cpu_per_msg",
    "memory_per_msg",
    "jobs_add",
    "jobs_process",
    "jobs_e2e",
    "jobs_latency_p50",
    "jobs_latency_p99",
    "jobs_delayed",
    "jobs_backlog_1m",
    "jobs_groups",
    "jobs_redis_cpu",
    "jobs_memory",
    "jobs_retention",
    "jobs_idle",
];

/// What a scenario measures and what it is compared with.
struct Meta {
    unit: &'static str,
    /// What the "raw" column holds.
    baseline: &'static str,
    /// Higher values are better (throughput) or lower (latency, cost).
    higher_is_better: bool,
    /// The target on the ratio rivulet / baseline, if any (on rivulet's own value when
    /// `on_value`).
    target: Option<f64>,
    on_value: bool,
}

fn meta(name: &str) -> Meta {
    let m = |unit, baseline, higher_is_better, target| Meta {
        unit,
        baseline,
        higher_is_better,
        target,
        on_value: false,
    };
    match name {
        "e2e" | "e2e_1k" => m("msg/s", "raw", true, Some(0.50)),
        "drain" | "drain_1k" => m("msg/s", "raw", true, Some(0.60)),
        "publish_latency_p50" => m("µs", "raw", false, Some(1.3)),
        "publish_latency_p99" => m("µs", "raw", false, None),
        "publish_latency_p50_50subs" => m(
            "µs",
            "rivulet without subscriptions (same round)",
            false,
            Some(1.1),
        ),
        "handle_latency_p50" => m("µs", "raw", false, Some(1.5)),
        "handle_latency_p99" => m("µs", "raw", false, Some(2.5)),
        "retry" => m("msg/s", "rivulet e2e (same round)", true, Some(0.8)),
        "redis_cpu_per_msg" => m("µs/msg", "raw", false, None),
        "memory_per_msg" => m("bytes/msg", "raw", false, Some(1.5)),
        "jobs_add" => m(
            "jobs/s",
            "raw pipelined XADD, 100 per batch, 2 connections",
            true,
            Some(0.30),
        ),
        "jobs_process" => m("jobs/s", "raw stream drain (msg/s)", true, Some(0.30)),
        "jobs_e2e" => m("jobs/s", "raw stream e2e (msg/s)", true, Some(0.30)),
        "jobs_latency_p50" => m("µs", "raw stream handle latency", false, Some(2.0)),
        "jobs_latency_p99" => m("µs", "raw stream handle latency", false, Some(3.0)),
        "jobs_delayed" => Meta {
            on_value: true,
            ..m("ms", "raw client timer on a ZSET", false, Some(20.0))
        },
        "jobs_backlog_1m" => m(
            "jobs/s",
            "rivulet jobs_process (same round)",
            true,
            Some(0.9),
        ),
        "jobs_groups" => m(
            "jobs/s",
            "rivulet with 10 job groups (same round)",
            true,
            Some(0.8),
        ),
        "jobs_redis_cpu" => m("µs/job", "raw stream drain (µs/msg)", false, Some(6.0)),
        "jobs_memory" => m("bytes/job", "raw stream entry (bytes)", false, Some(2.5)),
        "jobs_retention" => m(
            "bytes",
            "rivulet after the first 50,000 (same run)",
            false,
            Some(1.1),
        ),
        "jobs_idle" => m("cmd/s", "raw BLPOP loop, same timeout", false, None),
        _ => m("", "raw", true, None),
    }
}

/// One round's pair of values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measure {
    rivulet: f64,
    raw: f64,
}

impl Measure {
    pub(crate) fn pair(rivulet: f64, raw: f64) -> Self {
        Measure { rivulet, raw }
    }
}

/// All rounds of one scenario.
#[derive(Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    rounds: Vec<Measure>,
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Stats {
        median,
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

impl Scenario {
    pub(crate) fn new(name: &str) -> Self {
        let name = SCENARIOS
            .iter()
            .copied()
            .find(|s| *s == name)
            .unwrap_or("unknown");
        Scenario {
            name,
            rounds: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, m: Measure) {
        self.rounds.push(m);
    }

    fn rivulet(&self) -> Stats {
        stats(self.rounds.iter().map(|m| m.rivulet).collect())
    }

    fn raw(&self) -> Stats {
        stats(self.rounds.iter().map(|m| m.raw).collect())
    }

    /// rivulet / baseline, on medians.
    fn ratio(&self) -> f64 {
        self.rivulet().median / self.raw().median
    }

    /// Whether the target is met: `None` when there is none or nothing to judge.
    fn met(&self) -> Option<bool> {
        let meta = meta(self.name);
        let judged = if meta.on_value {
            self.rivulet().median
        } else {
            self.ratio()
        };
        let t = meta.target?;
        if !judged.is_finite() {
            return None;
        }
        Some(if meta.higher_is_better {
            judged >= t
        } else {
            judged <= t
        })
    }

    fn verdict(&self) -> &'static str {
        if !self.ratio().is_finite() && !meta(self.name).on_value {
            return "n/a";
        }
        match self.met() {
            None => "-",
            Some(true) => "met",
            Some(false) => "MISSED",
        }
    }
}

/// The whole run.
#[derive(Debug)]
pub(crate) struct Report {
    scenarios: Vec<Scenario>,
    redis: String,
    url: String,
    messages: usize,
    jobs: usize,
    rounds: usize,
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    pub(crate) fn new(
        scenarios: Vec<Scenario>,
        redis: String,
        url: &str,
        messages: usize,
        jobs: usize,
        rounds: usize,
    ) -> Self {
        Report {
            scenarios,
            redis,
            // Printed in the table and the JSON: never with the password.
            url: crate::redact::redact(url),
            messages,
            jobs,
            rounds,
        }
    }

    fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rivulet bench — redis {} at {}, {} cores, {} messages per throughput run, {} jobs per jobs run, {} round(s); medians (min–max)",
            self.redis,
            self.url,
            Self::cores(),
            self.messages,
            self.jobs,
            self.rounds
        );
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>26} {:>26} {:>7} {:>8} {:>7}",
            "scenario", "unit", "rivulet", "baseline", "ratio", "target", "result"
        );
        for s in &self.scenarios {
            let meta = meta(s.name);
            let cell = |st: Stats| {
                format!(
                    "{} ({}–{})",
                    fmt_num(st.median),
                    fmt_num(st.min),
                    fmt_num(st.max)
                )
            };
            let unit = if meta.on_value { meta.unit } else { "" };
            let target = match meta.target {
                Some(t) if meta.higher_is_better => format!("≥ {t}{unit}"),
                Some(t) => format!("≤ {t}{unit}"),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<28} {:>10} {:>26} {:>26} {:>7} {:>8} {:>7}",
                s.name,
                meta.unit,
                cell(s.rivulet()),
                cell(s.raw()),
                if s.ratio().is_finite() {
                    format!("{:.2}", s.ratio())
                } else {
                    "n/a".into()
                },
                target,
                s.verdict()
            );
        }
        let _ = writeln!(
            out,
            "baseline = raw redis-crate code, except retry (rivulet e2e), publish_latency_p50_50subs (rivulet without subscriptions), jobs_backlog_1m (jobs_process), jobs_groups (10 groups) and jobs_retention (after the first jobs), all from the same round; the jobs_delayed target is on rivulet's value"
        );
        out
    }

    pub(crate) fn json(&self) -> String {
        let scenarios: Vec<_> = self
            .scenarios
            .iter()
            .map(|s| {
                let meta = meta(s.name);
                let (v, r) = (s.rivulet(), s.raw());
                json!({
                    "name": s.name,
                    "unit": meta.unit,
                    "rivulet": v.median,
                    "raw": r.median,
                    "ratio": s.ratio(),
                    "baseline": meta.baseline,
                    "rivulet_min": v.min,
                    "rivulet_max": v.max,
                    "raw_min": r.min,
                    "raw_max": r.max,
                    "target": meta.target,
                    "target_on": if meta.on_value { "rivulet" } else { "ratio" },
                    "higher_is_better": meta.higher_is_better,
                    "met": s.met(),
                    "result": s.verdict(),
                })
            })
            .collect();
        json!({
            "scenarios": scenarios,
            "redis": self.redis,
            "cores": Self::cores(),
            "messages": self.messages,
            "jobs": self.jobs,
            "rounds": self.rounds,
        })
        .to_string()
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn the_report_never_shows_the_password() {
        let url = "redis://app:qz1/kx7?wv3#pm5@jd8:rt4@redis.example:6380/0";
        let report = Report::new(vec![Scenario::new("publish")], "7.0".into(), url, 10, 10, 1);
        assert!(report.table().contains("redis.example:6380"));
        for shown in [report.table(), report.json(), format!("{report:?}")] {
            for fragment in ["qz1", "kx7", "wv3", "pm5", "jd8", "rt4"] {
                assert!(!shown.contains(fragment), "{fragment} in {shown}");
            }
        }
    }
}
