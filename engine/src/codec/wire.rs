//! bincode 2.0.1's `standard()` encoding (little-endian, variable-length integers), written
//! out by hand: what the codec's hand-written encoders and decoders are made of.
//!
//! The bytes are exactly what bincode's serde path writes, and the [`Reader`] accepts exactly
//! what it accepts, failing with the same [`DecodeError`] at the same place. That includes
//! bincode's allocation limit: every integer it reads *claims* its full width (8 bytes for a
//! `u64`, whatever its varint took) and every string its length, and a decode whose claims
//! pass the limit fails with [`DecodeError::LimitExceeded`]. The tests of `codec` check the
//! two against each other on every event, batch and snapshot shape, and on damaged bytes.
//!
//! A varint is one byte for 0 to 250, else a marker byte (251, 252, 253 for a 2, 4 or 8-byte
//! little-endian value; 254, a 16-byte one, is never valid here; 255 is reserved). Nothing
//! requires the shortest form. A string is its length (a `u64` varint) and its UTF-8 bytes;
//! an `Option` a byte 0 or 1, then the value; a `bool` a byte 0 or 1; an enum the number of
//! its variant (a `u32` varint), then its fields; a sequence its length, then its items.

use bincode::error::{AllowedEnumVariants, DecodeError, IntegerType};

use crate::event::Text;

/// The marker bytes of a varint longer than one byte.
const U16_MARKER: u8 = 251;
const U32_MARKER: u8 = 252;
const U64_MARKER: u8 = 253;
const U128_MARKER: u8 = 254;
/// The largest value a varint holds in its first byte.
const SINGLE_BYTE_MAX: u8 = 250;

/// What bincode claims against its limit for each kind of value it reads.
const U8_CLAIM: usize = 1;
const U32_CLAIM: usize = 4;
const U64_CLAIM: usize = 8;

/// Serde's bound on the items a sequence reserves room for before reading them: bincode's
/// serde path reserves at most 1 MiB of items, then grows as items arrive.
const SEQUENCE_RESERVE_BYTES_MAX: usize = 1 << 20;

