//! What the memory and CPU scenarios read from Linux's `/proc`: resident
//! memory (`VmRSS`), CPU time (`utime + stime`), process trees, and the
//! mappings of `/proc/PID/smaps` (to tell a Wasm linear memory from the rest).

use std::time::Instant;

use anyhow::{Context, Result};

/// One `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`, …), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("{field} missing in /proc/{pid}/status"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

/// Resident memory (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// KiB → MiB.
#[allow(clippy::cast_precision_loss)]
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU time of one process at one moment.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    pub at: Instant,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
}

/// Reads utime + stime from `/proc/PID/stat`.
pub fn cpu_sample(pid: u32) -> Result<CpuSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let num = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("/proc stat field")
    };
    Ok(CpuSample {
        at,
        ticks: num(11)? + num(12)?,
    })
}

/// Clock ticks per second for /proc times (USER_HZ; 100 on Linux).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// % of one core between two samples.
#[allow(clippy::cast_precision_loss)]
pub fn cpu_percent(a: CpuSample, b: CpuSample, hz: f64) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (b.ticks.saturating_sub(a.ticks) as f64 / hz) / secs * 100.0
}

/// The parent pid (`PPid:`) of a process, when it still exists.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Every live process: (pid, command name from `/proc/PID/comm`).
pub fn processes() -> Vec<(u32, String)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some((pid, comm.trim().to_string()))
        })
        .collect()
}

/// The soft limit on open files, from /proc/self/limits.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// One mapping of `/proc/PID/smaps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rw-p`, `---p`, …
    pub perms: String,
    /// The path or `[heap]`-like name; empty for anonymous memory.
    pub name: String,
    /// Resident KiB.
    pub rss_kib: u64,
}

impl Mapping {
    pub fn size(&self) -> u64 {
        self.end - self.start
    }
}

/// Parses the text of `/proc/PID/smaps`.
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(first) = parts.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            // A header: range perms offset dev inode [name…].
            let perms = parts.next().unwrap_or_default().to_string();
            let name = parts.skip(3).collect::<Vec<_>>().join(" ");
            out.push(Mapping {
                start,
                end,
                perms,
                name,
                rss_kib: 0,
            });
        } else if first == "Rss:"
            && let Some(m) = out.last_mut()
        {
            m.rss_kib = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    out
}

/// Reads and parses `/proc/PID/smaps`.
pub fn smaps(pid: u32) -> Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    Ok(parse_smaps(&text))
}

/// What the Wasm linear memories of a process hold resident.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearMemories {
    /// How many were recognised.
    pub count: usize,
    /// Their resident KiB (accessible parts; guards are never resident).
    pub rss_kib: u64,
}

/// wasmtime's defaults on 64-bit hosts (`Tunables::default_host`): each
/// 32-bit linear memory reserves 4 GiB, with 32 MiB guards.
const MEMORY_RESERVATION: u64 = 4 << 30;
const MEMORY_GUARD: u64 = 32 << 20;
/// The inaccessible tail of a linear memory is at least this large (its
/// 4 GiB reservation less what is accessible, and no Wasm memory here grows
/// anywhere near 3 GiB).
pub const LINEAR_MEMORY_TAIL_MIN: u64 = 1 << 30;
/// And at most this large: the reservation plus the guard after it, plus the
/// guard before the next memory when the kernel merged the two (adjacent
/// `PROT_NONE` anonymous mappings are one VMA). The pooling allocator's
/// single reservation for all its slots (the HTTP engine's pool, hundreds
/// of GiB) is far larger and is not a linear memory of an on-demand instance.
pub const LINEAR_MEMORY_TAIL_MAX: u64 = MEMORY_RESERVATION + 2 * MEMORY_GUARD;

