//! The states a session moves through, and the pure rules that pick the next one.

use serde::Serialize;

use crate::login::UserInfo;

/// Where one account's session stands. Broadcast to the UI, the tray and the proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        /// Stable code.
        code: String,
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

/// When a token issued at `issued_at` and expiring at `expires_at` should be refreshed: at
/// `fraction` (about 0.8) of its lifetime, and at least `min_margin` seconds before expiry.
pub fn refresh_due_at(issued_at: i64, expires_at: i64, fraction: f64, min_margin: i64) -> i64 {
    let lifetime = (expires_at - issued_at).max(0);
    // Lifetimes are at most a few days, far inside f64's exact integer range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let at_fraction = issued_at + (lifetime as f64 * fraction) as i64;
    at_fraction.min(expires_at - min_margin).max(issued_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_due_at_eighty_percent_of_lifetime() {
        assert_eq!(refresh_due_at(1000, 2000, 0.8, 5), 1800);
    }

    #[test]
    fn refresh_keeps_a_margin_before_expiry_for_short_tokens() {
        // 20 s lifetime: 80 % is 16 s, but a 10 s margin moves it to 10 s.
        assert_eq!(refresh_due_at(0, 20, 0.8, 10), 10);
        // Never before issue.
        assert_eq!(refresh_due_at(0, 5, 0.8, 10), 0);
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
