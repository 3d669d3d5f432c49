//! The first manifest a new user pastes: refused with precise positions, then
//! the corrected one applies, and applying again changes nothing.

use shturman_e2e::{ControlPlane, stderr, stdout, workspace_root};

#[test]
fn mis_indented_seed_is_refused_then_corrected_one_applies() {
    let cp = ControlPlane::start().expect("control plane");
    let broken = workspace_root().join("examples/first-try-mis-indented.yaml");
    let fixed = workspace_root().join("examples/nginx-deployment.yaml");

    let out = cp.cli(&["apply", "-f", broken.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a broken manifest must fail; stderr:\n{err}"
    );
    // `template` under `selector` (line 16 of the file) is named with its position…
    assert!(
        err.contains("first-try-mis-indented.yaml:16:9"),
        "position of template:\n{err}"
    );
    assert!(
        err.contains("spec.selector.template"),
        "unknown field path:\n{err}"
    );
    // …as is the missing `spec.template`, with a hint about indentation…
    assert!(err.contains("spec.template"), "missing field:\n{err}");
    assert!(
        err.to_lowercase().contains("indent"),
        "mis-indentation hint:\n{err}"
    );
    // …and `ports` must be a list, at its own line.
    assert!(err.contains(":24:"), "position of ports:\n{err}");
    assert!(err.contains("- containerPort: 80"), "list hint for ports:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Nothing was applied.
    let get = cp.cli(&["get", "deployments", "-o", "name"]);
    assert!(get.status.success(), "{}", stderr(&get));
    assert_eq!(stdout(&get).trim(), "");

    let out = cp.cli(&["apply", "-f", fixed.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "corrected manifest must apply: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "deployment.apps/nginx-deployment created");

    let out = cp.cli(&["apply", "-f", fixed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "deployment.apps/nginx-deployment unchanged");

    // A real change is `configured`, and the server keeps it.
    let text = std::fs::read_to_string(&fixed)
        .unwrap()
        .replace("replicas: 3", "replicas: 5");
    let out = cp.cli_stdin(&["apply", "-f", "-"], Some(&text));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "deployment.apps/nginx-deployment configured");
    let out = cp.cli(&["get", "deploy", "nginx-deployment", "-o", "json"]);
    let obj: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(obj["spec"]["replicas"], 5);
    assert_eq!(obj["metadata"]["generation"], 2);
}
