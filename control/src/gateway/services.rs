//! Services out to every agent: each Service with its Endpoints as a
//! [`ServiceRoute`](shturman_api::wire::ServiceRoute) retained at QoS 1 on
//! `services/{ns}/{name}` (an empty retained payload withdraws a deleted
//! Service), and every Service's key as a retained
//! [`ServiceSet`](shturman_api::wire::ServiceSet) on `serviceset`, so an
//! agent that reconnects gets the current routes and drops those of
//! Services deleted while it was away — even when the broker lost the
//! withdrawal (the same two-level scheme as pods and pod sets).
//!
//! A runtime controller of its own, keyed by Service (the set has the key
//! [`set_key`]), fed by the Service and Endpoints informers; it sends only
//! what changed (a key → content-hash map), everything again after each
//! (re)connection, and withdraws retained routes the broker shows for
//! Services that no longer exist. The set is published after every change
//! to the list of Services, at the Service cache's revision.

use rumqttc::QoS;
use shturman_api::wire::ServiceTopic;

use super::{GatewayError, Shared, routes};
use crate::runtime::{Action, ObjectKey};

/// The queue key of the service set (no Service has an empty namespace).
pub(super) fn set_key() -> ObjectKey {
    ObjectKey::new("", "")
}

impl Shared {
    /// Publishes `key`'s route, withdraws it, or publishes the set.
    pub(super) async fn reconcile_service(&self, key: &ObjectKey) -> Result<Action, GatewayError> {
        if *key == set_key() {
            return self.publish_service_set().await;
        }
        let topic = ServiceTopic::Route {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
        .name();
        let want = self
            .services
            .get(key)
            .filter(|s| routes::target(s).is_some())
            .map(|s| routes::route(&s, self.endpoints.get(key).as_deref()));
        let Some(route) = want else {
            if self.routes().remove(key).is_some() {
                tracing::debug!(service = %key, "withdrawing a service route");
                self.mqtt
                    .publish(topic, QoS::AtLeastOnce, true, Vec::new())
                    .await?;
                self.service_queue.add(set_key());
            }
            return Ok(Action::Done);
        };
        let hash = routes::content_hash(&route);
        if self.routes().get(key) == Some(&hash) {
            return Ok(Action::Done);
        }
        let bytes = serde_json::to_vec(&route).map_err(|source| GatewayError::Encode {
            key: key.clone(),
            source,
        })?;
        if bytes.len() > self.max_payload {
            tracing::error!(service = %key, bytes = bytes.len(), limit = self.max_payload,
                "the Service's route is too large to send to the nodes; it has too many endpoints");
        } else {
            tracing::debug!(service = %key, endpoints = route.endpoints.len(), "publishing a service route");
            self.mqtt.publish(topic, QoS::AtLeastOnce, true, bytes).await?;
        }
        self.routes().insert(key.clone(), hash);
        let listed = self
            .service_set()
            .as_ref()
            .is_some_and(|s| s.contains(&route.namespace, &route.name, &route.uid));
        if !listed {
            self.service_queue.add(set_key());
        }
        Ok(Action::Done)
    }

    /// Publishes the set of every Service's key, unless this connection
    /// already published the same list.
    async fn publish_service_set(&self) -> Result<Action, GatewayError> {
        // The revision first: the Services read after it reflect at least it.
        let revision = self.services.revision();
        let services = self.services.list();
        let set = routes::service_set(services.iter().map(|s| &**s), revision);
        if self
            .service_set()
            .as_ref()
            .is_some_and(|last| last.services == set.services)
        {
            return Ok(Action::Done);
        }
        let bytes = serde_json::to_vec(&set).map_err(|source| GatewayError::Encode {
            key: set_key(),
            source,
        })?;
        tracing::debug!(
            services = set.services.len(),
            revision,
            "publishing the service set"
        );
        self.mqtt
            .publish(ServiceTopic::Set.name(), QoS::AtLeastOnce, true, bytes)
            .await?;
        *self.service_set() = Some(set);
        Ok(Action::Done)
    }

    /// A message on a service topic, read back from the broker: a retained
    /// route is remembered so its next reconcile withdraws it if its
    /// Service is gone; a set this connection did not publish is replaced.
    pub(super) fn seen_service_topic(&self, topic: ServiceTopic, empty: bool) {
        match topic {
            ServiceTopic::Route { namespace, name } if !empty => {
                let key = ObjectKey::new(namespace, name);
                self.routes().entry(key.clone()).or_insert(0);
                self.service_queue.add(key);
            }
            ServiceTopic::Route { .. } => {}
            ServiceTopic::Set => {
                if self.service_set().is_none() {
                    self.service_queue.add(set_key());
                }
            }
        }
    }

    /// After a (re)connection: every route and the set again.
    pub(super) fn resync_services(&self) {
        self.routes().clear();
        *self.service_set() = None;
        for s in self.services.list() {
            self.service_queue.add(ObjectKey::of(&*s));
        }
        self.service_queue.add(set_key());
    }
}
