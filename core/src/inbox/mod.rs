//! The inbox: accept fast, persist first.
//!
//! A webhook is answered 202 only after its raw request is committed. The
//! `GroupCommitter` makes that cheap: concurrent requests queue their events
//! and one transaction commits all that are waiting, so a thousand webhooks
//! cost a handful of fsyncs instead of a thousand.

mod group_commit;

pub use group_commit::{GroupCommitter, InboxError, InboxLoad, InboxOptions};
