//! Work whose buffers cannot fit is refused before any of them is allocated. An allocation that fails
//! aborts the process ("memory allocation of N bytes failed"), with no file, field or fix named, after
//! whatever work came before it; so every command that sizes its buffers from user input (counts, image
//! sides) states what they will take and asks here first.
use anyhow::{bail, Result};

/// Bytes of an f32 array of `dims`, saturating at u128::MAX: no product of user-given sizes can wrap to a
/// small, acceptable number (callers scale it with `saturating_mul` for the same reason).
pub fn f32_bytes(dims: &[usize]) -> u128 {
    dims.iter().try_fold(4u128, |a, &d| a.checked_mul(d as u128)).unwrap_or(u128::MAX)
}

/// The memory this process can allocate now, read when asked (it changes while other processes run): the
/// least of the kernel's `MemAvailable` (/proc/meminfo), the cgroup's headroom (`memory.max` less
/// `memory.current`, cgroup v2, as in a container) and the address-space limit (`RLIMIT_AS`). `None` when
/// none of them is known.
pub fn available_bytes() -> Option<u128> {
    let meminfo = || -> Option<u128> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse::<u128>().ok();
    let cgroup = || Some(read("/sys/fs/cgroup/memory.max")?.saturating_sub(read("/sys/fs/cgroup/memory.current")?));
    [meminfo(), cgroup(), address_space_limit()].into_iter().flatten().min()
}

#[cfg(unix)]
fn address_space_limit() -> Option<u128> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as u128)
}

#[cfg(not(unix))]
fn address_space_limit() -> Option<u128> {
    None
}

/// `bytes` as the unit a person reads (KiB … TiB, one decimal).
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Refuses `what` when the `bytes` it will hold at once exceed the memory available now (or the address
/// space, where /proc/meminfo cannot be read). `fix` says which flag to lower.
pub fn check_fits(what: &str, bytes: u128, fix: &str) -> Result<()> {
    let limit = available_bytes().unwrap_or(isize::MAX as u128);
    if bytes > limit {
        bail!(
            "{what} would need at least {} of memory, more than the {} available on this machine. Fix: {fix}",
            human(bytes),
            human(limit)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_refused_before_they_wrap_or_abort() {
        // 10^9 images of 32×32: 4 TB, on no machine this runs on; the product would wrap a u32.
        let bytes = f32_bytes(&[1_000_000_000, 1, 32, 32]);
        assert_eq!(bytes, 4_096_000_000_000);
        let e = check_fits("phantoms(n=1000000000, size=32)", bytes, "lower --n").unwrap_err().to_string();
        assert!(e.contains("phantoms(n=1000000000, size=32) would need at least 3.7 TiB"), "{e}");
        assert!(e.contains("Fix: lower --n"), "{e}");
        assert!(check_fits("a small set", f32_bytes(&[16, 1, 32, 32]), "-").is_ok());
        assert_eq!(f32_bytes(&[usize::MAX, usize::MAX]), u128::MAX, "saturates, never wraps");
        assert!(check_fits("usize overflow", f32_bytes(&[usize::MAX, usize::MAX]).saturating_mul(3), "-").is_err());
    }

    #[test]
    fn human_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
