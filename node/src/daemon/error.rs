//! Why a control command failed, as one error type for every handler the
//! daemon serves ([`CommandError`]), with a stable machine-readable
//! [`code`](CommandError::code) next to the message.
//!
//! The control endpoint turns it into the reply's `error` (the message and
//! its causes in one line, by [`crate::grid::error_text`]) and `code`
//! fields. Owns the sorting of failures by what the caller can do about
//! them; it must not decide what a command does.

use crate::grid::GridError;
use crate::store::StoreError;

use super::schedule::ScheduleError;

/// A control command's failure.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request's arguments are wrong (a bad flag, a relative path, a
    /// malformed request): the message names what to fix.
    #[error("{0}")]
    BadArguments(String),
    /// What the request names does not exist (a path, a snapshot).
    #[error("{0}")]
    NotFound(String),
    /// The daemon serves no such command (client and daemon versions differ?).
    #[error("unknown control command {0:?}")]
    UnknownCommand(String),
    /// No sequence manager is known yet.
    #[error("{0}")]
    NoManager(String),
    /// The grid operation failed (manager refusal, unreachable targets, ...).
    #[error(transparent)]
    Grid(#[from] GridError),
    /// The node's packet store failed.
    #[error("{what}")]
    Store {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    /// The book of backup sets cannot be saved.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A bug or a crashed task inside the daemon.
    #[error("{0}")]
    Internal(String),
}

impl CommandError {
    /// A stable name of the failure's kind, for scripts and tests.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::BadArguments(_) => "bad_arguments",
            CommandError::NotFound(_) => "not_found",
            CommandError::UnknownCommand(_) => "unknown_command",
            CommandError::NoManager(_) | CommandError::Grid(GridError::NoManager(_)) => {
                "no_manager"
            }
            CommandError::Grid(GridError::Refused(_)) => "refused",
            CommandError::Grid(GridError::Transport(_)) => "transport",
            CommandError::Grid(GridError::Cancelled(_))
            | CommandError::Grid(GridError::Backup(
                crate::pipeline::backup::BackupError::Cancelled,
            )) => "cancelled",
            CommandError::Grid(_) => "grid",
            CommandError::Store { .. } => "store",
            CommandError::Schedule(_) => "schedule",
            CommandError::Internal(_) => "internal",
        }
    }

    /// The message and its causes in one line, as the user reads it.
    pub fn text(&self) -> String {
        crate::grid::error_text(self)
    }

    /// A blocking task that panicked or was cancelled.
    pub fn task(what: &str, err: tokio::task::JoinError) -> Self {
        CommandError::Internal(format!("{what} task failed: {err}"))
    }

    /// A result that cannot be turned into JSON (a bug).
    pub fn json(err: serde_json::Error) -> Self {
        CommandError::Internal(format!("cannot encode the answer: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sort_grid_failures_by_what_to_do() {
        let refused = CommandError::from(GridError::Refused(strew_overlay::manager::Refusal::new(
            strew_overlay::RefusalCode::Quota,
            "quota",
        )));
        assert_eq!(refused.code(), "refused");
        assert_eq!(refused.text(), "the sequence manager refused: quota");
        let none = CommandError::from(GridError::NoManager("no quorum".into()));
        assert_eq!(none.code(), "no_manager");
        assert_eq!(
            CommandError::NoManager("none known".into()).code(),
            "no_manager"
        );
        let bad = CommandError::BadArguments("--redundancy \"x\": bad".into());
        assert_eq!(bad.code(), "bad_arguments");
        assert_eq!(bad.text(), "--redundancy \"x\": bad");
        let unknown = CommandError::UnknownCommand("frob".into());
        assert_eq!(unknown.text(), "unknown control command \"frob\"");
    }

    #[test]
    fn store_failures_keep_their_cause_in_the_text() {
        let err = CommandError::Store {
            what: "cannot read store usage",
            source: StoreError::TooLarge { len: 10, max: 5 },
        };
        assert_eq!(err.code(), "store");
        assert!(
            err.text()
                .starts_with("cannot read store usage: packet of 10 bytes"),
            "{}",
            err.text()
        );
    }
}
