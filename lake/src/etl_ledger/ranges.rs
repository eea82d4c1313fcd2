//! Offset and version range arithmetic of the ledger: merging offset ranges without losing
//! multiplicity, and the gaps and complements of inclusive version ranges.

use std::collections::{BTreeMap, BTreeSet};

/// Half-open offset ranges `[start, end)` per (topic, partition).
pub type RangeMap = BTreeMap<(String, i32), Vec<(i64, i64)>>;

/// The filtered and moved offsets of one or more commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtlOffsets {
    pub filtered: RangeMap,
    pub moved: RangeMap,
}

impl EtlOffsets {
    /// Adds `other`'s ranges (kept as they are: an offset listed twice stays listed twice).
    pub fn extend(&mut self, other: EtlOffsets) {
        for (mine, theirs) in [
            (&mut self.filtered, other.filtered),
            (&mut self.moved, other.moved),
        ] {
            for (k, v) in theirs {
                mine.entry(k).or_default().extend(v);
            }
        }
    }

    /// The same offsets with each list merged by [`merge_ranges`].
    pub fn merged(self) -> Self {
        let merge = |m: RangeMap| -> RangeMap {
            m.into_iter()
                .map(|(k, v)| (k, merge_ranges(v)))
                .filter(|(_, v)| !v.is_empty())
                .collect()
        };
        EtlOffsets {
            filtered: merge(self.filtered),
            moved: merge(self.moved),
        }
    }

    /// The number of ranges held (filtered and moved).
    pub fn range_count(&self) -> u64 {
        self.filtered
            .values()
            .chain(self.moved.values())
            .map(|v| v.len() as u64)
            .sum()
    }
}

/// Merges half-open ranges without losing multiplicity: every offset is covered by as many
/// output ranges as input ranges (so an offset recorded twice, which the audit must report as a
/// duplicate, is still recorded twice). The first "layer" is the sorted union with touching
/// ranges joined; offsets covered k times also appear in layers 2..=k. Empty ranges vanish.
pub fn merge_ranges(ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    let mut events: Vec<(i64, i64)> = ranges
        .iter()
        .filter(|(a, b)| a < b)
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    events.sort_unstable();
    // maximal segments of constant positive multiplicity, in order
    let mut segments: Vec<(i64, i64, i64)> = Vec::new();
    let (mut depth, mut prev) = (0i64, i64::MIN);
    for (x, d) in events {
        if x > prev && depth > 0 {
            segments.push((prev, x, depth));
        }
        depth += d;
        prev = x;
    }
    let layers = segments.iter().map(|s| s.2).max().unwrap_or(0);
    let mut out = Vec::new();
    for k in 1..=layers {
        let mut layer: Vec<(i64, i64)> = Vec::new();
        for &(a, b, m) in &segments {
            if m < k {
                continue;
            }
            match layer.last_mut() {
                Some((_, end)) if *end == a => *end = b,
                _ => layer.push((a, b)),
            }
        }
        out.extend(layer);
    }
    out
}

/// Inclusive version ranges, sorted, overlapping and adjacent ones joined.
pub fn merge_versions(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|(a, b)| a <= b);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some((_, end)) if a <= end.saturating_add(1) => *end = (*end).max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The number of versions in inclusive ranges.
pub fn version_count(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|(a, b)| b - a + 1).sum()
}

/// The inclusive ranges of versions in `from..=to` that `covered` (inclusive ranges, any order)
/// does not cover.
pub fn uncovered(from: u64, to: u64, covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if from > to {
        return out;
    }
    let mut next = from;
    for (a, b) in merge_versions(covered.to_vec()) {
        if b < next {
            continue;
        }
        if a > to {
            break;
        }
        if a > next {
            out.push((next, a - 1));
        }
        next = match b.checked_add(1) {
            Some(n) => n,
            None => return out,
        };
        if next > to {
            return out;
        }
    }
    out.push((next, to));
    out
}

