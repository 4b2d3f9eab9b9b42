//! The one error type every server function returns.
//!
//! What crosses the wire is a short, user-facing message. Database errors and other
//! internals are logged on the server (see `ssr::internal`) and reach the browser only as
//! "Internal error; see the server log".

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
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
            // On the server a transport error means the request could not be read (its
            // arguments did not decode): the caller's fault, like invalid input.
            AppError::Invalid(_) | AppError::Field(..) | AppError::Transport(_) => {
                StatusCode::BAD_REQUEST
            }
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A new `what` (source, target, policy) named like an existing one.
    pub fn name_taken(what: &str) -> AppError {
        AppError::Field("name".into(), format!("A {what} with this name exists."))
    }

    /// The message for form field `name`, if this error is about it.
    pub fn for_field(&self, name: &str) -> Option<String> {
        match self {
            AppError::Field(f, m) if f == name => Some(m.clone()),
            _ => None,
        }
    }

    /// The message when it is not about one field.
    pub fn general(&self) -> Option<String> {
        match self {
            AppError::Field(..) => None,
            other => Some(other.to_string()),
        }
    }
}