/// Finds the Wasm linear memories among `maps` (sorted by address, as the
/// kernel lists them) and sums their resident memory.
///
/// How they are recognised. The agent's engine for ordinary Wasm pods
/// (`edge-agent/src/wasm/engine.rs`) uses wasmtime's on-demand allocator
/// with its default tunables on 64-bit hosts: every 32-bit linear memory is
/// one `mmap` of
/// `memory_guard_size` (32 MiB, as `guard_before_linear_memory` is on) +
/// `memory_reservation` (4 GiB) + `memory_guard_size` (32 MiB), all
/// `PROT_NONE`, of which wasmtime then makes the memory's current size
/// readable and writable (and, with `memory_init_cow`, maps the module's
/// initial data over its start from a `memfd:wasm-memory-image`). In smaps
/// one linear memory is therefore: a `---p` guard, one or more adjacent
/// accessible mappings (anonymous or the memfd image), then a `---p` tail
/// of about 4 GiB. The scan finds every `---p` mapping between
/// [`LINEAR_MEMORY_TAIL_MIN`] and [`LINEAR_MEMORY_TAIL_MAX`] and walks back
/// over the adjacent accessible mappings to the guard before them; those
/// mappings are the linear memory. (Memories in a pooling allocator's
/// reservation are not counted: the scenarios run no pods that use one.)
pub fn linear_memories(maps: &[Mapping]) -> LinearMemories {
    let mut out = LinearMemories::default();
    for (i, tail) in maps.iter().enumerate() {
        if !tail.perms.starts_with("---")
            || !(LINEAR_MEMORY_TAIL_MIN..=LINEAR_MEMORY_TAIL_MAX).contains(&tail.size())
        {
            continue;
        }
        let mut rss = tail.rss_kib;
        let mut j = i;
        let mut guarded = false;
        while j > 0 {
            let (prev, next) = (&maps[j - 1], &maps[j]);
            if prev.end != next.start {
                break;
            }
            if prev.perms.starts_with("---") {
                guarded = true;
                rss += prev.rss_kib;
                break;
            }
            rss += prev.rss_kib;
            j -= 1;
        }
        // A memory of size 0 has no accessible part: the guard sits right
        // before the tail, which the loop above counts as guarded too.
        if guarded {
            out.count += 1;
            out.rss_kib += rss;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f0000000000-7f0002000000 ---p 00000000 00:00 0 
Rss:                   0 kB
7f0002000000-7f0002010000 rw-p 00000000 00:01 12 /memfd:wasm-memory-image (deleted)
Rss:                  64 kB
7f0002010000-7f0002110000 rw-p 00000000 00:00 0 
Rss:                  12 kB
7f0002110000-7f0104000000 ---p 00000000 00:00 0 
Rss:                   0 kB
7f0104000000-7f0104021000 rw-p 00000000 00:00 0 
Rss:                 132 kB
";

    #[test]
    fn finds_a_linear_memory_and_its_resident_pages() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[1].name, "/memfd:wasm-memory-image (deleted)");
        assert_eq!(maps[4].rss_kib, 132);
        assert_eq!(
            linear_memories(&maps),
            LinearMemories {
                count: 1,
                rss_kib: 76
            }
        );
    }

    #[test]
    fn a_pooling_reservation_is_not_one() {
        // What the agent's HTTP engine reserves up front (516 GiB).
        let pool = "\
7ed288bff000-7ed288dff000 rw-p 00000000 00:00 0 
Rss:                   0 kB
7ed288dff000-7ed288e00000 ---p 00000000 00:00 0 
Rss:                   0 kB
7ed288e00000-7ed28e000000 rw-p 00000000 00:00 0 
Rss:                   4 kB
7ed28e000000-7f5390000000 ---p 00000000 00:00 0 
Rss:                   0 kB
";
        let maps = parse_smaps(&format!("{SMAPS}{pool}"));
        assert_eq!(
            linear_memories(&maps),
            LinearMemories {
                count: 1,
                rss_kib: 76
            }
        );
    }

    #[test]
    fn a_large_reservation_without_a_guard_before_is_not_one() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(linear_memories(&maps[1..]).count, 0);
    }
}
