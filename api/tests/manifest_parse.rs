//! Reading YAML and JSON into positioned trees: marks, scalar styles, key
//! order, multi-document streams, limits against hostile input, and syntax
//! errors in plain words.

use std::time::{Duration, Instant};

use shturman_api::manifest::{Limits, ManifestErrors, Mark, Node, Typed, Value, parse_documents};

fn parse(text: &str) -> Vec<Node> {
    parse_documents("t.yaml", text, &Limits::default()).expect("parses")
}

fn fail(text: &str) -> ManifestErrors {
    parse_documents("t.yaml", text, &Limits::default()).expect_err("must fail")
}

fn at(line: usize, column: usize) -> Mark {
    Mark { line, column }
}

fn typed(n: &Node) -> Typed<'_> {
    match &n.value {
        Value::Scalar(s) => s.typed(),
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn nodes_carry_marks_styles_and_key_order() {
    let docs = parse("b: 1\na:\n  - x\n  - 'true'\n  - true\nc: \"80\"\nd:\n");
    let d = &docs[0];
    let Value::Map(entries) = &d.value else {
        panic!("map")
    };
    let keys: Vec<(&str, Mark)> = entries.iter().map(|e| (e.key.as_str(), e.key_mark)).collect();
    assert_eq!(
        keys,
        vec![("b", at(1, 1)), ("a", at(2, 1)), ("c", at(6, 1)), ("d", at(7, 1))]
    );
    assert_eq!(typed(d.get("b").unwrap()), Typed::Int(1));
    assert_eq!(d.get("b").unwrap().mark, at(1, 4));
    let a = d.get("a").unwrap();
    assert_eq!(a.item(1).unwrap().mark, at(4, 5));
    assert_eq!(typed(a.item(1).unwrap()), Typed::Str("true"));
    assert_eq!(typed(a.item(2).unwrap()), Typed::Bool(true));
    assert_eq!(typed(d.get("c").unwrap()), Typed::Str("80"));
    assert!(d.get("d").unwrap().is_null());
    assert_eq!(d.get("d").unwrap().as_str(), None);
    assert_eq!(a.item(0).unwrap().as_str(), Some("x"));
    assert_eq!(
        d.to_json(),
        serde_json::json!({"b": 1, "a": ["x", "true", true], "c": "80", "d": null})
    );
}

#[test]
fn multi_document_streams_and_empty_documents() {
    let docs = parse("a: 1\n---\n---\nb: 2\n...\n---\n# only a comment\n");
    assert_eq!(docs.len(), 4);
    assert_eq!(docs[0].get("a").unwrap().mark, at(1, 4));
    assert!(docs[1].is_null());
    assert_eq!(docs[2].mark, at(4, 1));
    assert!(docs[3].is_null());
    assert!(parse("").is_empty());
}

#[test]
fn json_is_read_by_the_same_parser() {
    let docs = parse("{\"a\": [1, \"1\", null, 2.5],\n \"b\": {\"c\": false}}");
    assert_eq!(
        docs[0].to_json(),
        serde_json::json!({"a": [1, "1", null, 2.5], "b": {"c": false}})
    );
    assert_eq!(docs[0].get("b").unwrap().get("c").unwrap().mark, at(2, 13));
    let errs = fail("{\"a\": 1,\n \"b\": 2\n \"c\": 3}");
    assert_eq!(errs.0.len(), 1);
    assert_eq!(errs.0[0].mark, at(3, 5));
    assert_eq!(errs.0[0].message, "expected `,` or `}` in this `{ … }` map");
}

#[test]
fn duplicate_keys_name_both_positions() {
    let errs = fail("metadata:\n  name: a\n  labels: {}\n  name: b\n");
    assert_eq!(errs.0.len(), 1);
    let e = &errs.0[0];
    assert_eq!(e.mark, at(4, 3));
    assert_eq!(e.path, "metadata.name");
    assert_eq!(
        e.message,
        "duplicate key `name`: it is already set at line 2, column 3"
    );
}

#[test]
fn tabs_and_syntax_errors_read_plainly() {
    let errs = fail("spec:\n\treplicas: 3\n");
    assert_eq!(errs.0[0].mark, at(2, 1));
    assert_eq!(
        errs.0[0].message,
        "a tab character is used here; YAML indentation must use spaces"
    );
    assert_eq!(
        errs.0[0].hint.as_deref(),
        Some("replace the tabs on this line with spaces")
    );

    let errs = fail("a:\n  b: 1\n c: 2\n");
    assert_eq!(errs.0[0].mark.line, 3);
    assert_eq!(
        errs.0[0].to_string().lines().next(),
        Some("t.yaml:3:2: this line does not line up with the keys around it")
    );

    let errs = fail("image: nginx: latest\n");
    assert_eq!(errs.0[0].mark, at(1, 13));
    assert_eq!(
        errs.0[0].message,
        "unexpected `:` — a `key: value` pair is not allowed here"
    );

    let errs = fail("name: \"web\n");
    assert_eq!(errs.0[0].message, "a quoted text is never closed");
}

#[test]
fn merge_keys_and_foreign_tags_are_rejected_clearly() {
    let errs = fail("base: &b {x: 1}\nthing:\n  <<: *b\n  y: 2\n");
    assert_eq!(errs.0[0].mark, at(3, 3));
    assert_eq!(errs.0[0].message, "merge keys (`<<`) are not supported");
    let errs = fail("a: !secret xyz\n");
    assert_eq!(errs.0[0].message, "the tag `!secret` is not supported here");
    // Core tags are fine: `!!str 80` is text, `!!int "80"` a number.
    let docs = parse("a: !!str 80\nb: !!int \"80\"\n");
    assert_eq!(typed(docs[0].get("a").unwrap()), Typed::Str("80"));
    assert_eq!(typed(docs[0].get("b").unwrap()), Typed::Int(80));
}

#[test]
fn aliases_expand_within_limits() {
    let docs = parse("x: &v [1, 2]\ny: *v\n");
    assert_eq!(docs[0].get("y").unwrap().to_json(), serde_json::json!([1, 2]));
    assert_eq!(docs[0].get("y").unwrap().mark, at(2, 4));
}

#[test]
fn billion_laughs_fails_fast() {
    let mut text =
        String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    let start = Instant::now();
    let errs = fail(&text);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "took {:?}",
        start.elapsed()
    );
    let e = &errs.0[0];
    assert_eq!(
        e.message,
        "the document is too large: more than 200000 values once aliases are expanded"
    );
    assert_eq!(e.mark.line, 6);

    // Many small aliases hit the alias-use limit instead.
    let mut text = String::from("v: &v 1\nl:\n");
    for _ in 0..1001 {
        text.push_str("- *v\n");
    }
    let errs = fail(&text);
    assert_eq!(
        errs.0[0].message,
        "the document uses more than 1000 `*alias` references"
    );
    assert_eq!(errs.0[0].mark, at(1003, 3));
}

