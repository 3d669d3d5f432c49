//! The results of a run as files: `results.json` (date, commit, machine,
//! rows), `results.md` (the Markdown table) and the PNG chart; reading a
//! previous `results.json` back to redraw it or to merge a partial run into
//! it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::report::{Entry, markdown_table, text_table};

/// The machine a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    pub arch: String,
}

impl Machine {
    /// Reads this machine's description from /proc and /etc/os-release.
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map_or_else(|| "unknown CPU".into(), |(_, v)| v.trim().to_string());
        #[allow(clippy::cast_precision_loss)]
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or_else(
                || std::env::consts::OS.into(),
                |v| v.trim_matches('"').to_string(),
            );
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            memory_gib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os,
            arch: std::env::consts::ARCH.into(),
        }
    }

    /// One line for titles: "AMD EPYC 7B13, 2 cores, 24 GiB, Debian 12".
    pub fn summary(&self) -> String {
        format!(
            "{}, {} cores, {:.0} GiB, {}, Linux {}",
            self.cpu, self.cores, self.memory_gib, self.os, self.kernel
        )
    }
}

/// The whole results document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// When this document was written, UTC, RFC 3339 (each row also has the
    /// time it was measured: merged rows keep theirs).
    pub date: String,
    /// The commit of this run (`-dirty` with uncommitted changes).
    pub commit: String,
    pub machine: Machine,
    /// The `--scenario` names whose rows are in `rows`.
    pub scenarios: Vec<String>,
    pub rows: Vec<Entry>,
}

/// Where the files go.
pub struct Outputs {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub chart: PathBuf,
}

impl Outputs {
    /// `results.md` and `results.png` beside the JSON file.
    pub fn beside(json: &Path) -> Outputs {
        Outputs {
            json: json.to_path_buf(),
            markdown: json.with_extension("md"),
            chart: json.with_extension("png"),
        }
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes;
/// "unknown" outside a checkout.
pub fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let Some(head) = run(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let mut commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
    if run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty()) {
        commit.push_str("-dirty");
    }
    commit
}

impl Results {
    /// The results of this run.
    pub fn new(commit: String, rows: Vec<Entry>) -> Results {
        let scenarios = rows
            .iter()
            .map(|e| e.group.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Results {
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            commit,
            machine: Machine::detect(),
            scenarios,
            rows,
        }
    }

    pub fn load(path: &Path) -> Result<Results> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading {}: run the suite first (./scripts/bench.sh) or pass the path of a results.json",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a results.json of this suite", path.display()))
    }

    /// Adds the rows of `previous` whose scenario this run did not run. A
    /// rerun scenario's new rows take the place of its old ones; scenarios
    /// new to the file come last.
    pub fn merge_previous(&mut self, previous: Results) {
        let ran: BTreeSet<String> = self.rows.iter().map(|e| e.group.clone()).collect();
        let mut fresh = std::mem::take(&mut self.rows);
        let mut kept = 0;
        for e in previous.rows {
            if !ran.contains(&e.group) {
                kept += 1;
                self.rows.push(e);
            } else if fresh.iter().any(|f| f.group == e.group) {
                let group = e.group;
                let (now, rest): (Vec<Entry>, Vec<Entry>) = fresh.into_iter().partition(|f| f.group == group);
                self.rows.extend(now);
                fresh = rest;
            }
        }
        self.rows.append(&mut fresh);
        eprintln!("merge: kept {kept} rows of scenarios not run this time from the previous results");
        let mut all: BTreeSet<String> = previous.scenarios.into_iter().collect();
        all.extend(ran);
        self.scenarios = all.into_iter().collect();
    }

    /// The line under the table: when, where, which commits.
    pub fn provenance(&self) -> String {
        let mut runs: BTreeSet<(String, String)> = BTreeSet::new();
        for e in &self.rows {
            runs.insert((e.measured.get(..10).unwrap_or("?").to_string(), e.commit.clone()));
        }
        let runs: Vec<String> = runs.into_iter().map(|(d, c)| format!("{d} at {c}")).collect();
        format!("Measured {} on {}.", runs.join(", "), self.machine.summary())
    }

    /// Writes JSON, Markdown and the chart; prints the table.
    pub fn write(&self, out: &Outputs) -> Result<()> {
        print!("{}", text_table(&self.rows));
        println!("{}", self.provenance());
        if let Some(dir) = out.json.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut doc = self.clone();
        doc.rows = doc.rows.into_iter().map(Entry::computed).collect();
        std::fs::write(&out.json, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", out.json.display()))?;
        eprintln!("results written to {}", out.json.display());
        let md = format!(
            "{}\n{}\n\nChart: `{}`.\n",
            markdown_table(&self.rows),
            self.provenance(),
            out.chart
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        );
        std::fs::write(&out.markdown, md).with_context(|| format!("writing {}", out.markdown.display()))?;
        eprintln!("table written to {}", out.markdown.display());
        // A chart that cannot be drawn (no font installed) loses no figures.
        match crate::chart::draw(self, &out.chart) {
            Ok(()) => eprintln!("chart written to {}", out.chart.display()),
            Err(e) => eprintln!("chart not drawn: {e:#}"),
        }
        Ok(())
    }
}

