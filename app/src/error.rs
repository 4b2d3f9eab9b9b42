//! The one error type every server function returns.
//!
//! What crosses the wire is a short, user-facing message. Database errors and other
//! internals are logged on the server (see `ssr::internal`) and reach the browser only as
//! "Internal error; see the server log".
//!
//! On the wire (server functions and `/api/v1` alike) an error is one JSON object, the
//! same for a script and for the console's own client, which reads it back into the
//! same variant:
//!
//! ```json
//! {"error": "A source with this name exists.", "field": "name", "code": "conflict"}
//! ```
//!
//! `error` is the message to show; `field` (only when one input is wrong) names it;
//! `code` is one of [`AppError::CODES`], one per HTTP status but for 403's two
//! (`forbidden`: the role does not allow it; both answer 403).

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// Wrong user name or password, or a disabled account. Deliberately one message for
    /// all three so a login form does not reveal which accounts exist.
    #[error("Invalid user name or password.")]
    InvalidCredentials,
    /// No valid session cookie.
    #[error("Please log in.")]
    Unauthenticated,
    /// Logged in, but the role does not allow this.
    #[error("You are not allowed to do this.")]
    Forbidden,
    /// Logged in, but not allowed to do this here, for the reason given (a rule that
    /// needs an admin, say): a 403 that says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// Input failed validation; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// One form field is wrong: (field name, message). Forms show it next to the field.
    #[error("{1}")]
    Field(String, String),
    /// What was asked for does not exist (or is not visible to this user).
    #[error("{0} not found.")]
    NotFound(String),
    /// The request is valid but conflicts with the state of what it names: a name that
    /// is taken, a backup already queued, a request already decided, a job already
    /// finished (HTTP 409). `field` names the form field when one is to blame.
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    /// Something failed on the server; the details are in the server log.
    #[error("Internal error; see the server log.")]
    Internal,
    /// The request never reached the server function or its answer could not be read.
    #[error("Could not reach the server: {0}")]
    Transport(String),
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Request(e)
            | ServerFnErrorErr::Response(e)
            | ServerFnErrorErr::Serialization(e)
            | ServerFnErrorErr::Deserialization(e) => AppError::Transport(e),
            ServerFnErrorErr::Args(e) | ServerFnErrorErr::MissingArg(e) => AppError::Invalid(e),
            _other => {
                #[cfg(feature = "ssr")]
                tracing::error!(error = %_other, "server function failed");
                AppError::Internal
            }
        }
    }
}

impl AppError {
    /// The HTTP status a refusal or failure answers with, for server functions (the
    /// server maps every `/api/…` error response to it: `server::serve::refusal_status`)
    /// and the REST API alike, so a script can tell "not allowed" from "broken". The
    /// browser's server-function client decodes the JSON body of any 4xx/5xx the same.
    #[cfg(feature = "ssr")]
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            AppError::Unauthenticated | AppError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            AppError::Forbidden | AppError::Refused(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            // On the server a transport error means the request could not be read (its
            // arguments did not decode): the caller's fault, like invalid input.
            AppError::Invalid(_) | AppError::Field(..) | AppError::Transport(_) => {
                StatusCode::BAD_REQUEST
            }
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A new `what` (source, target, policy) named like an existing one: a conflict
    /// (409) about the form's `name` field.
    pub fn name_taken(what: &str) -> AppError {
        AppError::Conflict {
            field: Some("name".into()),
            message: format!("A {what} with this name exists."),
        }
    }

    /// A conflict with the state of things (409), not about one field.
    pub fn conflict(message: impl Into<String>) -> AppError {
        AppError::Conflict {
            field: None,
            message: message.into(),
        }
    }

    /// (field, message) when this error is about one form field.
    pub fn field(&self) -> Option<(&str, &str)> {
        match self {
            AppError::Field(f, m)
            | AppError::Conflict {
                field: Some(f),
                message: m,
            } => Some((f, m)),
            _ => None,
        }
    }

    /// The message for form field `name`, if this error is about it.
    pub fn for_field(&self, name: &str) -> Option<String> {
        self.field()
            .filter(|(f, _)| *f == name)
            .map(|(_, m)| m.to_string())
    }

    /// The message when it is not about one field.
    pub fn general(&self) -> Option<String> {
        match self.field() {
            Some(_) => None,
            None => Some(self.to_string()),
        }
    }

    /// Every `code` an error body can carry.
    pub const CODES: &[&str] = &[
        "invalid_credentials",
        "unauthenticated",
        "forbidden",
        "invalid",
        "not_found",
        "conflict",
        "internal",
        "transport",
    ];

    /// The `code` of the wire form: what kind of refusal, for a script to branch on.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::InvalidCredentials => "invalid_credentials",
            AppError::Unauthenticated => "unauthenticated",
            AppError::Forbidden | AppError::Refused(_) => "forbidden",
            AppError::Invalid(_) | AppError::Field(..) => "invalid",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict { .. } => "conflict",
            AppError::Internal => "internal",
            AppError::Transport(_) => "transport",
        }
    }
}

