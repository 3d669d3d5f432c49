//! Forgiving accessors over `serde_json::Value`: printers read objects by path
//! and get an empty value, never a panic, when a field is missing.

use serde_json::Value;

static NULL: Value = Value::Null;

/// The value at a dotted path (`status.podIP`); `Null` when any step is missing.
pub fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(v, |cur, key| cur.get(key))
        .unwrap_or(&NULL)
}

/// The string at `path`, or `""`.
pub fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

/// The string at `path`, or `fallback` when missing or empty.
pub fn str_or<'a>(v: &'a Value, path: &str, fallback: &'a str) -> &'a str {
    match str_at(v, path) {
        "" => fallback,
        s => s,
    }
}

/// The integer at `path`, or 0.
pub fn int_at(v: &Value, path: &str) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}

/// The array at `path`, or an empty slice.
pub fn list_at<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The map at `path` as `(key, value)` pairs, in the map's order.
pub fn map_at<'a>(v: &'a Value, path: &str) -> Vec<(&'a str, &'a Value)> {
    at(v, path)
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

/// A scalar rendered as text (strings unquoted); `""` for null.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `k=v,k2=v2` for the string map at `path`; `""` when empty.
pub fn joined_map(v: &Value, path: &str) -> String {
    map_at(v, path)
        .into_iter()
        .map(|(k, v)| format!("{k}={}", scalar_text(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `fallback` when `s` is empty.
pub fn or_none(s: String, fallback: &str) -> String {
    if s.is_empty() { fallback.to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_paths_are_empty_not_panics() {
        let v = json!({"a": {"b": "x", "n": 3, "l": [1], "m": {"k": "v", "z": 1}}});
        assert_eq!(str_at(&v, "a.b"), "x");
        assert_eq!(str_at(&v, "a.c.d"), "");
        assert_eq!(str_or(&v, "a.c", "<none>"), "<none>");
        assert_eq!(int_at(&v, "a.n"), 3);
        assert_eq!(int_at(&v, "a.b"), 0);
        assert_eq!(list_at(&v, "a.l").len(), 1);
        assert!(list_at(&v, "a.b").is_empty());
        assert_eq!(joined_map(&v, "a.m"), "k=v,z=1");
        assert_eq!(or_none(String::new(), "<none>"), "<none>");
    }
}
