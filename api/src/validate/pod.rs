//! Pod spec rules, shared by Pods and the templates of Deployments and
//! ReplicaSets: containers (via [`super::container`]), volumes, scheduling
//! (nodeSelector, node affinity, tolerations).

use std::collections::BTreeSet;

use super::{
    FieldError, Path, check_key, check_label_name, check_labels, check_subdomain, is_config_key,
    is_label_value,
};
use crate::core::node::TaintEffect;
use crate::core::pod::{NodeSelectorOperator, PodSpec, TolerationOperator, Volume};

pub use super::container::check_probe_port;
use super::container::{check_container, check_non_negative};
pub use crate::core::container::RESOURCE_NAMES;

/// Checks a pod spec at `path` (`spec` or `spec.template.spec`).
pub fn check_pod_spec(path: &Path, spec: &PodSpec, errs: &mut Vec<FieldError>) {
    let containers = path.field("containers");
    if spec.containers.is_empty() {
        errs.push(
            containers
                .error("a pod needs at least one container")
                .hint("add a container with a name and an image under containers"),
        );
    }
    let volumes = check_volumes(&path.field("volumes"), &spec.volumes, errs);
    let mut names = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let p = containers.index(i);
        if !names.insert(c.name.as_str()) {
            errs.push(
                p.field("name")
                    .error(format!("container name {:?} is used twice", c.name))
                    .hint("give each container a unique name"),
            );
        }
        check_container(&p, c, &volumes, &mut port_names, errs);
    }
    check_labels(&path.field("nodeSelector"), &spec.node_selector, errs);
    if let Some(node) = &spec.node_name {
        check_subdomain(&path.field("nodeName"), node, errs);
    }
    if let Some(rc) = &spec.runtime_class_name {
        check_subdomain(&path.field("runtimeClassName"), rc, errs);
    }
    if let Some(h) = &spec.hostname {
        check_label_name(&path.field("hostname"), h, errs);
    }
    if spec.termination_grace_period_seconds.is_some_and(|s| s < 0) {
        errs.push(
            path.field("terminationGracePeriodSeconds")
                .error("must not be negative")
                .hint("use 0 to kill immediately, or the seconds to wait (default 30)"),
        );
    }
    for (i, s) in spec.image_pull_secrets.iter().enumerate() {
        if s.name.is_empty() {
            errs.push(
                path.field("imagePullSecrets")
                    .index(i)
                    .field("name")
                    .error("name is required")
                    .hint("name a Secret holding registry credentials"),
            );
        }
    }
    check_affinity(path, spec, errs);
    check_tolerations(&path.field("tolerations"), spec, errs);
}

/// Checks volumes; returns their names.
fn check_volumes<'a>(path: &Path, volumes: &'a [Volume], errs: &mut Vec<FieldError>) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = path.index(i);
        check_label_name(&p.field("name"), &v.name, errs);
        if !names.insert(v.name.as_str()) {
            errs.push(
                p.field("name")
                    .error(format!("volume name {:?} is used twice", v.name))
                    .hint("give each volume a unique name"),
            );
        }
        match v.source_count() {
            1 => {}
            0 => errs.push(
                p.error(format!("volume {:?} has no source", v.name))
                    .hint("set exactly one of emptyDir, hostPath, configMap or secret"),
            ),
            _ => errs.push(
                p.error(format!("volume {:?} has more than one source", v.name))
                    .hint("keep exactly one of emptyDir, hostPath, configMap or secret"),
            ),
        }
        if let Some(e) = &v.empty_dir
            && let Some(limit) = &e.size_limit
        {
            check_non_negative(&p.field("emptyDir").field("sizeLimit"), limit, errs);
        }
        if let Some(h) = &v.host_path
            && !h.path.starts_with('/')
        {
            errs.push(
                p.field("hostPath")
                    .field("path")
                    .error(format!("{:?} is not an absolute path", h.path))
                    .hint("use a path on the node starting with '/'"),
            );
        }
        if let Some(cm) = &v.config_map {
            let cp = p.field("configMap");
            check_subdomain(&cp.field("name"), &cm.name, errs);
            check_items(&cp, &cm.items, cm.default_mode, errs);
        }
        if let Some(s) = &v.secret {
            let sp = p.field("secret");
            check_subdomain(&sp.field("secretName"), &s.secret_name, errs);
            check_items(&sp, &s.items, s.default_mode, errs);
        }
    }
    names
}

