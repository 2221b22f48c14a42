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

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(any::<u8>(), 0..48)
        }

        proptest! {
            #[test]
            fn three_encoded_segments_split_back(h in bytes(), c in bytes(), s in bytes()) {
                let (h64, c64) = (b64url(&h), b64url(&c));
                let token = format!("{h64}.{c64}.{}", b64url(&s));
                let parts = JwsParts::split(&token).ok_or_else(|| TestCaseError::fail("not split"))?;
                prop_assert_eq!(parts.signing_input, format!("{h64}.{c64}"));
                prop_assert_eq!(parts.header, h);
                prop_assert_eq!(parts.claims, c);
                prop_assert_eq!(parts.signature, s);
            }

            /// Any text: no panic; a split token has exactly three segments
            /// and its signing input is the text before the last dot.
            #[test]
            fn any_text_splits_safely(token in "[A-Za-z0-9_=.+/-]{0,40}") {
                match JwsParts::split(&token) {
                    Some(parts) => {
                        prop_assert_eq!(token.matches('.').count(), 2);
                        let last_dot = token.rfind('.').unwrap_or_default();
                        prop_assert_eq!(parts.signing_input, &token[..last_dot]);
                    }
                    None => prop_assert!(
                        token.matches('.').count() != 2
                            || token.split('.').any(|seg| b64url_decode(seg).is_none())
                    ),
                }
            }
        }
    }
}
