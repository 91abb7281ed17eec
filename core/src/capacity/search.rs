//! The capacity search as a state machine with no fleet in it: [`Search::next`] says which
//! load to run next, [`Search::record`] takes the judged step. It climbs from `from` by
//! `factor` until a step breaks (or `to` holds), bisects between the highest load that held
//! and the lowest that broke until they are within `resolution`, then re-tests the highest
//! held load `retest` times (a noise guard: a re-test that breaks makes that load broken and
//! the bisection goes on below it). It never runs more than `max_steps` steps.

use std::time::Duration;

use super::{Outcome, Step};

/// The user's knobs, with their defaults in [`Knobs::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    /// Lowest load tried.
    pub from: f64,
    /// Highest load tried.
    pub to: f64,
    /// The climb's multiplier (2: doubling).
    pub factor: f64,
    /// Stop bisecting when `(broke - held) / held` is at most this.
    pub resolution: f64,
    /// How long each step's load runs.
    pub step_duration: Duration,
    /// An unjudged run at the step's load before each step (0: none).
    pub warmup: Duration,
    /// Finished sessions a step needs to be judged.
    pub min_samples: u64,
    /// Re-tests of the highest load that held.
    pub retest: u32,
    /// Most steps (re-tests included).
    pub max_steps: u32,
    /// Most time for the whole search.
    pub max_time: Duration,
    /// Loads are whole numbers (VUs).
    pub integral: bool,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            from: 1.0,
            to: 100.0,
            factor: 2.0,
            resolution: 0.05,
            step_duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            min_samples: 100,
            retest: 1,
            max_steps: 12,
            max_time: Duration::from_secs(15 * 60),
            integral: false,
        }
    }
}

impl Knobs {
    /// Whether the knobs can run a search; the problem in words otherwise.
    pub fn check(&self) -> Result<(), String> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.from) || !positive(self.to) {
            return Err(format!(
                "--from and --to must be positive numbers (got {} and {})",
                self.from, self.to
            ));
        }
        if self.from > self.to {
            return Err(format!(
                "--from {} is above --to {}: the range is empty",
                self.from, self.to
            ));
        }
        if !(self.factor.is_finite() && self.factor > 1.0) {
            return Err(format!(
                "--factor must be above 1 (got {}): the climb would not climb",
                self.factor
            ));
        }
        if !(self.resolution.is_finite() && self.resolution > 0.0 && self.resolution < 1.0) {
            return Err(format!(
                "--resolution must be between 0 and 1 exclusive (got {})",
                self.resolution
            ));
        }
        if self.step_duration.is_zero() {
            return Err("--step-duration must be above 0".into());
        }
        if self.max_steps == 0 {
            return Err("--max-steps must be at least 1".into());
        }
        Ok(())
    }
}

/// The search.
#[derive(Debug, Clone)]
pub struct Search {
    knobs: Knobs,
    steps: Vec<Step>,
    /// Loads that held and were not contradicted by a re-test.
    held: Vec<f64>,
    /// The lowest load that broke (or was inconclusive).
    broke: Option<f64>,
    /// Re-tests done of the current highest held load.
    retests: u32,
    /// Inconclusive steps in a row at the last load (each next one twice as long).
    stretch: u32,
}

/// How many times a load whose step had too few sessions to judge is run again, each time twice
/// as long, before the search gives up on it.
pub const MAX_STRETCH: u32 = 2;

/// What the search asks for next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Run this load (a re-test when `retest`).
    Run {
        /// The load.
        load: f64,
        /// Whether it re-tests a load that held.
        retest: bool,
        /// The step runs `2^stretch` times its usual length: the last one at this load had
        /// too few sessions to judge.
        stretch: u32,
    },
    /// Done: the limit is found, or the range or the step budget is exhausted.
    Done(&'static str),
}

impl Search {
    /// A search with these knobs (checked with [`Knobs::check`]).
    pub fn new(knobs: Knobs) -> Search {
        Search {
            knobs,
            steps: Vec::new(),
            held: Vec::new(),
            broke: None,
            retests: 0,
            stretch: 0,
        }
    }

    /// The knobs.
    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    /// The steps so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The highest load that held.
    pub fn held(&self) -> Option<f64> {
        self.held.iter().copied().reduce(f64::max)
    }

    /// The lowest load that did not hold above it.
    pub fn broke(&self) -> Option<f64> {
        self.broke
    }

    fn round(&self, v: f64) -> f64 {
        if self.knobs.integral {
            v.round().max(1.0)
        } else {
            // Three significant digits: 212.5 sessions/s, not 212.49999.
            let scale = 10f64.powi(2 - v.abs().log10().floor() as i32);
            (v * scale).round() / scale
        }
    }

