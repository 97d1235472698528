//! One result per scenario: the line people read, the JSON object scripts read, and the
//! verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checker::Outcome;

/// The result of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) profile: &'static str,
    pub(crate) seed: u64,
    /// The checker self-test: passes only when a loss is reported.
    pub(crate) selftest: bool,
    pub(crate) lost: u64,
    pub(crate) unexpected: u64,
    pub(crate) dup: u64,
    pub(crate) bound: u64,
    pub(crate) stuck: u64,
    pub(crate) dlq_mismatch: u64,
    /// Overlapping runs of one id, when the scenario checks them (must be 0).
    pub(crate) overlap: Option<u64>,
    pub(crate) recovered: u64,
    pub(crate) reclaim_max_ms: Option<u64>,
    pub(crate) quiesce_ms: Option<u64>,
    pub(crate) lost_in_fsync_window: u64,
    /// Publishes acknowledged with `wait_for_replicas`, and how many of them were lost.
    pub(crate) acked_waited: u64,
    pub(crate) lost_waited: u64,
    pub(crate) failed_but_seen: u64,
    pub(crate) published_ok: u64,
    pub(crate) published_unknown: u64,
    pub(crate) published_fail: u64,
    pub(crate) planted: u64,
    pub(crate) handled: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) faults: usize,
    pub(crate) elapsed_ms: u64,
    pub(crate) pass: bool,
    /// Why the run did not pass, or what the harness could not do.
    pub(crate) problems: Vec<String>,
    pub(crate) examples: BTreeMap<String, Vec<String>>,
    /// Kept when the run failed (or with `--keep`).
    pub(crate) run_dir: Option<String>,
}

/// Everything measured, before the verdict.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) outcome: Outcome,
    pub(crate) bound: u64,
    pub(crate) stuck: u64,
    pub(crate) reclaim_max_ms: Option<u64>,
    pub(crate) quiesce_ms: Option<u64>,
    pub(crate) faults: usize,
    pub(crate) elapsed_ms: u64,
}

impl Report {
    pub(crate) fn new(
        scenario: &str,
        profile: &'static str,
        seed: u64,
        selftest: bool,
        m: &Measured,
        mut problems: Vec<String>,
    ) -> Report {
        let o = &m.outcome;
        let mut violations = Vec::new();
        if o.lost > 0 {
            violations.push(format!("lost={}", o.lost));
        }
        if o.unexpected > 0 {
            violations.push(format!("unexpected={}", o.unexpected));
        }
        if m.stuck > 0 {
            violations.push(format!("stuck={}", m.stuck));
        }
        if o.dlq_mismatch > 0 {
            violations.push(format!("dlq_mismatch={}", o.dlq_mismatch));
        }
        if o.duplicates > m.bound {
            violations.push(format!("dup={} over bound={}", o.duplicates, m.bound));
        }
        if o.failed_but_seen > 0 {
            violations.push(format!("failed_but_seen={}", o.failed_but_seen));
        }
        if let Some(n) = o.overlap.filter(|n| *n > 0) {
            violations.push(format!("overlap={n}"));
        }
        let pass = if selftest {
            if o.lost == 0 {
                problems.push(
                    "self-test: the broken consumer lost nothing the checker could see".into(),
                );
            }
            o.lost > 0 && problems.is_empty()
        } else {
            problems.extend(violations);
            problems.is_empty()
        };
        Report {
            scenario: scenario.to_owned(),
            profile,
            seed,
            selftest,
            lost: o.lost,
            unexpected: o.unexpected,
            dup: o.duplicates,
            bound: m.bound,
            stuck: m.stuck,
            dlq_mismatch: o.dlq_mismatch,
            overlap: o.overlap,
            recovered: o.recovered,
            reclaim_max_ms: m.reclaim_max_ms,
            quiesce_ms: m.quiesce_ms,
            lost_in_fsync_window: o.lost_in_fsync_window,
            acked_waited: o.acked_waited,
            lost_waited: o.lost_waited,
            failed_but_seen: o.failed_but_seen,
            published_ok: o.published_ok,
            published_unknown: o.published_unknown,
            published_fail: o.published_fail,
            planted: o.planted,
            handled: o.handled,
            dead_lettered: o.dead_lettered,
            faults: m.faults,
            elapsed_ms: m.elapsed_ms,
            pass,
            problems,
            examples: o.examples.clone(),
            run_dir: None,
        }
    }

