//! The drives a process runs now, each known by its lease — (workflow id, lease epoch) —
//! and each with the cancel signal its runner watches.
//!
//! Keying by lease, not by workflow id, keeps two drives of one workflow apart: after a
//! database outage longer than a lease, this process may claim a workflow again whose old
//! drive has not noticed yet. The old drive's renewals are then refused (the epoch moved
//! on) and its next write is fenced off, while the new drive is renewed under its own
//! epoch; when either ends it removes only its own entry. Claims skip the workflows in
//! this set, so such a re-claim happens only after the old drive is gone.
//!
//! A cancel reaches a running drive through its [`CancelSignal`]: from the operator in the
//! same process at once, from any other process through the database within a second
//! (the scheduler polls the requests on the leases it holds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio_util::sync::CancellationToken;

/// Tells a running drive that an operator asked it to stop, and who asked.
#[derive(Debug, Default)]
pub struct CancelSignal {
    token: CancellationToken,
    by: OnceLock<String>,
}

impl CancelSignal {
    /// Raises the signal on behalf of `by`; the first asker is the one kept.
    pub fn raise(&self, by: &str) {
        let _ = self.by.set(by.to_string());
        self.token.cancel();
    }

    /// Who asked, once the signal is raised.
    pub fn asked_by(&self) -> Option<&str> {
        self.by.get().map(String::as_str)
    }

    /// The token the HTTP clients watch while they wait between per-call retries.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// One lease a drive holds: the workflow and the epoch of its claim.
pub type LeaseKey = (String, i64);

/// The drives in flight in this process.
#[derive(Debug, Default)]
pub struct InFlight {
    drives: Mutex<HashMap<LeaseKey, Arc<CancelSignal>>>,
}

impl InFlight {
    /// Registers a drive under its lease; the entry goes when the guard is dropped,
    /// however the drive ends.
    pub fn enter(&self, id: &str, epoch: i64) -> (Entered<'_>, Arc<CancelSignal>) {
        let key = (id.to_string(), epoch);
        let signal = Arc::new(CancelSignal::default());
        self.lock().insert(key.clone(), signal.clone());
        (Entered { set: self, key }, signal)
    }

    /// Every lease held by a drive in flight (what the heartbeat renews).
    pub fn leases(&self) -> Vec<LeaseKey> {
        self.lock().keys().cloned().collect()
    }

    /// The workflows driven now (what claims must skip).
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().map(|(id, _)| id.clone()).collect()
    }

    /// Raises the cancel signal of the drive holding `lease`; with no epoch, of every
    /// drive of the workflow. Returns whether one was found.
    pub fn cancel(&self, id: &str, epoch: Option<i64>, by: &str) -> bool {
        let drives = self.lock();
        let mut found = false;
        for ((drive_id, drive_epoch), signal) in drives.iter() {
            if drive_id == id && epoch.is_none_or(|e| e == *drive_epoch) {
                signal.raise(by);
                found = true;
            }
        }
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseKey, Arc<CancelSignal>>> {
        // A panic while holding this lock leaves a plain map behind: still usable.
        self.drives.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A drive's place in [`InFlight`], left when dropped.
pub struct Entered<'a> {
    set: &'a InFlight,
    key: LeaseKey,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drives_are_kept_apart_by_epoch_and_leave_only_their_own_entry() {
        let set = InFlight::default();
        let (old, old_signal) = set.enter("w", 1);
        let (new, new_signal) = set.enter("w", 2);
        assert_eq!(set.leases().len(), 2);
        assert!(set.cancel("w", Some(2), "ops"));
        assert!(new_signal.token().is_cancelled());
        assert!(!old_signal.token().is_cancelled());
        drop(old);
        assert_eq!(set.leases(), vec![("w".to_string(), 2)]);
        drop(new);
        assert!(set.leases().is_empty());
        assert!(!set.cancel("w", None, "ops"));
    }

    #[test]
    fn the_first_asker_is_kept() {
        let set = InFlight::default();
        let (_entry, signal) = set.enter("w", 7);
        assert_eq!(signal.asked_by(), None);
        assert!(set.cancel("w", None, "ada"));
        assert!(set.cancel("w", None, "grace"));
        assert_eq!(signal.asked_by(), Some("ada"));
        assert_eq!(set.ids(), vec!["w".to_string()]);
    }
}
