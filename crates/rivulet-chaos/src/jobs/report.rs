//! One result per job scenario: the line, the JSON object (`"kind": "jobs"`), the
//! markdown row and the verdict.

use serde::Serialize;

use super::JobScenario;
use super::check::JobOutcome;
use crate::scenarios::Profile;

/// The result of one job scenario run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobReport {
    /// Always `jobs`: tells these objects from the bus scenarios' in the JSON output.
    pub(crate) kind: &'static str,
    pub(crate) scenario: String,
    pub(crate) profile: &'static str,
    pub(crate) seed: u64,
    /// The fencing self-test: passes only when a double outcome or an accepted stale
    /// write is reported.
    pub(crate) selftest: bool,
    #[serde(flatten)]
    pub(crate) outcome: JobOutcome,
    pub(crate) faults: usize,
    pub(crate) elapsed_ms: u64,
    pub(crate) pass: bool,
    pub(crate) problems: Vec<String>,
    pub(crate) run_dir: Option<String>,
}

impl JobReport {
    pub(crate) fn new(
        scenario: &JobScenario,
        profile: Profile,
        seed: u64,
        outcome: JobOutcome,
        faults: usize,
        elapsed_ms: u64,
        mut problems: Vec<String>,
    ) -> JobReport {
        let o = &outcome;
        let violations: Vec<String> = [
            ("lost", o.lost),
            ("unexpected", o.unexpected),
            ("wrong_outcome", o.wrong_outcome),
            ("double_outcome", o.double_outcome),
            ("stale_write_accepted", o.stale_write_accepted),
            ("runs_over_bound", o.runs_over_bound),
            ("early", o.early),
            ("dedup_violations", o.dedup_violations),
            ("parent_early", o.parent_early),
            ("stuck", o.stuck),
            ("counts_mismatch", o.counts_mismatch),
            ("limit_exceeded", o.limit_exceeded),
            ("cap_exceeded", o.cap_exceeded),
            ("tick_dup", o.tick_dup),
            ("tick_missed", o.tick_missed),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what}={n}"))
        .collect();
        let pass = if scenario.selftest {
            let caught = o.double_outcome + o.stale_write_accepted;
            if caught == 0 {
                problems.push(
                    "self-test: the unfenced worker's late outcomes were not seen by the checker"
                        .into(),
                );
            }
            caught > 0 && problems.is_empty()
        } else {
            problems.extend(violations);
            problems.is_empty()
        };
        JobReport {
            kind: "jobs",
            scenario: scenario.name.to_owned(),
            profile: profile.name(),
            seed,
            selftest: scenario.selftest,
            outcome,
            faults,
            elapsed_ms,
            pass,
            problems,
            run_dir: None,
        }
    }

    /// A report for a run the harness could not complete.
    pub(crate) fn error(scenario: &JobScenario, profile: Profile, seed: u64, e: &str) -> JobReport {
        let mut r = JobReport::new(
            scenario,
            profile,
            seed,
            JobOutcome::default(),
            0,
            0,
            vec![format!("harness error: {e}")],
        );
        r.pass = false;
        r
    }

    fn verdict(&self) -> &'static str {
        match (self.pass, self.selftest) {
            (true, true) => "pass(self-test: unfenced outcome detected)",
            (true, false) => "pass",
            (false, _) => "FAIL",
        }
    }

    /// `scenario=… lost=0 unexpected=0 double_outcome=0 stale_write_accepted=0 …`.
    pub(crate) fn line(&self) -> String {
        let o = &self.outcome;
        format!(
            "scenario={} lost={} unexpected={} double_outcome={} stale_write_accepted={} runs_over_bound={} early={} dedup_violations={} parent_early={} wrong_outcome={} stuck={} counts_mismatch={} limit_exceeded={} cap_exceeded={} tick_dup={} tick_missed={} ticks={} lost_in_fsync_window={} ok={} unknown={} fail={} duplicates={} completed={} failed={} cancelled={} starts={} stalls={} faults={} elapsed_ms={} verdict={}",
            self.scenario,
            o.lost,
            o.unexpected,
            o.double_outcome,
            o.stale_write_accepted,
            o.runs_over_bound,
            o.early,
            o.dedup_violations,
            o.parent_early,
            o.wrong_outcome,
            o.stuck,
            o.counts_mismatch,
            o.limit_exceeded,
            o.cap_exceeded,
            o.tick_dup,
            o.tick_missed,
            o.ticks,
            o.lost_in_fsync_window,
            o.added_ok,
            o.added_unknown,
            o.added_fail,
            o.duplicates,
            o.completed,
            o.failed,
            o.cancelled,
            o.starts,
            o.stalls,
            self.faults,
            self.elapsed_ms,
            self.verdict(),
        )
    }

    /// A row of the jobs table in `docs/guarantees.md`.
    pub(crate) fn markdown_row(&self) -> String {
        let o = &self.outcome;
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} / {} | {} | {} | {} / {} / {} | {} | {} | {} |",
            self.scenario,
            o.added_ok,
            o.lost,
            o.lost_in_fsync_window,
            o.double_outcome,
            o.stale_write_accepted,
            o.runs_over_bound,
            o.early,
            o.parent_early,
            o.dedup_violations,
            o.limit_exceeded,
            o.cap_exceeded,
            o.tick_dup,
            o.tick_missed,
            o.stuck,
            o.counts_mismatch,
            o.completed,
            o.failed,
            o.cancelled,
            o.starts,
            self.faults,
            if self.pass {
                if self.selftest {
                    "pass (unfenced outcome detected)"
                } else {
                    "pass"
                }
            } else {
                "**FAIL**"
            }
        )
    }
}

/// The header of the jobs results table.
pub(crate) const MARKDOWN_HEADER: &str = "| scenario | added | lost | lost in fsync window | double outcome | stale write accepted | runs over bound | early / parent early | dedup violations | limit / cap exceeded | tick dup / missed | stuck | counts mismatch | completed / failed / cancelled | handler starts | faults | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";
