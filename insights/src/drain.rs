//! A Drain-style template miner (He et al., "Drain: An Online Log Parsing Approach with Fixed
//! Depth Tree", ICWS 2017).
//!
//! Each line is tokenised and masked ([`crate::mask`]), then routed through a fixed-depth prefix
//! tree: the first level is the token count, the next `depth - 2` levels are the line's first
//! tokens (a masked token, or a token arriving when a node already has `max_children` children,
//! goes to the `<*>` child). The leaf holds clusters; the line joins the cluster whose template is
//! most similar (share of positions with equal tokens, ties to the template with more
//! wildcards) if that similarity reaches `similarity`, and the positions where the template and
//! the line differ become `<*>`; otherwise it starts a new cluster. Masked tokens compare
//! literally (`<*>` equals `<*>`, as Drain3's `<NUM>` masks do), so a line with many variables
//! still finds its cluster.
//!
//! A template's id is [`template_id`] of its text: the same template gets the same id on any
//! machine, night or version. [`Drain::seed`] loads known templates (the `log_templates` table
//! of earlier nights) so that lines keep joining the templates already known.

use std::collections::HashMap;

use crate::mask::{self, Token, WILDCARD};

/// Miner settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainConfig {
    /// Depth of the prefix tree including the root and the token-count level (Drain's `depth`;
    /// `depth - 2` leading tokens route a line). At least 3.
    pub depth: usize,
    /// Similarity threshold (Drain's `st`), 0..=1.
    pub similarity: f64,
    /// Children per tree node before further tokens share the `<*>` child.
    pub max_children: usize,
    /// Tokens per line kept; the rest becomes one `<*>`.
    pub max_tokens: usize,
    /// Count a template's `<*>` as matching any token in the similarity (Drain3's
    /// `include_params`); off by default.
    pub wildcard_matches: bool,
    /// Characters of a cluster's example line kept.
    pub max_example_chars: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            depth: 4,
            similarity: 0.5,
            max_children: 100,
            max_tokens: 128,
            wildcard_matches: false,
            max_example_chars: 1000,
        }
    }
}

