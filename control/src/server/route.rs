//! Turns a Kubernetes-style URL path into a typed target (which kind, which
//! namespace, which object, which subresource). Pure: no I/O, unit-tested.

use shturman_api::Kind;

/// What a request path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A collection: one namespace's objects, or all of them (`namespace: None`).
    Collection { kind: Kind, namespace: Option<String> },
    /// One object, or its `status` subresource.
    Object {
        kind: Kind,
        /// `None` for cluster-scoped kinds.
        namespace: Option<String>,
        name: String,
        status: bool,
    },
    /// A pod's container log (`…/pods/{name}/log`), fetched from its node.
    PodLog { namespace: String, name: String },
}

impl Target {
    pub fn kind(&self) -> Kind {
        match self {
            Target::Collection { kind, .. } | Target::Object { kind, .. } => *kind,
            Target::PodLog { .. } => Kind::Pod,
        }
    }
}

/// Why a path names nothing we serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No such resource (or not in that group).
    UnknownResource(String),
    /// The shape of the path is wrong.
    BadPath,
}

/// Parses the segments after `/api/v1` (`group == ""`) or `/apis/{group}/v1`.
pub fn parse(group: &str, rest: &str) -> Result<Target, RouteError> {
    let segs: Vec<&str> = rest
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let kind_of = |plural: &str| -> Result<Kind, RouteError> {
        Kind::from_plural(plural)
            .filter(|k| k.group() == group)
            .ok_or_else(|| RouteError::UnknownResource(plural.to_string()))
    };
    let named = |kind: Kind, namespace: Option<String>, name: &str, sub: Option<&str>| match sub {
        None => Ok(Target::Object {
            kind,
            namespace,
            name: name.to_string(),
            status: false,
        }),
        Some("status") if kind.has_status() => Ok(Target::Object {
            kind,
            namespace,
            name: name.to_string(),
            status: true,
        }),
        Some(other) => Err(RouteError::UnknownResource(format!("{}/{other}", kind.plural()))),
    };
    match segs.as_slice() {
        ["namespaces", ns, "pods", name, "log"] if group.is_empty() => Ok(Target::PodLog {
            namespace: (*ns).to_string(),
            name: (*name).to_string(),
        }),
        [plural] => Ok(Target::Collection {
            kind: kind_of(plural)?,
            namespace: None,
        }),
        // /namespaces/{ns}/{plural}… when {plural} is a namespaced resource.
        ["namespaces", ns, plural, tail @ ..]
            if Kind::from_plural(plural).is_some_and(|k| k.namespaced()) =>
        {
            let kind = kind_of(plural)?;
            let ns = Some((*ns).to_string());
            match tail {
                [] => Ok(Target::Collection { kind, namespace: ns }),
                [name] => named(kind, ns, name, None),
                [name, sub] => named(kind, ns, name, Some(sub)),
                _ => Err(RouteError::BadPath),
            }
        }
        [plural, name] => {
            let kind = kind_of(plural)?;
            if kind.namespaced() {
                return Err(RouteError::BadPath);
            }
            named(kind, None, name, None)
        }
        [plural, name, sub] => {
            let kind = kind_of(plural)?;
            if kind.namespaced() {
                return Err(RouteError::BadPath);
            }
            named(kind, None, name, Some(sub))
        }
        _ => Err(RouteError::BadPath),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: Kind, ns: Option<&str>, name: &str, status: bool) -> Target {
        Target::Object {
            kind,
            namespace: ns.map(str::to_string),
            name: name.into(),
            status,
        }
    }

    #[test]
    fn core_paths() {
        assert_eq!(
            parse("", "namespaces/default/pods"),
            Ok(Target::Collection {
                kind: Kind::Pod,
                namespace: Some("default".into())
            })
        );
        assert_eq!(
            parse("", "namespaces/default/pods/web-1"),
            Ok(obj(Kind::Pod, Some("default"), "web-1", false))
        );
        assert_eq!(
            parse("", "namespaces/default/pods/web-1/status"),
            Ok(obj(Kind::Pod, Some("default"), "web-1", true))
        );
        assert_eq!(
            parse("", "pods"),
            Ok(Target::Collection {
                kind: Kind::Pod,
                namespace: None
            })
        );
        assert_eq!(parse("", "nodes/n1"), Ok(obj(Kind::Node, None, "n1", false)));
        assert_eq!(
            parse("", "nodes/n1/status"),
            Ok(obj(Kind::Node, None, "n1", true))
        );
    }

    #[test]
    fn pod_logs() {
        assert_eq!(
            parse("", "namespaces/default/pods/web-1/log"),
            Ok(Target::PodLog {
                namespace: "default".into(),
                name: "web-1".into()
            })
        );
        assert_eq!(
            parse("", "namespaces/default/pods/web-1/log").map(|t| t.kind()),
            Ok(Kind::Pod)
        );
        assert_eq!(
            parse("", "namespaces/default/configmaps/x/log"),
            Err(RouteError::UnknownResource("configmaps/log".into()))
        );
        assert_eq!(
            parse("apps", "namespaces/default/pods/web-1/log"),
            Err(RouteError::UnknownResource("pods".into()))
        );
    }

    #[test]
    fn namespaces_are_objects_too() {
        assert_eq!(
            parse("", "namespaces/default"),
            Ok(obj(Kind::Namespace, None, "default", false))
        );
        assert_eq!(
            parse("", "namespaces/dev/status"),
            Ok(obj(Kind::Namespace, None, "dev", true))
        );
        assert_eq!(
            parse("", "namespaces"),
            Ok(Target::Collection {
                kind: Kind::Namespace,
                namespace: None
            })
        );
    }

    #[test]
    fn groups_must_match() {
        assert_eq!(
            parse("apps", "namespaces/x/deployments/web"),
            Ok(obj(Kind::Deployment, Some("x"), "web", false))
        );
        assert_eq!(
            parse("", "namespaces/x/deployments"),
            Err(RouteError::UnknownResource("deployments".into()))
        );
        assert_eq!(
            parse("apps", "pods"),
            Err(RouteError::UnknownResource("pods".into()))
        );
    }

    #[test]
    fn wrong_shapes() {
        assert_eq!(parse("", "pods/x"), Err(RouteError::BadPath));
        assert_eq!(parse("", "namespaces/d/pods/x/y/z"), Err(RouteError::BadPath));
        assert_eq!(parse("", "configmaps/x/status"), Err(RouteError::BadPath));
        assert_eq!(
            parse("", "namespaces/d/configmaps/x/status"),
            Err(RouteError::UnknownResource("configmaps/status".into()))
        );
        assert_eq!(
            parse("", "widgets"),
            Err(RouteError::UnknownResource("widgets".into()))
        );
        assert_eq!(parse("", ""), Err(RouteError::BadPath));
    }
}
