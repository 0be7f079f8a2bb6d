//! Content-defined chunk sizes (FastCDC 2020): parsing, defaults, limits.
//! Only the sizes live here; the chunkers themselves are fastcdc's.

use serde::{Deserialize, Serialize};

/// Minimum, average and maximum chunk sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkSizes {
    /// 256 KiB / 1 MiB / 4 MiB, as the specification sets.
    fn default() -> Self {
        ChunkSizes {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

impl ChunkSizes {
    /// The sizes a snapshot's manifest is cut with: each at least the
    /// default, so a backup cut into tiny chunks still has a manifest of a
    /// few large chunks (its chunk list travels in the commit and the
    /// sealed sequence header, which must stay under the raft entry bound).
    pub fn for_manifest(self) -> Self {
        let d = ChunkSizes::default();
        ChunkSizes {
            min: self.min.max(d.min),
            avg: self.avg.max(d.avg),
            max: self.max.max(d.max),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid chunk sizes min {min}, avg {avg}, max {max}: {why}")]
pub struct ChunkSizeError {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    pub why: &'static str,
}

impl ChunkSizes {
    /// The largest chunk strew accepts: packets must stay under the packet
    /// store's and the wire's limits.
    pub const MAX_MAX: u32 = 4 * 1024 * 1024;

    /// Checks FastCDC's limits and strew's (even sizes, min ≤ avg ≤ max ≤ 4 MiB).
    pub fn validate(self) -> Result<Self, ChunkSizeError> {
        let err = |why| {
            Err(ChunkSizeError {
                min: self.min,
                avg: self.avg,
                max: self.max,
                why,
            })
        };
        use fastcdc::v2020 as f;
        if !self.min.is_multiple_of(2) || !self.avg.is_multiple_of(2) || !self.max.is_multiple_of(2)
        {
            return err("sizes must be even");
        }
        if !(self.min <= self.avg && self.avg <= self.max) {
            return err("need min <= avg <= max");
        }
        if (self.min as usize) < f::MINIMUM_MIN || (self.min as usize) > f::MINIMUM_MAX {
            return err("min must be between 64 B and 1 MiB");
        }
        if (self.avg as usize) < f::AVERAGE_MIN || (self.avg as usize) > f::AVERAGE_MAX {
            return err("avg must be between 256 B and 4 MiB");
        }
        if (self.max as usize) < f::MAXIMUM_MIN || self.max > Self::MAX_MAX {
            return err("max must be between 1 KiB and 4 MiB");
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_never_cut_finer_than_the_default_sizes() {
        let tiny = ChunkSizes {
            min: 64,
            avg: 256,
            max: 1024,
        };
        assert_eq!(tiny.for_manifest(), ChunkSizes::default());
        let large = ChunkSizes {
            min: 1 << 20,
            avg: 4 << 20,
            max: 16 << 20,
        };
        assert_eq!(large.for_manifest(), large);
        assert!(tiny.for_manifest().validate().is_ok());
    }

    #[test]
    fn defaults_are_valid_and_bad_sizes_are_named() {
        assert!(ChunkSizes::default().validate().is_ok());
        let odd = ChunkSizes {
            min: 1025,
            avg: 4096,
            max: 8192,
        };
        assert_eq!(odd.validate().unwrap_err().why, "sizes must be even");
        let order = ChunkSizes {
            min: 8192,
            avg: 4096,
            max: 8192,
        };
        assert!(order.validate().is_err());
        let huge = ChunkSizes {
            min: 1024,
            avg: 4096,
            max: 8 << 20,
        };
        assert!(huge.validate().is_err());
    }
}
