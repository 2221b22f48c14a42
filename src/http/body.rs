//! JSON request bodies of the REST surface: the router's size limit (413
//! beyond it) and parsing that names the JSON path of the first bad value,
//! so a client learns which field to fix. Unknown fields are ignored.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::fleet::parse_body;

/// Parses a request body taken as `Result<Bytes, BytesRejection>`.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body?;
    parse_body(&body).map_err(|err| ApiError::bad_request(err.to_string()))
}
