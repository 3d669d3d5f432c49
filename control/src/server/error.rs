//! API errors and the one place that maps them to HTTP: every failure leaves
//! the server as a Kubernetes `Status` object with a code, reason and message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shturman_api::Kind;
use shturman_api::manifest::ManifestErrors;
use shturman_api::status::{Status, StatusCause, StatusDetails};
use shturman_api::validate::FieldError;

use crate::store::StoreError;

/// A failed API request, ready to become a `Status`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.message)]
pub struct ApiError(pub Box<Status>);

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError(Box::new(Status::failure(code, reason, message)))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "Unauthorized",
            "missing or wrong bearer token; use the token in <data-dir>/admin.conf \
             (pass --config, set SHTURMAN_CONFIG, or --token)",
        )
    }

    pub fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified_plural()),
        )
        .details(kind, name)
    }

    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn already_exists(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified_plural()),
        )
        .details(kind, name)
    }

    pub fn conflict(kind: Kind, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                kind.qualified_plural()
            ),
        )
        .details(kind, name)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn forbidden(kind: Kind, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", kind.qualified_plural()),
        )
        .details(kind, name)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("request body is larger than {limit} bytes; split the object or shrink its data"),
        )
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// `Invalid` (422) with one cause per manifest error.
    pub fn invalid(kind: Kind, name: &str, errors: &ManifestErrors) -> Self {
        let causes = errors
            .0
            .iter()
            .map(|e| StatusCause {
                reason: "FieldValueInvalid".into(),
                message: format!("line {}, column {}: {}", e.mark.line, e.mark.column, e.message)
                    + &e.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default(),
                field: e.path.clone(),
            })
            .collect();
        let summary = errors
            .0
            .iter()
            .map(|e| {
                if e.path.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.path, e.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        let shown = if name.is_empty() { "<unnamed>" } else { name };
        let mut err = Self::new(
            422,
            "Invalid",
            format!("{} \"{shown}\" is invalid: {summary}", kind.name()),
        )
        .details(kind, name);
        if let Some(d) = err.0.details.as_mut() {
            d.causes = causes;
        }
        err
    }

    /// `Invalid` (422) from validation rules (no source positions).
    pub fn invalid_fields(kind: Kind, name: &str, errors: &[FieldError]) -> Self {
        let summary = errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let shown = if name.is_empty() { "<unnamed>" } else { name };
        let mut err = Self::new(
            422,
            "Invalid",
            format!("{} \"{shown}\" is invalid: {summary}", kind.name()),
        )
        .details(kind, name);
        if let Some(d) = err.0.details.as_mut() {
            d.causes = errors.iter().map(StatusCause::from).collect();
        }
        err
    }

    pub fn is_not_found(&self) -> bool {
        self.0.code == 404
    }

    pub fn is_conflict(&self) -> bool {
        self.0.code == 409 && self.0.reason == "Conflict"
    }

    pub fn is_already_exists(&self) -> bool {
        self.0.code == 409 && self.0.reason == "AlreadyExists"
    }

    fn details(mut self, kind: Kind, name: &str) -> Self {
        self.0.details = Some(StatusDetails {
            name: name.to_string(),
            group: kind.group().to_string(),
            kind: kind.plural().to_string(),
            ..StatusDetails::default()
        });
        self
    }

    /// Maps a store failure on `kind`/`name` to the API's answer.
    pub fn from_store(err: StoreError, kind: Kind, name: &str) -> Self {
        match err {
            StoreError::NotFound { .. } => Self::not_found(kind, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(kind, name),
            StoreError::Conflict { .. } => Self::conflict(
                kind,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            StoreError::Compacted { requested, oldest } => Self::gone(format!(
                "too old resource version: {requested} ({oldest}); list again and watch from the list's resourceVersion"
            )),
            StoreError::Closed => Self::unavailable("the control plane is shutting down; retry shortly"),
            other @ (StoreError::Corrupt { .. } | StoreError::Io(_)) => Self::internal(other.to_string()),
        }
    }

    pub fn code(&self) -> u16 {
        self.0.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(*self.0)).into_response()
    }
}