/// The README's table sits between these two lines.
pub const TABLE_START: &str = "<!-- bench-table:start -->";
pub const TABLE_END: &str = "<!-- bench-table:end -->";

/// `doc` with the lines between the [`TABLE_START`] and [`TABLE_END`] lines
/// (each alone on its line) replaced by `table`; an error naming the
/// markers when they are missing.
pub fn splice_table(doc: &str, table: &str) -> Result<String> {
    let lines: Vec<&str> = doc.lines().collect();
    let at = |marker: &str| lines.iter().position(|l| l.trim() == marker);
    let (Some(start), Some(end)) = (at(TABLE_START), at(TABLE_END)) else {
        anyhow::bail!("the document has no `{TABLE_START}` and `{TABLE_END}` lines to put the table between");
    };
    anyhow::ensure!(start < end, "`{TABLE_END}` comes before `{TABLE_START}`");
    let mut out: Vec<&str> = lines[..=start].to_vec();
    out.extend(table.lines());
    out.extend(&lines[end..]);
    Ok(out.join("\n") + "\n")
}

impl Results {
    /// Puts the Markdown table and provenance line into `doc` (a README)
    /// between the table markers.
    pub fn update_doc(&self, doc: &Path) -> Result<()> {
        let text = std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
        let table = format!("{}\n{}", markdown_table(&self.rows), self.provenance());
        std::fs::write(doc, splice_table(&text, &table)?)
            .with_context(|| format!("writing {}", doc.display()))?;
        eprintln!("table updated in {}", doc.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Goal, Row};

    fn entry(group: &str, scenario: &str) -> Entry {
        let mut e = Row {
            scenario: scenario.into(),
            metric: "x/s".into(),
            shturman: 2.0,
            anchor_name: "a".into(),
            anchor: Some(1.0),
            goal: String::new(),
            higher_is_better: true,
        }
        .check(Goal::RatioAtLeast(1.0));
        e.group = group.into();
        e
    }

    #[test]
    fn merge_keeps_only_scenarios_not_rerun() {
        let previous = Results::new(
            "old".into(),
            vec![
                entry("a", "a1"),
                entry("b", "b-old"),
                entry("b", "b-old2"),
                entry("c", "c1"),
            ],
        );
        let mut now = Results::new("new".into(), vec![entry("d", "d1"), entry("b", "b-new")]);
        now.merge_previous(previous);
        let names: Vec<&str> = now.rows.iter().map(|e| e.row.scenario.as_str()).collect();
        assert_eq!(names, ["a1", "b-new", "c1", "d1"]);
        assert_eq!(now.scenarios, ["a", "b", "c", "d"]);
    }

    #[test]
    fn splice_replaces_only_between_the_markers() {
        let doc = format!("intro `{TABLE_START}`\n{TABLE_START}\nold\n{TABLE_END}\noutro\n");
        let out = splice_table(&doc, "| new |\n").unwrap();
        assert_eq!(
            out,
            format!("intro `{TABLE_START}`\n{TABLE_START}\n| new |\n{TABLE_END}\noutro\n")
        );
        assert!(splice_table("no markers", "x").is_err());
    }

    #[test]
    fn machine_is_read_from_proc() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
        assert!(m.memory_gib > 0.0, "{m:?}");
        assert!(!m.kernel.is_empty());
    }
}
