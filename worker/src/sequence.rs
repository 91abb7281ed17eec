//! Whole-conversation checks: follows the event types of a stream against allowed orders (or
//! an unordered set) and names what went wrong: a missing event, a duplicate, a wrong order.

use gauntlet_core::plan::{Expected, WsExpectSequence};

/// What one received type means for the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// In the ignore list: skip it.
    Ignored,
    /// An expected type (its index in [`SequenceCheck::types`]); `first` the first time it came.
    Expected {
        /// Index of the type.
        index: usize,
        /// First arrival of this type.
        first: bool,
    },
    /// The sequence is over: judge it with [`SequenceCheck::verdict`].
    Ended,
    /// An error type (`agent_error`): the sequence failed.
    Error,
    /// A type neither expected, ignored nor an error.
    Unexpected,
}

/// The judgement of a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The types arrived in an allowed order.
    Pass,
    /// An expected type never came (its name).
    Missing(String),
    /// A type came more often than any order allows (its name).
    Duplicate(String),
    /// The types came in an order no rule allows (what came).
    Violation(String),
    /// The wait ended before the sequence did (the types still awaited).
    Timeout(String),
}

/// The rules of one `ws_expect_sequence` step.
#[derive(Debug, Clone)]
pub struct SequenceCheck {
    /// Expected types, interned.
    pub types: Vec<String>,
    orders: Vec<Vec<usize>>,
    set: Option<Vec<usize>>,
    ignore: Vec<String>,
    terminal: Vec<usize>,
    errors: Vec<String>,
    max_count: Vec<usize>,
}

impl SequenceCheck {
    /// Compiles a validated step.
    pub fn new(step: &WsExpectSequence) -> SequenceCheck {
        let mut types: Vec<String> = Vec::new();
        let intern = |t: &String, types: &mut Vec<String>| match types.iter().position(|x| x == t) {
            Some(i) => i,
            None => {
                types.push(t.clone());
                types.len() - 1
            }
        };
        let (orders, set) = match &step.expected {
            Expected::Orders(orders) => (
                orders
                    .iter()
                    .map(|o| o.iter().map(|t| intern(t, &mut types)).collect())
                    .collect::<Vec<Vec<usize>>>(),
                None,
            ),
            Expected::Set(set) => (
                Vec::new(),
                Some(
                    set.iter()
                        .map(|t| intern(t, &mut types))
                        .collect::<Vec<_>>(),
                ),
            ),
        };
        let terminal = if step.terminal.is_empty() {
            match &set {
                Some(_) => Vec::new(),
                None => {
                    let mut last: Vec<usize> =
                        orders.iter().filter_map(|o| o.last().copied()).collect();
                    last.dedup();
                    last
                }
            }
        } else {
            step.terminal
                .iter()
                .map(|t| intern(t, &mut types))
                .collect()
        };
        let mut max_count = vec![0usize; types.len()];
        for order in &orders {
            for (i, slot) in max_count.iter_mut().enumerate() {
                *slot = (*slot).max(order.iter().filter(|t| **t == i).count());
            }
        }
        if let Some(set) = &set {
            for t in set {
                max_count[*t] = 1;
            }
        }
        SequenceCheck {
            types,
            orders,
            set,
            ignore: step.ignore.clone(),
            terminal,
            errors: step.error_types.clone(),
            max_count,
        }
    }

    /// Classifies type `t` after `received` (indices of expected types so far) and, when
    /// expected, appends it.
    pub fn on_type(&self, t: &str, received: &mut Vec<usize>) -> Seen {
        if self.ignore.iter().any(|x| x == t) {
            return Seen::Ignored;
        }
        if self.errors.iter().any(|x| x == t) {
            return Seen::Error;
        }
        let Some(index) = self.types.iter().position(|x| x == t) else {
            return Seen::Unexpected;
        };
        let first = !received.contains(&index);
        received.push(index);
        let ended = self.terminal.contains(&index)
            || self
                .set
                .as_ref()
                .is_some_and(|set| set.iter().all(|s| received.contains(s)));
        if ended {
            Seen::Ended
        } else {
            Seen::Expected { index, first }
        }
    }

    /// The verdict once the sequence ended (a terminal type, or the whole set, arrived).
    pub fn verdict(&self, received: &[usize]) -> Verdict {
        if let Some(dup) = self.duplicate(received) {
            return Verdict::Duplicate(dup);
        }
        if let Some(set) = &self.set {
            return match set.iter().find(|s| !received.contains(s)) {
                Some(m) => Verdict::Missing(self.types[*m].clone()),
                None => Verdict::Pass,
            };
        }
        if self.orders.iter().any(|o| o.as_slice() == received) {
            return Verdict::Pass;
        }
        // The order that explains `received` with the fewest missing types.
        let best = self
            .orders
            .iter()
            .filter(|o| is_subsequence(received, o))
            .min_by_key(|o| o.len());
        match best {
            Some(order) => {
                let missing = first_missing(received, order);
                Verdict::Missing(missing.map_or_else(String::new, |m| self.types[m].clone()))
            }
            None => Verdict::Violation(self.describe(received)),
        }
    }