/// The wire form (see the module's docs).
#[derive(Serialize, Deserialize)]
struct Wire {
    error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(default)]
    code: String,
}

impl Serialize for AppError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            error: self.to_string(),
            field: self.field().map(|(f, _)| f.to_string()),
            code: self.code().to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for AppError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Wire { error, field, code } = Wire::deserialize(d)?;
        Ok(match (code.as_str(), field) {
            ("invalid_credentials", _) => AppError::InvalidCredentials,
            ("unauthenticated", _) => AppError::Unauthenticated,
            ("forbidden", _) if error == AppError::Forbidden.to_string() => AppError::Forbidden,
            ("forbidden", _) => AppError::Refused(error),
            ("invalid", Some(f)) => AppError::Field(f, error),
            ("invalid", None) => AppError::Invalid(error),
            ("not_found", _) => AppError::NotFound(
                error
                    .strip_suffix(" not found.")
                    .unwrap_or(&error)
                    .to_string(),
            ),
            ("conflict", field) => AppError::Conflict {
                field,
                message: error,
            },
            ("internal", _) => AppError::Internal,
            ("transport", _) => AppError::Transport(
                error
                    .strip_prefix("Could not reach the server: ")
                    .unwrap_or(&error)
                    .to_string(),
            ),
            // A code a newer server added: the message as it came.
            _ => AppError::Transport(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::AppError;

    /// What the browser's client decodes is the variant the server function returned
    /// (forms show `Field` and a field's conflict next to the field), and the body is
    /// the documented `{"error", "field"?, "code"}`.
    #[test]
    fn the_wire_form_is_the_documented_object_and_round_trips() {
        let all = [
            AppError::InvalidCredentials,
            AppError::Unauthenticated,
            AppError::Forbidden,
            AppError::Refused("Only an admin may change this source.".into()),
            AppError::Invalid("The schedule is not valid.".into()),
            AppError::Field("name".into(), "Give it a name.".into()),
            AppError::NotFound("Job 7".into()),
            AppError::name_taken("source"),
            AppError::conflict("A backup of this policy is already queued or running."),
            AppError::Internal,
            AppError::Transport("connection reset".into()),
        ];
        for e in all {
            let wire = serde_json::to_value(&e).unwrap();
            assert_eq!(wire["error"], e.to_string(), "{wire}");
            assert_eq!(wire["code"], e.code(), "{wire}");
            assert!(AppError::CODES.contains(&e.code()));
            match e.field() {
                Some((f, _)) => assert_eq!(wire["field"], f),
                None => assert!(wire.get("field").is_none(), "{wire}"),
            }
            let back: AppError = serde_json::from_value(wire).unwrap();
            assert_eq!(back, e);
        }
        let taken = AppError::name_taken("policy");
        assert_eq!(
            taken.for_field("name").as_deref(),
            Some("A policy with this name exists.")
        );
        assert_eq!(taken.general(), None);
    }
}
