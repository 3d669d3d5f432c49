//! What a Service asks of the pools, pure: the cluster IP and node ports it
//! wants (on create, and on update beyond what it already holds), the
//! values an update keeps from the stored Service (Kubernetes'
//! `patchAllocatedValues`), the cluster IP's immutability, the errors in
//! Kubernetes' words with field paths, and the registry rebuilt from the
//! Services that exist (the start-up repair).

use std::collections::BTreeSet;

use shturman_api::core::Service;
use shturman_api::validate::{FieldError, Path};

use super::pool::{AllocError, Granted, Owner, Pool, RangeAllocation, Want};

/// The holder record of `svc`.
pub fn owner_of(svc: &Service) -> Owner {
    Owner {
        service: format!("{}/{}", svc.metadata.namespace(), svc.metadata.name()),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
    }
}

/// An update that leaves out the cluster IP keeps the stored one; a port
/// that leaves out its node port keeps the one its namesake had (unless
/// another port now uses it), as Kubernetes does — so a manifest without
/// them can be applied again and again.
pub fn patch_allocated(old: &Service, new: &mut Service) {
    let (o, n) = (&old.spec, &mut new.spec);
    if n.cluster_ip.as_deref().is_none_or(str::is_empty) {
        n.cluster_ip.clone_from(&o.cluster_ip);
        if n.cluster_ips.is_empty() {
            n.cluster_ips.clone_from(&o.cluster_ips);
        }
    }
    if o.needs_node_ports() && n.needs_node_ports() {
        let used_old: BTreeSet<i32> = o.ports.iter().filter_map(|p| p.node_port).collect();
        let used_new: BTreeSet<i32> = n.ports.iter().filter_map(|p| p.node_port).collect();
        let used: BTreeSet<i32> = used_old.intersection(&used_new).copied().collect();
        for p in n.ports.iter_mut().filter(|p| p.node_port.is_none()) {
            let was = o
                .ports
                .iter()
                .find(|op| op.name() == p.name())
                .and_then(|op| op.node_port);
            if let Some(np) = was.filter(|np| !used.contains(np)) {
                p.node_port = Some(np);
            }
        }
    }
}

/// A patch that turns a NodePort Service into a ClusterIP one but leaves
/// its node ports as they were drops them (they belong to the old type), as
/// Kubernetes' `dropTypeDependentFields` does; on the JSON before it is
/// validated.
pub fn drop_node_ports_on_type_change(old: &serde_json::Value, new: &mut serde_json::Value) {
    let type_of = |v: &serde_json::Value| {
        v.pointer("/spec/type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string()
    };
    if type_of(old) != "NodePort" || type_of(new) == "NodePort" {
        return;
    }
    let node_ports = |v: &serde_json::Value| -> Vec<Option<i64>> {
        v.pointer("/spec/ports")
            .and_then(serde_json::Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| p.get("nodePort").and_then(serde_json::Value::as_i64))
                    .collect()
            })
            .unwrap_or_default()
    };
    if node_ports(old) != node_ports(new) {
        return;
    }
    if let Some(ports) = new
        .pointer_mut("/spec/ports")
        .and_then(serde_json::Value::as_array_mut)
    {
        for p in ports.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            p.remove("nodePort");
        }
    }
}

/// What an update may not change: the cluster IP, once it has one.
pub fn check_update(old: &Service, new: &Service) -> Vec<FieldError> {
    let was = old.spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
    let now = new.spec.cluster_ip.as_deref().unwrap_or("");
    match was {
        Some(was) if was != now => vec![
            Path::new("spec")
                .field("clusterIP")
                .error(format!(
                    "field is immutable: it is {was:?} and cannot become {now:?}"
                ))
                .hint("leave clusterIP out of updates (or as it is); delete and re-create the Service to give it another address"),
        ],
        _ => Vec::new(),
    }
}

/// The cluster IP `new` needs from the pool: none when headless or when it
/// keeps the one `old` holds (even one outside today's range).
pub fn ip_want(old: Option<&Service>, new: &Service) -> Option<Want> {
    if new.spec.is_headless() {
        return None;
    }
    match new.spec.cluster_ip() {
        Some(ip) if old.and_then(|o| o.spec.cluster_ip()) == Some(ip) => None,
        Some(ip) => Some(Want::Exactly(ip.to_string())),
        None => Some(Want::Any),
    }
}

