//! Freeing replaced states off the driver, and letting the decode of an
//! installed snapshot wait until such a free is over.
//!
//! A follower that installs a snapshot drops its state before decoding the
//! new one (`restore.rs`). Freeing a state of a gigabyte takes seconds; if
//! the decode started meanwhile, the process would briefly hold two whole
//! states after all. The decoder therefore waits for [`wait_until_retired`]
//! first. The count is process-wide because memory is.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// States being freed right now, and a signal when that count falls.
static RETIRING: Mutex<usize> = Mutex::new(0);
static RETIRED: Condvar = Condvar::new();

fn count() -> MutexGuard<'static, usize> {
    RETIRING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops a whole store (or the last view of one) on another thread: freeing
/// a large state takes time the driver must not spend.
pub(crate) fn retire<T: Send + 'static>(store: T) {
    *count() += 1;
    let dropper = std::thread::Builder::new().name("retire-state".into());
    let free = move || {
        drop(store);
        // A whole state was just freed, much of it allocated on the threads
        // that decoded snapshots: glibc keeps freed memory in each thread's
        // arena, so without a trim a follower that installed a few large
        // snapshots holds several states' worth of memory for good.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
        let mut n = count();
        *n -= 1;
        RETIRED.notify_all();
    };
    if let Err(e) = dropper.spawn(free) {
        // The closure, and the store in it, was dropped here.
        tracing::warn!(error = %e, "no thread to free an old state on; freed it here");
        *count() -= 1;
        RETIRED.notify_all();
    }
}

/// Waits until no replaced state is being freed, or `timeout` passes.
/// Returns how long it waited.
pub(crate) fn wait_until_retired(timeout: Duration) -> Duration {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut n = count();
    while *n > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        n = RETIRED
            .wait_timeout(n, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A value whose drop blocks until told to finish.
    struct SlowDrop(mpsc::Receiver<()>);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            let _ = self.0.recv();
        }
    }

    #[test]
    fn a_decode_waits_for_the_free_in_progress() {
        let (finish, rx) = mpsc::channel();
        retire(SlowDrop(rx));
        // The free cannot finish: the wait runs to its timeout.
        let waited = wait_until_retired(Duration::from_millis(200));
        assert!(waited >= Duration::from_millis(200), "waited {waited:?}");
        let waiter = std::thread::spawn(|| wait_until_retired(Duration::from_secs(60)));
        finish.send(()).unwrap();
        let waited = waiter.join().unwrap();
        assert!(
            waited < Duration::from_secs(60),
            "woken when the free ended"
        );
    }
}
