//! CPU time a process tree spent, read from `/proc/<pid>/stat` (user + system clock ticks of
//! every thread), so the load generator sharing the cores does not change what is charged to
//! the proxy.

use anyhow::Context;

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
const TICKS_PER_SECOND: u64 = 100;

/// A set of processes whose CPU time is summed: a proxy, or nginx's master and workers.
#[derive(Debug, Clone)]
pub struct Processes {
    pids: Vec<u32>,
}

impl Processes {
    /// `pid` alone (threads included: `/proc/<pid>/stat` counts the whole thread group).
    pub fn one(pid: u32) -> Self {
        Self { pids: vec![pid] }
    }

    /// `pid` and its direct children (nginx's master and its worker processes).
    pub fn with_children(pid: u32) -> anyhow::Result<Self> {
        let mut pids = vec![pid];
        for entry in std::fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat"))
                && fields(&stat).and_then(|f| f.get(1).copied()) == Some(&pid.to_string())
            {
                pids.push(child);
            }
        }
        Ok(Self { pids })
    }

    /// User + system time so far, microseconds.
    pub fn cpu_us(&self) -> anyhow::Result<u64> {
        let mut ticks = 0;
        for pid in &self.pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("reading /proc/{pid}/stat"))?;
            let f = fields(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))?;
            // After the command: state(0) ppid(1) … utime(11) stime(12).
            let utime: u64 = f.get(11).context("utime")?.parse()?;
            let stime: u64 = f.get(12).context("stime")?.parse()?;
            ticks += utime + stime;
        }
        Ok(ticks * 1_000_000 / TICKS_PER_SECOND)
    }
}

/// User + system time so far of the threads of `pid` named `name` (`/proc/<pid>/task/*/stat`),
/// microseconds: what one part of a process (Latchkey's audit writer) costs.
pub fn threads_cpu_us(pid: u32, name: &str) -> anyhow::Result<u64> {
    let mut ticks = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(entry) = entry else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let command = stat
            .find('(')
            .zip(stat.rfind(')'))
            .map(|(open, close)| &stat[open + 1..close]);
        if command != Some(name) {
            continue;
        }
        let f = fields(&stat).context("parsing a thread's stat")?;
        let utime: u64 = f.get(11).context("utime")?.parse()?;
        let stime: u64 = f.get(12).context("stime")?.parse()?;
        ticks += utime + stime;
    }
    Ok(ticks * 1_000_000 / TICKS_PER_SECOND)
}

/// The fields after `(command)`, which may itself hold spaces.
fn fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_charged_for_its_own_work() {
        // Spin until 50 ms of CPU time show up (on a loaded machine that takes longer than 50 ms
        // of wall time, so the wall clock only bounds the wait), then check the process was not
        // charged more than its threads could have used meanwhile.
        let me = Processes::one(std::process::id());
        let before = me.cpu_us().expect("read own stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..200_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            let used = me.cpu_us().expect("read own stat") - before;
            if used >= 50_000 {
                break used;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "50 ms of spinning never showed up in 30 s: {used} µs"
            );
        };
        std::hint::black_box(x);
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as u128;
        let ceiling = started.elapsed().as_micros() * cores + 20_000;
        assert!(
            u128::from(used) <= ceiling,
            "charged {used} µs in at most {ceiling} µs of CPU"
        );
    }
}
