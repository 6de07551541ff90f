//! Login tokens and the host's bearer, both HMAC-SHA256 under one secret, as Tencent's
//! UserSig is: the host (which holds the secret) mints a token for a user, the device presents
//! it at login, and nobody without the secret can make one for someone else.
//!
//! A login token is `v1.USER.EXPIRY.MAC`: `USER` is the user id in base64url (no padding),
//! `EXPIRY` the Unix time in seconds after which the token is refused, and `MAC` the base64url
//! HMAC-SHA256 of `presence-login-v1\nUSER_ID\nEXPIRY` (the id itself, not its base64). The
//! host's bearer, for the friendship endpoint, is the base64url HMAC-SHA256 of
//! `presence-host-v1`. MACs are compared in constant time ([`Mac::verify_slice`]).

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The fewest bytes a secret may have.
pub const SECRET_BYTES_MIN: usize = 16;
/// The most bytes a secret file may hold.
pub const SECRET_BYTES_MAX: usize = 4_096;
/// The longest token accepted: far more than the longest user id needs.
pub const TOKEN_BYTES_MAX: usize = 2_048;
/// The longest time-to-live `mint` gives a token: a year.
pub const TOKEN_TTL_S_MAX: u64 = 366 * 24 * 3_600;

const VERSION: &str = "v1";
const LOGIN_CONTEXT: &[u8] = b"presence-login-v1\n";
const HOST_CONTEXT: &[u8] = b"presence-host-v1";

/// The secret that signs tokens. Its bytes never appear in `Debug` output or errors.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a secret could not be had, or a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The secret file is missing, unreadable, too short or too long.
    Secret(String),
    /// The token is not one this secret made: malformed, or its MAC does not match.
    Invalid(String),
    /// The token is genuine but its expiry has passed.
    Expired {
        /// When it expired (Unix seconds).
        expired_at_s: u64,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Secret(m) | TokenError::Invalid(m) => f.write_str(m),
            TokenError::Expired { expired_at_s } => {
                write!(f, "the token expired at {expired_at_s} (Unix seconds): ask the host for a new one")
            }
        }
    }
}

impl std::error::Error for TokenError {}