    /// What to run next.
    pub fn next(&self) -> Next {
        if self.steps.len() >= self.knobs.max_steps as usize {
            return Next::Done("the step budget (--max-steps) is spent");
        }
        if let Some(last) = self
            .steps
            .last()
            .filter(|s| s.outcome == Outcome::Inconclusive)
        {
            if self.stretch > MAX_STRETCH {
                return Next::Done(
                    "a load had too few sessions to judge even in steps 4 times as long (--min-samples, --step-duration)",
                );
            }
            return Next::Run {
                load: last.load,
                retest: last.retest,
                stretch: self.stretch,
            };
        }
        let Some(top) = self.held() else {
            return match self.broke {
                None => Next::Run {
                    load: self.round(self.knobs.from),
                    retest: false,
                    stretch: 0,
                },
                Some(_) => Next::Done("the lowest load tried did not hold"),
            };
        };
        let Some(broke) = self.broke else {
            if top >= self.knobs.to {
                return Next::Done("the top of the range held");
            }
            let up = self.round((top * self.knobs.factor).min(self.knobs.to));
            return Next::Run {
                load: if up <= top { self.knobs.to } else { up },
                retest: false,
                stretch: 0,
            };
        };
        let mid = self.round((top + broke) / 2.0);
        let narrow = (broke - top) / top <= self.knobs.resolution || mid <= top || mid >= broke;
        if !narrow {
            return Next::Run {
                load: mid,
                retest: false,
                stretch: 0,
            };
        }
        if self.retests < self.knobs.retest {
            return Next::Run {
                load: top,
                retest: true,
                stretch: 0,
            };
        }
        Next::Done("the limit is found to the resolution asked (--resolution)")
    }

