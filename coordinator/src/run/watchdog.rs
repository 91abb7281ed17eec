//! Notices when the coordinator itself did not run (its process stopped, or starved of CPU),
//! so that nobody is judged lost on time the coordinator was not there to hear them: a worker's
//! silence is measured from when the coordinator last resumed, at the earliest.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lock;

/// How often the watchdog ticks.
const TICK: Duration = Duration::from_millis(250);
/// A tick this late (or no tick for this long) means the coordinator did not run meanwhile.
const STALLED: Duration = Duration::from_secs(1);

/// A run's watchdog: its last tick, and when the coordinator last resumed after a stall.
#[derive(Debug)]
pub(super) struct Watchdog {
    state: Mutex<(Instant, Option<Instant>)>,
}

impl Watchdog {
    pub(super) fn new() -> Watchdog {
        Watchdog {
            state: Mutex::new((Instant::now(), None)),
        }
    }

    /// Ticks every [`TICK`] until `stop` is cancelled.
    pub(super) async fn run(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            self.awake_since(Instant::now());
        }
    }

    /// When the coordinator last resumed after not running, if it ever stalled; a peer's
    /// silence counts from then at the earliest. Looking is also a tick: if neither a tick nor
    /// a look happened for [`STALLED`], the coordinator was away until `now`.
    pub(super) fn awake_since(&self, now: Instant) -> Option<Instant> {
        let mut state = lock(&self.state);
        let (last, resumed) = &mut *state;
        let away = now.saturating_duration_since(*last);
        if away > STALLED {
            tracing::warn!(
                away_ms = away.as_millis() as u64,
                "the coordinator did not run for a while (stopped or starved of CPU): workers' silence is counted from now"
            );
            *resumed = Some(now);
        }
        *last = (*last).max(now);
        *resumed
    }
}