impl Secret {
    /// A secret of these bytes (at least [`SECRET_BYTES_MIN`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, TokenError> {
        let bytes = bytes.into();
        if bytes.len() < SECRET_BYTES_MIN || bytes.len() > SECRET_BYTES_MAX {
            return Err(TokenError::Secret(format!(
                "a secret is {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes (this one is {}): make one with \
                 `head -c 32 /dev/urandom | base64 > FILE`",
                bytes.len()
            )));
        }
        Ok(Secret(bytes))
    }

    /// Reads a secret file: its bytes, without trailing whitespace (so that `echo` and
    /// `base64` output work as they are).
    pub fn from_file(path: &Path) -> Result<Secret, TokenError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            TokenError::Secret(format!("{}: cannot read the secret file: {e}", path.display()))
        })?;
        if meta.len() > SECRET_BYTES_MAX as u64 {
            return Err(TokenError::Secret(format!(
                "{}: a secret file holds at most {SECRET_BYTES_MAX} bytes",
                path.display()
            )));
        }
        let mut bytes = std::fs::read(path).map_err(|e| {
            TokenError::Secret(format!("{}: cannot read the secret file: {e}", path.display()))
        })?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        Secret::new(bytes).map_err(|e| TokenError::Secret(format!("{}: {e}", path.display())))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail; a `Secret` is never empty.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        }
    }

    fn login_mac(&self, user: &str, expires_at_s: u64) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(LOGIN_CONTEXT);
        mac.update(user.as_bytes());
        mac.update(b"\n");
        mac.update(expires_at_s.to_string().as_bytes());
        mac
    }

    /// A login token for `user`, refused after `expires_at_s` (Unix seconds).
    pub fn mint(&self, user: &str, expires_at_s: u64) -> String {
        let tag = self.login_mac(user, expires_at_s).finalize().into_bytes();
        format!(
            "{VERSION}.{}.{expires_at_s}.{}",
            URL_SAFE_NO_PAD.encode(user.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// A login token for `user` that lives `ttl_s` seconds (at most [`TOKEN_TTL_S_MAX`]) from
    /// now.
    pub fn mint_for(&self, user: &str, ttl_s: u64) -> String {
        self.mint(user, now_s().saturating_add(ttl_s.min(TOKEN_TTL_S_MAX)))
    }

    /// The user a token names, if this secret made it and it has not expired at `now_s`. The
    /// MAC is checked first, in constant time, so that a forged token is never told apart by
    /// its expiry. The user id itself is the engine's to judge (R1.1).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<String, TokenError> {
        let malformed =
            || TokenError::Invalid("the token is not a presence login token (v1.USER.EXPIRY.MAC)".into());
        if token.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::Invalid(format!("the token is longer than {TOKEN_BYTES_MAX} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(VERSION), Some(user), Some(expiry), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let user = URL_SAFE_NO_PAD
            .decode(user)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(malformed)?;
        if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let expires_at_s: u64 = expiry.parse().map_err(|_| malformed())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| malformed())?;
        if self.login_mac(&user, expires_at_s).verify_slice(&tag).is_err() {
            return Err(TokenError::Invalid("the token's signature does not match: it was not made with this server's secret, or was changed".into()));
        }
        if now_s > expires_at_s {
            return Err(TokenError::Expired { expired_at_s: expires_at_s });
        }
        Ok(user)
    }

    /// The host's bearer: `Authorization: Bearer <this>` on the friendship endpoint.
    pub fn host_bearer(&self) -> String {
        let mut mac = self.mac();
        mac.update(HOST_CONTEXT);
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `presented` is the host's bearer (compared in constant time).
    pub fn is_host_bearer(&self, presented: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(presented.trim()) else { return false };
        let mut mac = self.mac();
        mac.update(HOST_CONTEXT);
        mac.verify_slice(&tag).is_ok()
    }
}

/// The system clock in Unix seconds (0 before 1970).
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(*b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn a_minted_token_names_its_user_until_it_expires() {
        let token = secret().mint("alice", 1_000);
        assert_eq!(secret().verify(&token, 999).unwrap(), "alice");
        assert_eq!(secret().verify(&token, 1_000).unwrap(), "alice");
        assert_eq!(secret().verify(&token, 1_001), Err(TokenError::Expired { expired_at_s: 1_000 }));
    }

    #[test]
    fn ids_with_dots_and_unicode_survive() {
        let token = secret().mint("a.b/ü 😀", 50);
        assert_eq!(secret().verify(&token, 0).unwrap(), "a.b/ü 😀");
    }

    #[test]
    fn another_secret_or_any_change_is_refused() {
        let token = secret().mint("alice", 1_000);
        let other = Secret::new(*b"another secret, just as long....").unwrap();
        assert!(matches!(other.verify(&token, 0), Err(TokenError::Invalid(_))));

        // Another user under the same MAC, a later expiry, a flipped MAC byte.
        let parts: Vec<&str> = token.split('.').collect();
        let bob = URL_SAFE_NO_PAD.encode("bob");
        let forged_user = format!("v1.{bob}.{}.{}", parts[2], parts[3]);
        let forged_expiry = format!("v1.{}.2000.{}", parts[1], parts[3]);
        let mut tag = URL_SAFE_NO_PAD.decode(parts[3]).unwrap();
        tag[0] ^= 1;
        let flipped = format!("v1.{}.{}.{}", parts[1], parts[2], URL_SAFE_NO_PAD.encode(tag));
        for forged in [forged_user, forged_expiry, flipped] {
            assert!(matches!(secret().verify(&forged, 0), Err(TokenError::Invalid(_))), "{forged}");
        }
        // An expired forgery is "invalid", not "expired": the MAC is checked first.
        assert!(matches!(other.verify(&token, 5_000), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let long = "x".repeat(TOKEN_BYTES_MAX + 1);
        for bad in [
            "",
            "v1",
            "v1...",
            "v2.YQ.1.AA",
            "v1.YQ.-1.AA",
            "v1.YQ.+1.AA",
            "v1.YQ.1",
            "v1.YQ.1.AA.x",
            "v1.!!.1.AA",
            "v1.YQ.99999999999999999999999.AA",
            "v1.__8.1.AA",
            long.as_str(),
        ] {
            assert!(matches!(secret().verify(bad, 0), Err(TokenError::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn the_host_bearer_is_the_secrets_alone() {
        let bearer = secret().host_bearer();
        assert!(secret().is_host_bearer(&bearer));
        assert!(!secret().is_host_bearer(""));
        assert!(!secret().is_host_bearer("not base64 !"));
        assert!(!Secret::new(*b"another secret, just as long....").unwrap().is_host_bearer(&bearer));
        assert!(!secret().is_host_bearer(&secret().mint("alice", 1)));
    }

    #[test]
    fn secrets_are_bounded_and_never_printed() {
        assert!(Secret::new(*b"short").is_err());
        assert!(Secret::new(vec![b'x'; SECRET_BYTES_MAX + 1]).is_err());
        assert_eq!(format!("{:?}", secret()), "Secret(32 bytes)");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let from_file = Secret::from_file(&path).unwrap();
        assert_eq!(from_file.host_bearer(), secret().host_bearer(), "the trailing newline is not part of it");
        assert!(Secret::from_file(&dir.path().join("missing")).is_err());
    }
}
