//! A small YAML emitter over `serde_json::Value`, in kubectl's layout
//! (sequences under a key are not indented; strings are quoted only when a
//! YAML reader would otherwise change their meaning; multi-line strings are
//! `|` blocks).

use serde_json::{Map, Value};

/// Renders `v` as a YAML document, ending in a newline.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0, false),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0, false),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes a map's entries at `indent`; with `inline`, the first entry
/// continues the current line (after `- `).
fn write_map(out: &mut String, m: &Map<String, Value>, indent: usize, inline: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, indent);
        }
        out.push_str(&string(k, indent));
        out.push(':');
        match v {
            Value::Object(child) if !child.is_empty() => {
                out.push('\n');
                write_map(out, child, indent + 2, false);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent, false);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// Writes sequence items at `indent`; with `inline`, the first item
/// continues the current line.
fn write_seq(out: &mut String, items: &[Value], indent: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_map(out, m, indent + 2, true),
            Value::Array(a) if !a.is_empty() => write_seq(out, a, indent + 2, true),
            other => {
                out.push_str(&scalar(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// A scalar (or empty collection) on one line, or a `|` block whose lines are
/// indented by `indent`.
fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn string(s: &str, indent: usize) -> String {
    if s.contains('\n') && block_ok(s) {
        return block(s, indent);
    }
    if needs_quotes(s) {
        double_quoted(s)
    } else {
        s.to_string()
    }
}

/// Whether `s` can be a literal block: printable, not blank, and its first
/// line does not start with whitespace (which would need an indentation indicator).
fn block_ok(s: &str) -> bool {
    !s.trim().is_empty()
        && !s
            .chars()
            .any(|c| (c.is_control() && c != '\n') || is_special_break(c))
        && s.split('\n')
            .find(|l| !l.is_empty())
            .is_some_and(|l| !l.starts_with([' ', '\t']))
}

fn block(s: &str, indent: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let (header, body) = match trailing {
        0 => ("|-", s),
        1 => ("|", &s[..s.len() - 1]),
        _ => ("|+", &s[..s.len() - 1]),
    };
    let mut out = String::from(header);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            pad(&mut out, indent);
            out.push_str(line);
        }
    }
    out
}

fn is_special_break(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_special_break(c) => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a plain (unquoted) scalar would be read back as something other than this string.
pub fn needs_quotes(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return true;
    }
    if s.chars().any(|c| c.is_control() || is_special_break(c)) {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    let second = s.chars().nth(1);
    let indicator_ok = matches!(first, '-' | '?' | ':')
        && second.is_some_and(|c| !c.is_whitespace())
        && s != "---"
        && s != "...";
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) && !indicator_ok {
        return true;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return true;
    }
    is_keyword(s) || looks_numeric(s) || looks_like_date(s)
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "y" | "n" | "on" | "off" | "null" | "~"
    )
}

fn looks_numeric(s: &str) -> bool {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = t.to_ascii_lowercase();
    if lower == ".inf" || lower == ".nan" {
        return true;
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return !rest.is_empty() && rest.chars().all(|c| c == '_' || c.is_digit(radix));
        }
    }
    let has_digit = t.chars().any(|c| c.is_ascii_digit());
    if has_digit
        && t.chars().all(|c| c.is_ascii_digit() || "._eE+-".contains(c))
        && t.replace('_', "").parse::<f64>().is_ok()
    {
        return true;
    }
    // YAML 1.1 base-60 numbers such as `1:20`.
    t.starts_with(|c: char| c.is_ascii_digit())
        && t.contains(':')
        && t.chars().all(|c| c.is_ascii_digit() || ":._".contains(c))
}

/// `2024-05-01…`, which YAML 1.1 readers take as a timestamp.
fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5].is_ascii_digit()
        && (b[6] == b'-' || (b[6].is_ascii_digit() && b[7] == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_layout() {
        let v = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {}},
            "spec": {
                "replicas": 2,
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25", "args": ["--port=80", "-v"],
                     "ports": [{"containerPort": 80}]}
                ]}},
                "matrix": [[1, 2], []],
                "paused": false,
                "empty": null
            }
        });
        let expected = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations: {}
  labels:
    app: web
  name: web
spec:
  empty: null
  matrix:
  - - 1
    - 2
  - []
  paused: false
  replicas: 2
  template:
    spec:
      containers:
      - args:
        - --port=80
        - -v
        image: nginx:1.25
        name: web
        ports:
        - containerPort: 80
";
        assert_eq!(to_yaml(&v), expected);
    }

    #[test]
    fn strings_that_would_change_meaning_are_quoted() {
        for s in [
            "",
            " lead",
            "trail ",
            "yes",
            "No",
            "TRUE",
            "null",
            "~",
            "on",
            "y",
            "123",
            "-1",
            "1.5",
            "1e3",
            "0x1F",
            "0o17",
            ".inf",
            "-.NaN",
            "1_000",
            "1:20",
            "2024-05-01",
            "2024-05-01T12:00:00Z",
            "a: b",
            "a #b",
            "key:",
            "#c",
            "*ref",
            "&a",
            "!tag",
            "|",
            ">",
            "'q'",
            "\"q\"",
            "%x",
            "@x",
            "`x",
            "[a]",
            "{a}",
            "- a",
            "-",
            "---",
            "tab\there",
            "ctl\u{1}",
        ] {
            assert!(needs_quotes(s), "{s:?} should be quoted");
        }
        for s in [
            "nginx",
            "nginx:1.25",
            "10.0.0.1",
            "--port=80",
            "app.kubernetes.io/name",
            "a b",
            "http://x:80/p",
            "1.2.3",
            "e5",
            "a#b",
            "ClusterIP",
            "80/TCP",
            "a,b",
        ] {
            assert!(!needs_quotes(s), "{s:?} should stay plain");
        }
    }

    #[test]
    fn escapes_and_blocks() {
        assert_eq!(
            to_yaml(&json!({"k": "say \"hi\"\\"})),
            "k: a\n".replace('a', "say \"hi\"\\")
        );
        assert_eq!(to_yaml(&json!({"k": ": x"})), "k: \": x\"\n");
        assert_eq!(to_yaml(&json!({"k": "tab\t"})), "k: \"tab\\t\"\n");
        assert_eq!(to_yaml(&json!({"k": "a\u{7}"})), "k: \"a\\u0007\"\n");
        assert_eq!(to_yaml(&json!({"80": "x"})), "\"80\": x\n");
        assert_eq!(to_yaml(&json!("yes")), "\"yes\"\n");
        assert_eq!(to_yaml(&json!([])), "[]\n");
        assert_eq!(
            to_yaml(&json!({"data": {"conf": "a: 1\n\nb: 2\n"}})),
            "data:\n  conf: |\n    a: 1\n\n    b: 2\n"
        );
        assert_eq!(to_yaml(&json!({"s": "x\ny"})), "s: |-\n  x\n  y\n");
        assert_eq!(to_yaml(&json!({"s": "x\n\n"})), "s: |+\n  x\n\n");
        assert_eq!(to_yaml(&json!(["a\nb\n"])), "- |\n  a\n  b\n");
        // Blocks that would need an indentation indicator are quoted instead.
        assert_eq!(to_yaml(&json!({"s": "  x\ny"})), "s: \"  x\\ny\"\n");
        assert_eq!(to_yaml(&json!({"s": "\n"})), "s: \"\\n\"\n");
    }
}
