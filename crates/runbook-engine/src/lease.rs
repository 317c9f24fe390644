//! What the engine knows of the run's lock leases: until when they are
//! valid by this process's clocks. The runner's heartbeat moves the deadline
//! on each renewal (from the moment the renewal was sent, so it is never
//! later than the store's); the engine starts no step and journals no
//! success unless the leases are valid for a margin beyond now, and stops
//! the run at once when they are lost. A runner paused past its lease (a
//! SIGSTOP, a frozen VM, a starved thread) finds on waking that its clock
//! moved past the deadline, and acts no more: the run that took the lock
//! meanwhile is the only one acting.

use runbook_core::kind::CancellationToken;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The validity of a run's lock leases, as this process knows it.
#[derive(Debug)]
pub struct LeaseClock {
    /// Valid until, by the monotonic clock and by the wall clock (a frozen
    /// virtual machine may hold one still but not the other).
    until: Mutex<(Instant, SystemTime)>,
    /// How much validity an action needs beyond now.
    margin: Duration,
    /// Cancelled once the leases are lost; the reason is kept.
    lost: CancellationToken,
    why: Mutex<Option<String>>,
}

impl LeaseClock {
    /// Leases just taken (or renewed) for `ttl`: valid until `ttl` from
    /// `sent`, the moment they were asked for. An action needs a third of
    /// the TTL left.
    pub fn new(sent: Instant, ttl: Duration) -> LeaseClock {
        let wall = SystemTime::now() - sent.elapsed();
        LeaseClock {
            until: Mutex::new((sent + ttl, wall + ttl)),
            margin: ttl / 3,
            lost: CancellationToken::new(),
            why: Mutex::new(None),
        }
    }

    /// A renewal asked for at `sent` succeeded.
    pub fn renewed(&self, sent: Instant, ttl: Duration) {
        let wall = SystemTime::now() - sent.elapsed();
        if let Ok(mut u) = self.until.lock() {
            *u = (sent + ttl, wall + ttl);
        }
    }

    /// True while the leases are valid for the margin beyond now; once
    /// they are not, they are lost for good (the run stops).
    pub fn valid(&self) -> bool {
        if self.lost.is_cancelled() {
            return false;
        }
        let (mono, wall) = self
            .until
            .lock()
            .map(|u| *u)
            .unwrap_or((Instant::now(), SystemTime::now()));
        let (now, now_wall) = (Instant::now() + self.margin, SystemTime::now() + self.margin);
        if now <= mono && now_wall <= wall {
            return true;
        }
        let late = now
            .saturating_duration_since(mono)
            .max(now_wall.duration_since(wall).unwrap_or_default());
        self.lose(format!(
            "its lock leases were not renewed in time (the runner was paused or cut off from the state for {} \
             too long): another run may hold the lock now",
            humantime::format_duration(Duration::from_secs(late.as_secs().max(1)))
        ));
        false
    }

    /// The leases are gone (expired, or another run holds a key).
    pub fn lose(&self, why: String) {
        if let Ok(mut w) = self.why.lock() {
            w.get_or_insert(why);
        }
        self.lost.cancel();
    }

    /// Cancelled once the leases are lost.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Why they were lost, if they were.
    pub fn why(&self) -> Option<String> {
        self.why.lock().ok().and_then(|w| w.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_valid_until_the_margin_and_lost_for_good_after() {
        let clock = LeaseClock::new(Instant::now(), Duration::from_millis(300));
        assert!(clock.valid());
        std::thread::sleep(Duration::from_millis(250));
        // 50 ms left, the margin is 100 ms.
        assert!(!clock.valid());
        clock.renewed(Instant::now(), Duration::from_millis(300));
        assert!(!clock.valid(), "a lapse is final");
        assert!(clock.why().is_some_and(|w| w.contains("not renewed in time")));
    }
}
