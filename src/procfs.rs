//! Reads a process's numbers from Linux's /proc, without unsafe code: what
//! the standard `process_*` metrics need for depwatch itself.

use std::fs;
use std::sync::OnceLock;

/// Linux reports CPU times in clock ticks (USER_HZ): 100 on the usual
/// architectures, but the kernel says so itself in the auxiliary vector.
fn user_hz() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        n => n as f64,
    })
}

#[derive(Clone, Debug, Default)]
pub struct ProcStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub vsize_bytes: u64,
    pub start_time: f64,
    pub threads: u64,
    pub open_fds: u64,
    pub max_fds: f64,
}

fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The number of threads of `pid` (field 20 of /proc/PID/stat): one read,
/// where listing /proc/PID/task reads a file per thread.
pub fn threads(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(17)?.parse().ok()
}

pub fn read_self() -> Option<ProcStats> {
    read("self")
}

/// `pid` is a number or `self`.
pub fn read(pid: &str) -> Option<ProcStats> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields from the third (state) on, so index = field number - 3.
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let utime = num(11);
    let stime = num(12);
    let threads = num(17);
    let start_ticks = num(19);
    let vsize = num(20);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let open_fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let max_fds = fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| {
            let line = l.lines().find(|l| l.starts_with("Max open files"))?;
            let soft = line.split_whitespace().nth(3)?;
            Some(if soft == "unlimited" {
                f64::INFINITY
            } else {
                soft.parse().ok()?
            })
        })
        .unwrap_or(f64::NAN);
    Some(ProcStats {
        cpu_seconds: (utime + stime) as f64 / user_hz(),
        rss_bytes: rss_kb * 1024,
        vsize_bytes: vsize,
        start_time: boot_time().unwrap_or(0.0) + start_ticks as f64 / user_hz(),
        threads,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_self() {
        let s = super::read_self().expect("/proc/self is readable");
        assert!(s.rss_bytes > 0);
        assert!(s.threads >= 1);
        assert!(s.open_fds >= 3);
        assert!(s.start_time > 1.6e9, "{}", s.start_time);
    }

    #[test]
    fn threads_of_a_pid() {
        let n = super::threads(std::process::id()).expect("own stat");
        assert!(n >= 1);
        assert_eq!(super::threads(u32::MAX), None);
    }
}
