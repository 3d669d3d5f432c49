//! The strict decoder over positioned documents: paths, positions, friendly
//! messages and several errors per pass, checked with small types that mirror
//! a Deployment.

use std::collections::BTreeMap;

use serde::Deserialize;
use shturman_api::manifest::{Limits, ManifestError, Mark, Node, decode, parse_documents};

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Deployment {
    api_version: String,
    kind: String,
    metadata: Meta,
    spec: Spec,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Meta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    replicas: Option<i32>,
    selector: Selector,
    template: Template,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Template {
    #[serde(default)]
    metadata: Option<TemplateMeta>,
    spec: PodSpec,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TemplateMeta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodSpec {
    containers: Vec<Container>,
    #[serde(default)]
    restart_policy: Option<RestartPolicy>,
}

#[derive(Debug, Deserialize, PartialEq)]
enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    ports: Vec<Port>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    stdin: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Port {
    container_port: u16,
    #[serde(default)]
    name: Option<String>,
}

const SEED: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
    name: nginx-deployment
    labels:
        app: nginx
spec: 
    replicas: 3
    selector: 
        matchLabels: 
            app: nginx
        template: 
            metadata: 
                labels: 
                    app: nginx
                spec:
                    containers:
                    - name: nginx
                      image: nginx:1.14.2
                      ports:
                          containerPort: 80
";

fn doc(text: &str) -> Node {
    let mut docs = parse_documents("test.yaml", text, &Limits::default()).expect("parses");
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

fn errors<T: for<'de> Deserialize<'de> + std::fmt::Debug>(text: &str) -> Vec<ManifestError> {
    decode::<T>("test.yaml", &doc(text)).expect_err("must fail").0
}

fn at(line: usize, column: usize) -> Mark {
    Mark { line, column }
}

/// The seed has two mis-indentations (`template` under `selector`, and the pod
/// `spec` under the template's `metadata`) and a map where `ports` needs a list.
/// All three are found in one call; the errors inside the moved subtrees keep
/// their source positions and get the paths they were meant to have.
#[test]
fn seed_reports_misindentations_and_ports_map() {
    let errs = decode::<Deployment>("seed.yaml", &doc(SEED)).expect_err("must fail");
    let expected = "\
seed.yaml:7:1: spec.template: missing field `template`: it is indented under `selector` instead
  hint: move `template` (line 12) left to line up with `selector`
seed.yaml:12:9: spec.selector.template: unknown field `template`; valid fields here: matchLabels, matchExpressions
  hint: `template` is indented under `selector`; it belongs to `spec` — move it left to line up with `selector` (line 9)
seed.yaml:12:9: spec.template.spec: missing field `spec`: it is indented under `metadata` instead
  hint: move `spec` (line 16) left to line up with `metadata`
seed.yaml:16:17: spec.template.metadata.spec: unknown field `spec`; valid fields here: labels
  hint: `spec` is indented under `metadata`; it belongs to `template` — move it left to line up with `metadata` (line 13)
seed.yaml:20:23: spec.template.spec.containers[0].ports: expected a list, found a map
  hint: write it as a list item: `- containerPort: 80`";
    assert_eq!(errs.to_string(), expected);
    let first = &errs.0[0];
    assert_eq!((first.mark, first.path.as_str()), (at(7, 1), "spec.template"));
}

#[test]
fn corrected_seed_decodes() {
    let fixed = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
spec:
  replicas: 3
  selector:
    matchLabels: {app: nginx}
  template:
    metadata:
      labels: {app: nginx}
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
";
    let d: Deployment = decode("fixed.yaml", &doc(fixed)).expect("decodes");
    assert_eq!(d.spec.replicas, Some(3));
    assert_eq!(d.spec.template.spec.containers[0].ports[0].container_port, 80);
    assert_eq!(d.spec.template.spec.containers[0].image, "nginx:1.14.2");
}

const GOOD_PREFIX: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {}
  template:
    spec:
      containers:
";

#[test]
fn unknown_fields_are_all_reported_with_suggestions() {
    let text = format!(
        "{GOOD_PREFIX}      - name: a
        imag: nginx
        image: nginx
        containerport: 80
      - name: b
        image: busybox
        foo: 1
"
    );
    let errs = errors::<Deployment>(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(errs[0].mark, at(11, 9));
    assert_eq!(errs[0].path, "spec.template.spec.containers[0].imag");
    assert_eq!(
        errs[0].message,
        "unknown field `imag`; valid fields here: name, image, ports, args, stdin"
    );
    assert_eq!(errs[0].hint.as_deref(), Some("did you mean `image`?"));
    assert_eq!(errs[1].path, "spec.template.spec.containers[0].containerport");
    assert_eq!(errs[1].mark, at(13, 9));
    assert_eq!(errs[1].hint, None);
    assert_eq!(errs[2].mark, at(16, 9));
    assert_eq!(errs[2].path, "spec.template.spec.containers[1].foo");
    assert_eq!(errs[2].hint, None);
}

#[test]
fn wrong_types_and_ranges_are_reported_once() {
    let text = format!(
        "{GOOD_PREFIX}      - name: a
        image: nginx
        ports:
        - containerPort: 65536
        - containerPort: \"8080\"
        - containerPort: 1.5
        stdin: yes
      restartPolicy: Alwayz
"
    );
    let errs = errors::<Deployment>(&text);
    let brief: Vec<(Mark, &str, &str, Option<&str>)> = errs
        .iter()
        .map(|e| (e.mark, e.path.as_str(), e.message.as_str(), e.hint.as_deref()))
        .collect();
    assert_eq!(
        brief,
        vec![
            (
                at(13, 26),
                "spec.template.spec.containers[0].ports[0].containerPort",
                "65536 is out of range for a port (0 to 65535)",
                None
            ),
            (
                at(14, 26),
                "spec.template.spec.containers[0].ports[1].containerPort",
                "expected a number, found the quoted text \"8080\"",
                Some("remove the quotes: `8080`")
            ),
            (
                at(15, 26),
                "spec.template.spec.containers[0].ports[2].containerPort",
                "expected a whole number, found `1.5`",
                None
            ),
            (
                at(16, 16),
                "spec.template.spec.containers[0].stdin",
                "expected true or false, found the text `yes`",
                Some("YAML 1.2 reads yes/no/on/off as text; write `true` or `false`")
            ),
            (
                at(17, 22),
                "spec.template.spec.restartPolicy",
                "unknown value `Alwayz`; expected one of: Always, OnFailure, Never",
                Some("did you mean `Always`?")
            ),
        ]
    );
}

#[test]
fn plain_numbers_keep_their_text_where_text_is_wanted() {
    let text = format!(
        "{GOOD_PREFIX}      - name: 007
        image: 1.10
        args: [1.0, true, 0x1F, \"x\"]
"
    );
    let d: Deployment = decode("t", &doc(&text)).expect("decodes");
    let c = &d.spec.template.spec.containers[0];
    assert_eq!(c.name, "007");
    assert_eq!(c.image, "1.10");
    assert_eq!(c.args, vec!["1.0", "true", "0x1F", "x"]);
}

#[test]
fn null_where_text_is_required_says_what_to_write() {
    let text = format!("{GOOD_PREFIX}      - name:\n        image: nginx\n");
    let errs = errors::<Deployment>(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "spec.template.spec.containers[0].name");
    assert_eq!(errs[0].message, "expected text, found nothing (null)");
    assert_eq!(
        errs[0].hint.as_deref(),
        Some("write a value after `name:`, or remove the line")
    );
}

#[test]
fn list_item_paths_keep_the_users_index_after_repairs() {
    // Item 0 lacks `image` (unrepairable, so it is dropped); item 1's error
    // must still be reported as containers[1].
    let text = format!(
        "{GOOD_PREFIX}      - name: a
      - name: b
        image: nginx
        bogus: 1
"
    );
    let errs = errors::<Deployment>(&text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "spec.template.spec.containers[0].image",
            "spec.template.spec.containers[1].bogus"
        ]
    );
    assert_eq!(errs[0].message, "missing required field `image`");
    assert_eq!(errs[0].mark, at(10, 9));
}

#[test]
fn a_list_where_a_map_belongs_is_explained() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n- name: web\n";
    let errs = errors::<Deployment>(text);
    assert_eq!(errs[0].path, "metadata");
    assert_eq!(errs[0].mark, at(3, 1));
    assert_eq!(errs[0].message, "expected a map, found a list");
    assert_eq!(
        errs[0].hint.as_deref(),
        Some("remove the `- ` in front of the fields: this value is a single map, not a list")
    );
}

#[test]
fn json_documents_decode_with_positions() {
    let text = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
 "metadata": {"name": "web", "labels": {"tier": 1}},
 "spec": {"selector": {}, "template": {"spec": {"containers": [
   {"name": "a", "image": "x", "ports": [{"containerPort": "80"}]}]}}}}"#;
    let errs = errors::<Deployment>(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        errs[0].path,
        "spec.template.spec.containers[0].ports[0].containerPort"
    );
    assert_eq!(errs[0].mark, at(4, 60));
    assert_eq!(errs[0].message, "expected a number, found the quoted text \"80\"");
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum IntOrString {
    Int(i32),
    Str(String),
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Probe {
    port: IntOrString,
    extra: Option<serde_json::Value>,
    weight: Option<f64>,
}

#[test]
fn deserialize_any_serves_untagged_enums_and_json_values() {
    let p: Probe = decode(
        "t",
        &doc("port: 80\nextra: {a: [1, 1.5, null, \"s\", true]}\nweight: 2\n"),
    )
    .expect("decodes");
    assert_eq!(p.port, IntOrString::Int(80));
    assert_eq!(p.extra, Some(serde_json::json!({"a": [1, 1.5, null, "s", true]})));
    assert_eq!(p.weight, Some(2.0));
    let p: Probe = decode("t", &doc("port: \"80\"\nextra: ~\n")).expect("decodes");
    assert_eq!(p.port, IntOrString::Str("80".into()));
    assert_eq!(p.extra, None);
    let errs = errors::<Probe>("port: [1]\n");
    assert_eq!(errs[0].path, "port");
    assert_eq!(errs[0].message, "this value does not fit any form of IntOrString");
    assert_eq!(errs[0].mark, at(1, 1));
}