    /// Takes the judged step the last [`Search::next`] asked for.
    pub fn record(&mut self, step: Step) {
        let load = step.load;
        self.stretch = match step.outcome {
            // Run again, longer: too few sessions is no judgement of the target.
            Outcome::Inconclusive => self.stretch + 1,
            _ => 0,
        };
        match step.outcome {
            Outcome::Held => {
                if step.retest {
                    self.retests += 1;
                } else if self.held().is_none_or(|h| load > h) {
                    self.retests = 0;
                }
                self.held.push(load);
            }
            Outcome::Inconclusive => {}
            Outcome::Broke => {
                // A load that broke once is not held, whatever it did before; nor is any
                // load above it.
                self.held.retain(|h| *h < load);
                self.broke = Some(self.broke.map_or(load, |b| b.min(load)));
                if step.retest {
                    self.retests = 0;
                }
            }
        }
        self.steps.push(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words::Verdict;

    fn step(load: f64, retest: bool, limit: f64, flaky_at: Option<f64>) -> Step {
        let broke = load > limit || flaky_at == Some(load);
        Step {
            index: 0,
            load,
            retest,
            run_id: String::new(),
            outcome: if broke { Outcome::Broke } else { Outcome::Held },
            why: Vec::new(),
            verdict: Verdict::Pass,
            sessions: 0,
            passed: 0,
            failed: 0,
            dropped: 0,
            failure_rate: 0.0,
            throughput: 0.0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            in_flight: (0.0, 0.0),
            failures: Vec::new(),
            thresholds_failed: Vec::new(),
            findings: Vec::new(),
            growth: Vec::new(),
        }
    }

    /// Runs a search against a target whose true limit is `limit`.
    fn search(knobs: Knobs, limit: f64, flaky_retest: bool) -> (Search, &'static str) {
        let mut s = Search::new(knobs);
        let mut flaky_left = flaky_retest;
        loop {
            match s.next() {
                Next::Run { load, retest, .. } => {
                    // The first re-test breaks by noise, once.
                    let flaky = (flaky_left && retest).then_some(load);
                    flaky_left &= flaky.is_none();
                    s.record(step(load, retest, limit, flaky));
                }
                Next::Done(why) => return (s, why),
            }
        }
    }

    #[test]
    fn climbs_bisects_and_confirms() {
        let knobs = Knobs {
            from: 50.0,
            to: 800.0,
            max_steps: 20,
            ..Knobs::default()
        };
        let (s, why) = search(knobs, 200.0, false);
        let loads: Vec<f64> = s.steps().iter().map(|s| s.load).collect();
        assert_eq!(
            loads,
            [
                50.0, 100.0, 200.0, 400.0, 300.0, 250.0, 225.0, 213.0, 207.0, 200.0
            ]
        );
        assert_eq!((s.held(), s.broke()), (Some(200.0), Some(207.0)));
        assert!(s.steps().last().unwrap().retest);
        assert!(why.contains("resolution"), "{why}");
    }

    #[test]
    fn a_retest_that_breaks_moves_the_limit_down() {
        let knobs = Knobs {
            from: 50.0,
            to: 800.0,
            max_steps: 30,
            ..Knobs::default()
        };
        let (s, _) = search(knobs, 200.0, true);
        // 200 held, broke on its re-test: the answer is below it, and confirmed.
        let held = s.held().unwrap();
        assert!(held < 200.0, "{held}");
        assert!(s.broke().unwrap() <= 200.0);
        let last = s.steps().last().unwrap();
        assert!(last.retest && last.outcome == Outcome::Held);
    }

    #[test]
    fn budget_range_and_lowest_step() {
        let (s, why) = search(
            Knobs {
                from: 10.0,
                to: 40.0,
                ..Knobs::default()
            },
            1000.0,
            false,
        );
        assert_eq!(s.held(), Some(40.0));
        assert_eq!(s.broke(), None);
        assert!(why.contains("top of the range"), "{why}");
        let (s, why) = search(Knobs::default(), 0.5, false);
        assert_eq!((s.held(), s.steps().len()), (None, 1));
        assert!(why.contains("lowest"), "{why}");
        let (s, why) = search(
            Knobs {
                from: 1.0,
                to: 1e6,
                max_steps: 3,
                ..Knobs::default()
            },
            1e5,
            false,
        );
        assert_eq!(s.steps().len(), 3);
        assert!(why.contains("budget"), "{why}");
    }

    /// A step with too few sessions says nothing of the target: its load runs again, twice as
    /// long, then four times; still too few, the search stops without calling it broken.
    #[test]
    fn a_step_too_short_to_judge_is_run_again_longer_never_counted_as_broken() {
        let mut s = Search::new(Knobs::default());
        let mut stretches = Vec::new();
        while let Next::Run { load, stretch, .. } = s.next() {
            stretches.push(stretch);
            let mut step = step(load, false, 1e9, None);
            step.outcome = Outcome::Inconclusive;
            s.record(step);
        }
        assert_eq!(stretches, [0, 1, 2]);
        assert_eq!((s.held(), s.broke()), (None, None));
        let c = super::super::Capacity::conclude("p", crate::plan::Model::Closed, &s, "x", None);
        assert_eq!(c.exit_code, 3, "{}", c.answer);
        assert!(c.answer.starts_with("no answer:"), "{}", c.answer);
        // A longer step that gets enough sessions is judged as usual.
        let mut s = Search::new(Knobs::default());
        let Next::Run { load, .. } = s.next() else {
            panic!()
        };
        let mut short = step(load, false, 1e9, None);
        short.outcome = Outcome::Inconclusive;
        s.record(short);
        assert!(matches!(s.next(), Next::Run { stretch: 1, .. }));
        s.record(step(load, false, 1e9, None));
        assert_eq!(s.held(), Some(load));
        assert!(matches!(s.next(), Next::Run { stretch: 0, .. }));
    }

    /// A search whose budget ran out before a load broke or the top held has no limit to
    /// give: it says so and exits 3, never that the limit is above the top.
    #[test]
    fn a_budget_spent_below_the_top_is_no_answer() {
        let knobs = Knobs {
            from: 2.0,
            to: 200.0,
            max_steps: 3,
            integral: true,
            ..Knobs::default()
        };
        let (s, why) = search(knobs.clone(), 1000.0, false);
        let c = super::super::Capacity::conclude("p", crate::plan::Model::Closed, &s, why, None);
        assert_eq!(c.exit_code, 3, "{}", c.answer);
        assert!(
            c.answer.starts_with("no limit found: the target held every load judged, up to 8 VUs, but the search stopped because the step budget (--max-steps) is spent"),
            "{}",
            c.answer
        );
        let (s, why) = search(
            Knobs {
                max_steps: 20,
                ..knobs
            },
            1000.0,
            false,
        );
        let c = super::super::Capacity::conclude("p", crate::plan::Model::Closed, &s, why, None);
        assert_eq!(c.exit_code, 0, "{}", c.answer);
        assert!(c.answer.contains("the top of the range"), "{}", c.answer);
    }

    #[test]
    fn vus_are_whole() {
        let (s, _) = search(
            Knobs {
                from: 1.0,
                to: 64.0,
                integral: true,
                max_steps: 30,
                ..Knobs::default()
            },
            13.0,
            false,
        );
        assert!(s.steps().iter().all(|s| s.load.fract() == 0.0));
        assert_eq!((s.held(), s.broke()), (Some(13.0), Some(14.0)));
    }

    #[test]
    fn bad_knobs_are_named() {
        for (knobs, word) in [
            (
                Knobs {
                    from: 10.0,
                    to: 5.0,
                    ..Knobs::default()
                },
                "empty",
            ),
            (
                Knobs {
                    factor: 1.0,
                    ..Knobs::default()
                },
                "--factor",
            ),
            (
                Knobs {
                    resolution: 0.0,
                    ..Knobs::default()
                },
                "--resolution",
            ),
            (
                Knobs {
                    from: f64::NAN,
                    ..Knobs::default()
                },
                "--from",
            ),
        ] {
            let e = knobs.check().unwrap_err();
            assert!(e.contains(word), "{e}");
        }
    }
}
