//! The results table: scenario, Shturman's figure, the anchor's figure from
//! the same run, the ratio, and the goal.

use serde::Serialize;

/// One row of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub shturman: f64,
    /// What the anchor is (e.g. "single fdatasync loop, same disk").
    pub anchor_name: String,
    pub anchor: Option<f64>,
    /// Goal, in words ("informational" when there is none yet).
    pub goal: String,
    /// Whether a larger figure is better (for the ratio's direction).
    pub higher_is_better: bool,
}

impl Row {
    /// Shturman / anchor.
    pub fn ratio(&self) -> Option<f64> {
        self.anchor.filter(|a| *a != 0.0).map(|a| self.shturman / a)
    }
}

/// All rows of one run.
#[derive(Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn push(&mut self, row: Row) {
        eprintln!(
            "  {} / {}: {:.1} (anchor {}: {})",
            row.scenario,
            row.metric,
            row.shturman,
            row.anchor_name,
            row.anchor.map_or("-".into(), |a| format!("{a:.1}"))
        );
        self.rows.push(row);
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        let header = [
            "scenario",
            "metric",
            "shturman",
            "anchor",
            "anchor value",
            "ratio",
            "goal",
        ];
        let rows: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.scenario.clone(),
                    r.metric.clone(),
                    format!("{:.1}", r.shturman),
                    r.anchor_name.clone(),
                    r.anchor.map_or("-".into(), |a| format!("{a:.1}")),
                    r.ratio().map_or("-".into(), |x| format!("{x:.2}x")),
                    r.goal.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("{}", line(&header.map(String::from)));
        for r in &rows {
            println!("{}", line(r));
        }
    }

    /// Writes the rows as JSON (with the date and machine).
    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let doc = serde_json::json!({
            "machine": {
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                "arch": std::env::consts::ARCH,
                "os": std::env::consts::OS,
            },
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            "rows": self.rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        Ok(())
    }
}
