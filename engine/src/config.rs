//! Engine configuration with SPEC.md's defaults.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::CONFIG_LIMIT_MAX;

/// The product edition (R4.1, R6.2): only `Ultimate` may subscribe or query other users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edition {
    /// Refuses subscribe, unsubscribe and queries of other users with `EditionNotSupported`.
    Standard,
    /// Everything is available.
    Ultimate,
}

/// The engine's configuration. [`Config::default`] is exactly SPEC.md's table; the field names
/// are the table's names, which traces use too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The edition (default `ultimate`).
    pub edition: Edition,
    /// The console switch "user status query and status change notification" (default on).
    pub status_feature: bool,
    /// The console switch for automatic notices to friends (default off, R5.2).
    pub friend_notifications: bool,
    /// A connected session without a heartbeat for this long is disconnected by a tick (R2.4).
    pub heartbeat_timeout_ms: u64,
    /// Sessions per user; a login beyond it kicks the oldest (R2.5).
    pub max_devices_per_user: u32,
    /// Length of a subscription list; the oldest are evicted beyond it (R4.3).
    pub max_subscriptions: u32,
    /// Targets in one subscribe or unsubscribe (R4.1).
    pub max_subscribe_batch: u32,
    /// Targets in one query of other users (R6.2).
    pub max_query_batch: u32,
    /// Accepted calls per user and API in any window (R6.3).
    pub rate_limit_calls: u32,
    /// The rate-limit window (R6.3).
    pub rate_limit_window_ms: u64,
    /// A subscriber not `ONLINE` for this long loses its whole list at the next tick (R4.5).
    pub subscription_retention_ms: u64,
    /// Bytes of UTF-8 in a custom status (R3.1).
    pub max_custom_status_bytes: u32,
    /// Bytes in a user id (R1.1).
    pub max_user_id_bytes: u32,
    /// Bytes in a device id (R1.1).
    pub max_device_id_bytes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            edition: Edition::Ultimate,
            status_feature: true,
            friend_notifications: false,
            heartbeat_timeout_ms: 400_000,
            max_devices_per_user: 10,
            max_subscriptions: 200,
            max_subscribe_batch: 100,
            max_query_batch: 500,
            rate_limit_calls: 20,
            rate_limit_window_ms: 5_000,
            subscription_retention_ms: 86_400_000,
            max_custom_status_bytes: 50,
            max_user_id_bytes: 32,
            max_device_id_bytes: 64,
        }
    }
}

impl Config {
    /// Checks every value. A zero cap, batch, limit or timeout is refused with
    /// [`Error::InvalidConfig`] naming the field; so is a size limit above
    /// [`CONFIG_LIMIT_MAX`]. `max_custom_status_bytes` may be 0 (custom statuses off).
    pub fn validate(&self) -> Result<(), Error> {
        let counts = [
            ("max_devices_per_user", self.max_devices_per_user),
            ("max_subscriptions", self.max_subscriptions),
            ("max_subscribe_batch", self.max_subscribe_batch),
            ("max_query_batch", self.max_query_batch),
            ("rate_limit_calls", self.rate_limit_calls),
            ("max_user_id_bytes", self.max_user_id_bytes),
            ("max_device_id_bytes", self.max_device_id_bytes),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be at least 1")));
            }
        }
        let limits = counts.into_iter().chain([("max_custom_status_bytes", self.max_custom_status_bytes)]);
        for (name, value) in limits {
            if value > CONFIG_LIMIT_MAX {
                return Err(Error::InvalidConfig(format!(
                    "{name} is {value}, more than the {CONFIG_LIMIT_MAX} allowed"
                )));
            }
        }
        let durations = [
            ("heartbeat_timeout_ms", self.heartbeat_timeout_ms),
            ("rate_limit_window_ms", self.rate_limit_window_ms),
            ("subscription_retention_ms", self.subscription_retention_ms),
        ];
        for (name, value) in durations {
            if value == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}
