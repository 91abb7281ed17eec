//! The agent pipeline: which events a run sends, after which gaps, with the pipeline faults
//! applied (a pure schedule), and the task that plays a schedule into a connection's outbox.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::capacity::RunPermit;
use crate::delay::Delay;
use crate::faults::{FaultKind, Faults, fires};
use crate::frames::{self, RunIds};
use crate::protocol::{AgentEvent, EventShape};
use crate::rng::{SplitMix, hash_str};

/// Tag that keys delay draws apart from fault draws.
const DELAY_TAG: u64 = 0xDE1A;

/// What one pipeline does, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Wait `gap`, then send `event`, carrying `user_id`.
    Send {
        /// The event.
        event: AgentEvent,
        /// Wait before it.
        gap: Duration,
        /// `user_id` written in it (another user's on an isolation breach).
        user_id: String,
        /// The run's last event: writing it completes the pipeline.
        last: bool,
    },
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// Who and which: the keys of every draw for one pipeline.
#[derive(Debug, Clone)]
pub struct PipelineKey<'a> {
    /// Testbed seed.
    pub seed: u64,
    /// The connection's user.
    pub sub: &'a str,
    /// That user's connection number.
    pub connection: u64,
    /// The pipeline's number on its connection.
    pub pipeline: u64,
}

/// Another user's id, for an isolation breach: the next numbered user (`user-7` -> `user-8`),
/// or `<sub>-other` for a subject without a number.
pub fn other_user(sub: &str) -> String {
    let digits = sub.len() - sub.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    match sub[sub.len() - digits..].parse::<u64>() {
        Ok(n) if digits > 0 => format!("{}{}", &sub[..sub.len() - digits], n.wrapping_add(1)),
        _ => format!("{sub}-other"),
    }
}

/// The schedule for one pipeline and the faults injected into it.
pub fn schedule(
    key: &PipelineKey<'_>,
    delay: &Delay,
    faults: &Faults,
) -> (Vec<Step>, Vec<FaultKind>) {
    let draw_key = [key.connection, key.pipeline];
    let mut injected = Vec::new();
    let mut fired = |kind: FaultKind| -> Option<AgentEvent> {
        let (fault, event) = faults.event(kind)?;
        fires(
            key.seed,
            kind,
            fault.rate,
            fault.users.as_ref(),
            key.sub,
            &draw_key,
        )
        .then(|| {
            injected.push(kind);
            event
        })
    };
    let mut events: Vec<(AgentEvent, bool)> =
        AgentEvent::ORDER.iter().map(|e| (*e, false)).collect();
    if let Some(e) = fired(FaultKind::OutOfOrder)
        && let Some(i) = events.iter().position(|(x, _)| *x == e)
        && i > 0
    {
        events.swap(i - 1, i);
    }
    if let Some(e) = fired(FaultKind::MissingEvent) {
        events.retain(|(x, _)| *x != e);
    }
    if let Some(e) = fired(FaultKind::DuplicateEvent)
        && let Some(i) = events.iter().position(|(x, _)| *x == e)
    {
        events.insert(i + 1, (e, false));
    }
    if let Some(e) = fired(FaultKind::IsolationBreach)
        && let Some(slot) = events.iter_mut().find(|(x, _)| *x == e)
    {
        slot.1 = true;
    }
    let drop_after = fired(FaultKind::TcpDrop);
    let spike = faults.latency_spike.as_ref().filter(|f| {
        fires(
            key.seed,
            FaultKind::LatencySpike,
            f.rate,
            f.users.as_ref(),
            key.sub,
            &draw_key,
        )
    });
    if spike.is_some() {
        injected.push(FaultKind::LatencySpike);
    }

    let mut steps = Vec::with_capacity(events.len() + 1);
    let count = events.len();
    for (i, (event, breach)) in events.into_iter().enumerate() {
        let mut rng = SplitMix::keyed(&[
            key.seed,
            DELAY_TAG,
            hash_str(key.sub),
            key.connection,
            key.pipeline,
            i as u64,
        ]);
        let mut gap = delay.sample(&mut rng);
        if i == 0
            && let Some(s) = spike
        {
            gap += s.extra;
        }
        let user_id = if breach {
            other_user(key.sub)
        } else {
            key.sub.to_owned()
        };
        steps.push(Step::Send {
            event,
            gap,
            user_id,
            last: i + 1 == count,
        });
        if drop_after == Some(event) {
            steps.push(Step::Drop);
            break;
        }
    }
    (steps, injected)
}