    /// The verdict when the wait ran out before the sequence ended.
    pub fn verdict_on_timeout(&self, received: &[usize]) -> Verdict {
        if let Some(dup) = self.duplicate(received) {
            return Verdict::Duplicate(dup);
        }
        if let Some(set) = &self.set {
            let missing: Vec<&str> = set
                .iter()
                .filter(|s| !received.contains(s))
                .map(|s| self.types[*s].as_str())
                .collect();
            return Verdict::Timeout(missing.join(", "));
        }
        let awaiting: Vec<&str> = self
            .orders
            .iter()
            .filter(|o| o.starts_with(received) && o.len() > received.len())
            .map(|o| self.types[o[received.len()]].as_str())
            .collect();
        if !awaiting.is_empty() {
            let mut awaiting = awaiting;
            awaiting.dedup();
            return Verdict::Timeout(awaiting.join(" or "));
        }
        match self.verdict(received) {
            Verdict::Pass => Verdict::Timeout(String::new()),
            other => other,
        }
    }

    fn duplicate(&self, received: &[usize]) -> Option<String> {
        let mut counts = vec![0usize; self.types.len()];
        for t in received {
            counts[*t] += 1;
            if counts[*t] > self.max_count[*t] {
                return Some(self.types[*t].clone());
            }
        }
        None
    }

    fn describe(&self, received: &[usize]) -> String {
        let got: Vec<&str> = received.iter().map(|t| self.types[*t].as_str()).collect();
        format!("got {}", got.join(" > "))
    }
}

fn is_subsequence(short: &[usize], long: &[usize]) -> bool {
    let mut it = long.iter();
    short.iter().all(|s| it.any(|l| l == s))
}

fn first_missing(received: &[usize], order: &[usize]) -> Option<usize> {
    let mut r = received.iter().peekable();
    for t in order {
        if r.peek() == Some(&t) {
            r.next();
        } else {
            return Some(*t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: [&str; 5] = [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_completed",
    ];

    /// A sequence step expecting `expected`, with the defaults of the plan file.
    fn step(expected: Expected) -> WsExpectSequence {
        WsExpectSequence {
            name: None,
            type_pointer: "/type".into(),
            expected,
            ignore: Vec::new(),
            terminal: Vec::new(),
            error_types: Vec::new(),
            timeout: std::time::Duration::from_secs(15),
            gap_timeout: None,
            since: None,
            capture: Default::default(),
            optional: false,
        }
    }

    fn agent() -> SequenceCheck {
        let step = WsExpectSequence {
            ignore: vec!["pong".into()],
            error_types: vec!["agent_error".into()],
            ..step(Expected::Orders(vec![
                FULL.map(String::from).to_vec(),
                vec![
                    "agent_started".into(),
                    "agent_thinking".into(),
                    "agent_completed".into(),
                ],
            ]))
        };
        SequenceCheck::new(&step)
    }

    fn run(check: &SequenceCheck, types: &[&str]) -> (Vec<Seen>, Vec<usize>) {
        let mut received = Vec::new();
        let seen = types
            .iter()
            .map(|t| check.on_type(t, &mut received))
            .collect();
        (seen, received)
    }

    #[test]
    fn allowed_orders_pass() {
        let c = agent();
        let (seen, r) = run(&c, &FULL);
        assert_eq!(seen.last(), Some(&Seen::Ended));
        assert_eq!(c.verdict(&r), Verdict::Pass);
        let (_, r) = run(
            &c,
            &["agent_started", "pong", "agent_thinking", "agent_completed"],
        );
        assert_eq!(c.verdict(&r), Verdict::Pass);
    }

    #[test]
    fn names_missing_duplicate_and_out_of_order() {
        let c = agent();
        let (_, r) = run(
            &c,
            &[
                "agent_started",
                "agent_thinking",
                "tool_executing",
                "agent_completed",
            ],
        );
        assert_eq!(c.verdict(&r), Verdict::Missing("tool_completed".into()));
        let (_, r) = run(
            &c,
            &[
                "agent_started",
                "agent_thinking",
                "agent_thinking",
                "tool_executing",
                "tool_completed",
                "agent_completed",
            ],
        );
        assert_eq!(c.verdict(&r), Verdict::Duplicate("agent_thinking".into()));
        let (_, r) = run(
            &c,
            &[
                "agent_started",
                "agent_thinking",
                "tool_completed",
                "tool_executing",
                "agent_completed",
            ],
        );
        assert!(matches!(c.verdict(&r), Verdict::Violation(_)));
    }

    #[test]
    fn timeout_says_what_was_awaited() {
        let c = agent();
        let (_, r) = run(&c, &FULL[..4]);
        assert_eq!(
            c.verdict_on_timeout(&r),
            Verdict::Timeout("agent_completed".into())
        );
        let (_, r) = run(&c, &["agent_started", "agent_thinking"]);
        assert_eq!(
            c.verdict_on_timeout(&r),
            Verdict::Timeout("tool_executing or agent_completed".into())
        );
    }

    #[test]
    fn error_and_unexpected_types() {
        let c = agent();
        let mut r = Vec::new();
        assert_eq!(c.on_type("agent_error", &mut r), Seen::Error);
        assert_eq!(c.on_type("surprise", &mut r), Seen::Unexpected);
    }

    #[test]
    fn unordered_sets() {
        let c = SequenceCheck::new(&step(Expected::Set(vec!["a".into(), "b".into()])));
        let (seen, r) = run(&c, &["b", "a"]);
        assert_eq!(seen.last(), Some(&Seen::Ended));
        assert_eq!(c.verdict(&r), Verdict::Pass);
        let (_, r) = run(&c, &["b", "b"]);
        assert_eq!(c.verdict_on_timeout(&r), Verdict::Duplicate("b".into()));
        let (_, r) = run(&c, &["b"]);
        assert_eq!(c.verdict_on_timeout(&r), Verdict::Timeout("a".into()));
    }
}
