//! Cluster IPs and node ports for Services, allocated in the API server's
//! request path as kube-apiserver's Service registry does, and kept in the
//! store so they survive restarts and are never handed out twice.
//!
//! Each pool has a registry ([`RangeAllocation`]: value → owning Service)
//! stored under `rangeallocations//service-cluster-ips` and
//! `rangeallocations//service-node-ports` — store keys no API path serves.
//! A create reads the registry, grants what the Service asks for
//! ([`service`]: a `clusterIP`/`nodePort` the user wrote is checked for
//! range and conflicts, an unset one gets a free value), and writes it back
//! only over the revision it read (optimistic concurrency: a concurrent
//! writer makes it read again), then writes the Service. If the Service
//! write fails the grant is given back. An update keeps what the Service
//! holds (an update without `clusterIP` keeps it; changing it is refused,
//! 422), takes what it newly asks for and, once written, gives back node
//! ports it no longer uses. A delete gives back everything the Service's
//! uid holds.
//!
//! Two writes are not one transaction: a crash between them can leave a
//! value granted to a Service that was never written (or one deleted whose
//! values were not given back). [`State::repair_service_allocations`] runs
//! at start-up, before the API serves, and rebuilds both registries from
//! the Services that exist — as Kubernetes' repair controllers do — also
//! after `--service-cidr` or `--service-node-port-range` changed.
//!
//! [`pool`] is the pure allocator; [`service`] the pure Service rules.

pub mod pool;
pub mod service;

use rand::Rng;
use serde_json::Value;
use shturman_api::Kind;
use shturman_api::core::Service;
use shturman_api::validate::{FieldError, Path};

pub use self::pool::{NodePortRange, RangeError, ServiceCidr, ServiceNetwork};
use self::pool::{Owner, Pool, RangeAllocation, Want};
use super::State;
use super::error::ApiError;
use crate::store::{Key, Prefix, Revision, StoreError};

/// The store resource the registries live under (not an API kind).
pub const RESOURCE: &str = "rangeallocations";

/// Which registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolId {
    ClusterIps,
    NodePorts,
}

impl PoolId {
    /// The registry's store key.
    pub fn key(self) -> Key {
        let name = match self {
            PoolId::ClusterIps => "service-cluster-ips",
            PoolId::NodePorts => "service-node-ports",
        };
        Key::new(RESOURCE, "", name)
    }
}

/// What a Service write took and what it gives back once written.
#[derive(Debug, Default)]
pub(super) struct Claim {
    uid: String,
    /// Taken by this write: given back if the write fails.
    fresh: Vec<(PoolId, String)>,
    /// Held before and no longer used: given back once the write succeeded.
    dropped: Vec<(PoolId, String)>,
}

fn decode_service(v: &Value) -> Result<Service, ApiError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ApiError::internal(format!("a Service does not decode: {e}")))
}

fn encode_service(svc: &Service) -> Result<Value, ApiError> {
    serde_json::to_value(svc).map_err(|e| ApiError::internal(e.to_string()))
}

impl State {
    fn pool(&self, id: PoolId) -> Pool {
        match id {
            PoolId::ClusterIps => Pool::ClusterIps(self.service_network.cidr),
            PoolId::NodePorts => Pool::NodePorts(self.service_network.node_ports),
        }
    }

    /// A registry, the revision it was read at (`None`: not stored yet),
    /// and whether what is stored must be replaced even if unchanged (it is
    /// for another range, or unreadable: a fresh one stands in for it).
    async fn load(&self, id: PoolId) -> Result<(RangeAllocation, Option<Revision>, bool), StoreError> {
        let pool = self.pool(id);
        match self.store.get(&id.key()).await? {
            None => Ok((RangeAllocation::new(&pool), None, false)),
            Some(v) => match serde_json::from_slice::<RangeAllocation>(&v.value) {
                Ok(reg) if reg.range == pool.range() => Ok((reg, Some(v.revision), false)),
                Ok(_) | Err(_) => Ok((RangeAllocation::new(&pool), Some(v.revision), true)),
            },
        }
    }

