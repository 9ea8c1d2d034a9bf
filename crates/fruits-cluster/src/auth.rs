//! The cluster's shared secret: every fruits plan node is signed with it by the process that
//! encodes it (HMAC-SHA256 over the node), and checked by every process that decodes it, so
//! a scheduler runs only plans from clients that know the token and executors run only plans
//! that come, signed, from such a scheduler. The token comes from `FRUITS_CLUSTER_TOKEN` or a
//! file, never from the command line, and is never printed.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The environment variable that holds the token.
pub const TOKEN_ENV: &str = "FRUITS_CLUSTER_TOKEN";

/// Shortest token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Bytes of a signature.
pub const MAC_BYTES: usize = 32;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// None was given.
    #[error("the cluster needs a shared token: set {TOKEN_ENV} (or --token-file) to the same secret of at least {MIN_TOKEN_BYTES} characters on the client, the scheduler and every executor")]
    Missing,
    /// The file could not be read.
    #[error("reading the cluster token from {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Too short to be a secret.
    #[error("the cluster token from {0} is shorter than {MIN_TOKEN_BYTES} characters")]
    Short(String),
}

/// A cluster's shared secret (its `Debug` shows nothing of it).
#[derive(Clone)]
pub struct ClusterToken(Vec<u8>);

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterToken(..)")
    }
}

impl ClusterToken {
    /// The token in `file` if given, else in `$FRUITS_CLUSTER_TOKEN` (surrounding white space
    /// dropped).
    pub fn load(file: Option<&Path>) -> Result<ClusterToken, TokenError> {
        let (text, from) = match file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| TokenError::File {
                    path: path.display().to_string(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (
                std::env::var(TOKEN_ENV).map_err(|_| TokenError::Missing)?,
                TOKEN_ENV.to_string(),
            ),
        };
        ClusterToken::new(text.trim().as_bytes()).ok_or(TokenError::Short(from))
    }

    /// A token from its bytes, if long enough.
    pub fn new(secret: &[u8]) -> Option<ClusterToken> {
        (secret.len() >= MIN_TOKEN_BYTES).then(|| ClusterToken(secret.to_vec()))
    }

    /// The signature of `parts`, in order.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; MAC_BYTES] {
        self.mac(parts).finalize().into_bytes().into()
    }

    /// Whether `mac` is the signature of `parts` (compared in constant time).
    pub fn verify(&self, parts: &[&[u8]], mac: &[u8]) -> bool {
        self.mac(parts).verify_slice(mac).is_ok()
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        for p in parts {
            // Length-prefixed, so that moving bytes between parts changes the signature.
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p);
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_depend_on_the_token_and_every_byte() {
        let a = ClusterToken::new(b"0123456789abcdef").unwrap();
        let b = ClusterToken::new(b"0123456789abcdeX").unwrap();
        let mac = a.sign(&[b"head", b"body"]);
        assert!(a.verify(&[b"head", b"body"], &mac));
        assert!(!b.verify(&[b"head", b"body"], &mac));
        assert!(!a.verify(&[b"head", b"bodY"], &mac));
        assert!(!a.verify(&[b"headb", b"ody"], &mac));
        assert!(ClusterToken::new(b"short").is_none());
        assert_eq!(format!("{a:?}"), "ClusterToken(..)");
    }
}
