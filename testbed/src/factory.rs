//! The per-user manager factory: each connection gets a manager keyed `user_id:thread_id`; at
//! most `max_managers_per_user` live at once per user. At `cleanup_threshold` of the limit an
//! emergency cleanup removes inactive managers (idle past `manager_idle`, or disconnected);
//! if the limit is still reached the connection fails with FACTORY_INIT_FAILED / 1011.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gauntlet_core::units::Rate;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Live-ness of one manager, shared between the registry and its connection.
#[derive(Debug)]
pub struct Activity {
    last_ms: AtomicU64,
    connected: AtomicBool,
    epoch: Instant,
}

impl Activity {
    /// Records a frame from the client now.
    pub fn touch(&self) {
        self.last_ms
            .store(elapsed_ms(self.epoch), Ordering::Relaxed);
    }

    fn inactive(&self, now_ms: u64, idle_ms: u64) -> bool {
        !self.connected.load(Ordering::Relaxed)
            || now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)) > idle_ms
    }
}

/// A connection's manager. Dropping it marks the manager disconnected; the entry lingers until
/// a cleanup removes it, as in the reference service.
#[derive(Debug)]
pub struct ManagerLease {
    activity: Arc<Activity>,
}

impl ManagerLease {
    /// The manager's activity, to touch on every frame.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }
}

impl Drop for ManagerLease {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.connected.store(false, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Manager {
    key: String,
    activity: Arc<Activity>,
}

#[derive(Debug, Default)]
struct User {
    /// Connections this user has made (numbers the fault draws).
    connections: u64,
    managers: Vec<Manager>,
}

/// The factory's limit was reached even after emergency cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReached {
    /// Live managers of the user at the time.
    pub live: usize,
}

/// Per-user manager counts in stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserManagers {
    /// Managers in the registry (connected or lingering).
    pub live: usize,
    /// Of those, with an open connection.
    pub connected: usize,
}

/// Factory figures in stats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct FactorySnapshot {
    /// Managers in the registry.
    pub live: usize,
    /// Of those, with an open connection.
    pub connected: usize,
    /// Emergency cleanups run.
    pub emergency_cleanups: u64,
    /// Managers removed by cleanups (emergency and periodic).
    pub cleaned: u64,
    /// Connections refused because the limit was reached (injected failures not counted).
    pub limit_rejections: u64,
    /// Per user with at least one live manager.
    pub by_user: BTreeMap<String, UserManagers>,
}

/// The registry of managers.
#[derive(Debug)]
pub struct Factory {
    users: Mutex<HashMap<String, User>>,
    limit: usize,
    cleanup_at: usize,
    idle_ms: u64,
    epoch: Instant,
    emergency_cleanups: AtomicU64,
    cleaned: AtomicU64,
    limit_rejections: AtomicU64,
}

