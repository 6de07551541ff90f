//! User and device identifiers (R1.1).
//!
//! Ids cross the API as cheap-to-clone strings. Inside the engine they are interned to dense
//! integers ([`UserKey`], [`DeviceKey`]) so that state, indexes and notices hold four-byte
//! handles instead of strings.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string. It is checked against the configured limits (R1.1) when a
            /// command carrying it reaches the engine, not here.
            pub fn new(id: impl Into<Arc<str>>) -> Self {
                Self(id.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(Arc::from(id))
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(Arc::from(id))
            }
        }

        impl From<&String> for $name {
            fn from(id: &String) -> Self {
                Self(Arc::from(id.as_str()))
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                id.clone()
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

id_type!(
    /// A user: a non-empty UTF-8 string of at most `max_user_id_bytes` bytes without control
    /// characters (R1.1). There is no registration step (R1.2).
    UserId
);

id_type!(
    /// A device of a user: same rules as [`UserId`], at most `max_device_id_bytes` bytes, unique
    /// within its user (R1.1).
    DeviceId
);

id_type!(
    /// The connection owner of a session: an opaque tag the host gives at login, typically the
    /// gateway node that holds the device's socket, so that every session whose socket was
    /// on a node can be disconnected at once when that node is gone (R8.5). Same rules as a
    /// [`UserId`], at most [`OWNER_BYTES_MAX`](crate::OWNER_BYTES_MAX) bytes.
    OwnerId
);

/// The interned handle of a user inside one engine. Stable for the engine's lifetime; not
/// stable across a restart (it is never written to the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey(pub(crate) u32);

/// The interned handle of a device id inside one engine (device ids are interned globally, so
/// "phone" is stored once however many users have one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey(pub(crate) u32);

impl UserKey {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// Whether two strings' bytes are equal. Ids are short, and comparing them as one or two
/// words (overlapping when shorter than two), or byte by byte below four bytes, beats a call
/// to `memcmp`, which the interner makes on every lookup.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        0 => true,
        // The first, middle and last bytes are every byte.
        1..=3 => a.first() == b.first() && a.get(len / 2) == b.get(len / 2) && a.last() == b.last(),
        4..=7 => a.first_chunk::<4>() == b.first_chunk::<4>() && a.last_chunk::<4>() == b.last_chunk::<4>(),
        8..=16 => a.first_chunk::<8>() == b.first_chunk::<8>() && a.last_chunk::<8>() == b.last_chunk::<8>(),
        _ => a == b,
    }
}

/// Checks a user id as every command checks it (R1.1: non-empty, at most
/// `max_user_id_bytes` bytes, no control characters), refusing with `InvalidParameter` (6017)
/// and the rule it breaks: for a host that reads ids from elsewhere, such as a URL path, and
/// answers before any command.
pub fn check_user_id(id: &str, max_user_id_bytes: u32) -> Result<(), Error> {
    validate_id(id, max_user_id_bytes, "user id")
}

/// Checks one id against R1.1: non-empty, at most `max_bytes` bytes of UTF-8, no control
/// characters. `what` names the field in the error message.
pub(crate) fn validate_id(id: &str, max_bytes: u32, what: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if id.len() > max_bytes as usize {
        return Err(Error::invalid(format!(
            "{what} is {} bytes, more than the {max_bytes} allowed",
            id.len()
        )));
    }
    if has_control(id) {
        return Err(Error::invalid(format!("{what} contains a control character")));
    }
    Ok(())
}

/// Whether `id` holds a control character (Unicode's category Cc, as `char::is_control`):
/// U+0000 to U+001F, U+007F, and U+0080 to U+009F, which UTF-8 writes as C2 80 to C2 9F. Read
/// byte by byte, without decoding characters: every command's ids go through it.
#[inline]
fn has_control(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.iter().any(|&b| b < 0x20 || b == 0x7f)
        || (!bytes.is_ascii() && bytes.windows(2).any(|pair| pair[0] == 0xc2 && pair[1] < 0xa0))
}

#[cfg(test)]
mod tests {
    use super::{has_control, same_bytes};

    /// The byte-wise check finds exactly the characters `char::is_control` finds, alone and
    /// among others.
    #[test]
    fn control_characters_are_found_as_char_finds_them() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let alone = c.to_string();
            assert_eq!(has_control(&alone), c.is_control(), "{:x}", c as u32);
            let among = format!("a\u{a2}{c}\u{100}");
            assert_eq!(has_control(&among), c.is_control(), "{:x}", c as u32);
        }
    }

    /// The word-wise comparison agrees with `==` at every length around its word sizes.
    #[test]
    fn strings_compare_as_equal_exactly_when_they_are() {
        let text = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for len in 0..text.len() {
            let a = &text[..len];
            assert!(same_bytes(a, a));
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] = b'_';
                assert!(!same_bytes(a, &b), "{len} {at}");
            }
            assert!(!same_bytes(a, &text[..len + 1]));
            assert_eq!(same_bytes(a, &text[1..len + 1]), len == 0);
        }
    }
}
