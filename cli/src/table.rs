//! kubectl-style tables (upper-case headers, columns separated by three
//! spaces, the last column unpadded) and kubectl's human ages (`5s`, `3m12s`,
//! `5h`, `2d`).

use chrono::{DateTime, Utc};

/// Column widths for `headers` and `rows`, counted in characters.
pub fn widths(headers: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let n = cell.chars().count();
            match w.get_mut(i) {
                Some(cur) => *cur = (*cur).max(n),
                None => w.push(n),
            }
        }
    }
    w
}

/// One line of a table with the given widths, without a trailing newline.
pub fn line(widths: &[usize], cells: &[String]) -> String {
    let mut out = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, cell) in cells.iter().enumerate() {
        out.push_str(cell);
        if i < last {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count()) + 3;
            out.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out
}

/// A whole table, each line ending in a newline.
pub fn render(headers: &[String], rows: &[Vec<String>]) -> String {
    let w = widths(headers, rows);
    let mut out = line(&w, headers);
    out.push('\n');
    for row in rows {
        out.push_str(&line(&w, row));
        out.push('\n');
    }
    out
}

/// kubectl's `HumanDuration` for a number of seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

/// The age of an RFC 3339 timestamp at `now`; `<unknown>` when absent or bad.
pub fn age(timestamp: &str, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(timestamp) {
        Ok(t) => human_duration((now - t.with_timezone(&Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ages_match_kubectl() {
        assert_eq!(human_duration(-5), "<invalid>");
        assert_eq!(human_duration(-1), "0s");
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(120), "2m");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(179 * 60 + 59), "179m");
        assert_eq!(human_duration(3 * 3600), "3h");
        assert_eq!(human_duration(5 * 3600 + 30 * 60), "5h30m");
        assert_eq!(human_duration(47 * 3600), "47h");
        assert_eq!(human_duration(2 * 86400), "2d");
        assert_eq!(human_duration(2 * 86400 + 5 * 3600), "2d5h");
        assert_eq!(human_duration(100 * 86400), "100d");
        assert_eq!(human_duration(3 * 365 * 86400 + 10 * 86400), "3y10d");
        assert_eq!(human_duration(9 * 365 * 86400), "9y");
    }

    #[test]
    fn ages_from_timestamps() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .expect("ts")
            .with_timezone(&Utc);
        assert_eq!(age("2024-05-01T11:56:48Z", now), "3m12s");
        assert_eq!(age("2024-04-29T12:00:00+00:00", now), "2d");
        assert_eq!(age("", now), "<unknown>");
    }

    #[test]
    fn tables_align_like_kubectl() {
        let out = render(
            &s(&["NAME", "READY", "STATUS"]),
            &[s(&["web-1", "1/1", "Running"]), s(&["a", "0/1", "Pending"])],
        );
        assert_eq!(
            out,
            "NAME    READY   STATUS\nweb-1   1/1     Running\na       0/1     Pending\n"
        );
    }
}
