//! Known workers: identity, capacity, the sending half of each one's Session stream, and
//! when it was last heard from.

use std::collections::BTreeMap;
use std::sync::Mutex;

use gauntlet_proto::v1;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::lock;

/// One worker.
#[derive(Debug, Clone)]
pub struct WorkerEntry {
    /// Id given at registration.
    pub id: String,
    /// Name it gave.
    pub name: String,
    /// Relative capacity.
    pub capacity: u32,
    /// gauntlet version.
    pub version: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Last message (or registration).
    pub last_seen: Instant,
    /// Its open Session stream, if any.
    pub outbox: Option<mpsc::Sender<v1::CoordinatorMessage>>,
    /// Counts Session streams, so a closed old stream does not detach a newer one.
    pub stream: u64,
    /// The secret this identity was given; whoever speaks for it must present it.
    key: String,
}

/// The registry.
#[derive(Debug)]
pub struct Registry {
    workers: Mutex<BTreeMap<String, WorkerEntry>>,
    next: Mutex<u64>,
    /// Bumped whenever a worker's stream opens or closes, so that a run waiting for workers
    /// wakes when one arrives instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            workers: Mutex::default(),
            next: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// A worker with no open stream is forgotten this long after it was last heard from (its id
/// stays in the reports of the runs it worked on).
pub const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);
/// The most workers the registry holds; registering one more (after the departed ones were
/// forgotten) is refused.
pub const MAX_WORKERS: usize = 100_000;
/// The largest capacity a worker may state: capacities are relative shares, so this only
/// keeps the arithmetic of splitting exact.
pub const MAX_CAPACITY: u32 = 1_000_000;

/// Why a worker cannot register.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The registry holds [`MAX_WORKERS`].
    #[error("the coordinator already knows {MAX_WORKERS} workers")]
    Full,
    /// Its capacity is out of range.
    #[error("capacity {0} is out of range (1 to {MAX_CAPACITY})")]
    Capacity(u32),
}

impl Registry {
    /// Registers a worker; returns its id and secret. A worker re-registering keeps its id
    /// only with the secret that id was given (anyone else gets a new identity). Departed
    /// workers silent past [`FORGET_AFTER`] are forgotten first.
    pub fn register(&self, req: &v1::RegisterRequest) -> Result<(String, String), RegisterError> {
        if req.capacity > MAX_CAPACITY {
            return Err(RegisterError::Capacity(req.capacity));
        }
        let mut workers = lock(&self.workers);
        let now = Instant::now();
        workers.retain(|_, w| w.outbox.is_some() || now.duration_since(w.last_seen) < FORGET_AFTER);
        let known = workers.get(&req.worker_id).is_some_and(|w| {
            gauntlet_proto::auth::same(w.key.as_bytes(), req.session_key.as_bytes())
        });
        let id = if known {
            req.worker_id.clone()
        } else if workers.len() >= MAX_WORKERS {
            return Err(RegisterError::Full);
        } else {
            let mut next = lock(&self.next);
            *next += 1;
            let name: String = req
                .name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(32)
                .collect();
            format!("w{}-{name}", *next)
        };
        // A peer's words, shown in reports: printable, one line, at most 64 characters.
        let name: String = {
            let n: String = req
                .name
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(64)
                .collect();
            if n.trim().is_empty() {
                "worker".into()
            } else {
                n
            }
        };
        let entry = workers.entry(id.clone()).or_insert_with(|| WorkerEntry {
            id: id.clone(),
            name: name.clone(),
            capacity: req.capacity.max(1),
            version: req.version.chars().take(32).collect(),
            labels: req
                .labels
                .iter()
                .take(16)
                .map(|(k, v)| (k.chars().take(64).collect(), v.chars().take(128).collect()))
                .collect(),
            last_seen: Instant::now(),
            outbox: None,
            stream: 0,
            key: new_key(),
        });
        entry.capacity = req.capacity.max(1);
        entry.last_seen = Instant::now();
        Ok((id, entry.key.clone()))
    }

