//! The cluster secret file (`relay.cluster_secret_file`): one secret per
//! line, the first signs, every line verifies, so the secret can be rotated
//! replica by replica (add the new one second, then first, then drop the old).
//!
//! Invariant: no secret byte ever reaches a log line, an error or `Debug`.

use std::fmt;
use std::path::Path;

/// Shortest accepted secret, in bytes (after trimming).
pub const MIN_SECRET_BYTES: usize = 32;

/// The secrets of a cluster: `signing()` is the first line.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecrets {
    secrets: Vec<Vec<u8>>,
}

/// Why a secret file cannot be used. Messages describe lines by number and
/// length only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        reason: String,
    },
    /// No line holds a secret.
    #[error("holds no secret; write one secret of at least {MIN_SECRET_BYTES} bytes per line")]
    Empty,
    /// A line is too short.
    #[error(
        "line {line} holds {len} bytes; every secret needs at least {MIN_SECRET_BYTES} \
         (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// 1-based line number.
        line: usize,
        /// Its length after trimming.
        len: usize,
    },
}

impl ClusterSecrets {
    /// Parses the file's text: each line trimmed, blank lines skipped.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let mut secrets = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let secret = line.trim();
            if secret.is_empty() {
                continue;
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(SecretError::TooShort {
                    line: index + 1,
                    len: secret.len(),
                });
            }
            secrets.push(secret.as_bytes().to_vec());
        }
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { secrets })
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|err| SecretError::Read {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        Self::parse(&text)
    }

    /// The secret outgoing datagrams are signed with (the first line).
    pub fn signing(&self) -> &[u8] {
        // `parse` never yields an empty list.
        self.secrets.first().map_or(&[], Vec::as_slice)
    }

    /// Every secret an incoming datagram may be signed with, first line first.
    pub fn verifying(&self) -> impl Iterator<Item = &[u8]> {
        self.secrets.iter().map(Vec::as_slice)
    }

    /// How many secrets the file holds.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Never true (a parsed file holds at least one secret).
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

impl fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecrets({} redacted)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn first_line_signs_and_every_line_verifies() -> Result<(), SecretError> {
        let secrets = ClusterSecrets::parse(&format!("  {A}\t\n\n{B}\n"))?;
        assert_eq!(secrets.signing(), A.as_bytes());
        let verifying: Vec<&[u8]> = secrets.verifying().collect();
        assert_eq!(verifying, vec![A.as_bytes(), B.as_bytes()]);
        assert_eq!(secrets.len(), 2);
        Ok(())
    }

    #[test]
    fn short_and_empty_files_are_refused_without_echoing_the_secret() {
        let short = "short-secret-value";
        let err = ClusterSecrets::parse(&format!("{A}\n{short}\n")).err();
        assert_eq!(err, Some(SecretError::TooShort { line: 2, len: 18 }));
        let message = err.map(|err| err.to_string()).unwrap_or_default();
        assert!(!message.contains(short), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert_eq!(
            ClusterSecrets::parse(" \n\n").err(),
            Some(SecretError::Empty)
        );
        assert_eq!(ClusterSecrets::parse("").err(), Some(SecretError::Empty));
        // Exactly the minimum is enough.
        assert!(ClusterSecrets::parse(&"x".repeat(MIN_SECRET_BYTES)).is_ok());
    }

    #[test]
    fn debug_never_shows_a_secret() -> Result<(), SecretError> {
        let secrets = ClusterSecrets::parse(A)?;
        let debug = format!("{secrets:?}");
        assert!(
            !debug.contains('a'.to_string().repeat(8).as_str()),
            "{debug}"
        );
        Ok(())
    }
}
