//! The hand-over from an adapter's producer (the file reader thread, the HTTP page fetcher)
//! to the consumer's [`EntryBatches`] stream, through a bounded channel so memory stays flat
//! however long the ledger.

use futures::StreamExt;
use tokio::sync::mpsc;

use super::{EntryBatches, SourceError};
use crate::domain::Entry;

/// What a producer sends; the explicit end tells a finished ledger from a dead producer.
pub(super) enum Message {
    Batch(Vec<Entry>),
    Failed(SourceError),
    End,
}

/// The batches received on `rx`, ending after the first error. A producer that vanished
/// without [`Message::End`] must not look like a short ledger: that ends the stream with
/// `Unavailable(stopped)`.
pub(super) fn receive(rx: mpsc::Receiver<Message>, stopped: &'static str) -> EntryBatches {
    futures::stream::unfold((rx, false), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(Message::Batch(batch)) => Some((Ok(batch), (rx, false))),
            Some(Message::Failed(e)) => Some((Err(e), (rx, true))),
            Some(Message::End) => None,
            None => Some((
                Err(SourceError::Unavailable(stopped.to_owned())),
                (rx, true),
            )),
        }
    })
    .boxed()
}
