//! Recording Events: what controllers did and why, as Event objects that
//! `shturman get events` and `describe` show. A repeat of the same event on
//! the same object bumps its count instead of adding another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shturman_api::core::{Event, EventSource, EventType, ObjectReference};
use shturman_api::meta::{Object, ObjectMeta, Time};

use super::clock::Clock;
use crate::client::Client;

/// Identifies a repeatable event: the object, the reason, the message.
type EventKey = (String, String, String, String);

/// Writes Events for one component (`deployment-controller`, `scheduler`…).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    clock: Arc<dyn Clock>,
    /// Event names already written, with their counts.
    written: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
}

impl Recorder {
    pub fn new(client: Client, component: &'static str, clock: Arc<dyn Clock>) -> Recorder {
        Recorder {
            client,
            component,
            clock,
            written: Arc::default(),
        }
    }

    /// Records a `Normal` event about `obj`.
    pub async fn normal<T: Object>(&self, obj: &T, reason: &str, message: &str) {
        self.record(obj, EventType::Normal, reason, message).await;
    }

    /// Records a `Warning` event about `obj`.
    pub async fn warning<T: Object>(&self, obj: &T, reason: &str, message: &str) {
        self.record(obj, EventType::Warning, reason, message).await;
    }

    /// Records an event; failures are logged, never returned (an event is
    /// never worth failing a reconcile for).
    pub async fn record<T: Object>(&self, obj: &T, type_: EventType, reason: &str, message: &str) {
        let m = obj.metadata();
        let name = m.name.clone().unwrap_or_default();
        // Cluster-scoped objects' events live in `default`, as Kubernetes does.
        let namespace = m.namespace.clone().unwrap_or_else(|| "default".to_string());
        let key: EventKey = (
            T::KIND.name().to_string(),
            format!("{namespace}/{name}/{}", m.uid.clone().unwrap_or_default()),
            reason.to_string(),
            message.to_string(),
        );
        let now = Time(self.clock.now());
        let previous = self.written.lock().ok().and_then(|w| w.get(&key).cloned());
        if let Some((event_name, count)) = previous {
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": now});
            match self
                .client
                .merge_patch::<Event>(Some(&namespace), &event_name, &patch, false)
                .await
            {
                Ok(_) => {
                    if let Ok(mut w) = self.written.lock() {
                        w.insert(key, (event_name, count + 1));
                    }
                    return;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(error = %e, "event update failed");
                    return;
                }
            }
        }
        let nanos = self.clock.now().timestamp_nanos_opt().unwrap_or(0);
        let event_name = format!("{name}.{nanos:x}");
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                kind: Some(T::KIND.name().to_string()),
                namespace: m.namespace.clone(),
                name: Some(name),
                uid: m.uid.clone(),
                api_version: Some(T::KIND.api_version().to_string()),
                resource_version: m.resource_version.clone(),
                field_path: None,
            },
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_),
            count: Some(1),
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: None,
            }),
            reporting_component: Some(self.component.to_string()),
            ..Event::default()
        };
        match self.client.create(&event).await {
            Ok(_) => {
                if let Ok(mut w) = self.written.lock() {
                    if w.len() > 10_000 {
                        w.clear();
                    }
                    w.insert(key, (event_name, 1));
                }
            }
            Err(e) => tracing::debug!(error = %e, "event create failed"),
        }
    }
}