fn check_items(
    path: &Path,
    items: &[crate::core::pod::KeyToPath],
    default_mode: Option<i32>,
    errs: &mut Vec<FieldError>,
) {
    check_mode(&path.field("defaultMode"), default_mode, errs);
    for (i, item) in items.iter().enumerate() {
        let p = path.field("items").index(i);
        if !is_config_key(&item.key) {
            errs.push(
                p.field("key")
                    .error(format!("{:?} is not a valid key", item.key))
                    .hint("name a key of the ConfigMap or Secret"),
            );
        }
        if item.path.is_empty() || item.path.starts_with('/') || item.path.split('/').any(|s| s == "..") {
            errs.push(
                p.field("path")
                    .error(format!(
                        "{:?} is not a relative path inside the volume",
                        item.path
                    ))
                    .hint("use a relative file name such as \"app.conf\", without '..'"),
            );
        }
        check_mode(&p.field("mode"), item.mode, errs);
    }
}

fn check_mode(path: &Path, mode: Option<i32>, errs: &mut Vec<FieldError>) {
    if let Some(m) = mode
        && !(0..=0o777).contains(&m)
    {
        errs.push(
            path.error(format!("file mode {m} is out of range"))
                .hint("use 0 to 0777 (octal), e.g. 420 for 0644"),
        );
    }
}

fn check_affinity(path: &Path, spec: &PodSpec, errs: &mut Vec<FieldError>) {
    let Some(na) = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) else {
        return;
    };
    let Some(required) = &na.required_during_scheduling_ignored_during_execution else {
        return;
    };
    let p = path
        .field("affinity")
        .field("nodeAffinity")
        .field("requiredDuringSchedulingIgnoredDuringExecution")
        .field("nodeSelectorTerms");
    if required.node_selector_terms.is_empty() {
        errs.push(p.error("at least one term is required").hint(
            "add a term with matchExpressions, or remove requiredDuringSchedulingIgnoredDuringExecution",
        ));
    }
    for (i, term) in required.node_selector_terms.iter().enumerate() {
        let tp = p.index(i).field("matchExpressions");
        if term.match_expressions.is_empty() {
            errs.push(
                tp.error("a term needs at least one expression")
                    .hint("add a matchExpressions entry such as {key: kubernetes.io/arch, operator: In, values: [arm64]}"),
            );
        }
        for (j, e) in term.match_expressions.iter().enumerate() {
            let ep = tp.index(j);
            check_key(&ep.field("key"), &e.key, errs);
            let values = ep.field("values");
            match e.operator {
                NodeSelectorOperator::In | NodeSelectorOperator::NotIn if e.values.is_empty() => errs.push(
                    values
                        .error(format!("operator {:?} needs at least one value", e.operator))
                        .hint("list the label values to match"),
                ),
                NodeSelectorOperator::Exists | NodeSelectorOperator::DoesNotExist if !e.values.is_empty() => {
                    errs.push(
                        values
                            .error(format!("operator {:?} takes no values", e.operator))
                            .hint("remove values"),
                    )
                }
                NodeSelectorOperator::Gt | NodeSelectorOperator::Lt
                    if e.values.len() != 1 || e.values.iter().any(|v| v.parse::<i64>().is_err()) =>
                {
                    errs.push(
                        values
                            .error(format!(
                                "operator {:?} needs exactly one integer value",
                                e.operator
                            ))
                            .hint("write one integer, e.g. values: [\"2\"]"),
                    )
                }
                _ => {}
            }
            for (k, v) in e.values.iter().enumerate() {
                if !is_label_value(v) {
                    errs.push(
                        values
                            .index(k)
                            .error(format!("{v:?} is not a valid label value"))
                            .hint("use at most 63 letters, digits, '-', '_' and '.'"),
                    );
                }
            }
        }
    }
}

fn check_tolerations(path: &Path, spec: &PodSpec, errs: &mut Vec<FieldError>) {
    for (i, t) in spec.tolerations.iter().enumerate() {
        let p = path.index(i);
        let key = t.key.as_deref().unwrap_or("");
        if !key.is_empty() {
            check_key(&p.field("key"), key, errs);
        }
        match t.operator.unwrap_or_default() {
            TolerationOperator::Exists => {
                if t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                    errs.push(
                        p.field("value")
                            .error("operator Exists takes no value")
                            .hint("remove value, or use operator Equal"),
                    );
                }
            }
            TolerationOperator::Equal => {
                if key.is_empty() {
                    errs.push(
                        p.field("key")
                            .error("operator Equal needs a key")
                            .hint("set key, or use operator Exists to tolerate every taint"),
                    );
                }
                if let Some(v) = &t.value
                    && !is_label_value(v)
                {
                    errs.push(
                        p.field("value")
                            .error(format!("{v:?} is not a valid value"))
                            .hint("use at most 63 letters, digits, '-', '_' and '.'"),
                    );
                }
            }
        }
        if t.toleration_seconds.is_some() && t.effect != Some(TaintEffect::NoExecute) {
            errs.push(
                p.field("tolerationSeconds")
                    .error("tolerationSeconds applies only to effect NoExecute")
                    .hint("set effect: NoExecute or remove tolerationSeconds"),
            );
        }
    }
}
