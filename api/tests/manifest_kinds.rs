//! Whole files through `parse_manifests`: documents, `kind: List`, and the
//! `apiVersion`/`kind` checks that come before an object is decoded.

use shturman_api::Kind;
use shturman_api::manifest::{Mark, parse_manifests};

fn at(line: usize, column: usize) -> Mark {
    Mark { line, column }
}

#[test]
fn every_document_becomes_a_manifest_and_empty_ones_are_skipped() {
    let text = "---\n# nothing here\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n";
    let ms = parse_manifests("app.yaml", text).expect("parses");
    let brief: Vec<(Kind, Mark, &str)> = ms.iter().map(|m| (m.kind, m.mark, m.source.as_str())).collect();
    assert_eq!(
        brief,
        vec![
            (Kind::ConfigMap, at(4, 1), "app.yaml"),
            (Kind::ConfigMap, at(10, 1), "app.yaml")
        ]
    );
}

#[test]
fn lists_are_expanded() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n";
    let ms = parse_manifests("l.yaml", text).expect("parses");
    let kinds: Vec<(Kind, Mark)> = ms.iter().map(|m| (m.kind, m.mark)).collect();
    assert_eq!(kinds, vec![(Kind::ConfigMap, at(4, 3)), (Kind::Secret, at(7, 3))]);
}

#[test]
fn kind_and_api_version_errors_say_what_is_served() {
    let text = "\
apiVersion: v1
kind: Deployment
metadata: {name: a}
---
apiVersion: apps/v1
kind: Deploymnt
---
metadata: {name: c}
---
kind: Pod
---
- just a list
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Widget
";
    let errs = parse_manifests("bad.yaml", text).expect_err("must fail");
    let expected = "\
bad.yaml:1:13: apiVersion: kind Deployment is served at apiVersion apps/v1, not v1
  hint: write `apiVersion: apps/v1`
bad.yaml:6:7: kind: unknown kind `Deploymnt`
  hint: did you mean `Deployment`? (supported kinds: Namespace, Node, Pod, Service, Endpoints, ConfigMap, Secret, Event, Deployment, ReplicaSet)
bad.yaml:8:1: kind: missing `kind`: every object says what it is
  hint: add e.g. `apiVersion: apps/v1` and `kind: Deployment`; supported kinds: Namespace, Node, Pod, Service, Endpoints, ConfigMap, Secret, Event, Deployment, ReplicaSet
bad.yaml:10:1: apiVersion: missing `apiVersion`; kind Pod is served at apiVersion v1
  hint: add `apiVersion: v1`
bad.yaml:12:1: expected an object (a map with `apiVersion`, `kind` and `metadata`), found a list
bad.yaml:18:9: items[0].kind: unknown kind `Widget`
  hint: supported kinds: Namespace, Node, Pod, Service, Endpoints, ConfigMap, Secret, Event, Deployment, ReplicaSet";
    assert_eq!(errs.to_string(), expected);
}

#[test]
fn syntax_errors_come_back_from_parse_manifests() {
    let errs = parse_manifests("x.yaml", "kind: Pod\n\tmetadata: {}\n").expect_err("tabs");
    assert_eq!(errs.0.len(), 1);
    assert_eq!(errs.0[0].source, "x.yaml");
    assert_eq!(errs.0[0].mark, at(2, 1));
}
