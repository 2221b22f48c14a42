//! Compact JWS plumbing: base64url without padding and splitting a token
//! into its three segments without trusting any of them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// base64url without padding, as JWS segments use.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url-without-padding decoding.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// A token split into its segments, signature decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwsParts<'a> {
    /// `header.claims`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// Decoded header JSON.
    pub header: Vec<u8>,
    /// Decoded claims JSON.
    pub claims: Vec<u8>,
    /// Decoded signature.
    pub signature: Vec<u8>,
}

impl<'a> JwsParts<'a> {
    /// Splits `token`; `None` unless it is exactly three base64url segments.
    pub fn split(token: &'a str) -> Option<Self> {
        let mut segments = token.split('.');
        let (header, claims, signature) = (segments.next()?, segments.next()?, segments.next()?);
        if segments.next().is_some() {
            return None;
        }
        let signing_input = &token[..header.len() + 1 + claims.len()];
        Some(Self {
            signing_input,
            header: b64url_decode(header)?,
            claims: b64url_decode(claims)?,
            signature: b64url_decode(signature)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_segments_and_rejects_others() {
        let token = format!(
            "{}.{}.{}",
            b64url(b"{}"),
            b64url(b"{\"a\":1}"),
            b64url(b"sig")
        );
        let parts = JwsParts::split(&token);
        assert_eq!(
            parts.as_ref().map(|p| p.claims.as_slice()),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(
            parts.map(|p| p.signing_input.len()),
            Some(token.len() - b64url(b"sig").len() - 1)
        );
        assert!(JwsParts::split("a.b").is_none());
        assert!(JwsParts::split("a.b.c.d").is_none());
        assert!(JwsParts::split("e30.e30.***").is_none());
        assert!(
            JwsParts::split("e30=.e30.c2ln").is_none(),
            "padding is refused"
        );
    }
}
