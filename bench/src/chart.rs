//! The results chart (PNG): one horizontal bar per row that has a checked
//! goal, its length the goal margin on a log scale (1 = exactly at the goal,
//! right of the goal line = met), green when met and red when missed, with
//! the date, commit and machine in the title. Informational rows are in the
//! table only.
//!
//! Text needs a TrueType font from the system (Debian: fonts-dejavu-core);
//! `SHTURMAN_BENCH_FONT` names another file.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, anyhow, bail};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::{Entry, Verdict, num};
use crate::results::Results;

/// Fonts tried in order when `SHTURMAN_BENCH_FONT` is not set.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const FAMILY: &str = "sans-serif";
const MET: RGBColor = RGBColor(46, 139, 87);
const MISSED: RGBColor = RGBColor(200, 55, 45);
const ROW_PX: u32 = 30;
const WIDTH: u32 = 1800;
const LABEL_CHARS: usize = 80;

/// Registers the first font found, once per process.
fn font() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let wanted = std::env::var("SHTURMAN_BENCH_FONT").ok();
            let paths: Vec<String> = wanted
                .clone()
                .map_or_else(|| FONTS.iter().map(|p| (*p).to_string()).collect(), |p| vec![p]);
            for p in &paths {
                if let Ok(bytes) = std::fs::read(p) {
                    // plotters keeps fonts for the life of the process.
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    return plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                        .map_err(|_| format!("{p} is not a TrueType/OpenType font"));
                }
            }
            Err(match wanted {
                Some(p) => format!("SHTURMAN_BENCH_FONT={p} cannot be read"),
                None => format!(
                    "no font found (tried {}); install fonts-dejavu-core (apt-get install fonts-dejavu-core) \
                     or set SHTURMAN_BENCH_FONT to a .ttf file",
                    FONTS.join(", ")
                ),
            })
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn label(e: &Entry) -> String {
    let s = format!("{} — {}", e.row.scenario, e.row.metric);
    if s.chars().count() <= LABEL_CHARS {
        s
    } else {
        s.chars().take(LABEL_CHARS - 1).collect::<String>() + "…"
    }
}

/// What the bar says after its end: the figure, the ratio and the goal.
fn annotation(e: &Entry) -> String {
    let u = if e.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", e.unit)
    };
    let ratio = e
        .row
        .ratio()
        .map_or(String::new(), |r| format!(", {}× anchor", num(r)));
    format!(
        "  {}{u}{ratio}; goal {}: {}",
        num(e.row.shturman),
        e.goal_text(),
        e.verdict().label()
    )
}

/// Draws `results` into a PNG at `path`.
pub fn draw(results: &Results, path: &Path) -> Result<()> {
    font()?;
    let bars: Vec<(&Entry, f64)> = results
        .rows
        .iter()
        .filter(|e| matches!(e.verdict(), Verdict::Met | Verdict::Missed))
        .filter_map(|e| e.margin().map(|m| (e, m)))
        .collect();
    if bars.is_empty() {
        bail!("no row has a checked goal to chart");
    }
    let n = i32::try_from(bars.len())?;
    let lo = bars.iter().map(|b| b.1).fold(0.1_f64, f64::min) / 2.0;
    let hi = bars.iter().map(|b| b.1).fold(10.0_f64, f64::max) * 40.0;
    let height = 190 + ROW_PX * u32::try_from(bars.len().max(3))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let date = chrono::DateTime::parse_from_rfc3339(&results.date).map_or_else(
        |_| results.date.clone(),
        |d| d.format("%Y-%m-%d %H:%M UTC").to_string(),
    );
    let subtitle = format!(
        "{date} — commit {} — {}",
        results.commit,
        results.machine.summary()
    );
    root.draw(&Text::new(
        subtitle,
        (20, 48),
        (FAMILY, 17).into_font().color(&BLACK.mix(0.75)),
    ))
    .map_err(err)?;
    let root = root
        .titled(
            "Shturman next to its anchors: how far each figure is from its goal (1 = at the goal, right = better)",
            (FAMILY, 24),
        )
        .map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .margin_top(40)
        .margin_right(30)
        .margin_left(10)
        .x_label_area_size(40)
        .y_label_area_size(620)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_style((FAMILY, 15))
        .x_label_style((FAMILY, 15))
        .x_desc("goal margin (log scale): goal ÷ figure for ceilings, figure ÷ goal for floors, ratios alike")
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| bars.get(bars.len() - 1 - i))
                .map_or(String::new(), |b| label(b.0)),
            _ => String::new(),
        })
        .x_label_formatter(&|x| format!("{}×", num(*x)))
        .draw()
        .map_err(err)?;
    // The first row at the top: row k sits in segment n - 1 - k.
    chart
        .draw_series(bars.iter().enumerate().map(|(k, (e, m))| {
            let seg = n - 1 - i32::try_from(k).unwrap_or(0);
            let color = if e.verdict() == Verdict::Met { MET } else { MISSED };
            let mut bar = Rectangle::new(
                [(lo, SegmentValue::Exact(seg)), (*m, SegmentValue::Exact(seg + 1))],
                color.filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(k, (e, m))| {
            let seg = n - 1 - i32::try_from(k).unwrap_or(0);
            // After the bar or the goal line, whichever is further right.
            let at = m.max(1.0) * 1.08;
            Text::new(
                annotation(e),
                (at, SegmentValue::CenterOf(seg)),
                (FAMILY, 14).into_font(),
            )
        }))
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(2),
        )))
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(Text::new(
            "goal",
            (1.0, SegmentValue::Exact(n)),
            (FAMILY, 16).into_font(),
        )))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
