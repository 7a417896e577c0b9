//! The free space of the data dir's disk. The store writes only when something happens, so an
//! idle server on a disk that filled up would look ready until its first caller is refused:
//! readiness and `/metrics` read the space itself.

use std::path::Path;

/// Below this much free space the server is not ready. A grant writes some tens of KiB
/// (its log frames, then the checkpoint's copies), a recorded bulk transfer as much as it
/// moves: what is left under this is the margin in which writes start to fail.
pub const LOW_WATER_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes an unprivileged process may still write on the disk holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let fs = rustix::fs::statvfs(dir)?;
    Ok(fs.f_bavail.saturating_mul(fs.f_frsize))
}

/// Why a disk with `free` bytes left is too full to take the store's writes, if it is.
pub fn shortage(free: u64) -> Option<String> {
    (free < LOW_WATER_BYTES).then(|| {
        format!(
            "the data dir's disk has {} free, under the {} MiB kept for the store's writes and \
             recordings: free space or grow the disk",
            shown(free),
            LOW_WATER_BYTES >> 20
        )
    })
}

/// `free` in the largest unit that keeps it above 1, to one decimal.
fn shown(free: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if free >= 1 << 20 {
        format!("{:.1} MiB", free as f64 / MIB)
    } else {
        format!("{} KiB", free >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_under_the_low_water_mark_is_too_full() {
        assert_eq!(shortage(LOW_WATER_BYTES), None);
        let said = shortage(3 << 19).unwrap();
        assert!(
            said.starts_with("the data dir's disk has 1.5 MiB free, under the 64 MiB"),
            "{said}"
        );
        assert!(shortage(0).unwrap().contains("has 0 KiB free"));
    }

    #[test]
    fn the_free_space_of_a_real_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
