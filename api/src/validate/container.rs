//! Container rules: name, image, ports, env and envFrom, resources
//! (supported names, requests within limits), volume mounts and probes.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    FieldError, Path, check_label_name, check_port, check_port_name, check_subdomain, is_config_key,
    is_env_var_name,
};
use crate::core::container::{Container, Probe, RESOURCE_NAMES};
use crate::intstr::IntOrString;
use crate::quantity::Quantity;

pub(super) fn check_container<'a>(
    path: &Path,
    c: &'a Container,
    volumes: &BTreeSet<&str>,
    port_names: &mut BTreeSet<&'a str>,
    errs: &mut Vec<FieldError>,
) {
    check_label_name(&path.field("name"), &c.name, errs);
    if c.image.trim().is_empty() {
        errs.push(
            path.field("image")
                .error("image is required")
                .hint("set an image reference such as nginx:1.27 or a .wasm module"),
        );
    }
    for (i, port) in c.ports.iter().enumerate() {
        let p = path.field("ports").index(i);
        check_port(&p.field("containerPort"), port.container_port, errs);
        if let Some(hp) = port.host_port {
            check_port(&p.field("hostPort"), hp, errs);
        }
        if let Some(name) = &port.name {
            check_port_name(&p.field("name"), name, errs);
            if !port_names.insert(name.as_str()) {
                errs.push(
                    p.field("name")
                        .error(format!("port name {name:?} is used twice in this pod"))
                        .hint("give each port a unique name"),
                );
            }
        }
    }
    check_env(path, c, errs);
    check_resources(&path.field("resources"), c, errs);
    let mut mount_paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let p = path.field("volumeMounts").index(i);
        if !volumes.contains(m.name.as_str()) {
            errs.push(
                p.field("name")
                    .error(format!("no volume named {:?} in this pod", m.name))
                    .hint("add it under volumes, or mount one of the volumes the pod declares"),
            );
        }
        if !m.mount_path.starts_with('/') {
            errs.push(
                p.field("mountPath")
                    .error(format!("{:?} is not an absolute path", m.mount_path))
                    .hint("mount at a path starting with '/'"),
            );
        } else if !mount_paths.insert(m.mount_path.as_str()) {
            errs.push(
                p.field("mountPath")
                    .error(format!("{:?} is mounted twice", m.mount_path))
                    .hint("mount each path once"),
            );
        }
        if let Some(sub) = &m.sub_path
            && (sub.starts_with('/') || sub.split('/').any(|s| s == ".."))
        {
            errs.push(
                p.field("subPath")
                    .error(format!("{sub:?} is not a relative path"))
                    .hint("use a path inside the volume, without a leading '/' or '..'"),
            );
        }
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(probe) = probe {
            check_probe(&path.field(field), field != "readinessProbe", probe, errs);
        }
    }
}

fn check_env(path: &Path, c: &Container, errs: &mut Vec<FieldError>) {
    for (i, e) in c.env.iter().enumerate() {
        let p = path.field("env").index(i);
        if !is_env_var_name(&e.name) {
            errs.push(p.field("name").error(format!("{:?} is not a valid environment variable name", e.name)).hint(
                "use letters, digits, '_', '-' and '.', not starting with a digit, e.g. \"LOG_LEVEL\"",
            ));
        }
        if let Some(from) = &e.value_from {
            let vp = p.field("valueFrom");
            if e.value.is_some() {
                errs.push(
                    vp.error("value and valueFrom are both set")
                        .hint("keep one of them"),
                );
            }
            let n = usize::from(from.config_map_key_ref.is_some())
                + usize::from(from.secret_key_ref.is_some())
                + usize::from(from.field_ref.is_some());
            if n != 1 {
                errs.push(
                    vp.error(format!("{n} sources are set"))
                        .hint("set exactly one of configMapKeyRef, secretKeyRef or fieldRef"),
                );
            }
            for (field, r) in [
                ("configMapKeyRef", &from.config_map_key_ref),
                ("secretKeyRef", &from.secret_key_ref),
            ] {
                if let Some(r) = r {
                    check_subdomain(&vp.field(field).field("name"), &r.name, errs);
                    if !is_config_key(&r.key) {
                        errs.push(
                            vp.field(field)
                                .field("key")
                                .error(format!("{:?} is not a valid key", r.key))
                                .hint("name a key of the ConfigMap or Secret"),
                        );
                    }
                }
            }
            if let Some(f) = &from.field_ref {
                check_field_ref(&vp.field("fieldRef").field("fieldPath"), &f.field_path, errs);
            }
        }
    }
    for (i, e) in c.env_from.iter().enumerate() {
        let p = path.field("envFrom").index(i);
        match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), None) => check_subdomain(&p.field("configMapRef").field("name"), &r.name, errs),
            (None, Some(r)) => check_subdomain(&p.field("secretRef").field("name"), &r.name, errs),
            _ => errs.push(
                p.error("envFrom needs exactly one source")
                    .hint("set either configMapRef or secretRef"),
            ),
        }
        if let Some(prefix) = &e.prefix
            && !prefix.is_empty()
            && !is_env_var_name(prefix)
        {
            errs.push(
                p.field("prefix")
                    .error(format!("{prefix:?} is not a valid environment variable prefix"))
                    .hint("use letters, digits, '_', '-' and '.'"),
            );
        }
    }
}

