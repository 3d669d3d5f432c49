//! Image references, pull policies and pull credentials for the OCI
//! runtime: registry host of a reference (Docker's rules), `imagePullPolicy`
//! default, credentials from `imagePullSecrets`. The pure code lives in
//! [`crate::registry_auth`], shared with the Wasm runtime's registry pulls.

pub use crate::registry_auth::{Credentials, DOCKER_HUB, pull_credentials, pull_policy, registry_and_path};