    /// Attaches a new Session stream to `id`; returns its number, or `None` for an unknown id.
    pub fn attach(
        &self,
        id: &str,
        key: &str,
        outbox: mpsc::Sender<v1::CoordinatorMessage>,
    ) -> Option<u64> {
        let mut workers = lock(&self.workers);
        let entry = workers
            .get_mut(id)
            .filter(|w| gauntlet_proto::auth::same(w.key.as_bytes(), key.as_bytes()))?;
        entry.stream += 1;
        entry.outbox = Some(outbox);
        entry.last_seen = Instant::now();
        let stream = entry.stream;
        drop(workers);
        self.changes.send_modify(|n| *n += 1);
        Some(stream)
    }

    /// Detaches stream `stream` of `id` (a newer stream stays).
    pub fn detach(&self, id: &str, stream: u64) {
        if let Some(entry) = lock(&self.workers).get_mut(id)
            && entry.stream == stream
        {
            entry.outbox = None;
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that changes whenever a worker's stream opens or closes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Notes that `id` was heard from.
    pub fn seen(&self, id: &str) {
        if let Some(entry) = lock(&self.workers).get_mut(id) {
            entry.last_seen = Instant::now();
        }
    }

    /// When worker `id` was last heard from.
    pub fn last_seen(&self, id: &str) -> Option<Instant> {
        lock(&self.workers).get(id).map(|w| w.last_seen)
    }

    /// A copy of worker `id`.
    pub fn get(&self, id: &str) -> Option<WorkerEntry> {
        lock(&self.workers).get(id).cloned()
    }

    /// Workers with an open stream heard from within `fresh`.
    pub fn connected(&self, fresh: std::time::Duration) -> Vec<WorkerEntry> {
        let now = Instant::now();
        lock(&self.workers)
            .values()
            .filter(|w| w.outbox.is_some() && now.duration_since(w.last_seen) < fresh)
            .cloned()
            .collect()
    }

    /// Every worker.
    pub fn all(&self) -> Vec<WorkerEntry> {
        lock(&self.workers).values().cloned().collect()
    }

    /// Sends `msg` to worker `id`; false if it has no open stream or the stream is full.
    pub fn send(&self, id: &str, msg: v1::CoordinatorMessage) -> bool {
        let outbox = lock(&self.workers).get(id).and_then(|w| w.outbox.clone());
        // A full outbox means the worker is not reading: the message is dropped and the
        // worker's heartbeat timeout decides its fate.
        outbox.is_some_and(|o| o.try_send(msg).is_ok())
    }
}
/// A fresh random secret (128 bits, hex).
fn new_key() -> String {
    let mut bytes = [0u8; 16];
    // The OS's random source; without one, a time-derived key is still unique per worker.
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = now.to_le_bytes();
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(name: &str, capacity: u32) -> v1::RegisterRequest {
        v1::RegisterRequest {
            name: name.into(),
            capacity,
            ..v1::RegisterRequest::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn departed_workers_are_forgotten_and_connected_ones_kept() {
        let r = Registry::default();
        let (gone, _) = r.register(&request("gone", 1)).unwrap();
        let (here, key) = r.register(&request("here", 1)).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        r.attach(&here, &key, tx).unwrap();
        tokio::time::advance(FORGET_AFTER + std::time::Duration::from_secs(1)).await;
        r.register(&request("new", 1)).unwrap();
        let ids: Vec<String> = r.all().into_iter().map(|w| w.id).collect();
        assert!(!ids.contains(&gone), "{ids:?}");
        assert!(
            ids.contains(&here),
            "a worker with an open stream stays: {ids:?}"
        );
        assert_eq!(ids.len(), 2);
        assert!(matches!(
            r.register(&request("greedy", MAX_CAPACITY + 1)),
            Err(RegisterError::Capacity(_))
        ));
    }
}