fn elapsed_ms(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Factory {
    /// A factory with `limit` managers per user, cleaning at `threshold` of it.
    pub fn new(limit: usize, threshold: Rate, idle: Duration) -> Factory {
        let cleanup_at = ((limit as f64 * threshold.get()).ceil() as usize).clamp(1, limit.max(1));
        Factory {
            users: Mutex::new(HashMap::new()),
            limit,
            cleanup_at,
            idle_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            emergency_cleanups: AtomicU64::new(0),
            cleaned: AtomicU64::new(0),
            limit_rejections: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, User>> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is a
        // single push, retain or increment), so a poisoned lock is still usable.
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Numbers this user's next connection: 0 for the first, 1 for the second, ...
    pub fn next_connection(&self, user: &str) -> u64 {
        let mut users = self.lock();
        let entry = users.entry(user.to_owned()).or_default();
        entry.connections += 1;
        entry.connections - 1
    }

    /// Makes a manager for `user:thread`, or refuses when the limit is reached.
    pub fn acquire(&self, user: &str, thread: &str) -> Result<ManagerLease, LimitReached> {
        let now = elapsed_ms(self.epoch);
        let mut users = self.lock();
        let entry = users.entry(user.to_owned()).or_default();
        if entry.managers.len() >= self.cleanup_at {
            let before = entry.managers.len();
            entry
                .managers
                .retain(|m| !m.activity.inactive(now, self.idle_ms));
            self.emergency_cleanups.fetch_add(1, Ordering::Relaxed);
            self.cleaned
                .fetch_add((before - entry.managers.len()) as u64, Ordering::Relaxed);
        }
        if entry.managers.len() >= self.limit {
            self.limit_rejections.fetch_add(1, Ordering::Relaxed);
            return Err(LimitReached {
                live: entry.managers.len(),
            });
        }
        let activity = Arc::new(Activity {
            last_ms: AtomicU64::new(now),
            connected: AtomicBool::new(true),
            epoch: self.epoch,
        });
        entry.managers.push(Manager {
            key: format!("{user}:{thread}"),
            activity: activity.clone(),
        });
        Ok(ManagerLease { activity })
    }

    /// Periodic cleanup: removes disconnected managers idle past `manager_idle`.
    pub fn sweep(&self) {
        let now = elapsed_ms(self.epoch);
        let mut removed = 0;
        for user in self.lock().values_mut() {
            let before = user.managers.len();
            user.managers.retain(|m| {
                m.activity.connected.load(Ordering::Relaxed)
                    || now.saturating_sub(m.activity.last_ms.load(Ordering::Relaxed))
                        <= self.idle_ms
            });
            removed += before - user.managers.len();
            if user.managers.is_empty() {
                user.managers = Vec::new();
            }
        }
        self.cleaned.fetch_add(removed as u64, Ordering::Relaxed);
    }

    /// The factory's figures.
    pub fn snapshot(&self) -> FactorySnapshot {
        let users = self.lock();
        let mut snap = FactorySnapshot {
            emergency_cleanups: self.emergency_cleanups.load(Ordering::Relaxed),
            cleaned: self.cleaned.load(Ordering::Relaxed),
            limit_rejections: self.limit_rejections.load(Ordering::Relaxed),
            ..FactorySnapshot::default()
        };
        for (name, user) in users.iter().filter(|(_, u)| !u.managers.is_empty()) {
            let connected = user
                .managers
                .iter()
                .filter(|m| m.activity.connected.load(Ordering::Relaxed))
                .count();
            snap.live += user.managers.len();
            snap.connected += connected;
            snap.by_user.insert(
                name.clone(),
                UserManagers {
                    live: user.managers.len(),
                    connected,
                },
            );
        }
        snap
    }

    /// Keys of `user`'s live managers (for tests and debugging).
    pub fn keys(&self, user: &str) -> Vec<String> {
        self.lock()
            .get(user)
            .map(|u| u.managers.iter().map(|m| m.key.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factory(limit: usize) -> Factory {
        Factory::new(limit, Rate::new(0.7).unwrap(), Duration::from_secs(10))
    }

    #[tokio::test(start_paused = true)]
    async fn limit_per_user_not_global() {
        let f = factory(5);
        let leases: Vec<_> = (0..5)
            .map(|i| f.acquire("a", &i.to_string()).unwrap())
            .collect();
        assert_eq!(f.acquire("a", "x").unwrap_err(), LimitReached { live: 5 });
        let others: Vec<_> = (0..5)
            .map(|i| f.acquire("b", &i.to_string()).unwrap())
            .collect();
        let snap = f.snapshot();
        assert_eq!(
            (snap.live, snap.connected, snap.limit_rejections),
            (10, 10, 1)
        );
        assert_eq!(
            snap.by_user["a"],
            UserManagers {
                live: 5,
                connected: 5
            }
        );
        drop((leases, others));
    }

    #[tokio::test(start_paused = true)]
    async fn emergency_cleanup_frees_disconnected_and_idle_managers() {
        let f = factory(5);
        // Four sequential connections leave four lingering managers; the fifth triggers cleanup
        // (threshold 0.7 * 5 = 4) and succeeds.
        for i in 0..4 {
            drop(f.acquire("a", &i.to_string()).unwrap());
        }
        assert_eq!(f.snapshot().live, 4);
        let _held = f.acquire("a", "4").unwrap();
        let snap = f.snapshot();
        assert_eq!(
            (snap.live, snap.emergency_cleanups, snap.cleaned),
            (1, 1, 4)
        );

        // Connected but idle past 10 s also counts as inactive.
        let f = factory(5);
        let held: Vec<_> = (0..5)
            .map(|i| f.acquire("a", &i.to_string()).unwrap())
            .collect();
        assert!(f.acquire("a", "x").is_err());
        tokio::time::advance(Duration::from_secs(11)).await;
        held[0].activity().touch();
        assert!(f.acquire("a", "x").is_ok());
        assert_eq!(f.snapshot().by_user["a"].live, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_removes_only_old_disconnected_managers() {
        let f = factory(5);
        drop(f.acquire("a", "old").unwrap());
        let _live = f.acquire("a", "live").unwrap();
        f.sweep();
        assert_eq!(f.snapshot().live, 2);
        tokio::time::advance(Duration::from_secs(11)).await;
        f.sweep();
        assert_eq!(f.keys("a"), vec!["a:live".to_owned()]);
    }

    #[test]
    fn connections_are_numbered_per_user() {
        let f = factory(5);
        assert_eq!(
            (
                f.next_connection("a"),
                f.next_connection("a"),
                f.next_connection("b")
            ),
            (0, 1, 0)
        );
    }
}
