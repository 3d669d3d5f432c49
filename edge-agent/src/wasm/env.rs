//! The container's environment from its spec, as a pure function over the
//! [`DesiredPod`]: `envFrom` first, then `env` (which wins), with `valueFrom`
//! taken from the pod's ConfigMaps and Secrets or its own fields. Nothing is
//! inherited from the agent.

use std::collections::BTreeMap;

use shturman_api::core::{ConfigMap, Container, Secret};
use shturman_api::wire::DesiredPod;

/// Why the environment cannot be built (reported as `CreateContainerConfigError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("env {var}: configmap {name:?} not found")]
    ConfigMapMissing { var: String, name: String },
    #[error("env {var}: key {key:?} not found in configmap {name:?}")]
    ConfigMapKeyMissing { var: String, name: String, key: String },
    #[error("env {var}: secret {name:?} not found")]
    SecretMissing { var: String, name: String },
    #[error("env {var}: key {key:?} not found in secret {name:?}")]
    SecretKeyMissing { var: String, name: String, key: String },
    #[error("env {var}: key {key:?} of secret {name:?} is not UTF-8 text")]
    SecretNotText { var: String, name: String, key: String },
    #[error(
        "env {var}: fieldRef {path:?} is not supported (metadata.name, metadata.namespace, metadata.uid, spec.nodeName, metadata.labels['k'], metadata.annotations['k'])"
    )]
    UnsupportedField { var: String, path: String },
    #[error("envFrom: {kind} {name:?} not found")]
    SourceMissing { kind: &'static str, name: String },
}