/// Reads bincode's encoding from a slice, as bincode's own decoder with a byte limit does.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    claimed: usize,
    limit: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes` whose claims may add up to `limit` bytes.
    pub(crate) fn new(bytes: &'a [u8], limit: usize) -> Self {
        Self { rest: bytes, claimed: 0, limit }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    #[inline(always)]
    fn claim(&mut self, bytes: usize) -> Result<(), DecodeError> {
        // Not `ok_or(DecodeError::..)`: that makes the error on every call and drops it on
        // success, through `DecodeError`'s out-of-line drop (2 % of restoring a snapshot).
        match self.claimed.checked_add(bytes) {
            Some(claimed) if claimed <= self.limit => {
                self.claimed = claimed;
                Ok(())
            }
            _ => Err(DecodeError::LimitExceeded),
        }
    }

    #[inline(always)]
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        match self.rest.split_at_checked(len) {
            Some((taken, rest)) => {
                self.rest = rest;
                Ok(taken)
            }
            None => Err(DecodeError::UnexpectedEnd { additional: len - self.rest.len() }),
        }
    }

    #[inline(always)]
    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        match self.rest.split_first_chunk::<N>() {
            Some((taken, rest)) => {
                self.rest = rest;
                Ok(*taken)
            }
            None => Err(DecodeError::UnexpectedEnd { additional: N - self.rest.len() }),
        }
    }

    /// A raw byte.
    #[inline(always)]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.claim(U8_CLAIM)?;
        self.take_array::<1>().map(|[byte]| byte)
    }

    /// A `bool`: a byte 0 or 1.
    #[inline]
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidBooleanValue(other)),
        }
    }

    /// Whether an `Option` holds a value.
    #[inline(always)]
    pub(crate) fn option(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            found => Err(DecodeError::UnexpectedVariant {
                type_name: "Option<T>",
                allowed: &AllowedEnumVariants::Range { min: 0, max: 1 },
                found: u32::from(found),
            }),
        }
    }

    /// The value of a varint whose marker is `marker`, for an integer of `width` bytes
    /// (`expected` names it in errors).
    #[inline(always)]
    fn varint_tail(&mut self, marker: u8, width: usize, expected: IntegerType) -> Result<u64, DecodeError> {
        let found = match marker {
            0..=SINGLE_BYTE_MAX => return Ok(u64::from(marker)),
            U16_MARKER => return self.take_array::<2>().map(|b| u64::from(u16::from_le_bytes(b))),
            U32_MARKER if width >= 4 => {
                return self.take_array::<4>().map(|b| u64::from(u32::from_le_bytes(b)))
            }
            U64_MARKER if width >= 8 => return self.take_array::<8>().map(u64::from_le_bytes),
            U32_MARKER => IntegerType::U32,
            U64_MARKER => IntegerType::U64,
            U128_MARKER => IntegerType::U128,
            _ => IntegerType::Reserved,
        };
        Err(DecodeError::InvalidIntegerType { expected, found })
    }

    /// The value of a one-byte varint at the front, claiming `claim` bytes, if the claim is
    /// within the limit: the common case, in one step. `None` leaves the reader as it was,
    /// for the general path to read the value (or fail) as bincode does.
    #[inline(always)]
    fn small(&mut self, claim: usize) -> Option<u64> {
        let (&first, rest) = self.rest.split_first()?;
        let claimed = self.claimed.saturating_add(claim);
        if first > SINGLE_BYTE_MAX || claimed > self.limit {
            return None;
        }
        self.claimed = claimed;
        self.rest = rest;
        Some(u64::from(first))
    }

    /// A `u32` varint (enum variants, indexes).
    #[inline(always)]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if let Some(value) = self.small(U32_CLAIM) {
            return Ok(value as u32);
        }
        self.claim(U32_CLAIM)?;
        let marker = self.take_array::<1>()?[0];
        // The width rules out the longer markers, so the value fits.
        self.varint_tail(marker, 4, IntegerType::U32).map(|v| v as u32)
    }

    /// A `u64` varint. bincode names the expected type `U32` in the error for the markers 254
    /// and 255 when nine bytes or more are left, and `U64` otherwise; so does this.
    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        if let Some(value) = self.small(U64_CLAIM) {
            return Ok(value);
        }
        self.claim(U64_CLAIM)?;
        let expected = if self.rest.len() >= 9 { IntegerType::U32 } else { IntegerType::U64 };
        let marker = self.take_array::<1>()?[0];
        self.varint_tail(marker, 8, expected)
    }

    /// The length of a sequence (bincode reads it as a `usize`).
    #[inline(always)]
    pub(crate) fn len(&mut self) -> Result<usize, DecodeError> {
        if let Some(len) = self.small(U64_CLAIM) {
            return Ok(len as usize);
        }
        self.claim(U64_CLAIM)?;
        let marker = self.take_array::<1>()?[0];
        let len = self.varint_tail(marker, 8, IntegerType::Usize)?;
        usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))
    }

    /// The bytes of a string (not checked to be UTF-8 yet).
    #[inline(always)]
    fn string_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        // The common case in one step: a one-byte length, the string there, the claims (the
        // length as a `u64`, then the string's bytes) within the limit.
        if let Some((&len, after)) = self.rest.split_first() {
            let claimed = self.claimed.saturating_add(U64_CLAIM + usize::from(len));
            if len <= SINGLE_BYTE_MAX && claimed <= self.limit {
                if let Some((bytes, rest)) = after.split_at_checked(usize::from(len)) {
                    self.claimed = claimed;
                    self.rest = rest;
                    return Ok(bytes);
                }
            }
        }
        // A string's length is read as a `u64`, then checked to fit a `usize`.
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))?;
        self.claim(len)?;
        self.take(len)
    }

    /// A string, borrowed from the input.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.string_bytes()?;
        std::str::from_utf8(bytes).map_err(|inner| DecodeError::Utf8 { inner })
    }

    /// A string, borrowed from the input as [`Text`]: ASCII (most ids) is UTF-8 without
    /// further ado, anything else is checked as [`Reader::str`] checks it.
    #[inline(always)]
    pub(crate) fn text(&mut self) -> Result<Text<'a>, DecodeError> {
        let bytes = self.string_bytes()?;
        if !bytes.is_ascii() {
            std::str::from_utf8(bytes).map_err(|inner| DecodeError::Utf8 { inner })?;
        }
        Ok(Text::from_checked_utf8(bytes))
    }

    /// The number of an enum's variant, of which there are `count`. The error is the one
    /// serde's derived code gives for a number out of range.
    #[inline(always)]
    pub(crate) fn variant(&mut self, count: u32) -> Result<u32, DecodeError> {
        let index = self.u32()?;
        if index >= count {
            return Err(DecodeError::OtherString(format!(
                "invalid value: integer `{index}`, expected variant index 0 <= i < {count}"
            )));
        }
        Ok(index)
    }

    /// A sequence: its length, then `len` items read by `item`. Reserves room as serde does
    /// (never more than 1 MiB before the items are there).
    pub(crate) fn seq<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let len = self.len()?;
        let mut items = Vec::with_capacity(len.min(SEQUENCE_RESERVE_BYTES_MAX / size_of::<T>().max(1)));
        for _ in 0..len {
            items.push(item(self)?);
        }
        Ok(items)
    }
}

/// Appends bincode's encoding of values to a buffer. Writing to memory cannot fail.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    #[inline]
    pub(crate) fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    #[inline]
    pub(crate) fn bool(&mut self, value: bool) {
        self.out.push(u8::from(value));
    }

    /// An `Option`'s tag (its value, if any, follows).
    #[inline]
    pub(crate) fn option(&mut self, some: bool) {
        self.out.push(u8::from(some));
    }

    /// A varint (every unsigned integer and length; the shortest form).
    #[inline]
    pub(crate) fn varint(&mut self, value: u64) {
        if value <= u64::from(SINGLE_BYTE_MAX) {
            self.out.push(value as u8);
        } else if let Ok(value) = u16::try_from(value) {
            self.out.push(U16_MARKER);
            self.out.extend_from_slice(&value.to_le_bytes());
        } else if let Ok(value) = u32::try_from(value) {
            self.out.push(U32_MARKER);
            self.out.extend_from_slice(&value.to_le_bytes());
        } else {
            self.out.push(U64_MARKER);
            self.out.extend_from_slice(&value.to_le_bytes());
        }
    }

    #[inline]
    pub(crate) fn len(&mut self, len: usize) {
        self.varint(len as u64);
    }

    #[inline]
    pub(crate) fn str(&mut self, value: &str) {
        self.len(value.len());
        self.out.extend_from_slice(value.as_bytes());
    }
}
