//! The results table: one row per figure with its scenario, metric, unit,
//! Shturman's figure, the anchor's figure from the same run, the ratio, and
//! a goal the code checks (met / missed / informational).
//!
//! Scenarios push plain [`Row`]s; `.check(Goal::…)` and `.unit("…")` turn a
//! row into an [`Entry`] with a typed goal and an explicit unit. A row pushed
//! without a typed goal is informational when its words say so
//! ("informational…", "reference…") and "not checked" otherwise, so a goal
//! left in words shows up in the table as such.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One figure as a scenario measured it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub shturman: f64,
    /// What the anchor is (e.g. "etcd 3.4, same disk, same concurrency").
    pub anchor_name: String,
    pub anchor: Option<f64>,
    /// The goal in words, or a note ("informational" when there is none).
    pub goal: String,
    /// Whether a larger figure is better.
    pub higher_is_better: bool,
}

impl Row {
    /// Shturman / anchor.
    pub fn ratio(&self) -> Option<f64> {
        self.anchor.filter(|a| *a != 0.0).map(|a| self.shturman / a)
    }

    /// This row with a goal the report checks.
    pub fn check(self, goal: Goal) -> Entry {
        Entry::from(self).check(goal)
    }

    /// This row with an explicit unit (else it is read off the metric).
    pub fn unit(self, unit: &str) -> Entry {
        Entry::from(self).unit(unit)
    }
}

/// A goal in a form the code checks. Ratios are always Shturman ÷ anchor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Goal {
    /// No goal: the figure explains another one.
    Informational,
    /// Shturman ÷ anchor ≥ x (throughput against an anchor).
    RatioAtLeast(f64),
    /// Shturman ÷ anchor ≤ x (latency or size against an anchor).
    RatioAtMost(f64),
    /// Shturman's figure ≤ v, in the row's unit.
    AtMost(f64),
    /// Shturman's figure ≥ v, in the row's unit.
    AtLeast(f64),
    /// Shturman's figure ≤ anchor + slack (for figures that can be ≤ 0, such
    /// as an added latency, where a ratio means nothing).
    AtMostAnchorPlus(f64),
}

/// How a row fared against its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    Informational,
    /// The goal needs the anchor, which was not measured in this run.
    NoAnchor,
    /// The goal exists only in words.
    NotChecked,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Informational => "info",
            Verdict::NoAnchor => "anchor not measured",
            Verdict::NotChecked => "not checked",
        }
    }
}

/// A row as the report keeps it: which `--scenario` produced it, its unit,
/// its typed goal, and when and at which commit it was measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The `--scenario` name that produced the row (for `--merge`).
    #[serde(default)]
    pub group: String,
    #[serde(flatten)]
    pub row: Row,
    #[serde(default)]
    pub unit: String,
    /// `None`: the goal is only in `row.goal`'s words.
    #[serde(default)]
    pub check: Option<Goal>,
    /// UTC, RFC 3339.
    #[serde(default)]
    pub measured: String,
    #[serde(default)]
    pub commit: String,
    /// Written for readers of the JSON; recomputed, never read back.
    #[serde(default, skip_deserializing)]
    pub ratio: Option<f64>,
    #[serde(default, skip_deserializing)]
    pub verdict: Option<Verdict>,
}

impl From<Row> for Entry {
    fn from(row: Row) -> Entry {
        Entry {
            group: String::new(),
            unit: unit_of(&row.metric),
            row,
            check: None,
            measured: String::new(),
            commit: String::new(),
            ratio: None,
            verdict: None,
        }
    }
}

impl Entry {
    pub fn check(mut self, goal: Goal) -> Entry {
        self.check = Some(goal);
        self
    }

    pub fn unit(mut self, unit: &str) -> Entry {
        self.unit = unit.to_string();
        self
    }

    /// Fills the computed `ratio` and `verdict` (for the JSON file).
    pub fn computed(mut self) -> Entry {
        self.ratio = self.row.ratio();
        self.verdict = Some(self.verdict());
        self
    }

    /// The typed goal, or the one the words imply when they say there is none.
    fn goal(&self) -> Option<Goal> {
        self.check.or_else(|| {
            let w = self.row.goal.trim().to_lowercase();
            (w.is_empty() || w == "-" || w.starts_with("informational") || w.starts_with("reference"))
                .then_some(Goal::Informational)
        })
    }

    pub fn verdict(&self) -> Verdict {
        let s = self.row.shturman;
        let ratio = self.row.ratio();
        let pass = |ok: bool| if ok { Verdict::Met } else { Verdict::Missed };
        match self.goal() {
            None => Verdict::NotChecked,
            Some(Goal::Informational) => Verdict::Informational,
            Some(Goal::RatioAtLeast(x)) => ratio.map_or(Verdict::NoAnchor, |r| pass(r >= x)),
            Some(Goal::RatioAtMost(x)) => ratio.map_or(Verdict::NoAnchor, |r| pass(r <= x)),
            Some(Goal::AtMost(v)) => pass(s <= v),
            Some(Goal::AtLeast(v)) => pass(s >= v),
            Some(Goal::AtMostAnchorPlus(d)) => {
                self.row.anchor.map_or(Verdict::NoAnchor, |a| pass(s <= a + d))
            }
        }
    }