/// What a run holds while it is in progress: its slot on its connection and its place in the
/// testbed's capacity, freed together once its last frame is written (or when it is cut).
#[derive(Debug)]
pub struct RunSlot {
    /// One of the connection's in-flight run slots.
    pub connection: OwnedSemaphorePermit,
    /// One of the testbed's `pipeline.concurrency` slots.
    pub capacity: RunPermit,
}

/// One item for a connection to write.
#[derive(Debug)]
pub enum Outgoing {
    /// An agent event frame.
    Event {
        /// Which event (counted when written).
        event: AgentEvent,
        /// The frame.
        text: String,
        /// Writing it completes its pipeline.
        completes: bool,
        /// The run's slot, carried by its last frame and freed once that frame is written.
        slot: Option<RunSlot>,
    },
    /// Drop the connection without a close frame.
    Drop,
}

/// Plays `steps` into `outbox`, building each frame when it is due; the run's last event
/// carries `slot` (a run cut by a drop frees it when this returns). Returns false when the connection ended before the schedule did (the outbox closed).
pub async fn play(
    steps: Vec<Step>,
    shape: EventShape,
    ids: Arc<RunIds>,
    outbox: mpsc::Sender<Outgoing>,
    slot: RunSlot,
) -> bool {
    let mut slot = Some(slot);
    for step in steps {
        let item = match step {
            Step::Send {
                event,
                gap,
                user_id,
                last,
            } => {
                tokio::select! {
                    () = tokio::time::sleep(gap) => {}
                    () = outbox.closed() => return false,
                }
                let text = frames::agent_event(shape, event, &ids, &user_id);
                Outgoing::Event {
                    event,
                    text,
                    completes: last,
                    slot: if last { slot.take() } else { None },
                }
            }
            Step::Drop => Outgoing::Drop,
        };
        if outbox.send(item).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::EventFault;
    use gauntlet_core::units::Rate;
    use tokio::sync::Semaphore;
    use tokio::time::Instant;

    fn slot() -> RunSlot {
        let crate::capacity::Entry::Now(capacity) = crate::capacity::Capacity::new(0).enter()
        else {
            panic!("unlimited capacity always admits")
        };
        RunSlot {
            connection: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
            capacity,
        }
    }

    fn key(pipeline: u64) -> PipelineKey<'static> {
        PipelineKey {
            seed: 1,
            sub: "user-7",
            connection: 0,
            pipeline,
        }
    }

    fn events(steps: &[Step]) -> Vec<&'static str> {
        steps
            .iter()
            .map(|s| match s {
                Step::Send { event, .. } => event.name(),
                Step::Drop => "DROP",
            })
            .collect()
    }

    fn always(event: Option<AgentEvent>) -> Option<EventFault> {
        Some(EventFault {
            rate: Rate::ONE,
            users: None,
            event,
            from_s: None,
            until_s: None,
        })
    }

    #[test]
    fn clean_pipeline_sends_five_events_in_order() {
        let (steps, injected) = schedule(&key(0), &Delay::ZERO, &Faults::default());
        assert_eq!(
            events(&steps),
            [
                "agent_started",
                "agent_thinking",
                "tool_executing",
                "tool_completed",
                "agent_completed"
            ]
        );
        assert!(injected.is_empty());
        assert!(matches!(steps.last(), Some(Step::Send { last: true, .. })));
    }

    #[test]
    fn each_event_fault_changes_the_schedule() {
        let f = Faults {
            out_of_order: always(None),
            ..Default::default()
        };
        assert_eq!(
            events(&schedule(&key(0), &Delay::ZERO, &f).0)[2..4],
            ["tool_completed", "tool_executing"]
        );
        let f = Faults {
            missing_event: always(None),
            ..Default::default()
        };
        assert_eq!(
            events(&schedule(&key(0), &Delay::ZERO, &f).0),
            [
                "agent_started",
                "agent_thinking",
                "tool_executing",
                "agent_completed"
            ]
        );
        let f = Faults {
            duplicate_event: always(None),
            ..Default::default()
        };
        assert_eq!(
            events(&schedule(&key(0), &Delay::ZERO, &f).0)[1..3],
            ["agent_thinking", "agent_thinking"]
        );
        let f = Faults {
            tcp_drop: always(None),
            ..Default::default()
        };
        assert_eq!(
            events(&schedule(&key(0), &Delay::ZERO, &f).0),
            ["agent_started", "agent_thinking", "DROP"]
        );
        let f = Faults {
            isolation_breach: always(Some(AgentEvent::AgentCompleted)),
            ..Default::default()
        };
        let (steps, injected) = schedule(&key(0), &Delay::ZERO, &f);
        assert_eq!(injected, [FaultKind::IsolationBreach]);
        let users: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Send { user_id, .. } => Some(user_id.as_str()),
                Step::Drop => None,
            })
            .collect();
        assert_eq!(users, ["user-7", "user-7", "user-7", "user-7", "user-8"]);
    }

    #[test]
    fn other_user_is_another_numbered_user() {
        assert_eq!(other_user("user-9"), "user-10");
        assert_eq!(other_user("alice"), "alice-other");
    }

    #[tokio::test(start_paused = true)]
    async fn events_arrive_after_their_configured_gaps() {
        let delay = Delay::Fixed {
            value: Duration::from_millis(40),
        };
        let spike = Faults {
            latency_spike: Some(crate::faults::SpikeFault {
                rate: Rate::ONE,
                users: None,
                extra: Duration::from_secs(3),
                from_s: None,
                until_s: None,
            }),
            ..Default::default()
        };
        for (faults, first_gap) in [(Faults::default(), 40), (spike, 3040)] {
            let (steps, _) = schedule(&key(0), &delay, &faults);
            let ids = Arc::new(RunIds {
                run_id: "r".into(),
                thread_id: "t".into(),
                request_id: "q".into(),
                agent_name: "a".into(),
            });
            let (tx, mut rx) = mpsc::channel(16);
            let start = Instant::now();
            let task = tokio::spawn(play(steps, EventShape::Flat, ids, tx, slot()));
            let mut at = Vec::new();
            while let Some(item) = rx.recv().await {
                let Outgoing::Event { event, text, .. } = item else {
                    panic!("no drop expected")
                };
                assert!(text.contains(event.name()));
                at.push(start.elapsed().as_millis());
            }
            assert!(task.await.unwrap());
            assert_eq!(
                at,
                [
                    first_gap,
                    first_gap + 40,
                    first_gap + 80,
                    first_gap + 120,
                    first_gap + 160
                ]
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn play_stops_when_the_connection_is_gone() {
        let (steps, _) = schedule(
            &key(0),
            &Delay::Fixed {
                value: Duration::from_secs(1),
            },
            &Faults::default(),
        );
        let ids = Arc::new(RunIds {
            run_id: "r".into(),
            thread_id: "t".into(),
            request_id: "q".into(),
            agent_name: "a".into(),
        });
        let (tx, rx) = mpsc::channel(16);
        drop(rx);
        assert!(!play(steps, EventShape::Flat, ids, tx, slot()).await);
    }
}
