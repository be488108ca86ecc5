//! Network faults with iptables, in a chain of the suite's own.
//!
//! The chain `RAFT_FAULTS` is jumped to from `INPUT` for packets arriving on
//! `lo` (`iptables -I INPUT -i lo -j RAFT_FAULTS`). Rules match **UDP** by
//! source and destination address: peers talk QUIC over UDP from their own
//! `127.0.0.N` peer address, while clients use TCP (HTTP) and are never
//! affected, so the suite can always observe and drive every node.
//!
//! Rules live only in `INPUT`, not `OUTPUT`: a packet from one loopback
//! address to another crosses both, and a `DROP` in `OUTPUT` makes the
//! sender's `sendmsg` fail with `EPERM`, which no real network does; a drop
//! on arrival is a silent loss, as on a wire.
//!
//! [`Firewall`] creates the chain (removing leftovers of an earlier run that
//! died) and removes it, the jump included, when dropped — also while
//! unwinding from a panic; the interrupt handler
//! ([`super::install_interrupt_cleanup`]) removes it on Ctrl-C / `SIGTERM`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

/// The suite's chain.
pub const CHAIN: &str = "RAFT_FAULTS";

/// Serializes iptables invocations of this process (iptables takes its own
/// lock too, but concurrent calls may fail with "resource temporarily
/// unavailable" on old versions).
static IPTABLES: Mutex<()> = Mutex::new(());

fn iptables(args: &[&str]) -> Result<(), String> {
    let _g = IPTABLES.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why iptables cannot be used here, or `None` if it can (root, the binary
/// present, and a chain can be created and removed).
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (iptables needs it)".into());
    }
    let probe = "RAFT_FAULTS_PROBE";
    let _ = iptables(&["-F", probe]);
    let _ = iptables(&["-X", probe]);
    if let Err(e) = iptables(&["-N", probe]) {
        return Some(format!("iptables is not usable: {e}"));
    }
    let stat = iptables(&[
        "-A",
        probe,
        "-p",
        "udp",
        "-s",
        "127.0.0.1",
        "-d",
        "127.0.0.2",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.5",
        "-j",
        "DROP",
    ]);
    let _ = iptables(&["-F", probe]);
    let _ = iptables(&["-X", probe]);
    stat.err()
        .map(|e| format!("iptables lacks the statistic match: {e}"))
}

/// Removes the chain and its jump, ignoring what is not there. Safe to call
/// from the interrupt-cleanup thread.
pub fn remove_chain() {
    // The jump may have been inserted more than once by crashed runs.
    while iptables(&["-D", "INPUT", "-i", "lo", "-j", CHAIN]).is_ok() {}
    let _ = iptables(&["-F", CHAIN]);
    let _ = iptables(&["-X", CHAIN]);
}

/// The suite's chain, present while this value lives.
#[derive(Debug)]
pub struct Firewall {
    _private: (),
}

impl Firewall {
    /// Creates the chain (after removing any leftover) and the jump to it.
    pub fn install() -> Result<Firewall, String> {
        remove_chain();
        super::FIREWALL_ACTIVE.store(true, std::sync::atomic::Ordering::SeqCst);
        iptables(&["-N", CHAIN])?;
        let fw = Firewall { _private: () };
        iptables(&["-I", "INPUT", "-i", "lo", "-j", CHAIN])?;
        Ok(fw)
    }

    /// Drops UDP from `from` to `to` (with `probability`, if given).
    pub fn drop_udp(
        &self,
        from: Ipv4Addr,
        to: Ipv4Addr,
        probability: Option<f64>,
    ) -> Result<(), String> {
        let (from, to) = (from.to_string(), to.to_string());
        let mut args = vec!["-A", CHAIN, "-p", "udp", "-s", &from, "-d", &to];
        let p;
        if let Some(prob) = probability {
            p = format!("{prob:.3}");
            args.extend(["-m", "statistic", "--mode", "random", "--probability", &p]);
        }
        args.extend(["-j", "DROP"]);
        iptables(&args)
    }

    /// Drops UDP both ways between every node of `a` and every node of `b`.
    pub fn cut(&self, a: &[Ipv4Addr], b: &[Ipv4Addr]) -> Result<(), String> {
        for x in a {
            for y in b {
                self.drop_udp(*x, *y, None)?;
                self.drop_udp(*y, *x, None)?;
            }
        }
        Ok(())
    }

    /// Removes every rule (heals the network); the chain stays.
    pub fn heal(&self) -> Result<(), String> {
        iptables(&["-F", CHAIN])
    }

    /// The chain's rules as `iptables -S` prints them.
    pub fn rules(&self) -> String {
        let _g = IPTABLES.lock().unwrap_or_else(|e| e.into_inner());
        Command::new("iptables")
            .args(["-w", "-S", CHAIN])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain();
        super::FIREWALL_ACTIVE.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
