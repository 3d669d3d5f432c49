//! Shturman's shared object model: every type the control plane, the agent and
//! the CLI exchange, with no I/O.
//!
//! Layout:
//! - [`meta`]: `ObjectMeta`, owner references, conditions, timestamps;
//! - [`quantity`], [`intstr`], [`selector`]: Kubernetes' value types;
//! - [`core`] (Pod, Service, Endpoints, ConfigMap, Secret, Node, Event, Namespace) and
//!   [`apps`] (Deployment, ReplicaSet): the objects, with Kubernetes' JSON shapes;
//! - [`kind`]: the registry of kinds (names, plurals, short names, scope) and the
//!   strict decoder that turns a document into a validated, canonical object;
//! - [`validate`]: field errors and the rules (DNS-1123 names, ports, …);
//! - [`manifest`]: YAML/JSON documents with positions, bounded parsing, and
//!   errors that say file:line:column, the field path and a fix;
//! - [`status`]: the Kubernetes `Status` object every API error is;
//! - [`wire`]: the MQTT topics and messages between control plane and agents.

pub mod apps;
pub mod core;
pub mod intstr;
pub mod kind;
pub mod manifest;
pub mod meta;
pub mod quantity;
pub mod selector;
pub mod status;
pub mod validate;
pub mod wire;

pub use kind::Kind;