/// The environment of `container` in `pod`, sorted by name.
pub fn resolve(container: &Container, pod: &DesiredPod) -> Result<Vec<(String, String)>, EnvError> {
    let mut env = BTreeMap::new();
    for from in &container.env_from {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.config_map_ref {
            match config_map(pod, &r.name) {
                Some(cm) => {
                    for (k, v) in &cm.data {
                        insert_valid(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(EnvError::SourceMissing {
                        kind: "configmap",
                        name: r.name.clone(),
                    });
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(pod, &r.name) {
                Some(s) => {
                    for k in s.data.keys().chain(s.string_data.keys()) {
                        if let Some(v) = secret_value(s, k).and_then(|b| String::from_utf8(b).ok()) {
                            insert_valid(&mut env, format!("{prefix}{k}"), v);
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(EnvError::SourceMissing {
                        kind: "secret",
                        name: r.name.clone(),
                    });
                }
            }
        }
    }
    for var in &container.env {
        let name = var.name.clone();
        let value = match &var.value_from {
            None => Some(var.value.clone().unwrap_or_default()),
            Some(src) => {
                if let Some(sel) = &src.config_map_key_ref {
                    let optional = sel.optional == Some(true);
                    match config_map(pod, &sel.name) {
                        None if optional => None,
                        None => {
                            return Err(EnvError::ConfigMapMissing {
                                var: name,
                                name: sel.name.clone(),
                            });
                        }
                        Some(cm) => match cm.data.get(&sel.key) {
                            Some(v) => Some(v.clone()),
                            None if optional => None,
                            None => {
                                return Err(EnvError::ConfigMapKeyMissing {
                                    var: name,
                                    name: sel.name.clone(),
                                    key: sel.key.clone(),
                                });
                            }
                        },
                    }
                } else if let Some(sel) = &src.secret_key_ref {
                    let optional = sel.optional == Some(true);
                    match secret(pod, &sel.name) {
                        None if optional => None,
                        None => {
                            return Err(EnvError::SecretMissing {
                                var: name,
                                name: sel.name.clone(),
                            });
                        }
                        Some(s) => match secret_value(s, &sel.key) {
                            Some(bytes) => {
                                Some(String::from_utf8(bytes).map_err(|_| EnvError::SecretNotText {
                                    var: name.clone(),
                                    name: sel.name.clone(),
                                    key: sel.key.clone(),
                                })?)
                            }
                            None if optional => None,
                            None => {
                                return Err(EnvError::SecretKeyMissing {
                                    var: name,
                                    name: sel.name.clone(),
                                    key: sel.key.clone(),
                                });
                            }
                        },
                    }
                } else if let Some(field) = &src.field_ref {
                    Some(
                        field_value(pod, &field.field_path).ok_or_else(|| EnvError::UnsupportedField {
                            var: name.clone(),
                            path: field.field_path.clone(),
                        })?,
                    )
                } else {
                    Some(var.value.clone().unwrap_or_default())
                }
            }
        };
        if let Some(v) = value {
            env.insert(name, v);
        }
    }
    Ok(env.into_iter().collect())
}

/// The ConfigMap `name` sent with the pod.
pub fn config_map<'a>(pod: &'a DesiredPod, name: &str) -> Option<&'a ConfigMap> {
    pod.config_maps.iter().find(|c| c.metadata.name() == name)
}

/// The Secret `name` sent with the pod.
pub fn secret<'a>(pod: &'a DesiredPod, name: &str) -> Option<&'a Secret> {
    pod.secrets.iter().find(|s| s.metadata.name() == name)
}

/// A Secret's value: decoded `data`, else plain `stringData`.
pub fn secret_value(s: &Secret, key: &str) -> Option<Vec<u8>> {
    s.decoded(key)
        .or_else(|| s.string_data.get(key).map(|v| v.clone().into_bytes()))
}

/// envFrom skips keys that are not valid variable names, as Kubernetes does.
fn insert_valid(env: &mut BTreeMap<String, String>, name: String, value: String) {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        env.insert(name, value);
    }
}

fn field_value(pod: &DesiredPod, path: &str) -> Option<String> {
    let meta = &pod.pod.metadata;
    let bracket = |prefix: &str| path.strip_prefix(prefix)?.strip_suffix("']").map(str::to_string);
    match path {
        "metadata.name" => Some(meta.name().to_string()),
        "metadata.namespace" => Some(meta.namespace().to_string()),
        "metadata.uid" => Some(meta.uid.clone().unwrap_or_default()),
        "spec.nodeName" => Some(pod.pod.spec.node_name.clone().unwrap_or_default()),
        _ => {
            if let Some(k) = bracket("metadata.labels['") {
                Some(meta.labels.get(&k).cloned().unwrap_or_default())
            } else {
                bracket("metadata.annotations['")
                    .map(|k| meta.annotations.get(&k).cloned().unwrap_or_default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::container::{KeySelector, LocalObjectRef, ObjectFieldSelector};
    use shturman_api::core::{EnvFromSource, EnvVar, EnvVarSource, Pod};
    use shturman_api::meta::ObjectMeta;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    fn pod() -> DesiredPod {
        let mut cm = ConfigMap {
            metadata: meta("cfg"),
            ..ConfigMap::default()
        };
        cm.data.insert("MODE".into(), "fast".into());
        cm.data.insert("bad key".into(), "skipped".into());
        let mut s = Secret {
            metadata: meta("creds"),
            ..Secret::default()
        };
        s.data.insert("TOKEN".into(), "czNjcmV0".into()); // "s3cret"
        DesiredPod {
            pod: Pod {
                metadata: ObjectMeta {
                    namespace: Some("edge".into()),
                    ..meta("p")
                },
                ..Pod::default()
            },
            config_maps: vec![cm],
            secrets: vec![s],
        }
    }

    fn var(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(src),
        }
    }

    fn key(name: &str, key: &str, optional: bool) -> Option<KeySelector> {
        Some(KeySelector {
            name: name.into(),
            key: key.into(),
            optional: optional.then_some(true),
        })
    }

    #[test]
    fn resolves_values_refs_and_env_from() {
        let c = Container {
            env_from: vec![EnvFromSource {
                config_map_ref: Some(LocalObjectRef {
                    name: "cfg".into(),
                    optional: None,
                }),
                prefix: Some("CFG_".into()),
                ..EnvFromSource::default()
            }],
            env: vec![
                EnvVar {
                    name: "CFG_MODE".into(),
                    value: Some("override".into()),
                    value_from: None,
                },
                var(
                    "TOKEN",
                    EnvVarSource {
                        secret_key_ref: key("creds", "TOKEN", false),
                        ..EnvVarSource::default()
                    },
                ),
                var(
                    "ABSENT",
                    EnvVarSource {
                        config_map_key_ref: key("nope", "x", true),
                        ..EnvVarSource::default()
                    },
                ),
                var(
                    "NS",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.namespace".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
            ],
            ..Container::default()
        };
        let env = resolve(&c, &pod()).unwrap();
        let expect: Vec<(String, String)> = [("CFG_MODE", "override"), ("NS", "edge"), ("TOKEN", "s3cret")]
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        assert_eq!(env, expect);
    }

    #[test]
    fn missing_sources_are_errors_naming_them() {
        let c = Container {
            env: vec![var(
                "T",
                EnvVarSource {
                    secret_key_ref: key("creds", "NOPE", false),
                    ..EnvVarSource::default()
                },
            )],
            ..Container::default()
        };
        let err = resolve(&c, &pod()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "env T: key \"NOPE\" not found in secret \"creds\""
        );
        let c = Container {
            env: vec![var(
                "F",
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "status.podIP".into(),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                },
            )],
            ..Container::default()
        };
        assert!(matches!(
            resolve(&c, &pod()),
            Err(EnvError::UnsupportedField { .. })
        ));
    }
}