const FIELD_REFS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.podIP",
    "status.podIPs",
];

fn check_field_ref(path: &Path, field: &str, errs: &mut Vec<FieldError>) {
    let ok = FIELD_REFS.contains(&field)
        || ["metadata.labels['", "metadata.annotations['"]
            .iter()
            .any(|p| field.starts_with(p) && field.ends_with("']"));
    if !ok {
        errs.push(
            path.error(format!("field {field:?} cannot be used here"))
                .hint(format!(
                    "use one of {}, metadata.labels['KEY'] or metadata.annotations['KEY']",
                    FIELD_REFS.join(", ")
                )),
        );
    }
}

pub(super) fn check_non_negative(path: &Path, q: &Quantity, errs: &mut Vec<FieldError>) {
    if q.is_negative() {
        errs.push(
            path.error(format!("{q} is negative"))
                .hint("use a positive amount such as 500m or 128Mi"),
        );
    }
}

fn check_resources(path: &Path, c: &Container, errs: &mut Vec<FieldError>) {
    let check_map = |field: &str, map: &BTreeMap<String, Quantity>, errs: &mut Vec<FieldError>| {
        for (name, q) in map {
            let p = path.field(field).key(name);
            if !RESOURCE_NAMES.contains(&name.as_str()) {
                errs.push(
                    p.error(format!("resource {name:?} is not supported"))
                        .hint(format!("use {}", RESOURCE_NAMES.join(", "))),
                );
            }
            check_non_negative(&p, q, errs);
        }
    };
    check_map("requests", &c.resources.requests, errs);
    check_map("limits", &c.resources.limits, errs);
    for (name, req) in &c.resources.requests {
        if let Some(limit) = c.resources.limits.get(name)
            && req > limit
        {
            errs.push(
                path.field("requests")
                    .key(name)
                    .error(format!("request {req} is more than the limit {limit}"))
                    .hint("lower the request or raise the limit"),
            );
        }
    }
}

fn check_probe(path: &Path, success_must_be_one: bool, probe: &Probe, errs: &mut Vec<FieldError>) {
    let handlers = usize::from(probe.exec.is_some())
        + usize::from(probe.http_get.is_some())
        + usize::from(probe.tcp_socket.is_some())
        + usize::from(probe.grpc.is_some());
    if handlers != 1 {
        errs.push(
            path.error(format!("a probe needs exactly one handler, found {handlers}"))
                .hint("set exactly one of exec, httpGet, tcpSocket or grpc"),
        );
    }
    if probe.grpc.is_some() {
        // Accepting it would leave the container never ready (or never
        // restarted): say so now instead.
        errs.push(
            path.field("grpc")
                .error("gRPC probes are not supported by Shturman's agents yet")
                .hint("use tcpSocket on the gRPC port, or an exec probe running grpc_health_probe"),
        );
    }
    if let Some(e) = &probe.exec
        && e.command.is_empty()
    {
        errs.push(
            path.field("exec")
                .field("command")
                .error("command is empty")
                .hint("give the command to run, e.g. [cat, /tmp/healthy]"),
        );
    }
    if let Some(h) = &probe.http_get {
        check_probe_port(&path.field("httpGet").field("port"), &h.port, errs);
    }
    if let Some(t) = &probe.tcp_socket {
        check_probe_port(&path.field("tcpSocket").field("port"), &t.port, errs);
    }
    for (field, value, min) in [
        ("initialDelaySeconds", probe.initial_delay_seconds, 0),
        ("periodSeconds", probe.period_seconds, 1),
        ("timeoutSeconds", probe.timeout_seconds, 1),
        ("successThreshold", probe.success_threshold, 1),
        ("failureThreshold", probe.failure_threshold, 1),
    ] {
        if let Some(v) = value
            && v < min
        {
            errs.push(
                path.field(field)
                    .error(format!("{v} is too small"))
                    .hint(format!("use {min} or more")),
            );
        }
    }
    if success_must_be_one && probe.success_threshold.is_some_and(|s| s != 1) {
        errs.push(
            path.field("successThreshold")
                .error("must be 1 for liveness and startup probes")
                .hint("set successThreshold: 1 or remove it"),
        );
    }
}

/// A probe or target port: a number 1–65535 or a port name.
pub fn check_probe_port(path: &Path, port: &IntOrString, errs: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(n) => check_port(path, *n, errs),
        IntOrString::String(name) => check_port_name(path, name, errs),
    }
}