    /// The goal as the table shows it.
    pub fn goal_text(&self) -> String {
        let u = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        match self.goal() {
            None => format!("{} (words only)", self.row.goal),
            Some(Goal::Informational) => {
                let w = self.row.goal.trim();
                if w.is_empty() || w == "-" {
                    "informational".into()
                } else {
                    w.to_string()
                }
            }
            Some(Goal::RatioAtLeast(x)) => format!("≥ {}× anchor", num(x)),
            Some(Goal::RatioAtMost(x)) => format!("≤ {}× anchor", num(x)),
            Some(Goal::AtMost(v)) => format!("≤ {}{u}", num(v)),
            Some(Goal::AtLeast(v)) => format!("≥ {}{u}", num(v)),
            Some(Goal::AtMostAnchorPlus(0.0)) => "≤ anchor's".into(),
            Some(Goal::AtMostAnchorPlus(d)) => format!("≤ anchor + {}{u}", num(d)),
        }
    }

    /// How far the figure is from its goal, oriented so that 1 is exactly at
    /// the goal and above 1 is better (for the chart); `None` when it cannot
    /// be put on that scale (no goal, no anchor, figures ≤ 0).
    pub fn margin(&self) -> Option<f64> {
        let s = self.row.shturman;
        let m = match self.goal()? {
            Goal::Informational => return None,
            Goal::RatioAtLeast(x) => self.row.ratio()? / x,
            Goal::RatioAtMost(x) => x / self.row.ratio()?,
            Goal::AtMost(v) => v / s,
            Goal::AtLeast(v) => s / v,
            Goal::AtMostAnchorPlus(d) => (self.row.anchor? + d) / s,
        };
        (m.is_finite() && m > 0.0).then_some(m)
    }
}

/// Reads the unit off a metric name: "creates/s" → "creates/s",
/// "p99 ms" → "ms", "control plane RSS MiB" → "MiB", "… % of one core" → "%".
pub fn unit_of(metric: &str) -> String {
    const UNITS: [&str; 9] = ["ms", "µs", "us", "s", "MiB", "KiB", "GiB", "%", "bytes"];
    let words: Vec<&str> = metric
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(w) = words.iter().find(|w| w.ends_with("/s")) {
        return (*w).to_string();
    }
    words
        .iter()
        .find(|w| UNITS.contains(w))
        .map_or(String::new(), |w| (*w).to_string())
}

/// A figure with about three significant digits and thousands separators.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    };
    // Thousands separators on the integer part.
    let (sign, rest) = s.strip_prefix('-').map_or(("", s.as_str()), |r| ("-", r));
    let (int, frac) = rest.split_once('.').map_or((rest, None), |(i, f)| (i, Some(f)));
    if int.len() <= 3 || rest.contains('e') {
        return s;
    }
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// The `--scenario` name being run, shared between `main`'s `wants` and
/// the report so each pushed row knows which scenario produced it.
#[derive(Clone, Default)]
pub struct ScenarioTag(Arc<Mutex<String>>);

impl ScenarioTag {
    pub fn set(&self, name: &str) {
        if let Ok(mut g) = self.0.lock() {
            name.clone_into(&mut g);
        }
    }

    fn get(&self) -> String {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// All rows of one run.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Entry>,
    tag: ScenarioTag,
    commit: String,
}

impl Report {
    pub fn new(commit: String) -> Report {
        Report {
            commit,
            ..Report::default()
        }
    }

    /// The handle `main` sets before each scenario runs.
    pub fn scenario_tag(&self) -> ScenarioTag {
        self.tag.clone()
    }

