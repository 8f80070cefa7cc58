//! The ticket state machine, pure: given a ticket's state and a requested move, allow it or say
//! why not. Time and people are arguments.

use alert_rules::Millis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// 发现: reported by a person or opened by an alarm.
    Found,
    /// 派发: has an assignee and a deadline.
    Dispatched,
    /// 整改中.
    Rectifying,
    /// 整改完成: waiting for verification.
    Rectified,
    /// 验收: someone other than the rectifier confirmed it.
    Verified,
    /// 销号: closed for good.
    Closed,
}

impl TicketState {
    pub const ALL: [TicketState; 6] = [
        TicketState::Found,
        TicketState::Dispatched,
        TicketState::Rectifying,
        TicketState::Rectified,
        TicketState::Verified,
        TicketState::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Found => "found",
            TicketState::Dispatched => "dispatched",
            TicketState::Rectifying => "rectifying",
            TicketState::Rectified => "rectified",
            TicketState::Verified => "verified",
            TicketState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<TicketState> {
        TicketState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// States a ticket may move to from this one.
    pub fn next(self) -> &'static [TicketState] {
        use TicketState::*;
        match self {
            Found => &[Dispatched],
            Dispatched => &[Rectifying, Dispatched],
            Rectifying => &[Rectified],
            // Verification can fail: back to rectifying.
            Rectified => &[Verified, Rectifying],
            Verified => &[Closed],
            Closed => &[],
        }
    }

    /// While in this state the deadline applies (work is owed).
    pub fn deadline_applies(self) -> bool {
        matches!(self, TicketState::Dispatched | TicketState::Rectifying)
    }
}

/// A requested move with who, when, why, and what dispatching needs.
#[derive(Debug, Clone)]
pub struct Move<'a> {
    pub to: TicketState,
    pub by: &'a str,
    pub at: Millis,
    pub comment: Option<&'a str>,
    pub assignee: Option<&'a str>,
    pub deadline: Option<Millis>,
}

/// Why a move was refused; the message is what the API answers with 409 (or 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    #[error("a ticket that is {from} cannot move to {to}; from {from} it can move to: {allowed}")]
    NotAllowed {
        from: &'static str,
        to: &'static str,
        allowed: String,
    },
    #[error("dispatching needs an assignee and a deadline")]
    DispatchNeedsAssignee,
    #[error("the deadline must be in the future")]
    DeadlineInPast,
    #[error("the deadline is more than ten years away (milliseconds since 1970 are expected)")]
    DeadlineTooFar,
    #[error("{0} needs a comment saying what was done or found")]
    CommentRequired(&'static str),
    #[error("the person who rectified a hazard ({0}) cannot verify it")]
    SelfVerification(String),
}

impl MoveError {
    /// A conflict with the ticket's state (409), as opposed to a bad request (400).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            MoveError::NotAllowed { .. } | MoveError::SelfVerification(_)
        )
    }
}

/// Check a move. `rectified_by` is who last moved the ticket to rectified.
pub fn check(from: TicketState, m: &Move<'_>, rectified_by: Option<&str>) -> Result<(), MoveError> {
    if !from.next().contains(&m.to) {
        let allowed = from
            .next()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(MoveError::NotAllowed {
            from: from.as_str(),
            to: m.to.as_str(),
            allowed: if allowed.is_empty() {
                "nothing (closed for good)".into()
            } else {
                allowed
            },
        });
    }
    // Ten years of rectification is no deadline: most likely microseconds sent for milliseconds.
    if m.deadline
        .is_some_and(|d| d > m.at.saturating_add(TEN_YEARS_MS))
    {
        return Err(MoveError::DeadlineTooFar);
    }
    let has_comment = m.comment.is_some_and(|c| !c.trim().is_empty());
    match m.to {
        TicketState::Dispatched => {
            if m.assignee.is_none_or(|a| a.trim().is_empty()) || m.deadline.is_none() {
                return Err(MoveError::DispatchNeedsAssignee);
            }
            if m.deadline.is_some_and(|d| d <= m.at) {
                return Err(MoveError::DeadlineInPast);
            }
        }
        TicketState::Rectified if !has_comment => {
            return Err(MoveError::CommentRequired("rectified"));
        }
        TicketState::Verified => {
            if let Some(r) = rectified_by
                && r == m.by
            {
                return Err(MoveError::SelfVerification(r.to_owned()));
            }
        }
        TicketState::Rectifying if from == TicketState::Rectified && !has_comment => {
            return Err(MoveError::CommentRequired(
                "sending a ticket back to rectifying",
            ));
        }
        _ => {}
    }
    Ok(())
}

