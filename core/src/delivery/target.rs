//! The outbound half of a connector, as the dispatcher sees it: perform one
//! command against the connected system and say how it went, in terms the
//! dispatcher's policy understands.

use std::time::Duration;

use async_trait::async_trait;

use crate::flow::effects::{Command, CommandOp};
use crate::model::ExternalRef;

/// What one attempt is told besides the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptContext {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// An earlier attempt may have reached the target without its outcome
    /// being recorded (a crash, a lost answer, a redelivery): the connector
    /// should check whether the change is already there before repeating it.
    pub possibly_applied: bool,
}

/// A command that reached its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Performed {
    /// The target made the change. A created record carries its new id.
    Applied { created: Option<ExternalRef> },
    /// The target already had it (same idempotency key seen, or the state
    /// already equals what the command asks): nothing was changed.
    AlreadyApplied { created: Option<ExternalRef> },
}

impl Performed {
    pub fn outcome(&self) -> &'static str {
        match self {
            Performed::Applied { .. } => "applied",
            Performed::AlreadyApplied { .. } => "already_applied",
        }
    }

    pub fn created(&self) -> Option<&ExternalRef> {
        match self {
            Performed::Applied { created } | Performed::AlreadyApplied { created } => created.as_ref(),
        }
    }

    /// The result as the hub links it: a record created as a document for
    /// the deal (`CreateDeal` with `document`) is marked so, whatever the
    /// connector said, so the deal's writes never go to it.
    pub fn linked_for(mut self, command: &Command) -> Self {
        let CommandOp::CreateDeal { document: Some(record), .. } = &command.op else { return self };
        if let Performed::Applied { created: Some(created) } | Performed::AlreadyApplied { created: Some(created) } =
            &mut self
        {
            created.document = Some(record.clone());
        }
        self
    }
}

/// How a failed attempt failed; the dispatcher's policy maps each class to
/// retry, pause the target, park the deal or dead-letter the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Transient: timeouts, connection errors, 5xx, "try again".
    Retryable,
    /// The target's own limit answered (429, `QUERY_LIMIT_EXCEEDED`).
    RateLimited,
    /// Credentials refused or expired: every command to this target fails
    /// until someone fixes them.
    Auth,
    /// The command itself can never succeed (validation, not found).
    Permanent,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Retryable => "retryable",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Auth => "auth",
            FailureClass::Permanent => "permanent",
        }
    }
}

/// A failed attempt, classified by the connector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} failure: {message}", class.as_str())]
pub struct DeliveryFailure {
    pub class: FailureClass,
    /// Shown to admins; must never contain a secret.
    pub message: String,
    /// The target said when to come back (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl DeliveryFailure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into(), retry_after: None }
    }

    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }
}

/// The performing half of a connector instance.
#[async_trait]
pub trait OutboundConnector: Send + Sync {
    /// The connector kind, e.g. `http` or `bitrix24`.
    fn kind(&self) -> &'static str;

    /// Which budget a command spends: commands with the same key share one
    /// rate limit and one pause (e.g. one Bitrix24 portal).
    fn rate_key(&self, command: &Command) -> String;

    async fn perform(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure>;

    /// How many commands one call may carry ([`perform_all`]); 1 (the
    /// default) means the target takes commands one at a time.
    ///
    /// [`perform_all`]: OutboundConnector::perform_all
    fn coalesce_limit(&self) -> usize {
        1
    }

    /// Performs several commands, each of a different deal, as one call
    /// (e.g. a Bitrix24 `batch`) that spends one unit of the target's
    /// budget; at most [`coalesce_limit`] of them. Returns one result per
    /// command, in order: a command whose part of the call failed gets its
    /// own failure and is retried alone, the others are done.
    ///
    /// The default performs them one after another.
    ///
    /// [`coalesce_limit`]: OutboundConnector::coalesce_limit
    async fn perform_all(&self, commands: &[(&Command, AttemptContext)]) -> Vec<Result<Performed, DeliveryFailure>> {
        let mut results = Vec::with_capacity(commands.len());
        for (command, context) in commands {
            results.push(self.perform(command, *context).await);
        }
        results
    }
}
