//! Shturman's edge agent: the MQTT link, the pod manager, the runtimes and the
//! service proxy. It lands with the edge-agent issue; for now the crate only
//! reserves its place and its rule: it depends on `shturman-api` alone, never on
//! the control plane.
