//! Field paths (`spec.template.spec.containers[0].image`,
//! `metadata.labels["app.kubernetes.io/name"]`): their steps, how they print and
//! how they parse.

use std::fmt::Write as _;

/// One step down a tree: a map key or a list index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Prints steps the way users write paths: `a.b[0].c`, with keys that are not
/// plain words in brackets and quotes: `labels["app.kubernetes.io/name"]`.
pub fn format_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            Step::Key(k) if is_word(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Key(k) => {
                out.push_str("[\"");
                for c in k.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push_str("\"]");
            }
        }
    }
    out
}

fn is_word(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

/// Parses a path into steps. Accepts `a.b`, `a[0]`, `a["x.y"]`, `a['x.y']` and
/// `a[x.y]` (a bracketed non-number is a key). Never fails: odd input yields
/// the steps it could read.
pub fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut chars = path.chars().peekable();
    let mut word = String::new();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !word.is_empty() {
                    steps.push(Step::Key(std::mem::take(&mut word)));
                }
            }
            '[' => {
                if !word.is_empty() {
                    steps.push(Step::Key(std::mem::take(&mut word)));
                }
                let quote = match chars.peek() {
                    Some(&q @ ('"' | '\'')) => {
                        chars.next();
                        Some(q)
                    }
                    _ => None,
                };
                let mut inner = String::new();
                while let Some(c) = chars.next() {
                    match (quote, c) {
                        (Some(_), '\\') => {
                            if let Some(n) = chars.next() {
                                inner.push(n);
                            }
                        }
                        (Some(q), c) if c == q => {
                            // Skip to the closing bracket.
                            for c in chars.by_ref() {
                                if c == ']' {
                                    break;
                                }
                            }
                            break;
                        }
                        (None, ']') => break,
                        (_, c) => inner.push(c),
                    }
                }
                match (quote, inner.parse::<usize>()) {
                    (None, Ok(i)) => steps.push(Step::Index(i)),
                    _ => steps.push(Step::Key(inner)),
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        steps.push(Step::Key(word));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Step {
        Step::Key(s.into())
    }

    #[test]
    fn paths_print_like_users_write_them() {
        let steps = vec![k("spec"), k("containers"), Step::Index(0), k("ports")];
        assert_eq!(format_path(&steps), "spec.containers[0].ports");
        let steps = vec![k("metadata"), k("labels"), k("app.kubernetes.io/name")];
        assert_eq!(format_path(&steps), "metadata.labels[\"app.kubernetes.io/name\"]");
        assert_eq!(format_path(&[]), "");
    }

    #[test]
    fn paths_parse_back() {
        assert_eq!(
            parse_path("spec.template.spec.containers[0].image"),
            vec![
                k("spec"),
                k("template"),
                k("spec"),
                k("containers"),
                Step::Index(0),
                k("image")
            ]
        );
        assert_eq!(
            parse_path("metadata.labels[\"app.kubernetes.io/name\"]"),
            vec![k("metadata"), k("labels"), k("app.kubernetes.io/name")]
        );
        assert_eq!(parse_path("a['x.y'].b"), vec![k("a"), k("x.y"), k("b")]);
        assert_eq!(parse_path("a[x.y]"), vec![k("a"), k("x.y")]);
        assert_eq!(parse_path("a[\"q\\\"x\"]"), vec![k("a"), k("q\"x")]);
        assert_eq!(parse_path("a[\"unterminated"), vec![k("a"), k("unterminated")]);
        assert_eq!(parse_path(""), vec![]);
    }

    #[test]
    fn format_and_parse_round_trip() {
        let steps = vec![k("labels"), k("a\"b.c"), Step::Index(3)];
        assert_eq!(parse_path(&format_path(&steps)), steps);
    }
}
