//! Size limits on everything an unauthenticated peer can send, so bad input
//! gets a clear refusal before it costs storage or signatures.

use super::error::EnrollError;

/// Longest node or challenge id accepted as text (a UUID is 36).
pub const MAX_ID_LEN: usize = 64;
/// Longest free-text field (addresses, labels).
pub const MAX_TEXT_LEN: usize = 256;
/// Longest token field.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Most entries in a capability list.
pub const MAX_LIST_LEN: usize = 64;

/// Refuses text longer than `max` or containing control characters.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), EnrollError> {
    if value.len() > max {
        return Err(EnrollError::InvalidArgument(format!(
            "{field} is {} bytes; at most {max} are accepted",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(EnrollError::InvalidArgument(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// Refuses lists with too many or too long entries.
pub fn check_list(field: &str, values: &[String]) -> Result<(), EnrollError> {
    if values.len() > MAX_LIST_LEN {
        return Err(EnrollError::InvalidArgument(format!(
            "{field} has {} entries; at most {MAX_LIST_LEN} are accepted",
            values.len()
        )));
    }
    for value in values {
        check_text(field, value, MAX_TEXT_LEN)?;
    }
    Ok(())
}

/// Parses a UUID field with a message naming it.
pub fn parse_uuid(field: &str, value: &str) -> Result<uuid::Uuid, EnrollError> {
    if value.len() > MAX_ID_LEN {
        return Err(EnrollError::InvalidArgument(format!(
            "{field} is {} bytes; a UUID is 36",
            value.len()
        )));
    }
    uuid::Uuid::parse_str(value)
        .map_err(|_| EnrollError::InvalidArgument(format!("{field} {value:?} is not a UUID")))
}
