//! The SQL of a status change, built from the domain's transition table
//! ([`Action::transitions`]), so [`crate::domain::Status::apply`] stays the one place that
//! decides which change is legal: the store only turns its answer into a `SET` and a guard.

use crate::domain::Action;

/// A status change by one action, as SQL over the `ledgers` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// `status = …`: the status the action leads to (a `CASE` when it depends on the
    /// current one).
    pub set: String,
    /// `status IN (…)`: only rows in a status the action is allowed from (never true when
    /// there is none).
    pub guard: String,
}

/// The SQL of `action`. Status names are the domain's fixed wire names, never input, so
/// they are spliced into the statement rather than bound.
pub fn transition(action: Action) -> Transition {
    let pairs = action.transitions();
    let quoted = |s: crate::domain::Status| format!("'{}'", s.as_str());
    let guard = if pairs.is_empty() {
        "1 = 0".to_owned()
    } else {
        let from: Vec<String> = pairs.iter().map(|&(from, _)| quoted(from)).collect();
        format!("status IN ({})", from.join(", "))
    };
    let set = match pairs.as_slice() {
        [] => "status = status".to_owned(),
        [(_, to), rest @ ..] if rest.iter().all(|(_, t)| t == to) => {
            format!("status = {}", quoted(*to))
        }
        _ => {
            let arms: Vec<String> = pairs
                .iter()
                .map(|&(from, to)| format!("WHEN {} THEN {}", quoted(from), quoted(to)))
                .collect();
            format!("status = CASE status {} END", arms.join(" "))
        }
    };
    Transition { set, guard }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Stage, Status};

    /// The statuses a guard admits, read back from its SQL.
    fn admitted(guard: &str) -> Vec<Status> {
        Status::ALL
            .iter()
            .copied()
            .filter(|s| guard.contains(&format!("'{}'", s.as_str())))
            .collect()
    }

    #[test]
    fn the_worker_guards_are_the_transition_table() {
        let claim = transition(Action::Claim);
        assert_eq!(claim.guard, "status IN ('PENDING')");
        assert_eq!(claim.set, "status = 'PROCESSING'");
        for action in [
            Action::Complete,
            Action::Fail,
            Action::Release,
            Action::Renew,
            Action::Requeue,
            Action::Abandon,
        ] {
            assert_eq!(transition(action).guard, "status IN ('PROCESSING')");
        }
        assert_eq!(transition(Action::Complete).set, "status = 'COMPLETED'");
        assert_eq!(transition(Action::Fail).set, "status = 'REJECTED'");
        assert_eq!(transition(Action::Release).set, "status = 'PENDING'");
        assert_eq!(transition(Action::Requeue).set, "status = 'PENDING'");
        assert_eq!(transition(Action::Abandon).set, "status = 'REJECTED'");
        assert_eq!(transition(Action::EnqueueFailed).set, "status = 'REJECTED'");
        assert_eq!(transition(Action::Redeliver).guard, "status IN ('PENDING')");
    }

    #[test]
    fn every_guard_admits_exactly_the_statuses_apply_allows_at_every_stage() {
        for &action in Action::ALL {
            let expected: Vec<Status> = Status::ALL
                .iter()
                .copied()
                .filter(|s| Stage::ALL.iter().all(|&st| s.apply(action, st).is_ok()))
                .collect();
            assert_eq!(admitted(&transition(action).guard), expected, "{action:?}");
        }
    }

    #[test]
    fn a_change_that_depends_on_the_status_is_a_case() {
        assert_eq!(
            transition(Action::Delete).set,
            "status = CASE status WHEN 'COMPLETED' THEN 'COMPLETED' \
             WHEN 'REJECTED' THEN 'REJECTED' END"
        );
        assert_eq!(transition(Action::Regenerate).guard, "1 = 0");
    }
}