/// The node ports `new` needs: `(port index, want)` for each port of a
/// NodePort Service, leaving out those `old` holds already. A port whose
/// number an earlier port exposes too (TCP and UDP) shares its node port;
/// `SameAs` indexes into the returned list.
pub fn node_port_wants(old: Option<&Service>, new: &Service) -> Vec<(usize, Want)> {
    if !new.spec.needs_node_ports() {
        return Vec::new();
    }
    let held: BTreeSet<i32> = old.map(held_node_ports).unwrap_or_default();
    let ports = &new.spec.ports;
    let mut wants: Vec<(usize, Want)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let sibling = ports[..i].iter().position(|q| q.port == p.port);
        let want = match (p.node_port, sibling) {
            (Some(np), _) => Want::Exactly(np.to_string()),
            (None, Some(j)) => match ports[j].node_port {
                Some(np) => Want::Exactly(np.to_string()),
                None => match wants.iter().position(|(k, _)| *k == j) {
                    Some(w) => Want::SameAs(w),
                    None => Want::Any,
                },
            },
            (None, None) => Want::Any,
        };
        if let Want::Exactly(v) = &want
            && v.parse::<i32>().is_ok_and(|np| held.contains(&np))
        {
            continue;
        }
        wants.push((i, want));
    }
    wants
}

/// Writes a granted cluster IP into the Service (`clusterIP`, `clusterIPs`).
pub fn set_cluster_ip(svc: &mut Service, ip: &str) {
    svc.spec.cluster_ip = Some(ip.to_string());
    svc.spec.cluster_ips = vec![ip.to_string()];
}

/// Writes granted node ports into the Service's ports.
pub fn set_node_ports(svc: &mut Service, wants: &[(usize, Want)], granted: &[Granted]) {
    for ((i, _), g) in wants.iter().zip(granted) {
        if let (Some(p), Ok(np)) = (svc.spec.ports.get_mut(*i), g.value.parse::<i32>()) {
            p.node_port = Some(np);
        }
    }
}

/// The cluster IP a Service holds, as pool text.
pub fn held_ips(svc: &Service) -> BTreeSet<String> {
    svc.spec.cluster_ip().map(str::to_string).into_iter().collect()
}

/// The node ports a Service holds.
pub fn held_node_ports(svc: &Service) -> BTreeSet<i32> {
    if !svc.spec.needs_node_ports() {
        return BTreeSet::new();
    }
    svc.spec.ports.iter().filter_map(|p| p.node_port).collect()
}

/// An allocation failure as the field error the API returns (Kubernetes'
/// wording: "provided IP is already allocated", "… is not in the valid
/// range").
pub fn alloc_error(pool: &Pool, path: &Path, e: &AllocError) -> FieldError {
    let range = pool.range();
    let (what, field, flag) = match pool {
        Pool::ClusterIps(_) => ("IP", "clusterIP", "--service-cidr"),
        Pool::NodePorts(_) => ("port", "nodePort", "--service-node-port-range"),
    };
    match e {
        AllocError::Taken { value, by } => path
            .error(format!(
                "failed to allocate {what} {value}: provided {what} is already allocated (to service {by})"
            ))
            .hint(format!(
                "leave {field} unset to get a free one, or pick another in {range}"
            )),
        AllocError::OutOfRange { value } => path
            .error(format!(
                "failed to allocate {what} {value}: provided {what} is not in the valid range. The range of valid {what}s is {range}"
            ))
            .hint(format!(
                "pick one inside the control plane's {flag} ({range}), or leave {field} unset"
            )),
        AllocError::Malformed { value } => path
            .error(format!("{value:?} cannot be allocated from {range}"))
            .hint(format!(
                "write an {} inside {range}, or leave {field} unset",
                match pool {
                    Pool::ClusterIps(_) => "IPv4 address",
                    Pool::NodePorts(_) => "port",
                }
            )),
        AllocError::Full => path
            .error(format!("failed to allocate a {what}: every {what} in {range} is in use"))
            .hint(format!(
                "delete Services you no longer need, or restart the control plane with a larger {flag}"
            )),
    }
}

