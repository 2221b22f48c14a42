//! How the daemon turns a `cep` claim or configured endpoint into a URI
//! (protocol.md §2.1): an explicit scheme is kept; a bare host with no port
//! or port 443 means TLS; any other explicit port means plaintext h2c.

/// The URI the real daemon would dial for `endpoint`.
pub fn promote_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.to_owned();
    }
    let authority = endpoint.split('/').next().unwrap_or(endpoint);
    let port = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once("]:").map(|(_, port)| port)
    } else {
        authority.rsplit_once(':').map(|(_, port)| port)
    };
    match port {
        None | Some("443") => format!("https://{endpoint}"),
        Some(_) => format!("http://{endpoint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_daemon_rule() {
        assert_eq!(
            promote_endpoint("http://127.0.0.1:50056"),
            "http://127.0.0.1:50056"
        );
        assert_eq!(
            promote_endpoint("https://relay.example.com"),
            "https://relay.example.com"
        );
        assert_eq!(
            promote_endpoint("relay.example.com"),
            "https://relay.example.com"
        );
        assert_eq!(
            promote_endpoint("relay.example.com:443"),
            "https://relay.example.com:443"
        );
        assert_eq!(
            promote_endpoint("127.0.0.1:50056"),
            "http://127.0.0.1:50056"
        );
        assert_eq!(promote_endpoint("[::1]:50056"), "http://[::1]:50056");
        assert_eq!(promote_endpoint("[::1]"), "https://[::1]");
    }
}
