//! What the bench reads about an Envoy process, and where threads run.
//!
//! CPU time is read from the process's CPU-time clock (`clock_getcpuclockid`), which is the
//! same quantity as `utime + stime` in `/proc/<pid>/stat` (every thread, exited ones
//! included) with nanoseconds instead of 10 ms ticks: a one-second window of a few hundred
//! requests needs that precision. `/proc/<pid>/stat` is read too, over whole runs, as a
//! cross-check.

use std::time::Duration;

use crate::BenchError;

/// A process's CPU-time clock.
#[derive(Clone, Copy)]
pub struct CpuClock(libc::clockid_t);

impl CpuClock {
    pub fn of(pid: u32) -> Result<CpuClock, BenchError> {
        let pid = libc::pid_t::try_from(pid)?;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: writes one clockid_t into a local we own.
        let status = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
        if status != 0 {
            return Err(format!("clock_getcpuclockid({pid}) failed: error {status}").into());
        }
        Ok(CpuClock(clock))
    }

    /// CPU time the process has used so far, all threads.
    pub fn read(self) -> Result<Duration, BenchError> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec into a local we own.
        if unsafe { libc::clock_gettime(self.0, &mut now) } != 0 {
            return Err(format!(
                "reading Envoy's CPU clock: {}",
                std::io::Error::last_os_error()
            )
            .into());
        }
        Ok(Duration::new(
            u64::try_from(now.tv_sec)?,
            u32::try_from(now.tv_nsec)?,
        ))
    }
}

/// `utime + stime` from `/proc/<pid>/stat`, in seconds (10 ms resolution).
pub fn stat_cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, BenchError> {
        Ok(fields
            .get(i)
            .ok_or("short /proc stat line")?
            .parse::<u64>()? as f64)
    };
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 {
        per_second as f64
    } else {
        100.0
    };
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) / per_second)
}

/// A field of `/proc/<pid>/status`, e.g. `VmRSS` or `Cpus_allowed_list`.
fn status_field(pid: u32, field: &str) -> Result<String, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("/proc/{pid}/status has no {field}").into())
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let value = status_field(pid, "VmRSS")?;
    Ok(value.trim_end_matches("kB").trim().parse()?)
}

/// The CPUs a process may run on, as the kernel lists them (`0-1`), for the report.
pub fn cpus_allowed(pid: u32) -> String {
    status_field(pid, "Cpus_allowed_list").unwrap_or_else(|_| "?".to_string())
}

/// The machine's CPU time so far from `/proc/stat`, in ticks: (all, steal). Steal is time the
/// hypervisor ran other guests while ours wanted to run.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user.
    let all = fields.iter().take(8).sum();
    (all, fields.get(7).copied().unwrap_or(0))
}

/// CPUs online on the machine (not only those this thread may use: it pins itself).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Restricts the calling thread, and the threads and processes it starts from now on, to
/// `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), BenchError> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it; sched_setaffinity
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "cannot pin to CPUs {cpus:?}: {}",
                std::io::Error::last_os_error()
            )
            .into());
        }
    }
    Ok(())
}

/// Asks the kernel to wake the calling thread's timers on time (1 ns of slack instead of the
/// default 50 µs), so requests leave when scheduled.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}
