//! Custom statuses shared between users (R3.1): most users who set one pick one of a few
//! ("busy", "in a meeting"), so the state keeps the last status seen in each of a few slots,
//! and setting a status that is there shares it instead of allocating a copy. Not part of
//! the logged state; only memory and the time of an allocation depend on it.

use std::hash::BuildHasher;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use super::no_custom;
use crate::event::Text;
use crate::ids::same_bytes;

/// Slots of recent statuses: enough for the common ones, small enough to stay in cache.
const CUSTOM_SLOTS: usize = 64;

#[derive(Debug)]
pub(crate) struct Customs {
    slots: [Option<Arc<str>>; CUSTOM_SLOTS],
}

impl Default for Customs {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| None) }
    }
}

impl Customs {
    /// `custom` as a shared string: the one in its slot if that is equal, else a new one,
    /// which takes the slot.
    pub(crate) fn share(&mut self, custom: Text<'_>) -> Arc<str> {
        if custom.is_empty() {
            return no_custom();
        }
        let slot = FxBuildHasher.hash_one(custom.as_bytes()) as usize % CUSTOM_SLOTS;
        match &mut self.slots[slot] {
            Some(shared) if same_bytes(shared.as_bytes(), custom.as_bytes()) => shared.clone(),
            other => other.insert(Arc::from(custom.as_str())).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Customs;

    #[test]
    fn an_equal_status_is_shared_and_any_status_comes_back_equal() {
        let mut customs = Customs::default();
        let mut share = |text: &str| customs.share(text.into());
        let busy = share("busy");
        assert!(Arc::ptr_eq(&busy, &share("busy")));
        for i in 0..1_000 {
            let text = format!("status {i}");
            assert_eq!(&*share(&text), text);
        }
        assert_eq!(&*share(""), "");
        assert_eq!(&*share("busy"), "busy");
    }
}
