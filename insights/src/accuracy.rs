//! Grouping accuracy of a log parser (Drain paper's "parsing accuracy", LogPAI's
//! `GroupAccuracy`): the share of lines whose predicted group is exactly a ground-truth group,
//! i.e. a predicted group counts (all its lines) only when it holds every line of one true event
//! and nothing else.

use std::collections::HashMap;
use std::hash::Hash;

/// Grouping accuracy of `predicted` against `truth` (one label per line, same order). 1.0 for no
/// lines.
pub fn grouping_accuracy<T: Eq + Hash, P: Eq + Hash>(truth: &[T], predicted: &[P]) -> f64 {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "one label per line on both sides"
    );
    if truth.is_empty() {
        return 1.0;
    }
    let mut truth_sizes: HashMap<&T, usize> = HashMap::new();
    for t in truth {
        *truth_sizes.entry(t).or_default() += 1;
    }
    // per predicted group: its size and the single truth label of all its lines (None: mixed)
    let mut groups: HashMap<&P, (usize, Option<&T>, bool)> = HashMap::new();
    for (t, p) in truth.iter().zip(predicted) {
        let g = groups.entry(p).or_insert((0, Some(t), true));
        g.0 += 1;
        if g.1 != Some(t) {
            g.2 = false;
        }
    }
    let correct: usize = groups
        .values()
        .filter(|(n, t, pure)| *pure && t.is_some_and(|t| truth_sizes.get(t) == Some(n)))
        .map(|(n, _, _)| *n)
        .sum();
    correct as f64 / truth.len() as f64
}

/// Read a labelled log file: one `label<TAB>message` per line (the layout of
/// `tests/data/loghub/*_2k.tsv`).
pub fn read_labelled(path: &std::path::Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            l.split_once('\t')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    std::io::Error::other(format!(
                        "{}: line {} has no tab between label and message",
                        path.display(),
                        i + 1
                    ))
                })
        })
        .collect()
}

/// Mine `lines` with one miner and return the grouping accuracy against their labels.
pub fn drain_accuracy(lines: &[(String, String)], cfg: &crate::DrainConfig) -> f64 {
    let mut d = crate::Drain::new(cfg.clone());
    let predicted: Vec<u32> = lines.iter().map(|(_, m)| d.add(m)).collect();
    // a cluster's final template is its group: clusters whose templates ended equal are one group
    let texts: Vec<String> = d.clusters().iter().map(|c| c.template()).collect();
    let predicted: Vec<&str> = predicted
        .iter()
        .map(|&c| texts[c as usize].as_str())
        .collect();
    let truth: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
    grouping_accuracy(&truth, &predicted)
}

#[cfg(test)]
mod tests {
    use super::grouping_accuracy;

    #[test]
    fn exact_groups_only() {
        let truth = ["a", "a", "b", "b", "c"];
        assert_eq!(grouping_accuracy(&truth, &[1, 1, 2, 2, 3]), 1.0);
        // b split in two: its two lines are wrong
        assert_eq!(grouping_accuracy(&truth, &[1, 1, 2, 4, 3]), 0.6);
        // a and c merged: three lines wrong
        assert_eq!(grouping_accuracy(&truth, &[1, 1, 2, 2, 1]), 0.4);
        assert_eq!(grouping_accuracy::<u8, u8>(&[], &[]), 1.0);
    }
}
