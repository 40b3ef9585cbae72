//! Which organisations this replica polls: `--shard.count N --shard.index I`, each organisation
//! assigned to exactly one shard by rendezvous (highest random weight) hashing of its name, as
//! kube-state-metrics shards objects. Adding or removing an organisation moves no other one;
//! changing N moves only about 1/N of them.
//!
//! The hash is SipHash-1-3 with a fixed all-zero key over the name and the shard's index, so
//! every replica, of every version, computes the same assignment.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// The largest `--shard.count`.
pub const MAX_SHARDS: u32 = 1024;

/// This replica's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Checks `index < count` and `1 <= count <= MAX_SHARDS`.
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "--shard.count: {count} is not from 1 to {MAX_SHARDS}"
            ));
        }
        if index >= count {
            return Err(format!(
                "--shard.index: {index} is not below --shard.count ({count}); shards are numbered from 0"
            ));
        }
        Ok(Shard { index, count })
    }

    /// The shard of an organisation.
    pub fn of(name: &str, count: u32) -> u32 {
        (0..count.max(1))
            .max_by_key(|&i| (weight(name, i), std::cmp::Reverse(i)))
            .unwrap_or(0)
    }

    /// True when this replica polls `name`.
    pub fn owns(&self, name: &str) -> bool {
        Shard::of(name, self.count) == self.index
    }
}

fn weight(name: &str, shard: u32) -> u64 {
    let mut h = SipHasher13::new_with_keys(0, 0);
    h.write(&(name.len() as u64).to_le_bytes());
    h.write(name.as_bytes());
    h.write(&shard.to_le_bytes());
    h.finish()
}

/// The ordinal of a StatefulSet pod's name (`qonto-exporter-2` → 2), for `--shard.index` when
/// only `--shard.count` is given.
pub fn ordinal(pod_name: &str) -> Option<u32> {
    let (_, n) = pod_name.trim().rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_exactly_one_shard_and_shards_share_fairly() {
        let names: Vec<String> = (0..3000).map(|i| format!("org-{i}")).collect();
        for count in [1, 2, 3, 7] {
            let mut sizes = vec![0usize; count as usize];
            for n in &names {
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard::new(i, count).unwrap().owns(n))
                    .collect();
                assert_eq!(owners.len(), 1, "{n} in {count} shards: {owners:?}");
                sizes[owners[0] as usize] += 1;
            }
            let fair = names.len() / count as usize;
            for s in sizes {
                assert!(s.abs_diff(fair) < fair / 5 + 20, "{count}: {s} vs {fair}");
            }
        }
    }

    #[test]
    fn growing_the_count_moves_only_what_goes_to_the_new_shard() {
        let names: Vec<String> = (0..2000).map(|i| format!("o{i}")).collect();
        for n in &names {
            let before = Shard::of(n, 4);
            let after = Shard::of(n, 5);
            assert!(after == before || after == 4, "{n}: {before} → {after}");
        }
    }

    #[test]
    fn the_assignment_is_fixed_across_versions() {
        // Replicas of different versions must agree: these values are the contract.
        let got: Vec<u32> = ["acme", "globex", "initech", "umbrella"]
            .iter()
            .map(|n| Shard::of(n, 3))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 4] = [0, 1, 2, 0];

    #[test]
    fn bounds_and_ordinals() {
        assert!(Shard::new(0, 0).is_err());
        assert!(Shard::new(2, 2).unwrap_err().contains("--shard.index"));
        assert!(
            Shard::new(0, MAX_SHARDS + 1)
                .unwrap_err()
                .contains("--shard.count")
        );
        assert!(Shard::new(u32::MAX, u32::MAX).is_err());
        assert_eq!(ordinal("qonto-exporter-2"), Some(2));
        assert_eq!(ordinal("qonto-exporter-10\n"), Some(10));
        assert_eq!(ordinal("qonto-exporter"), None);
        assert_eq!(ordinal("qonto-exporter-"), None);
        assert_eq!(ordinal("qonto-exporter-7b9f4c6d5-x2x9q"), None);
        assert_eq!(ordinal("x-99999999999999999999"), None);
        assert_eq!(ordinal("x--1"), Some(1));
    }
}
