//! A word that threads sleep on until it changes: the way group-commit
//! waiters wait for a sync without a shared mutex.
//!
//! On Linux this is a futex: a waiter sleeps in the kernel on the word
//! itself, and waking every waiter is one system call with no lock for the
//! woken threads to queue on afterwards (a condition variable makes each
//! woken thread take its mutex again, so 64 woken threads pass that mutex
//! from one to the next). Elsewhere it is a mutex and a condition variable.

use std::sync::atomic::{AtomicU32, Ordering};

/// A counter that waiters sleep on until it moves past the value they saw.
#[derive(Default)]
pub(crate) struct WakeWord {
    word: AtomicU32,
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    lock: std::sync::Mutex<()>,
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    cv: std::sync::Condvar,
}

impl WakeWord {
    /// The current value; load it before checking the condition waited for,
    /// then pass it to [`wait`](WakeWord::wait).
    pub fn load(&self) -> u32 {
        self.word.load(Ordering::SeqCst)
    }

    /// Sleeps unless the word has moved from `seen`. May return without the
    /// word having moved: callers check their condition again.
    pub fn wait(&self, seen: u32) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // SAFETY: the word outlives the call; FUTEX_WAIT reads it
            // atomically and sleeps only while it still equals `seen`.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.word.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    seen,
                    std::ptr::null::<libc::timespec>(),
                );
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.word.load(Ordering::SeqCst) == seen {
                drop(self.cv.wait(g).unwrap_or_else(|e| e.into_inner()));
            }
        }
    }

    /// Moves the word on and wakes one sleeper (`all == false`) or all.
    pub fn bump_and_wake(&self, all: bool) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            self.word.fetch_add(1, Ordering::SeqCst);
            let n: i32 = if all { i32::MAX } else { 1 };
            // SAFETY: FUTEX_WAKE only reads the address to find its sleepers.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.word.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    n,
                );
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            // Moved under the lock, so a waiter between its check and its
            // sleep cannot miss it.
            let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.word.fetch_add(1, Ordering::SeqCst);
            drop(g);
            if all {
                self.cv.notify_all();
            } else {
                self.cv.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn wakes_every_sleeper() {
        let w = Arc::new(WakeWord::default());
        let flag = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (w, flag) = (w.clone(), flag.clone());
                std::thread::spawn(move || loop {
                    let seen = w.load();
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    w.wait(seen);
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        flag.store(true, Ordering::SeqCst);
        w.bump_and_wake(true);
        for t in threads {
            t.join().unwrap();
        }
    }
}