impl DrainConfig {
    /// Parse `key=value` options separated by commas or spaces: `similarity` (or `st`), `depth`,
    /// `max_children`, `max_tokens`, `wildcard_matches` (true/false).
    pub fn parse(options: &str) -> Result<Self, String> {
        let mut c = Self::default();
        for kv in options
            .split(|ch: char| ch == ',' || ch.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("option {kv:?} is not key=value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("option {k}={v}: {e}");
            match k.trim().to_ascii_lowercase().as_str() {
                "similarity" | "st" => c.similarity = v.parse().map_err(|e| bad(&e))?,
                "depth" => c.depth = v.parse().map_err(|e| bad(&e))?,
                "max_children" => c.max_children = v.parse().map_err(|e| bad(&e))?,
                "max_tokens" => c.max_tokens = v.parse().map_err(|e| bad(&e))?,
                "wildcard_matches" => c.wildcard_matches = v.parse().map_err(|e| bad(&e))?,
                other => {
                    return Err(format!(
                        "unknown option {other:?}; expected similarity, depth, max_children, max_tokens, wildcard_matches"
                    ));
                }
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Check the ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.depth < 3 {
            return Err(format!("depth must be at least 3, got {}", self.depth));
        }
        if !(0.0..=1.0).contains(&self.similarity) {
            return Err(format!(
                "similarity must be within 0..=1, got {}",
                self.similarity
            ));
        }
        if self.max_children == 0 || self.max_tokens < 2 {
            return Err("max_children must be >= 1 and max_tokens >= 2".into());
        }
        Ok(())
    }
}

/// Index of a cluster in its miner.
pub type ClusterId = u32;

/// A cluster: its template tokens, how many lines joined it and the first of them.
#[derive(Debug, Clone)]
pub struct Cluster {
    tokens: Vec<Box<str>>,
    space_after: Vec<bool>,
    count: u64,
    example: String,
    seeded_text: Option<String>,
}

impl Cluster {
    /// The template text: tokens joined as in the first line (one space where it had
    /// whitespace).
    pub fn template(&self) -> String {
        let mut s = String::new();
        for (t, sp) in self.tokens.iter().zip(&self.space_after) {
            s.push_str(t);
            if *sp {
                s.push(' ');
            }
        }
        s.truncate(s.trim_end().len());
        s
    }
    /// Lines that joined the cluster.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// The first line that joined it (truncated).
    pub fn example(&self) -> &str {
        &self.example
    }
    /// The template text the cluster was seeded with, if any.
    pub fn seeded_text(&self) -> Option<&str> {
        self.seeded_text.as_deref()
    }
}

/// A mined template as the SQL functions and tables show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MinedTemplate {
    pub template_id: String,
    pub template: String,
    pub count: u64,
    pub example: String,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    clusters: Vec<ClusterId>,
}

/// The miner.
#[derive(Debug)]
pub struct Drain {
    cfg: DrainConfig,
    by_len: HashMap<usize, Node>,
    clusters: Vec<Cluster>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new(DrainConfig::default())
    }
}

/// The stable id of a template: FNV-1a 64 of its text, as 16 hex digits.
pub fn template_id(template: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Drain {
    /// A miner with these settings (call [`DrainConfig::validate`] first for user input).
    pub fn new(cfg: DrainConfig) -> Self {
        Self {
            cfg,
            by_len: HashMap::new(),
            clusters: Vec::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DrainConfig {
        &self.cfg
    }

    /// All clusters, by id.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// One cluster.
    pub fn cluster(&self, id: ClusterId) -> &Cluster {
        &self.clusters[id as usize]
    }

    /// Add a known template (from an earlier run) as a cluster with no lines yet.
    pub fn seed(&mut self, template: &str) -> ClusterId {
        let id = self.insert(template, 0);
        self.clusters[id as usize].seeded_text = Some(self.clusters[id as usize].template());
        id
    }

    /// Mine one message; returns the cluster it joined.
    pub fn add(&mut self, message: &str) -> ClusterId {
        self.insert(message, 1)
    }

    fn insert(&mut self, message: &str, weight: u64) -> ClusterId {
        let line = mask::first_line(message);
        let mut toks: Vec<Token<'_>> = Vec::with_capacity(32);
        mask::tokenize(line, self.cfg.max_tokens, &mut toks);
        let Self {
            cfg,
            by_len,
            clusters,
        } = self;
        let leaf = descend(by_len, cfg, &toks);
        if let Some(id) = best_match(clusters, &leaf.clusters, &toks, cfg) {
            let c = &mut clusters[id as usize];
            for (t, m) in c.tokens.iter_mut().zip(&toks) {
                if **t != *m.text {
                    *t = WILDCARD.into();
                }
            }
            if c.count == 0 && weight > 0 {
                c.example = truncate(line, cfg.max_example_chars);
            }
            c.count += weight;
            return id;
        }
        let id = clusters.len() as ClusterId;
        clusters.push(Cluster {
            tokens: toks.iter().map(|t| Box::from(t.text.as_ref())).collect(),
            space_after: toks.iter().map(|t| t.space_after).collect(),
            count: weight,
            example: if weight > 0 {
                truncate(line, cfg.max_example_chars)
            } else {
                String::new()
            },
            seeded_text: None,
        });
        leaf.clusters.push(id);
        id
    }

    /// The templates with at least one line, most frequent first (ties by template text).
    pub fn templates(&self) -> Vec<MinedTemplate> {
        let mut v: Vec<MinedTemplate> = self
            .clusters
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| {
                let template = c.template();
                MinedTemplate {
                    template_id: template_id(&template),
                    template,
                    count: c.count,
                    example: c.example.clone(),
                }
            })
            .collect();
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.template.cmp(&b.template))
        });
        v
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Walk (creating) the prefix-tree path of a token sequence to its leaf.
fn descend<'n>(
    by_len: &'n mut HashMap<usize, Node>,
    cfg: &DrainConfig,
    toks: &[Token<'_>],
) -> &'n mut Node {
    let mut node = by_len.entry(toks.len()).or_default();
    let layers = (cfg.depth - 2).min(toks.len());
    for tok in &toks[..layers] {
        let text: &str = if tok.is_variable() {
            WILDCARD
        } else {
            tok.text.as_ref()
        };
        let key: &str =
            if node.children.contains_key(text) || node.children.len() < cfg.max_children {
                text
            } else {
                WILDCARD
            };
        node = node.children.entry(Box::from(key)).or_default();
    }
    node
}

/// The most similar cluster of a leaf, if similar enough.
fn best_match(
    clusters: &[Cluster],
    ids: &[ClusterId],
    toks: &[Token<'_>],
    cfg: &DrainConfig,
) -> Option<ClusterId> {
    let mut best: Option<(ClusterId, f64, usize)> = None;
    for &id in ids {
        let c = &clusters[id as usize];
        let (sim, params) = similarity(&c.tokens, toks, cfg.wildcard_matches);
        let better = match best {
            None => true,
            Some((_, bs, bp)) => sim > bs || (sim == bs && params > bp),
        };
        if better {
            best = Some((id, sim, params));
        }
    }
    best.filter(|(_, s, _)| *s >= cfg.similarity)
        .map(|(id, _, _)| id)
}

/// (share of equal positions, template wildcards facing a different token).
fn similarity(template: &[Box<str>], toks: &[Token<'_>], wildcard_matches: bool) -> (f64, usize) {
    if template.is_empty() {
        return (1.0, 0);
    }
    let mut same = 0usize;
    let mut params = 0usize;
    for (t, m) in template.iter().zip(toks) {
        if **t == *m.text {
            same += 1;
        } else if &**t == WILDCARD {
            params += 1;
        }
    }
    if wildcard_matches {
        same += params;
    }
    (same as f64 / template.len() as f64, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_one_event_share_a_template() {
        let mut d = Drain::default();
        let a = d.add("Deleting block blk_1 file /data/x/blk_1");
        let b = d.add("Deleting block blk_22 file /data/y/blk_22");
        let c = d.add("Receiving block blk_3 src: /10.0.0.1:5 dest: /10.0.0.2:6");
        let e = d.add("session opened for user alice by (uid=0)");
        let f = d.add("session opened for user bob by (uid=0)");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(e, f);
        assert_eq!(d.cluster(a).template(), "Deleting block <*> file <*>");
        assert_eq!(
            d.cluster(e).template(),
            "session opened for user <*> by (uid=<*>)"
        );
        assert_eq!(d.cluster(e).count(), 2);
        assert_eq!(
            d.cluster(e).example(),
            "session opened for user alice by (uid=0)"
        );
        let t = d.templates();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].count, 2);
        assert_eq!(t.iter().map(|t| t.count).sum::<u64>(), 5);
    }

    #[test]
    fn different_events_stay_apart() {
        let mut d = Drain::default();
        let a = d.add("connection closed by peer");
        let b = d.add("connection refused by firewall rule");
        let c = d.add("disk quota exceeded on volume 3");
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_eq!(d.templates().len(), 3);
    }

    #[test]
    fn ids_are_stable_hashes_of_the_text() {
        assert_eq!(template_id("a <*> b"), template_id("a <*> b"));
        assert_ne!(template_id("a <*> b"), template_id("a <*> c"));
        assert_eq!(template_id(""), "cbf29ce484222325");
        assert_eq!(template_id("a <*> b").len(), 16);
    }

    #[test]
    fn seeded_templates_keep_their_text_and_id() {
        let mut night1 = Drain::default();
        for u in ["alice", "bob", "carol"] {
            night1.add(&format!("session opened for user {u} by (uid=0)"));
        }
        let t1 = night1.templates();
        let mut night2 = Drain::default();
        for t in &t1 {
            night2.seed(&t.template);
        }
        let id = night2.add("session opened for user dave by (uid=0)");
        assert_eq!(night2.cluster(id).template(), t1[0].template);
        assert_eq!(
            night2.cluster(id).seeded_text(),
            Some(t1[0].template.as_str())
        );
        let t2 = night2.templates();
        assert_eq!(t2.len(), 1);
        assert_eq!(t2[0].template_id, t1[0].template_id);
        assert_eq!(t2[0].count, 1);
        assert_eq!(t2[0].example, "session opened for user dave by (uid=0)");
    }

    #[test]
    fn template_text_round_trips_through_the_tokenizer() {
        let mut d = Drain::default();
        let id = d.add(r#"{"level":"info","msg":"done","ms":12} from 10.0.0.1"#);
        let t = d.cluster(id).template();
        assert_eq!(t, r#"{"level":"info","msg":"done","ms":<*>} from <*>"#);
        let mut d2 = Drain::default();
        let s = d2.seed(&t);
        assert_eq!(d2.cluster(s).template(), t);
    }

    #[test]
    fn options_parse_and_validate() {
        let c = DrainConfig::parse("similarity=0.4, depth=5 max_children=10").unwrap();
        assert_eq!((c.similarity, c.depth, c.max_children), (0.4, 5, 10));
        assert!(DrainConfig::parse("depth=2").is_err());
        assert!(DrainConfig::parse("colour=red").is_err());
        assert!(DrainConfig::parse("similarity").is_err());
        assert_eq!(DrainConfig::parse("").unwrap(), DrainConfig::default());
    }
}
