//! Deployment and ReplicaSet rules: replicas, a non-empty selector that
//! matches the template's labels, restartPolicy Always, rollout strategy.

use super::pod::check_pod_spec;
use super::{FieldError, Path, check_labels};
use crate::apps::PodTemplateSpec;
use crate::apps::deployment::{DeploymentSpec, DeploymentStrategyType};
use crate::apps::replicaset::ReplicaSetSpec;
use crate::core::pod::RestartPolicy;
use crate::intstr::IntOrString;
use crate::selector::LabelSelector;

pub fn check_deployment_spec(spec: &DeploymentSpec, errs: &mut Vec<FieldError>) {
    let path = Path::new("spec");
    check_replicas(&path, spec.replicas, errs);
    check_selector_and_template(&path, &spec.selector, &spec.template, errs);
    check_non_negative(&path.field("minReadySeconds"), spec.min_ready_seconds, errs);
    check_non_negative(
        &path.field("revisionHistoryLimit"),
        spec.revision_history_limit,
        errs,
    );
    if let Some(deadline) = spec.progress_deadline_seconds
        && deadline <= spec.min_ready_seconds.unwrap_or(0)
    {
        errs.push(
            path.field("progressDeadlineSeconds")
                .error("must be greater than minReadySeconds")
                .hint("raise progressDeadlineSeconds (default 600)"),
        );
    }
    let Some(strategy) = &spec.strategy else {
        return;
    };
    let sp = path.field("strategy");
    let ru = &strategy.rolling_update;
    if strategy.type_ == Some(DeploymentStrategyType::Recreate) && ru.is_some() {
        errs.push(
            sp.field("rollingUpdate")
                .error("rollingUpdate is set but the strategy type is Recreate")
                .hint("remove rollingUpdate, or set type: RollingUpdate"),
        );
    }
    if let Some(ru) = ru {
        let rp = sp.field("rollingUpdate");
        let surge = check_int_or_percent(&rp.field("maxSurge"), ru.max_surge.as_ref(), false, errs);
        let unavailable = check_int_or_percent(
            &rp.field("maxUnavailable"),
            ru.max_unavailable.as_ref(),
            true,
            errs,
        );
        if surge == Some(0) && unavailable == Some(0) {
            errs.push(
                rp.field("maxUnavailable")
                    .error("maxSurge and maxUnavailable are both 0, so a rollout can never progress")
                    .hint("allow at least one extra or one unavailable pod, e.g. maxSurge: 1"),
            );
        }
    }
}

pub fn check_replica_set_spec(spec: &ReplicaSetSpec, errs: &mut Vec<FieldError>) {
    let path = Path::new("spec");
    check_replicas(&path, spec.replicas, errs);
    check_selector_and_template(&path, &spec.selector, &spec.template, errs);
    check_non_negative(&path.field("minReadySeconds"), spec.min_ready_seconds, errs);
}

fn check_replicas(path: &Path, replicas: Option<i32>, errs: &mut Vec<FieldError>) {
    if let Some(r) = replicas
        && r < 0
    {
        errs.push(
            path.field("replicas")
                .error(format!("replicas is {r}, it must not be negative"))
                .hint("use 0 or more"),
        );
    }
}

fn check_non_negative(path: &Path, v: Option<i32>, errs: &mut Vec<FieldError>) {
    if let Some(v) = v
        && v < 0
    {
        errs.push(path.error(format!("{v} is negative")).hint("use 0 or more"));
    }
}

/// Returns the value (or percentage) when it is valid.
fn check_int_or_percent(
    path: &Path,
    v: Option<&IntOrString>,
    at_most_100: bool,
    errs: &mut Vec<FieldError>,
) -> Option<i32> {
    let v = v?;
    let n = match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match v.percent() {
            Some(Ok(p)) => {
                if at_most_100 && p > 100 {
                    errs.push(
                        path.error(format!("{s} is more than 100%"))
                            .hint("use at most 100%"),
                    );
                    return None;
                }
                p
            }
            _ => {
                errs.push(
                    path.error(format!("{s:?} is neither an integer nor a percentage"))
                        .hint("write a number such as 1 or a percentage such as \"25%\""),
                );
                return None;
            }
        },
    };
    if n < 0 {
        errs.push(path.error(format!("{v} is negative")).hint("use 0 or more"));
        return None;
    }
    Some(n)
}

fn check_selector_and_template(
    path: &Path,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    errs: &mut Vec<FieldError>,
) {
    let sel_path = path.field("selector");
    let tmpl = path.field("template");
    let labels = &template.metadata.labels;
    let label_path = tmpl.field("metadata").field("labels");
    check_labels(&label_path, labels, errs);
    if selector.is_empty() {
        errs.push(sel_path.error("selector is required").hint(
            "add spec.selector.matchLabels with the labels of spec.template.metadata.labels, e.g. {app: web}",
        ));
    } else {
        errs.extend(selector.validate(&sel_path));
        let missing: Vec<String> = selector
            .match_labels
            .iter()
            .filter(|(k, v)| labels.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !missing.is_empty() {
            errs.push(
                label_path
                    .error(format!(
                        "the selector does not match the template's labels: missing {}",
                        missing.join(", ")
                    ))
                    .hint("add these labels to spec.template.metadata.labels, or change spec.selector"),
            );
        } else if !selector.matches(labels) {
            errs.push(
                label_path
                    .error(format!(
                        "the selector's matchExpressions ({}) do not match the template's labels",
                        selector.to_selector()
                    ))
                    .hint("change spec.template.metadata.labels or spec.selector.matchExpressions so they agree"),
            );
        }
    }
    let spec_path = tmpl.field("spec");
    if let Some(policy) = template.spec.restart_policy
        && policy != RestartPolicy::Always
    {
        errs.push(
            spec_path
                .field("restartPolicy")
                .error(format!("restartPolicy {policy:?} is not allowed in a template"))
                .hint("use restartPolicy: Always (or remove it); Deployments and ReplicaSets restart pods forever"),
        );
    }
    check_pod_spec(&spec_path, &template.spec, errs);
}