const TEN_YEARS_MS: Millis = 3_653 * 86_400_000;

/// Overdue: a deadline passed while work is owed.
pub fn overdue(state: TicketState, deadline: Option<Millis>, now: Millis) -> bool {
    state.deadline_applies() && deadline.is_some_and(|d| d < now)
}

#[cfg(test)]
mod tests {
    use super::TicketState::*;
    use super::*;

    fn mv(to: TicketState, by: &str) -> Move<'_> {
        Move {
            to,
            by,
            at: 1_000,
            comment: Some("ok"),
            assignee: None,
            deadline: None,
        }
    }

    #[test]
    fn the_whole_life() {
        let dispatch = Move {
            assignee: Some("li"),
            deadline: Some(2_000),
            ..mv(Dispatched, "zhang")
        };
        assert_eq!(check(Found, &dispatch, None), Ok(()));
        assert_eq!(check(Dispatched, &mv(Rectifying, "li"), None), Ok(()));
        assert_eq!(check(Rectifying, &mv(Rectified, "li"), None), Ok(()));
        assert_eq!(check(Rectified, &mv(Verified, "zhang"), Some("li")), Ok(()));
        assert_eq!(check(Verified, &mv(Closed, "zhang"), Some("li")), Ok(()));
    }

    #[test]
    fn invalid_moves_are_refused_with_a_reason() {
        let e = check(Found, &mv(Closed, "x"), None).unwrap_err();
        assert!(e.is_conflict());
        assert_eq!(
            e.to_string(),
            "a ticket that is found cannot move to closed; from found it can move to: dispatched"
        );
        assert!(
            check(Closed, &mv(Found, "x"), None)
                .unwrap_err()
                .to_string()
                .contains("nothing (closed for good)")
        );
        assert_eq!(
            check(Found, &mv(Dispatched, "x"), None),
            Err(MoveError::DispatchNeedsAssignee)
        );
        let late = Move {
            assignee: Some("li"),
            deadline: Some(500),
            ..mv(Dispatched, "x")
        };
        assert_eq!(check(Found, &late, None), Err(MoveError::DeadlineInPast));
        let micros = Move {
            assignee: Some("li"),
            deadline: Some(1_767_225_600_000_000),
            ..mv(Dispatched, "x")
        };
        assert_eq!(check(Found, &micros, None), Err(MoveError::DeadlineTooFar));
        let silent = Move {
            comment: None,
            ..mv(Rectified, "li")
        };
        assert_eq!(
            check(Rectifying, &silent, None),
            Err(MoveError::CommentRequired("rectified"))
        );
        assert_eq!(
            check(Rectified, &mv(Verified, "li"), Some("li")),
            Err(MoveError::SelfVerification("li".into()))
        );
        // Failed verification goes back, with a reason.
        assert_eq!(
            check(Rectified, &mv(Rectifying, "zhang"), Some("li")),
            Ok(())
        );
    }

    #[test]
    fn overdue_only_while_work_is_owed() {
        assert!(overdue(Dispatched, Some(10), 11));
        assert!(overdue(Rectifying, Some(10), 11));
        assert!(!overdue(Rectifying, Some(10), 10));
        assert!(!overdue(Rectified, Some(10), 11));
        assert!(!overdue(Found, None, 11));
    }

    #[test]
    fn every_state_round_trips_by_name() {
        for s in TicketState::ALL {
            assert_eq!(TicketState::parse(s.as_str()), Some(s));
        }
    }
}
