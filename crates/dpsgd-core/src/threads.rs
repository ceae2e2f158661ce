//! How many threads the library's own parallel loops use.

/// The process's available parallelism (1 when unknown), read once: on
/// Linux each read parses the cgroup's CPU quota, ≈ 30 µs, 1% of a small
/// DP step.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
