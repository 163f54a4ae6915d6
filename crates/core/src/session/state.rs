//! The states a session moves through, and the pure rules that pick the next one.

use serde::{Deserialize, Serialize};

use crate::Code;
use crate::login::UserInfo;

/// Where one account's session stands. Broadcast to the UI, the tray and the proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionState {
    /// Nobody is logged in.
    LoggedOut,
    /// A login is waiting for the identity provider's callback.
    LoggingIn,
    /// Logged in; the access token is valid until `expires_at` (unix seconds).
    Active {
        /// Who is logged in.
        user: UserInfo,
        /// Access token expiry, unix seconds.
        expires_at: i64,
        /// When the access token was issued, unix seconds.
        issued_at: i64,
        /// A refresh token is held, so the session is renewed before `expires_at`. When false
        /// (the provider granted none), the session ends at `expires_at` and needs a new login.
        renewable: bool,
    },
    /// A refresh is in flight; the current token is still valid until `expires_at`.
    Refreshing {
        /// Who is logged in.
        user: UserInfo,
        /// Current access token expiry, unix seconds.
        expires_at: i64,
    },
    /// The session ended and needs a new login.
    Expired {
        /// Who was logged in, when known.
        user: Option<UserInfo>,
        /// Why, for a person.
        reason: String,
    },
    /// Something needs attention (keychain locked, identity provider unreachable).
    Error {
        /// What to match on.
        code: Code,
        /// What to do, for a person.
        message: String,
    },
}

impl SessionState {
    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&UserInfo> {
        match self {
            Self::Active { user, .. } | Self::Refreshing { user, .. } => Some(user),
            Self::Expired { user, .. } => user.as_ref(),
            _ => None,
        }
    }

    /// Access-token expiry while a session is usable.
    pub fn expires_at(&self) -> Option<i64> {
        match self {
            Self::Active { expires_at, .. } | Self::Refreshing { expires_at, .. } => {
                Some(*expires_at)
            }
            _ => None,
        }
    }

    /// True while requests can be served with this session.
    pub fn is_usable(&self) -> bool {
        matches!(self, Self::Active { .. } | Self::Refreshing { .. })
    }
}

/// A run of failed refreshes of a session that was kept (the provider unreachable or silent, a
/// refused token request, the keychain failing to store the new tokens): what the tray announces
/// once and the window shows, until a refresh succeeds or the session ends. A refresh the
/// provider answers with "this session is over" is not one: the session ends instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RefreshFailure {
    /// What to match on (`idp_unreachable`, `idp_timeout`, `token_request_failed`, ...).
    pub code: Code,
    /// The latest failure, for a person (no token, no URL query).
    pub message: String,
    /// When the first failure of this run happened, unix seconds: one run, one notice.
    pub since: i64,
    /// When the latest one happened, unix seconds.
    pub at: i64,
    /// How many refreshes in a row failed.
    pub attempts: u32,
}

impl RefreshFailure {
    /// The run after one more failure at `now`: a new run when there was none, else the same run
    /// (its `since` kept) with the latest code and message.
    pub fn after(previous: Option<&Self>, code: Code, message: String, now: i64) -> Self {
        Self {
            code,
            message,
            since: previous.map_or(now, |p| p.since),
            at: now,
            attempts: previous.map_or(1, |p| p.attempts.saturating_add(1)),
        }
    }
}

/// The longest a refresh is held back after the token it replaces was issued: a token that
/// lives less than `min_margin` would otherwise be due the moment it arrives, and every refresh
/// would be followed at once by the next.
pub const MIN_REFRESH_INTERVAL_SECONDS: i64 = 5;

/// The least time between two background refreshes, whatever the token's lifetime (a provider
/// that hands out tokens already expired is not asked back-to-back).
pub const MIN_REFRESH_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// When a token issued at `issued_at` and expiring at `expires_at` should be refreshed: at
/// `fraction` (about 0.8) of its lifetime, and at least `min_margin` seconds before expiry — but
/// never sooner than half its lifetime (at most [`MIN_REFRESH_INTERVAL_SECONDS`]) after it was
/// issued, so each refresh buys time before the next one.
pub fn refresh_due_at(issued_at: i64, expires_at: i64, fraction: f64, min_margin: i64) -> i64 {
    let lifetime = (expires_at - issued_at).max(0);
    // Lifetimes are at most a few days, far inside f64's exact integer range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let at_fraction = issued_at + (lifetime as f64 * fraction) as i64;
    let floor = MIN_REFRESH_INTERVAL_SECONDS.min((lifetime + 1) / 2);
    at_fraction
        .min(expires_at - min_margin)
        .max(issued_at + floor)
}