    /// Adds a row (a plain [`Row`], or an [`Entry`] from `.check`/`.unit`).
    pub fn push(&mut self, row: impl Into<Entry>) {
        let mut e: Entry = row.into();
        if e.group.is_empty() {
            e.group = self.tag.get();
        }
        e.measured = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        e.commit.clone_from(&self.commit);
        eprintln!(
            "  {} / {}: {} (anchor {}: {}) [{}]",
            e.row.scenario,
            e.row.metric,
            num(e.row.shturman),
            e.row.anchor_name,
            e.row.anchor.map_or("-".into(), num),
            e.verdict().label()
        );
        self.rows.push(e);
    }
}

/// The table's columns, one string per cell.
pub const HEADER: [&str; 10] = [
    "scenario",
    "metric",
    "unit",
    "Shturman",
    "anchor",
    "anchor figure",
    "ratio",
    "goal",
    "verdict",
    "",
];

/// One entry's cells, in [`HEADER`]'s order (the last column is unused in
/// the terminal table and holds nothing).
pub fn cells(e: &Entry) -> [String; 10] {
    [
        e.row.scenario.clone(),
        e.row.metric.clone(),
        e.unit.clone(),
        num(e.row.shturman),
        e.row.anchor_name.clone(),
        e.row.anchor.map_or("-".into(), num),
        e.row.ratio().map_or("-".into(), |r| format!("{}×", num(r))),
        e.goal_text(),
        e.verdict().label().to_string(),
        String::new(),
    ]
}

/// The table as plain text, columns aligned.
pub fn text_table(rows: &[Entry]) -> String {
    let all: Vec<[String; 10]> = rows.iter().map(cells).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &all {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (c, w) in cells.iter().zip(widths).take(9) {
            s.push_str(c);
            s.push_str(&" ".repeat(w - c.chars().count() + 2));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&HEADER.map(String::from));
    for r in &all {
        out.push_str(&line(r));
    }
    let missed = rows.iter().filter(|e| e.verdict() == Verdict::Missed).count();
    let met = rows.iter().filter(|e| e.verdict() == Verdict::Met).count();
    out.push_str(&format!("goals met: {met}, missed: {missed}\n"));
    out
}

/// The table as Markdown (for the README and docs/BENCHMARKS.md).
pub fn markdown_table(rows: &[Entry]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = String::from(
        "| scenario | metric | unit | Shturman | anchor | anchor figure | ratio | goal | verdict |\n\
         |---|---|---|---:|---|---:|---:|---|---|\n",
    );
    for e in rows {
        let c = cells(e);
        let verdict = match e.verdict() {
            Verdict::Missed => "**missed**".to_string(),
            Verdict::Met => "met".to_string(),
            v => v.label().to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {verdict} |\n",
            esc(&c[0]),
            esc(&c[1]),
            esc(&c[2]),
            c[3],
            esc(&c[4]),
            c[5],
            c[6],
            esc(&c[7]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(shturman: f64, anchor: Option<f64>, goal: &str) -> Row {
        Row {
            scenario: "s".into(),
            metric: "p50 ms".into(),
            shturman,
            anchor_name: "a".into(),
            anchor,
            goal: goal.into(),
            higher_is_better: false,
        }
    }

    #[test]
    fn typed_goals_are_checked() {
        assert_eq!(
            row(4.0, Some(2.0), "").check(Goal::RatioAtLeast(2.0)).verdict(),
            Verdict::Met
        );
        assert_eq!(
            row(3.0, Some(2.0), "").check(Goal::RatioAtLeast(2.0)).verdict(),
            Verdict::Missed
        );
        assert_eq!(
            row(1.0, Some(40.0), "").check(Goal::RatioAtMost(0.05)).verdict(),
            Verdict::Met
        );
        assert_eq!(
            row(1.0, None, "").check(Goal::RatioAtMost(0.05)).verdict(),
            Verdict::NoAnchor
        );
        assert_eq!(
            row(21.0, None, "").check(Goal::AtMost(20.0)).verdict(),
            Verdict::Missed
        );
        assert_eq!(
            row(-2.0, Some(-1.5), "")
                .check(Goal::AtMostAnchorPlus(0.0))
                .verdict(),
            Verdict::Met
        );
        assert_eq!(
            row(1.0, None, "informational (x)")
                .check(Goal::AtLeast(2.0))
                .verdict(),
            Verdict::Missed
        );
    }

    #[test]
    fn words_alone_are_informational_or_not_checked() {
        assert_eq!(
            Entry::from(row(1.0, None, "informational")).verdict(),
            Verdict::Informational
        );
        assert_eq!(
            Entry::from(row(1.0, None, "reference (x)")).verdict(),
            Verdict::Informational
        );
        assert_eq!(
            Entry::from(row(1.0, None, ">= 0.8x Mosquitto")).verdict(),
            Verdict::NotChecked
        );
    }

    #[test]
    fn margin_is_one_at_the_goal_and_above_when_better() {
        let at = row(2.0, Some(1.0), "").check(Goal::RatioAtLeast(2.0));
        assert!((at.margin().unwrap() - 1.0).abs() < 1e-9);
        let better = row(10.0, None, "").check(Goal::AtMost(20.0));
        assert!((better.margin().unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(Entry::from(row(1.0, None, "informational")).margin(), None);
    }

    #[test]
    fn units_come_off_the_metric() {
        assert_eq!(unit_of("creates/s"), "creates/s");
        assert_eq!(unit_of("p99 ms"), "ms");
        assert_eq!(unit_of("control plane CPU % of one core"), "%");
        assert_eq!(unit_of("added p99 latency, ms (via - direct)"), "ms");
        assert_eq!(unit_of("KiB per pod"), "KiB");
        assert_eq!(unit_of("nodes Ready"), "");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(6508.4), "6,508");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(18.26), "18.3");
        assert_eq!(num(0.0281), "0.028");
        assert_eq!(num(-2.3), "-2.30");
    }

    #[test]
    fn entries_round_trip_through_json() {
        let e = row(1.0, Some(2.0), "").check(Goal::RatioAtMost(1.2));
        let back: Entry = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back.check, Some(Goal::RatioAtMost(1.2)));
        assert_eq!(back.row.anchor, Some(2.0));
        assert_eq!(back.unit, "ms");
    }
}
