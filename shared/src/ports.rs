//! The I/O the handlers need, one narrow capability per trait.
//!
//! Each port has one AWS adapter in [`crate::aws`] and, where it makes handler tests simpler,
//! an in-memory implementation in [`memory`].

use std::future::Future;

use serde_json::value::RawValue;

use crate::event::StoredEvent;
use crate::record::EventRecord;

/// Whether a failure may go away on its own.
pub trait Retryable {
    /// `true` when the same request may succeed later (throttling, 5xx, timeouts, outages).
    fn is_retryable(&self) -> bool;
}

/// Why records could not be put on the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The stream kept failing until the retry budget ran out (HTTP 503 + `Retry-After`).
    #[error("event stream unavailable: {0}")]
    Unavailable(String),
    /// The stream refused the request for good: missing stream, access denied (HTTP 500).
    #[error("event stream refused the records: {0}")]
    Refused(String),
}

impl Retryable for SinkError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Puts encoded events on the event stream.
pub trait EventSink: Send + Sync {
    /// Puts every record durably on the stream, or fails; never a silent partial success.
    fn put_records(
        &self,
        records: Vec<EventRecord>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Why events could not be written to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttling, unprocessed items that stayed unprocessed, 5xx, timeouts.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Validation or access errors that repeat on retry.
    #[error("event store refused the write: {0}")]
    Refused(String),
}

impl Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// What part of a write failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    /// Indices (into the input) of events that are not known to be written.
    pub failed: Vec<usize>,
    /// The last error seen, when anything failed.
    pub error: Option<StoreError>,
}

impl WriteOutcome {
    /// Whether every event was written.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Writes events to the `events` table, idempotently: the key is (user, id) only.
pub trait EventStore: Send + Sync {
    /// Writes `events`; duplicates of one key within the input are written once, the **last**
    /// occurrence winning (callers order the input by stream sequence number).
    fn write_events(&self, events: &[StoredEvent<'_>])
    -> impl Future<Output = WriteOutcome> + Send;
}

/// A page request for a user's events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// Whose events.
    pub user_id: String,
    /// Inclusive lower bound on `timestamp`, canonical form.
    pub from: Option<String>,
    /// Inclusive upper bound on `timestamp`, canonical form.
    pub to: Option<String>,
    /// Only this event type.
    pub kind: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
}

/// One page of events.
#[derive(Debug, Default)]
pub struct EventPage {
    /// Stored events as JSON, newest first.
    pub events: Vec<Box<RawValue>>,
    /// Cursor of the next page, `None` on the last page.
    pub cursor: Option<String>,
}

/// Why events could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The cursor was not made by us for this query (HTTP 400).
    #[error("cursor is invalid")]
    InvalidCursor,
    /// The store failed (HTTP 503 when retryable, else 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads a user's events back in time order.
pub trait EventReader: Send + Sync {
    /// One page of `query`.
    fn list_events(
        &self,
        query: &EventQuery,
    ) -> impl Future<Output = Result<EventPage, ReadError>> + Send;
}

/// In-memory implementations of the ports, for fast handler tests.
pub mod memory {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::record;

    /// Collects records; can be told to fail.
    #[derive(Debug, Default)]
    pub struct MemorySink {
        /// Every record put so far.
        pub records: Mutex<Vec<EventRecord>>,
        /// When set, every call fails with this error.
        pub fail_with: Mutex<Option<SinkError>>,
    }

    impl EventSink for MemorySink {
        async fn put_records(&self, records: Vec<EventRecord>) -> Result<(), SinkError> {
            if let Some(e) = self.fail_with.lock().expect("lock").clone() {
                return Err(e);
            }
            self.records.lock().expect("lock").extend(records);
            Ok(())
        }
    }

    impl MemorySink {
        /// The decoded events put so far, as JSON values.
        pub fn events(&self) -> Vec<serde_json::Value> {
            self.records
                .lock()
                .expect("lock")
                .iter()
                .map(|r| serde_json::from_slice(&r.data).expect("sink holds JSON"))
                .collect()
        }
    }

    /// Events keyed like the `events` table: (user, id) → JSON.
    #[derive(Debug, Default)]
    pub struct MemoryStore {
        /// (user id, event id) → stored event JSON.
        pub items: Mutex<BTreeMap<(String, String), String>>,
        /// Ids (event id) whose write fails.
        pub fail_ids: Mutex<Vec<String>>,
    }

    impl EventStore for MemoryStore {
        async fn write_events(&self, events: &[StoredEvent<'_>]) -> WriteOutcome {
            let fail_ids = self.fail_ids.lock().expect("lock").clone();
            let mut outcome = WriteOutcome::default();
            let mut items = self.items.lock().expect("lock");
            for (i, e) in events.iter().enumerate() {
                if fail_ids.iter().any(|f| f == e.id.as_ref()) {
                    outcome.failed.push(i);
                    outcome.error = Some(StoreError::Unavailable("injected".into()));
                    continue;
                }
                let json = String::from_utf8(record::encode(e).data).expect("utf-8");
                items.insert((e.user_id.to_string(), e.id.to_string()), json);
            }
            outcome
        }
    }
}
