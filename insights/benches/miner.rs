//! The template miner's grouping accuracy on the LogHub 2k sets and its throughput on one core.
//!
//! `cargo bench --bench miner` (or `cargo run --release -p loglake-insights --bench miner`);
//! `LOGHUB_DIR` overrides the data folder (default `tests/data/loghub`, `<System>_2k.tsv`).
//! Throughput baseline in the same run: tokenising + masking alone (the miner's floor).

use std::path::PathBuf;
use std::time::Instant;

use loglake_insights::accuracy::{drain_accuracy, read_labelled};
use loglake_insights::mask;
use loglake_insights::{Drain, DrainConfig};

fn main() {
    let dir = std::env::var_os("LOGHUB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/loghub"));
    let mut sets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("_2k.tsv"))
        .collect();
    sets.sort();
    let configs: Vec<(&str, DrainConfig)> = vec![
        ("default (st=0.5, depth=4)", DrainConfig::default()),
        (
            "st=0.4",
            DrainConfig {
                similarity: 0.4,
                ..Default::default()
            },
        ),
        (
            "st=0.6",
            DrainConfig {
                similarity: 0.6,
                ..Default::default()
            },
        ),
        (
            "wildcard_matches",
            DrainConfig {
                wildcard_matches: true,
                ..Default::default()
            },
        ),
    ];
    let mut all_lines: Vec<String> = Vec::new();
    println!(
        "| set | lines | events | {} |",
        configs.iter().map(|c| c.0).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(configs.len()));
    let mut sums = vec![0.0; configs.len()];
    for p in &sets {
        let lines = read_labelled(p).unwrap_or_else(|e| panic!("{e}"));
        let events: std::collections::HashSet<&str> =
            lines.iter().map(|(t, _)| t.as_str()).collect();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .replace("_2k.tsv", "");
        let accs: Vec<f64> = configs
            .iter()
            .map(|(_, c)| drain_accuracy(&lines, c))
            .collect();
        for (s, a) in sums.iter_mut().zip(&accs) {
            *s += a;
        }
        println!(
            "| {name} | {} | {} | {} |",
            lines.len(),
            events.len(),
            accs.iter()
                .map(|a| format!("{a:.3}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        all_lines.extend(lines.into_iter().map(|(_, m)| m));
    }
    let n = sets.len().max(1) as f64;
    println!(
        "| **average** | | | {} |",
        sums.iter()
            .map(|s| format!("**{:.3}**", s / n))
            .collect::<Vec<_>>()
            .join(" | ")
    );

    // throughput on one core: every LogHub line, repeated to about 1 M lines
    let reps = (1_000_000 / all_lines.len().max(1)).max(1);
    let total = reps * all_lines.len();
    let bytes: usize = all_lines.iter().map(|l| l.len() + 1).sum::<usize>() * reps;
    let t = Instant::now();
    let mut toks = Vec::new();
    let mut masked = 0usize;
    for _ in 0..reps {
        for l in &all_lines {
            mask::tokenize(mask::first_line(l), 128, &mut toks);
            masked += toks.len();
        }
    }
    let mask_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut d = Drain::default();
    let mut sink = 0u64;
    for _ in 0..reps {
        for l in &all_lines {
            sink = sink.wrapping_add(u64::from(d.add(l)));
        }
    }
    let mine_s = t.elapsed().as_secs_f64();
    println!();
    println!(
        "throughput, one thread, {total} lines ({:.1} MB), {} clusters:",
        bytes as f64 / 1e6,
        d.clusters().len()
    );
    println!(
        "  tokenise+mask only: {:>10.0} lines/s ({:.1} MB/s) [tokens {masked}]",
        total as f64 / mask_s,
        bytes as f64 / 1e6 / mask_s
    );
    println!(
        "  miner (Drain):      {:>10.0} lines/s ({:.1} MB/s) [{sink}]; miner/mask time ratio {:.2}",
        total as f64 / mine_s,
        bytes as f64 / 1e6 / mine_s,
        mine_s / mask_s
    );
}