/// A pool's registry rebuilt from the Services that exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub registry: RangeAllocation,
    /// Values two Services claim: `(value, kept by, also claimed by)`; the
    /// older Service keeps it.
    pub conflicts: Vec<(String, String, String)>,
    /// Values outside today's range: `(value, service)` (the range changed).
    pub outside: Vec<(String, String)>,
}

/// Rebuilds `pool`'s registry from `services` (oldest first: on a conflict
/// the older one keeps the value). `held` says what a Service holds.
pub fn rebuild(pool: &Pool, services: &[Service], held: impl Fn(&Service) -> Vec<String>) -> Rebuilt {
    let mut out = Rebuilt {
        registry: RangeAllocation::new(pool),
        ..Rebuilt::default()
    };
    for svc in services {
        let owner = owner_of(svc);
        for value in held(svc) {
            match out.registry.claim(pool, &value, &owner) {
                Ok(_) => {}
                Err(AllocError::Taken { value, by }) => {
                    out.conflicts.push((value, by, owner.service.clone()))
                }
                Err(AllocError::OutOfRange { value } | AllocError::Malformed { value }) => {
                    out.outside.push((value, owner.service.clone()));
                }
                Err(AllocError::Full) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shturman_api::meta::Object;

    fn svc(uid: &str, spec: serde_json::Value) -> Service {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid}, "spec": spec}))
        .unwrap();
        s.apply_defaults();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        s
    }

    #[test]
    fn updates_keep_allocated_values() {
        let old = svc(
            "a",
            json!({"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [
                {"name": "http", "port": 80, "nodePort": 30080},
                {"name": "https", "port": 443, "nodePort": 30443}]}),
        );
        let mut new = svc(
            "a",
            json!({"type": "NodePort", "ports": [
                {"name": "http", "port": 8080},
                {"name": "https", "port": 443, "nodePort": 30080},
                {"name": "admin", "port": 9000}]}),
        );
        patch_allocated(&old, &mut new);
        assert_eq!(new.spec.cluster_ip.as_deref(), Some("10.43.0.9"));
        assert_eq!(new.spec.cluster_ips, ["10.43.0.9"]);
        // http's old 30080 went to https: http gets a new one.
        let nps: Vec<_> = new.spec.ports.iter().map(|p| p.node_port).collect();
        assert_eq!(nps, [None, Some(30080), None]);
        assert!(check_update(&old, &new).is_empty());
        let wants = node_port_wants(Some(&old), &new);
        assert_eq!(wants, [(0, Want::Any), (2, Want::Any)]);
        assert_eq!(ip_want(Some(&old), &new), None);
        // Type ClusterIP: node ports are neither kept nor wanted.
        let mut plain = svc("a", json!({"ports": [{"name": "http", "port": 80}]}));
        patch_allocated(&old, &mut plain);
        assert!(plain.spec.ports[0].node_port.is_none());
        assert!(node_port_wants(Some(&old), &plain).is_empty());
    }

    #[test]
    fn a_type_change_drops_unchanged_node_ports() {
        let old = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        let mut new = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}});
        drop_node_ports_on_type_change(&old, &mut new);
        assert!(new.pointer("/spec/ports/0/nodePort").is_none());
        // A node port the patch itself sets stays (and validation refuses it).
        let mut new = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30081}]}});
        drop_node_ports_on_type_change(&old, &mut new);
        assert_eq!(new.pointer("/spec/ports/0/nodePort"), Some(&json!(30081)));
        let mut same = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        drop_node_ports_on_type_change(&old, &mut same);
        assert_eq!(same.pointer("/spec/ports/0/nodePort"), Some(&json!(30080)));
    }

    #[test]
    fn the_cluster_ip_is_immutable() {
        let old = svc("a", json!({"clusterIP": "10.43.0.9", "ports": [{"port": 80}]}));
        let new = svc("a", json!({"clusterIP": "10.43.0.10", "ports": [{"port": 80}]}));
        let e = check_update(&old, &new);
        assert_eq!(e[0].path, "spec.clusterIP");
        assert!(e[0].message.contains("immutable"), "{e:?}");
        let headless = svc("a", json!({"clusterIP": "None"}));
        assert_eq!(check_update(&old, &headless).len(), 1);
        // A Service stored before it had an address may get one.
        let bare = svc("a", json!({"ports": [{"port": 80}]}));
        assert!(check_update(&bare, &new).is_empty());
        assert_eq!(
            ip_want(Some(&bare), &new),
            Some(Want::Exactly("10.43.0.10".into()))
        );
        assert_eq!(ip_want(None, &bare), Some(Want::Any));
        assert_eq!(ip_want(None, &headless), None);
    }

    #[test]
    fn tcp_and_udp_of_one_port_share_a_node_port() {
        let s = svc(
            "dns",
            json!({"type": "NodePort", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53},
                {"name": "metrics", "port": 9153, "nodePort": 30153},
                {"name": "metrics-udp", "port": 9153, "protocol": "UDP"}]}),
        );
        let wants = node_port_wants(None, &s);
        assert_eq!(
            wants,
            [
                (0, Want::Any),
                (1, Want::SameAs(0)),
                (2, Want::Exactly("30153".into())),
                (3, Want::Exactly("30153".into()))
            ]
        );
        let pool = Pool::NodePorts("30000-32767".parse().unwrap());
        let mut reg = RangeAllocation::new(&pool);
        let just: Vec<Want> = wants.iter().map(|(_, w)| w.clone()).collect();
        let granted = reg.grant(&pool, &owner_of(&s), &just, 0).unwrap();
        let mut s = s;
        set_node_ports(&mut s, &wants, &granted);
        assert_eq!(s.spec.ports[0].node_port, s.spec.ports[1].node_port);
        assert_eq!(s.spec.ports[3].node_port, Some(30153));
        assert_eq!(held_node_ports(&s).len(), 2);
    }

    #[test]
    fn errors_use_kubernetes_words_and_field_paths() {
        let pool = Pool::ClusterIps("10.43.0.0/16".parse().unwrap());
        let path = Path::new("spec").field("clusterIP");
        let e = alloc_error(
            &pool,
            &path,
            &AllocError::Taken {
                value: "10.43.0.10".into(),
                by: "default/dns".into(),
            },
        );
        assert_eq!(e.path, "spec.clusterIP");
        assert!(e.message.contains("provided IP is already allocated"), "{e}");
        let e = alloc_error(
            &pool,
            &path,
            &AllocError::OutOfRange {
                value: "10.44.0.1".into(),
            },
        );
        assert!(
            e.message.contains("The range of valid IPs is 10.43.0.0/16"),
            "{e}"
        );
        let ports = Pool::NodePorts("30000-32767".parse().unwrap());
        let e = alloc_error(&ports, &Path::new("spec.ports[0].nodePort"), &AllocError::Full);
        assert!(e.hint.unwrap().contains("--service-node-port-range"));
    }

    #[test]
    fn rebuilds_from_services_older_first() {
        let pool = Pool::ClusterIps("10.43.0.0/16".parse().unwrap());
        let services = [
            svc("a", json!({"clusterIP": "10.43.0.9", "ports": [{"port": 80}]})),
            svc("b", json!({"clusterIP": "10.43.0.9", "ports": [{"port": 80}]})),
            svc("c", json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]})),
            svc("d", json!({"clusterIP": "None"})),
            svc("e", json!({"clusterIP": "10.43.0.20", "ports": [{"port": 80}]})),
        ];
        let r = rebuild(&pool, &services, |s| held_ips(s).into_iter().collect());
        let held: Vec<_> = r
            .registry
            .allocated
            .iter()
            .map(|(v, o)| (v.as_str(), o.uid.as_str()))
            .collect();
        assert_eq!(held, [("10.43.0.20", "e"), ("10.43.0.9", "a")]);
        assert_eq!(
            r.conflicts,
            [(
                "10.43.0.9".to_string(),
                "default/a".to_string(),
                "default/b".to_string()
            )]
        );
        assert_eq!(r.outside, [("10.96.0.1".to_string(), "default/c".to_string())]);
    }
}
