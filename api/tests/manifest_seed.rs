//! The seed example — a new user's first paste — through `parse_manifests`
//! with the real Deployment type: every mistake found at once, with lines.

use shturman_api::Kind;
use shturman_api::manifest::parse_manifests;

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

#[test]
fn seed_errors() {
    let errs = parse_manifests("nginx.yaml", SEED).expect_err("the seed is wrong");
    let expected = "\
nginx.yaml:7:1: spec.template: missing field `template`: it is indented under `selector` instead
  hint: move `template` (line 12) left to line up with `selector`
nginx.yaml:12:9: spec.selector.template: unknown field `template`; valid fields here: matchLabels, matchExpressions
  hint: `template` is indented under `selector`; it belongs to `spec` — move it left to line up with `selector` (line 9)
nginx.yaml:12:9: spec.template.spec: missing field `spec`: it is indented under `metadata` instead
  hint: move `spec` (line 16) left to line up with `metadata`
nginx.yaml:16:17: spec.template.metadata.spec: unknown field `spec`; valid fields here: name, generateName, \
namespace, labels, annotations, uid, resourceVersion, generation, creationTimestamp, deletionTimestamp, \
deletionGracePeriodSeconds, ownerReferences, finalizers
  hint: `spec` is indented under `metadata`; it belongs to `template` — move it left to line up with `metadata` (line 13)
nginx.yaml:20:23: spec.template.spec.containers[0].ports: expected a list, found a map
  hint: write it as a list item: `- containerPort: 80`";
    assert_eq!(errs.to_string(), expected);
}

#[test]
fn corrected_seed_parses() {
    let fixed = "apiVersion: apps/v1
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
              - containerPort: 80
";
    let ms = parse_manifests("nginx.yaml", fixed).expect("parses");
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].kind, Kind::Deployment);
    let obj = &ms[0].object;
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(obj["metadata"]["name"], "nginx-deployment");
}
