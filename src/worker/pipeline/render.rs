//! The blocking side of GENERATE: entries from the source, counted into control totals and
//! rendered straight into the vault's sealer, whose ciphertext goes to the uploader.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{JobError, Progress};
use crate::crypto::Binding;
use crate::domain::ControlTotals;
use crate::render::{self, DocumentHeader};
use crate::source::EntryBatches;
use crate::vault::Vault;
use crate::vault::seal::Sealed;

/// What the blocking render thread hands back.
pub(super) struct Rendered {
    /// The control totals of the entries read from the source.
    pub(super) source: ControlTotals,
    /// The control totals of what the renderer wrote.
    pub(super) written: ControlTotals,
    /// The sealed file's digest and size.
    pub(super) sealed: Sealed,
}

/// Renders every entry of `entries` into a sealed file of `format`, sent to `tx`.
#[allow(clippy::too_many_arguments)]
pub(super) fn render_blocking(
    header: &DocumentHeader,
    format: crate::domain::Format,
    vault: &Vault,
    key: &crate::crypto::Keyring,
    binding: Binding,
    mut entries: EntryBatches,
    tx: mpsc::Sender<Bytes>,
    progress: &Progress,
    job: &CancellationToken,
) -> Result<Rendered, JobError> {
    let exec = |e: &dyn std::fmt::Display| JobError::execution("rendering the document failed", e);
    let sealer = vault.sealer(key, binding, tx).map_err(|e| exec(&e))?;
    let renderer = render::renderer(header, format, sealer).map_err(|e| exec(&e))?;
    #[cfg(test)]
    let renderer = super::faulty::wrap(header.ledger_id, renderer);
    let mut renderer = renderer;
    let mut source = ControlTotals::with_opening(&header.opening_balances);
    let handle = tokio::runtime::Handle::current();
    while let Some(batch) = handle.block_on(entries.next()) {
        if job.is_cancelled() {
            return Err(JobError::Stopped);
        }
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return Err(JobError::Fetch(e)),
        };
        for entry in &batch {
            source.add(entry.currency, entry.amount);
            renderer.entry(entry).map_err(|e| match e {
                render::RenderError::TooLarge(m) => JobError::Unrenderable(m),
                other => exec(&other),
            })?;
        }
        progress
            .rows
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    let (written, sealer) = renderer.finish().map_err(|e| exec(&e))?;
    let sealed = sealer.finish().map_err(|e| exec(&e))?;
    Ok(Rendered {
        source,
        written,
        sealed,
    })
}