    /// Read-modify-write of one registry with optimistic concurrency: `f`
    /// changes it (or fails, and nothing is written); a concurrent writer
    /// makes it start again from a fresh read. Written only if changed.
    async fn modify<R, E>(
        &self,
        id: PoolId,
        mut f: impl FnMut(&mut RangeAllocation) -> Result<R, E>,
    ) -> Result<Result<R, E>, StoreError> {
        loop {
            let (before, rev, stale) = self.load(id).await?;
            let mut reg = before.clone();
            let out = match f(&mut reg) {
                Ok(out) => out,
                Err(e) => return Ok(Err(e)),
            };
            if reg == before && !stale {
                return Ok(Ok(out));
            }
            let bytes = serde_json::to_vec(&reg).map_err(|e| StoreError::Io(e.to_string()))?;
            let written = match rev {
                Some(r) => self.store.update(&id.key(), bytes, Some(r)).await,
                None => self.store.create(&id.key(), bytes).await,
            };
            match written {
                Ok(_) => return Ok(Ok(out)),
                Err(
                    StoreError::Conflict { .. }
                    | StoreError::AlreadyExists { .. }
                    | StoreError::NotFound { .. },
                ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Grants `wants` (with their field paths) from one pool to `owner`,
    /// all or none; every failure becomes a field error.
    async fn grant(
        &self,
        id: PoolId,
        owner: &Owner,
        wants: &[(Path, Want)],
        name: &str,
    ) -> Result<Vec<pool::Granted>, ApiError> {
        if wants.is_empty() {
            return Ok(Vec::new());
        }
        let pool = self.pool(id);
        let start = rand::rng().random_range(0..pool.size());
        let just: Vec<Want> = wants.iter().map(|(_, w)| w.clone()).collect();
        let granted = self
            .modify(id, |reg| reg.grant(&pool, owner, &just, start))
            .await
            .map_err(|e| ApiError::from_store(e, Kind::Service, name))?;
        granted.map_err(|errors| {
            let fields: Vec<FieldError> = errors
                .iter()
                .map(|(i, e)| service::alloc_error(&pool, &wants[*i].0, e))
                .collect();
            ApiError::invalid_fields(Kind::Service, name, &fields)
        })
    }

    /// Gives back `values` of one pool held by `uid` (best effort: a
    /// failure is logged; the start-up repair gives them back later).
    async fn release(&self, id: PoolId, uid: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let done = self
            .modify(id, |reg| {
                for v in values {
                    reg.release(v, uid);
                }
                Ok::<(), ()>(())
            })
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, ?values, "could not give back Service allocations; the next start-up repairs them");
        }
    }

    /// Before a Service's first write: grants its cluster IP and node
    /// ports and writes them into `obj` (uid and name already set).
    pub(super) async fn claim_for_create(&self, obj: &mut Value) -> Result<Claim, ApiError> {
        let mut svc = decode_service(obj)?;
        let claim = self.claim(None, &mut svc).await?;
        *obj = encode_service(&svc)?;
        Ok(claim)
    }

    /// Before a Service update is written: keeps what the stored Service
    /// holds, refuses a changed cluster IP (422), grants what is new, and
    /// writes it into `new`.
    pub(super) fn patch_update(old: &Value, new: &mut Value) -> Result<(), ApiError> {
        let old = decode_service(old)?;
        let mut svc = decode_service(new)?;
        service::patch_allocated(&old, &mut svc);
        let errors = service::check_update(&old, &svc);
        if !errors.is_empty() {
            return Err(ApiError::invalid_fields(
                Kind::Service,
                old.metadata.name(),
                &errors,
            ));
        }
        *new = encode_service(&svc)?;
        Ok(())
    }

    /// After [`State::patch_update`] and the server-owned fields: grants
    /// what the update newly asks for, notes what it no longer holds.
    pub(super) async fn claim_for_update(&self, old: &Value, merged: &mut Value) -> Result<Claim, ApiError> {
        let old = decode_service(old)?;
        let mut svc = decode_service(merged)?;
        let mut claim = self.claim(Some(&old), &mut svc).await?;
        let ips = service::held_ips(&svc);
        claim.dropped.extend(
            service::held_ips(&old)
                .into_iter()
                .filter(|ip| !ips.contains(ip))
                .map(|ip| (PoolId::ClusterIps, ip)),
        );
        let ports = service::held_node_ports(&svc);
        claim.dropped.extend(
            service::held_node_ports(&old)
                .into_iter()
                .filter(|p| !ports.contains(p))
                .map(|p| (PoolId::NodePorts, p.to_string())),
        );
        *merged = encode_service(&svc)?;
        Ok(claim)
    }

    async fn claim(&self, old: Option<&Service>, svc: &mut Service) -> Result<Claim, ApiError> {
        let owner = service::owner_of(svc);
        let name = svc.metadata.name().to_string();
        let mut claim = Claim {
            uid: owner.uid.clone(),
            ..Claim::default()
        };
        let spec = Path::new("spec");
        if let Some(want) = service::ip_want(old, svc) {
            let granted = self
                .grant(
                    PoolId::ClusterIps,
                    &owner,
                    &[(spec.field("clusterIP"), want)],
                    &name,
                )
                .await?;
            if let Some(g) = granted.first() {
                service::set_cluster_ip(svc, &g.value);
                if g.fresh {
                    claim.fresh.push((PoolId::ClusterIps, g.value.clone()));
                }
            }
        }
        let wants = service::node_port_wants(old, svc);
        let with_paths: Vec<(Path, Want)> = wants
            .iter()
            .map(|(i, w)| (spec.field("ports").index(*i).field("nodePort"), w.clone()))
            .collect();
        match self.grant(PoolId::NodePorts, &owner, &with_paths, &name).await {
            Ok(granted) => {
                service::set_node_ports(svc, &wants, &granted);
                claim.fresh.extend(
                    granted
                        .into_iter()
                        .filter(|g| g.fresh)
                        .map(|g| (PoolId::NodePorts, g.value)),
                );
                Ok(claim)
            }
            Err(e) => {
                self.settle(claim, false).await;
                Err(e)
            }
        }
    }

    /// After the Service write: on success gives back what it dropped, on
    /// failure what it took.
    pub(super) async fn settle(&self, claim: Claim, written: bool) {
        let give_back = if written { claim.dropped } else { claim.fresh };
        for id in [PoolId::ClusterIps, PoolId::NodePorts] {
            let values: Vec<String> = give_back
                .iter()
                .filter(|(p, _)| *p == id)
                .map(|(_, v)| v.clone())
                .collect();
            self.release(id, &claim.uid, &values).await;
        }
    }

    /// After a Service is gone from the store: gives back all it held.
    pub(super) async fn service_deleted(&self, last: &Value) {
        let Some(uid) = last.pointer("/metadata/uid").and_then(Value::as_str) else {
            return;
        };
        for id in [PoolId::ClusterIps, PoolId::NodePorts] {
            let done = self.modify(id, |reg| Ok::<_, ()>(reg.release_owner(uid))).await;
            if let Err(e) = done {
                tracing::warn!(error = %e, uid, "could not give back a deleted Service's allocations; the next start-up repairs them");
            }
        }
    }

    /// Rebuilds both registries from the Services in the store: values
    /// granted to Services that were never written (or not given back) are
    /// freed, values Services hold but the registry lacks are recorded, a
    /// value two Services hold stays with the older (the other is logged),
    /// and values outside a changed range are logged. Run before the API
    /// serves.
    pub async fn repair_service_allocations(&self) -> Result<(), StoreError> {
        let listing = self
            .store
            .list(&Prefix::new(Kind::Service.plural(), None))
            .await?;
        let mut services: Vec<Service> = listing
            .items
            .iter()
            .filter_map(|(k, v)| match serde_json::from_slice::<Service>(&v.value) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(service = %k, error = %e, "a stored Service does not decode; its allocations are not repaired");
                    None
                }
            })
            .collect();
        services.sort_by(|a, b| {
            (
                a.metadata.creation_timestamp,
                a.metadata.namespace(),
                a.metadata.name(),
            )
                .cmp(&(
                    b.metadata.creation_timestamp,
                    b.metadata.namespace(),
                    b.metadata.name(),
                ))
        });
        for id in [PoolId::ClusterIps, PoolId::NodePorts] {
            let pool = self.pool(id);
            let rebuilt = service::rebuild(&pool, &services, |s| match id {
                PoolId::ClusterIps => service::held_ips(s).into_iter().collect(),
                PoolId::NodePorts => service::held_node_ports(s).iter().map(i32::to_string).collect(),
            });
            for (value, kept, other) in &rebuilt.conflicts {
                tracing::error!(%value, kept_by = %kept, also_claimed_by = %other,
                    "two Services hold the same {}; delete and re-create the newer one", match id {
                        PoolId::ClusterIps => "cluster IP", PoolId::NodePorts => "node port" });
            }
            for (value, svc) in &rebuilt.outside {
                tracing::warn!(%value, service = %svc, range = %pool.range(),
                    "a Service holds a value outside the configured range; it keeps it, but re-create the Service to move it into the range");
            }
            let fresh = rebuilt.registry;
            let freed = self
                .modify(id, |reg| {
                    let freed = reg
                        .allocated
                        .keys()
                        .filter(|v| !fresh.allocated.contains_key(*v))
                        .count();
                    *reg = fresh.clone();
                    Ok::<_, ()>(freed)
                })
                .await?
                .unwrap_or(0);
            if freed > 0 {
                tracing::info!(pool = %pool.range(), freed, "freed allocations no Service holds (left by an interrupted create or delete)");
            }
        }
        Ok(())
    }
}
