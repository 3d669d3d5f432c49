//! Parser errors in plain words: saphyr-parser's `ScanError`s become
//! [`ManifestError`]s with a message a new user understands, a hint, and the
//! position of the actual culprit (for tabs, the tab itself).

use saphyr_parser::ScanError;

use super::load::mark_of;
use super::{ManifestError, Mark};

/// Turns a parser error into a message a new user understands.
pub(super) fn scan_error(source: &str, text: &str, e: &ScanError) -> ManifestError {
    let info = e.info();
    let mut mark = mark_of(e.marker());
    let (message, hint): (String, Option<&str>) = if info.contains("tab") {
        mark = first_tab_from(text, e.marker().line()).unwrap_or(mark);
        (
            "a tab character is used here; YAML indentation must use spaces".into(),
            Some("replace the tabs on this line with spaces"),
        )
    } else if info.contains("mapping values are not allowed") {
        (
            "unexpected `:` — a `key: value` pair is not allowed here".into(),
            Some(
                "check this line's indentation against the lines above, or quote a value that contains `: `",
            ),
        )
    } else if info.contains("block mapping, did not find expected key") {
        (
            "this line does not line up with the keys around it".into(),
            Some("indent it exactly like its sibling keys, or further in if it belongs to the key above"),
        )
    } else if info.contains("did not find expected '-' indicator") {
        (
            "a list item is expected here: the lines of a list each start with `- ` at the same indentation"
                .into(),
            Some("line this up with the other `- ` items, or indent it under the item it belongs to"),
        )
    } else if info.contains("flow mapping") {
        (
            "expected `,` or `}` in this `{ … }` map".into(),
            Some("separate entries with commas and close the map with `}`"),
        )
    } else if info.contains("flow sequence") {
        (
            "expected `,` or `]` in this `[ … ]` list".into(),
            Some("separate items with commas and close the list with `]`"),
        )
    } else if info.contains("quoted scalar, found unexpected end of stream") {
        (
            "a quoted text is never closed".into(),
            Some("add the closing quote"),
        )
    } else if info.contains("unknown anchor") {
        (
            "this `*alias` names an `&anchor` that is not defined before it in this document".into(),
            None,
        )
    } else if info.contains("did not find expected node content") {
        ("a value is missing here".into(), None)
    } else if info.contains("block sequence entries are not allowed") {
        (
            "a `- ` list item is not allowed here".into(),
            Some("put the list on its own lines, indented under its key"),
        )
    } else if info.contains("invalid indentation") || info.contains("wrongly indented") {
        (
            "this line is not indented correctly".into(),
            Some("line it up with the lines it belongs with"),
        )
    } else {
        (format!("this is not valid YAML: {info}"), None)
    };
    ManifestError {
        source: source.into(),
        mark,
        path: String::new(),
        message,
        hint: hint.map(str::to_string),
    }
}

/// The position of the first tab on or after line `from`: the parser reports
/// tab errors near the token, users want the tab itself.
fn first_tab_from(text: &str, from: usize) -> Option<Mark> {
    let (mut line, mut column) = (1, 1);
    for c in text.chars() {
        if c == '\t' && line >= from {
            return Some(Mark { line, column });
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    None
}