/// The versions in `from..=to` missing from `present`, as inclusive ranges.
pub fn version_gaps(from: u64, to: u64, present: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let covered: Vec<(u64, u64)> = present.range(from..=to).map(|&v| (v, v)).collect();
    uncovered(from, to, &covered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// How many of `ranges` cover `o`.
    fn depth(ranges: &[(i64, i64)], o: i64) -> usize {
        ranges.iter().filter(|(a, b)| *a <= o && o < *b).count()
    }

    proptest! {
        #[test]
        fn merging_keeps_every_offsets_multiplicity(
            ranges in prop::collection::vec((0i64..60, 0i64..8), 0..12)
        ) {
            let ranges: Vec<(i64, i64)> = ranges.into_iter().map(|(a, l)| (a, a + l)).collect();
            let merged = merge_ranges(ranges.clone());
            for o in -1..70 {
                prop_assert_eq!(depth(&merged, o), depth(&ranges, o), "offset {}", o);
            }
            prop_assert!(merged.iter().all(|(a, b)| a < b));
            // idempotent
            prop_assert_eq!(merge_ranges(merged.clone()), merged);
        }

        #[test]
        fn disjoint_ranges_merge_into_one_sorted_layer(
            mut starts in prop::collection::btree_set(0i64..200, 0..20)
        ) {
            // disjoint ranges [s, s+1) from a set, shuffled by reversing
            let ranges: Vec<(i64, i64)> = std::mem::take(&mut starts).into_iter().rev().map(|s| (s, s + 1)).collect();
            let merged = merge_ranges(ranges.clone());
            prop_assert!(merged.windows(2).all(|w| w[0].1 < w[1].0), "{:?}", merged);
            prop_assert_eq!(
                merged.iter().map(|(a, b)| b - a).sum::<i64>(),
                ranges.len() as i64
            );
        }

        #[test]
        fn gaps_and_present_versions_partition_the_range(
            from in 0u64..20, len in 0u64..40,
            present in prop::collection::btree_set(0u64..70, 0..40)
        ) {
            let to = from + len;
            let gaps = version_gaps(from, to, &present);
            for v in from..=to {
                let in_gap = gaps.iter().any(|(a, b)| *a <= v && v <= *b);
                prop_assert_eq!(in_gap, !present.contains(&v), "version {}", v);
            }
            prop_assert!(gaps.iter().all(|(a, b)| from <= *a && a <= b && *b <= to));
            prop_assert!(gaps.windows(2).all(|w| w[0].1 + 1 < w[1].0), "{:?}", gaps);
            prop_assert_eq!(version_count(&gaps), (from..=to).filter(|v| !present.contains(v)).count() as u64);
        }

        #[test]
        fn uncovered_is_the_complement(
            latest in 0u64..50,
            covered in prop::collection::vec((0u64..60, 0u64..10), 0..6)
        ) {
            let covered: Vec<(u64, u64)> = covered.into_iter().map(|(a, l)| (a, a + l)).collect();
            let out = uncovered(0, latest, &covered);
            for v in 0..=latest {
                let c = covered.iter().any(|(a, b)| *a <= v && v <= *b);
                let u = out.iter().any(|(a, b)| *a <= v && v <= *b);
                prop_assert_eq!(c, !u, "version {}", v);
            }
        }
    }

    #[test]
    fn merging_examples() {
        assert_eq!(
            merge_ranges(vec![(5, 7), (0, 2), (2, 3), (9, 9)]),
            vec![(0, 3), (5, 7)]
        );
        // offsets 1 and 2 listed twice stay listed twice
        assert_eq!(merge_ranges(vec![(0, 3), (1, 4)]), vec![(0, 4), (1, 3)]);
        assert_eq!(
            merge_versions(vec![(4, 5), (0, 1), (2, 3), (8, 9), (9, 9)]),
            vec![(0, 5), (8, 9)]
        );
        assert_eq!(
            uncovered(0, 9, &[(2, 3), (5, 5)]),
            vec![(0, 1), (4, 4), (6, 9)]
        );
        assert_eq!(uncovered(0, 3, &[(0, 7)]), vec![]);
    }
}