/// How long the background refresher waits: until the refresh is due (`due_in`), and at least
/// [`MIN_REFRESH_GAP`] after its last attempt (`since_last`, `None` before the first), or the
/// failure backoff when the last attempt failed.
pub fn refresher_wait(
    due_in: std::time::Duration,
    since_last: Option<std::time::Duration>,
    backoff: Option<std::time::Duration>,
) -> std::time::Duration {
    let Some(since_last) = since_last else {
        return due_in;
    };
    let gap = backoff.unwrap_or(MIN_REFRESH_GAP).max(MIN_REFRESH_GAP);
    due_in.max(gap.saturating_sub(since_last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_refreshes_in_a_row_are_one_run_that_keeps_its_start() {
        let first = RefreshFailure::after(None, Code::IdpUnreachable, "down".into(), 100);
        assert_eq!((first.since, first.at, first.attempts), (100, 100, 1));
        let second = RefreshFailure::after(Some(&first), Code::IdpTimeout, "silent".into(), 160);
        assert_eq!(
            (second.since, second.at, second.attempts),
            (100, 160, 2),
            "a retry is not a new run"
        );
        assert_eq!(
            (second.code, second.message.as_str()),
            (Code::IdpTimeout, "silent"),
            "the latest failure is the one shown"
        );
    }

    #[test]
    fn refresh_is_due_at_eighty_percent_of_lifetime() {
        assert_eq!(refresh_due_at(1000, 2000, 0.8, 5), 1800);
    }

    #[test]
    fn refresh_keeps_a_margin_before_expiry_for_short_tokens() {
        // 20 s lifetime: 80 % is 16 s, but a 10 s margin moves it to 10 s.
        assert_eq!(refresh_due_at(0, 20, 0.8, 10), 10);
        // 12 s: the margin would say 2 s; a refresh waits at least 5 s.
        assert_eq!(refresh_due_at(0, 12, 0.8, 10), 5);
    }

    #[test]
    fn a_token_shorter_than_the_margin_is_not_due_the_moment_it_arrives() {
        // 5 s lifetime: the margin would make it due at issue, so every refresh would be followed
        // at once by the next; it is due half-way instead.
        assert_eq!(refresh_due_at(100, 105, 0.8, 10), 103);
        assert_eq!(refresh_due_at(100, 102, 0.8, 10), 101);
        // Each refresh of a short token buys time: over a minute, a 2 s token refreshes at most
        // once a second.
        let mut issued = 0;
        let mut refreshes = 0;
        while issued < 60 {
            issued = refresh_due_at(issued, issued + 2, 0.8, 10);
            refreshes += 1;
        }
        assert!(refreshes <= 60, "{refreshes} refreshes in 60 s");
        // Long tokens keep the 80 % rule.
        assert_eq!(refresh_due_at(0, 3600, 0.8, 10), 2880);
    }

    #[test]
    fn the_refresher_waits_a_gap_after_each_attempt_and_backs_off_after_failures() {
        use std::time::Duration as D;
        // First run: at the due time.
        assert_eq!(refresher_wait(D::ZERO, None, None), D::ZERO);
        // Due already (a token that arrived expired): not back-to-back.
        assert_eq!(
            refresher_wait(D::ZERO, Some(D::from_millis(200)), None),
            D::from_millis(800)
        );
        // After a failure, the backoff.
        assert_eq!(
            refresher_wait(D::ZERO, Some(D::ZERO), Some(D::from_secs(8))),
            D::from_secs(8)
        );
        // A later due time wins.
        assert_eq!(
            refresher_wait(D::from_secs(30), Some(D::ZERO), None),
            D::from_secs(30)
        );
    }

    #[test]
    fn an_active_state_says_whether_it_can_be_renewed() {
        let s = SessionState::Active {
            user: UserInfo {
                subject: "alice".into(),
                name: None,
                email: None,
            },
            expires_at: 2000,
            issued_at: 1000,
            renewable: false,
        };
        let json = serde_json::to_value(&s).expect("serialise");
        assert_eq!(json["kind"], "active");
        assert_eq!(
            json["renewable"], false,
            "the UI and `latchkey status` read it"
        );
        assert_eq!(json["expires_at"], 2000, "and when it ends");
    }

    #[test]
    fn state_serialises_with_a_kind_tag() {
        let s = SessionState::Expired {
            user: None,
            reason: "log in again".into(),
        };
        let json = serde_json::to_value(&s).expect("serialise");
        assert_eq!(json["kind"], "expired");
        assert_eq!(json["reason"], "log in again");
    }
}
