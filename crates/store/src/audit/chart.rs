//! Requests and errors per service over time, for the window's activity chart: one SQL
//! `GROUP BY` over fixed-width time buckets, densified so every service has one count per bucket.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::AuditKind;

/// Counts of one service over consecutive buckets (oldest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub struct ServiceSeries {
    /// The service (`None`: requests that named none, e.g. refused before routing).
    pub service: Option<String>,
    /// Requests per bucket.
    pub requests: Vec<u64>,
    /// Of those, answered with a status of 400 or more.
    pub errors: Vec<u64>,
}

/// Client traffic bucketed by time: `buckets` buckets of `bucket_ms` from `start_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub struct ActivityBuckets {
    /// Start of the first bucket, unix milliseconds (a multiple of `bucket_ms`).
    pub start_ms: i64,
    /// Width of a bucket in milliseconds.
    pub bucket_ms: i64,
    /// One series per service seen in the span, by name.
    pub series: Vec<ServiceSeries>,
}

/// Client traffic of the `buckets` buckets of `bucket_ms` ending with the one holding `now_ms`.
pub(super) fn buckets(
    conn: &Connection,
    now_ms: i64,
    bucket_ms: i64,
    buckets: usize,
) -> rusqlite::Result<ActivityBuckets> {
    let bucket_ms = bucket_ms.max(1);
    let count = i64::try_from(buckets.max(1)).unwrap_or(i64::MAX);
    let start_ms = (now_ms.div_euclid(bucket_ms) - (count - 1)) * bucket_ms;
    let mut stmt = conn.prepare_cached(
        "SELECT (time - ?1) / ?2 AS slot, service, count(*), sum(status >= 400) FROM audit \
         WHERE kind = ?3 AND time >= ?1 AND time < ?1 + ?2 * ?4 \
         GROUP BY slot, service ORDER BY service, slot",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![start_ms, bucket_ms, AuditKind::Client.as_str(), count],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        },
    )?;
    let mut series: Vec<ServiceSeries> = Vec::new();
    for row in rows {
        let (slot, service, requests, errors) = row?;
        let Ok(slot) = usize::try_from(slot) else {
            continue;
        };
        if series.last().is_none_or(|s| s.service != service) {
            series.push(ServiceSeries {
                service,
                requests: vec![0; buckets.max(1)],
                errors: vec![0; buckets.max(1)],
            });
        }
        if let Some(s) = series.last_mut()
            && slot < s.requests.len()
        {
            s.requests[slot] = u64::try_from(requests).unwrap_or(0);
            s.errors[slot] = u64::try_from(errors).unwrap_or(0);
        }
    }
    Ok(ActivityBuckets {
        start_ms,
        bucket_ms,
        series,
    })
}
