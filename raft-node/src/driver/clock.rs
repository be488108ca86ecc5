//! The monotonic clock the driver passes to the core (`RawNode::set_clock`).
//!
//! A leader lease must count every nanosecond that passed, including while the
//! process was stopped (SIGSTOP, CPU starvation) or the machine suspended. On
//! Linux that is `CLOCK_BOOTTIME`; `Instant` (`CLOCK_MONOTONIC`) stops during
//! a suspend, so it is only the fallback elsewhere.

/// Nanoseconds since an arbitrary fixed origin; never decreases.
#[cfg(target_os = "linux")]
pub(super) fn now_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every
    // Linux this builds for (2.6.39+).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return fallback_nanos();
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Nanoseconds since an arbitrary fixed origin; never decreases.
#[cfg(not(target_os = "linux"))]
pub(super) fn now_nanos() -> u64 {
    fallback_nanos()
}

fn fallback_nanos() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Wall-clock milliseconds since the Unix epoch (0 before it), which a
/// leader stamps into a request with an id: the request-id table ages
/// sessions by the highest stamp in the log, not by any member's clock.
pub(super) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_moves_forward() {
        let a = super::now_nanos();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::now_nanos();
        assert!(b >= a + 1_000_000, "{a} then {b}");
    }
}