#[test]
fn depth_and_size_limits_hold() {
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let errs = fail(&deep);
    assert_eq!(errs.0[0].message, "the document nests deeper than 64 levels");
    assert_eq!(errs.0[0].mark, at(1, 65));

    let small = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let errs = parse_documents("t", "a: 0123456789\n", &small).expect_err("too big");
    assert_eq!(
        errs.0[0].message,
        "the manifest is 14 bytes; the limit is 10 bytes"
    );
}

#[test]
fn locate_finds_values_keys_and_nearest_ancestors() {
    let text = "metadata:\n  labels:\n    app.kubernetes.io/name: web\nspec:\n  containers:\n  - name: a\n    image: nginx\n";
    let d = &parse(text)[0];
    assert_eq!(d.locate("spec.containers[0].image"), at(7, 12));
    assert_eq!(d.locate("spec.containers[0]"), at(6, 5));
    assert_eq!(d.locate("spec.containers"), at(5, 3));
    assert_eq!(d.locate("metadata.labels[\"app.kubernetes.io/name\"]"), at(3, 29));
    // Missing pieces fall back to the nearest ancestor.
    assert_eq!(d.locate("spec.containers[3].image"), at(5, 3));
    assert_eq!(d.locate("spec.replicas"), at(4, 1));
    assert_eq!(d.locate(""), d.mark);
}

/// Truncated and garbled variants of a manifest never panic: each either
/// parses or returns positioned errors.
#[test]
fn garbled_input_never_panics() {
    let base = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: \"web\"\n  labels: {app: web, 'x': [1, 2]}\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n      - name: a\n        image: nginx\n        args: [\"--port\", 80]\n        command: |\n          run\n---\n[1, {a: &x b}, *x]\n";
    let junk = [
        "\t",
        ":",
        "- ",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "'",
        "&a ",
        "*a ",
        "!!",
        "? ",
        "|",
        ">",
        "#",
        "\n",
        "---\n",
        "%YAML 1.2\n",
        "\u{feff}",
        "é",
    ];
    let chars: Vec<(usize, char)> = base.char_indices().collect();
    let mut runs = 0;
    for &(i, _) in &chars {
        let truncated = &base[..i];
        let _ = parse_documents("t", truncated, &Limits::default());
        let _ = shturman_api::manifest::parse_manifests("t", truncated);
        for (j, j_str) in junk.iter().enumerate() {
            if (i + j) % 5 != 0 {
                continue;
            }
            let garbled = format!("{}{}{}", &base[..i], j_str, &base[i..]);
            if let Err(e) = parse_documents("t", &garbled, &Limits::default()) {
                assert!(!e.0.is_empty());
                assert!(e.0.iter().all(|e| e.mark.line >= 1 && e.mark.column >= 1), "{e}");
            }
            let _ = shturman_api::manifest::parse_manifests("t", &garbled);
            runs += 1;
        }
    }
    assert!(runs > 500, "{runs}");
}
