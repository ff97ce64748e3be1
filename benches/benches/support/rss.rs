//! The process's resident set, for the benchmarks that measure memory
//! (included with `#[path]` by each of them).

/// Resident set size of this process, in bytes (Linux: `/proc/self/statm`).
pub fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