    /// A report for a run the harness could not complete.
    pub(crate) fn error(
        scenario: &str,
        profile: &'static str,
        seed: u64,
        selftest: bool,
        error: &str,
    ) -> Report {
        let m = Measured {
            outcome: Outcome::default(),
            bound: 0,
            stuck: 0,
            reclaim_max_ms: None,
            quiesce_ms: None,
            faults: 0,
            elapsed_ms: 0,
        };
        let mut r = Report::new(
            scenario,
            profile,
            seed,
            selftest,
            &m,
            vec![format!("harness error: {error}")],
        );
        r.pass = false;
        r
    }

    /// `scenario=… lost=0 unexpected=0 dup=N bound=M stuck=0 dlq_mismatch=0 recovered=R
    /// reclaim_max_ms=… quiesce_ms=…` followed by the secondary measures and the verdict.
    pub(crate) fn line(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let mut s = format!(
            "scenario={} lost={} unexpected={} dup={} bound={} stuck={} dlq_mismatch={} recovered={} reclaim_max_ms={} quiesce_ms={}",
            self.scenario,
            self.lost,
            self.unexpected,
            self.dup,
            self.bound,
            self.stuck,
            self.dlq_mismatch,
            self.recovered,
            opt(self.reclaim_max_ms),
            opt(self.quiesce_ms),
        );
        if let Some(n) = self.overlap {
            let _ = write!(s, " overlap={n}");
        }
        if self.acked_waited > 0 {
            let _ = write!(
                s,
                " acked_waited={} lost_waited={}",
                self.acked_waited, self.lost_waited
            );
        }
        let _ = write!(
            s,
            " lost_in_fsync_window={} failed_but_seen={} ok={} unknown={} fail={} planted={} dead={} faults={} elapsed_ms={} verdict={}",
            self.lost_in_fsync_window,
            self.failed_but_seen,
            self.published_ok,
            self.published_unknown,
            self.published_fail,
            self.planted,
            self.dead_lettered,
            self.faults,
            self.elapsed_ms,
            match (self.pass, self.selftest) {
                (true, true) => "pass(self-test: loss detected)",
                (true, false) => "pass",
                (false, _) => "FAIL",
            }
        );
        s
    }

    /// A row of the results table in `docs/guarantees.md`.
    pub(crate) fn markdown_row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), |v| v.to_string());
        format!(
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.published_ok + self.planted,
            self.lost,
            self.lost_in_fsync_window,
            self.dup,
            self.bound,
            self.stuck,
            self.dlq_mismatch,
            self.recovered,
            opt(self.reclaim_max_ms),
            opt(self.quiesce_ms),
            self.faults,
            if self.pass {
                if self.selftest {
                    "pass (loss detected)"
                } else {
                    "pass"
                }
            } else {
                "**FAIL**"
            }
        )
    }
}

/// The header of the markdown results table.
pub(crate) const MARKDOWN_HEADER: &str = "| scenario | acked | lost | lost in fsync window | dup / bound | stuck | dlq mismatch | recovered | reclaim max ms | quiesce ms | faults | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(lost: u64, dup: u64, bound: u64) -> Measured {
        Measured {
            outcome: Outcome {
                lost,
                duplicates: dup,
                ..Outcome::default()
            },
            bound,
            stuck: 0,
            reclaim_max_ms: Some(1700),
            quiesce_ms: None,
            faults: 3,
            elapsed_ms: 10,
        }
    }

    #[test]
    fn the_line_starts_with_the_promised_fields() {
        let r = Report::new("x", "smoke", 1, false, &measured(0, 2, 4), Vec::new());
        assert!(r.pass);
        assert!(r.line().starts_with(
            "scenario=x lost=0 unexpected=0 dup=2 bound=4 stuck=0 dlq_mismatch=0 recovered=0 reclaim_max_ms=1700 quiesce_ms=-"
        ));
    }

    #[test]
    fn verdicts() {
        assert!(!Report::new("x", "smoke", 1, false, &measured(1, 0, 0), Vec::new()).pass);
        assert!(!Report::new("x", "smoke", 1, false, &measured(0, 5, 4), Vec::new()).pass);
        assert!(Report::new("x", "smoke", 1, true, &measured(3, 0, 0), Vec::new()).pass);
        assert!(!Report::new("x", "smoke", 1, true, &measured(0, 0, 0), Vec::new()).pass);
    }
}
