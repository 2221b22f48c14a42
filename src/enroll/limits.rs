//! Size limits on everything an unauthenticated peer can send, so bad input
//! gets a clear refusal before it costs storage or signatures.

use super::error::EnrollError;

/// Longest node or challenge id accepted as text (a UUID is 36).
pub const MAX_ID_LEN: usize = 64;
/// Longest free-text field (addresses, labels).
pub const MAX_TEXT_LEN: usize = 256;
/// Longest token field.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Most entries in a capability list. The real daemon sends at most 13
/// local tools (the ones it probes for) and 4 mount points (its defaults)
/// unless its operator lists more.
pub const MAX_LIST_LEN: usize = 64;
/// Longest edge mount point, custom label key or label value: operators
/// write these into the daemon's config, and a Kubernetes-style label key
/// (253-byte prefix, `/`, 63-byte name) or a Windows path (260) passes
/// [`MAX_TEXT_LEN`].
pub const MAX_CONFIGURED_TEXT_LEN: usize = 1024;

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
    check_list_of(field, values, MAX_TEXT_LEN)
}

/// Refuses lists of more than [`MAX_LIST_LEN`] entries or entries over `max`.
fn check_list_of(field: &str, values: &[String], max: usize) -> Result<(), EnrollError> {
    if values.len() > MAX_LIST_LEN {
        return Err(EnrollError::InvalidArgument(format!(
            "{field} has {} entries; at most {MAX_LIST_LEN} are accepted",
            values.len()
        )));
    }
    for value in values {
        check_text(field, value, max)?;
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

/// Refuses edge capabilities (a Hello's or a CapabilityUpdate's) beyond the
/// bounds AttestNode's capabilities have: lists of at most [`MAX_LIST_LEN`]
/// entries, text of at most [`MAX_TEXT_LEN`] bytes, except what operators
/// write into the daemon's config (mount points, custom labels): at most
/// [`MAX_CONFIGURED_TEXT_LEN`]. `field` names the message field they came
/// in.
pub fn check_edge_capabilities(
    field: &str,
    capabilities: &crate::proto::cluster::EdgeCapabilities,
) -> Result<(), EnrollError> {
    check_text(&format!("{field}.os"), &capabilities.os, MAX_TEXT_LEN)?;
    check_text(&format!("{field}.arch"), &capabilities.arch, MAX_TEXT_LEN)?;
    check_list(&format!("{field}.local_tools"), &capabilities.local_tools)?;
    check_list_of(
        &format!("{field}.mount_points"),
        &capabilities.mount_points,
        MAX_CONFIGURED_TEXT_LEN,
    )?;
    check_list(&format!("{field}.tags"), &capabilities.tags)?;
    let labels = format!("{field}.custom_labels");
    if capabilities.custom_labels.len() > MAX_LIST_LEN {
        return Err(EnrollError::InvalidArgument(format!(
            "{labels} has {} entries; at most {MAX_LIST_LEN} are accepted",
            capabilities.custom_labels.len()
        )));
    }
    for (key, value) in &capabilities.custom_labels {
        check_text(&labels, key, MAX_CONFIGURED_TEXT_LEN)?;
        check_text(&labels, value, MAX_CONFIGURED_TEXT_LEN)?;
    }
    if let Some(node) = &capabilities.node_capabilities {
        let node_field = format!("{field}.node_capabilities");
        check_list(
            &format!("{node_field}.supported_runtimes"),
            &node.supported_runtimes,
        )?;
        check_list(&format!("{node_field}.tags"), &node.tags)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cluster::EdgeCapabilities;

    #[test]
    fn edge_capabilities_are_bounded_like_attest_nodes() {
        let ok = EdgeCapabilities {
            os: "linux".into(),
            local_tools: vec!["git".into(); 64],
            ..EdgeCapabilities::default()
        };
        assert!(check_edge_capabilities("hello.capabilities", &ok).is_ok());
        let too_many = EdgeCapabilities {
            local_tools: vec!["git".into(); 65],
            ..EdgeCapabilities::default()
        };
        let err = check_edge_capabilities("hello.capabilities", &too_many).err();
        assert!(err.is_some_and(|e| e
            .to_string()
            .contains("hello.capabilities.local_tools has 65 entries")));
        let long_label = EdgeCapabilities {
            custom_labels: [("zone".to_owned(), "x".repeat(1_100))].into(),
            ..EdgeCapabilities::default()
        };
        assert!(check_edge_capabilities("c", &long_label).is_err());
        let long_tool = EdgeCapabilities {
            local_tools: vec!["t".repeat(300)],
            ..EdgeCapabilities::default()
        };
        assert!(check_edge_capabilities("c", &long_tool).is_err());
    }

    #[test]
    fn what_the_real_daemon_and_its_operators_send_is_accepted() {
        // Every tool the daemon probes for, its Linux mount points plus a
        // Windows MAX_PATH one, and a Kubernetes-style label key at its
        // longest (253-byte prefix, `/`, 63-byte name).
        let probed = [
            "shell",
            "bash",
            "zsh",
            "sh",
            "docker",
            "podman",
            "kubectl",
            "helm",
            "git",
            "curl",
            "jq",
            "terraform",
            "ansible",
        ];
        let mut mount_points: Vec<String> = ["/", "/home", "/etc", "/var/log"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        mount_points.push(format!("C:\\{}", "d".repeat(256)));
        let label_key = format!("{}/{}", "p".repeat(253), "n".repeat(63));
        let daemon = EdgeCapabilities {
            os: "macos".into(),
            arch: "aarch64".into(),
            local_tools: probed.into_iter().map(str::to_owned).collect(),
            mount_points,
            custom_labels: [(label_key, "v".repeat(63))].into(),
            ..EdgeCapabilities::default()
        };
        assert!(check_edge_capabilities("hello.capabilities", &daemon).is_ok());
    }
}
