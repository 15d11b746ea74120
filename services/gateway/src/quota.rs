//! Per-user upload quotas, counted in MongoDB so that every gateway replica sees the same
//! numbers: the videos' GridFS files carry their owner and upload date, and an mp3 carries the
//! id of the video it was made from.
//!
//! "In flight" is an upload stored within `in_flight_window` whose mp3 does not exist yet: it
//! ends when the converter stores the mp3, or when the window passes (the job has failed or
//! given up by then). With a jobs store this becomes "jobs of the user not in a final state".

use std::time::{Duration, SystemTime};

use anyhow::Context;
use mongodb::bson::DateTime;

use crate::config::Quotas;
use crate::error::{from_mongo, GatewayError};
use crate::state::AppState;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Seconds a user refused for uploads in flight is told to wait: conversions of small files
/// take seconds, and the client can't know which of its jobs ends first.
const IN_FLIGHT_RETRY_SECS: u64 = 30;

/// What a user has used now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub in_flight: u64,
    pub bytes_today: u64,
    /// Seconds until the oldest upload of the last 24 hours stops counting.
    pub bytes_free_in: u64,
}

/// The user's uploads in flight and bytes of the last 24 hours.
pub async fn usage(state: &AppState, username: &str, quotas: &Quotas) -> Result<Usage, GatewayError> {
    if quotas.max_in_flight == 0 && quotas.bytes_per_day == 0 {
        return Ok(Usage::default());
    }
    let now = SystemTime::now();
    let since = now - DAY.max(quotas.in_flight_window);
    let in_flight_since = DateTime::from_system_time(now - quotas.in_flight_window);
    let day_since = DateTime::from_system_time(now - DAY);
    let recent = state.videos.uploads_since(username, since).await.context("failed to read the user's uploads").map_err(from_mongo)?;

    let mut usage = Usage::default();
    let mut pending = Vec::new();
    let mut oldest_today: Option<DateTime> = None;
    for upload in &recent {
        let at = upload.at;
        if at >= day_since {
            usage.bytes_today += upload.bytes;
            oldest_today = Some(oldest_today.map_or(at, |o| o.min(at)));
        }
        if at >= in_flight_since {
            pending.push(upload.video);
        }
    }
    if !pending.is_empty() {
        let converted = state.mp3s.count_made_from(&pending).await.context("failed to count the user's mp3s").map_err(from_mongo)?;
        usage.in_flight = (pending.len() as u64).saturating_sub(converted);
    }
    if let Some(oldest) = oldest_today {
        let frees = oldest.to_system_time() + DAY;
        usage.bytes_free_in = frees.duration_since(now).map_or(1, |d| d.as_secs() + 1);
    }
    Ok(usage)
}

/// Refuses a new upload when the user is at a limit; otherwise the bytes still allowed today.
pub fn check_before(quotas: &Quotas, usage: &Usage) -> Result<u64, GatewayError> {
    if quotas.max_in_flight > 0 && usage.in_flight >= quotas.max_in_flight {
        return Err(in_flight_error(quotas));
    }
    if quotas.bytes_per_day == 0 {
        return Ok(u64::MAX);
    }
    match quotas.bytes_per_day.checked_sub(usage.bytes_today) {
        Some(left) if left > 0 => Ok(left),
        _ => Err(bytes_error(quotas, usage)),
    }
}

/// Checks the usage counted with the new upload stored: uploads that raced past
/// [`check_before`] on several replicas are refused here (both may be, never neither).
pub fn check_after(quotas: &Quotas, usage: &Usage) -> Result<(), GatewayError> {
    if quotas.max_in_flight > 0 && usage.in_flight > quotas.max_in_flight {
        return Err(in_flight_error(quotas));
    }
    if quotas.bytes_per_day > 0 && usage.bytes_today > quotas.bytes_per_day {
        return Err(bytes_error(quotas, usage));
    }
    Ok(())
}

fn in_flight_error(quotas: &Quotas) -> GatewayError {
    GatewayError::Quota {
        message: format!(
            "too many uploads in progress: at most {} of yours may wait for conversion; try again when one is done",
            quotas.max_in_flight
        ),
        retry_after: IN_FLIGHT_RETRY_SECS,
    }
}

pub fn bytes_error(quotas: &Quotas, usage: &Usage) -> GatewayError {
    GatewayError::Quota {
        message: format!("daily upload quota exceeded: at most {} bytes in 24 hours", quotas.bytes_per_day),
        retry_after: usage.bytes_free_in.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(max_in_flight: u64, bytes_per_day: u64) -> Quotas {
        Quotas { max_in_flight, bytes_per_day, in_flight_window: Duration::from_secs(3600) }
    }

    #[test]
    fn limits_before_and_after() {
        let used = Usage { in_flight: 2, bytes_today: 900, bytes_free_in: 100 };
        assert!(matches!(check_before(&q(2, 0), &used), Err(GatewayError::Quota { retry_after: 30, .. })));
        assert_eq!(check_before(&q(3, 1000), &used).unwrap(), 100);
        assert_eq!(check_before(&q(0, 0), &used).unwrap(), u64::MAX);
        assert!(matches!(check_before(&q(0, 900), &used), Err(GatewayError::Quota { retry_after: 100, .. })));
        assert!(check_after(&q(2, 900), &used).is_ok(), "the upload itself is counted: at the limit is fine");
        assert!(check_after(&q(1, 0), &used).is_err());
        assert!(check_after(&q(0, 899), &used).is_err());
    }
}
