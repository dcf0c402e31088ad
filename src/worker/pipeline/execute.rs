//! The stages of one attempt: FETCH (merchant and entry stream), GENERATE + ENCRYPT +
//! UPLOAD (streaming, the renderer on a blocking thread), the self-check, the last fenced
//! lease check, and COMPLETE.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::render::render_blocking;
use super::{JobError, PROGRESS_EVERY, Progress, Timeline, UPLOAD_QUEUE, progress_event};
use crate::crypto::Binding;
use crate::domain::ledger::stage_at;
use crate::domain::{FileInfo, Ledger, Timezone};
use crate::manifest::{Manifest, ManifestTotals};
use crate::render::DocumentHeader;
use crate::source::Window;
use crate::store::CompletedFile;
use crate::worker::Worker;

/// Runs the stages of `ledger`'s attempt; the completed ledger, or why it stopped.
pub(super) async fn execute(
    worker: &Worker,
    ledger: &Ledger,
    job: &CancellationToken,
    progress: &Arc<Progress>,
    timeline: &mut Timeline,
) -> Result<Ledger, JobError> {
    // FETCH
    let fetch_started = Instant::now();
    phase_log!(ledger, "FETCH_START");
    timeline.phase(worker, ledger, "FETCH_START", None).await?;
    progress_event(worker, ledger, "FETCH", 0, None).await;
    let merchant = worker
        .source
        .merchant(&ledger.merchant_id)
        .await
        .map_err(JobError::Fetch)?;
    let timezone: Timezone = ledger
        .requested_timezone
        .or(merchant.timezone)
        .unwrap_or(Timezone::UTC);
    let (from, to) = ledger.period.bounds(timezone);
    let stream = worker
        .source
        .entries(&ledger.merchant_id, Window { from, to })
        .await
        .map_err(JobError::Fetch)?;
    let now = Utc::now();
    let header = DocumentHeader {
        ledger_id: ledger.id,
        merchant,
        ledger_type: ledger.ledger_type,
        period: ledger.period,
        timezone,
        bounds: (from, to),
        stage: stage_at(&ledger.period, timezone, now),
        version: ledger.version,
        generated_at: now,
        opening_balances: stream.opening_balances,
    };

    // GENERATE + ENCRYPT + UPLOAD, streaming
    phase_log!(ledger, "GENERATE_START", timezone = timezone.name());
    timeline
        .phase(
            worker,
            ledger,
            "GENERATE_START",
            Some(format!("timezone {timezone}")),
        )
        .await?;
    progress_event(worker, ledger, "GENERATE", 0, None).await;
    let generate_started = Instant::now();
    let key = ledger.object_key(ledger.version, ledger.attempt_count);
    let vault = worker.vault();
    // The merchant's key (made on its first file): a root key or KMS that cannot be had
    // fails the attempt as retryable, naming the key in the log.
    let seal_key = vault
        .keys()
        .sealing(&ledger.merchant_id, ledger.attempt_count > 1)
        .await
        .map_err(|e| {
            if let crate::keys::KeyError::Unavailable { key_id, .. } = &e {
                crate::keys::count_unavailable();
                tracing::error!(target: "ledger::keys", ledger_id = %ledger.id, keyId = %key_id,
                    error = %e, "the merchant key to seal the file with is unavailable");
            }
            JobError::execution(
                "the encryption key is unavailable",
                format_args!("getting the merchant key of {}: {e}", ledger.merchant_id),
            )
        })?;
    let key_id = seal_key.current_id().to_owned();
    let mut writer = vault.upload(&key).await.map_err(|e| {
        JobError::execution(
            "storing the document failed",
            format_args!("starting the upload of {key}: {e}"),
        )
    })?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(UPLOAD_QUEUE);
    let render_task = {
        let vault = vault.clone();
        let seal_key = seal_key.clone();
        let binding = Binding {
            ledger_id: ledger.id.as_i64(),
            version: ledger.version,
        };
        let format = ledger.format;
        let header = header.clone();
        let progress = progress.clone();
        let job = job.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            render_blocking(
                &header,
                format,
                &vault,
                &seal_key,
                binding,
                stream.entries,
                tx,
                &progress,
                &job,
            )
        })
    };
    // Upload what the renderer produces while it runs; report progress meanwhile.
    let mut last_report = Instant::now();
    let mut last_rows = 0;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let upload: Result<(), JobError> = loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(bytes) => {
                    if let Err(e) = writer.write(bytes).await {
                        break Err(JobError::execution("storing the document failed", format_args!("uploading {key}: {e}")));
                    }
                }
                None => break Ok(()),
            },
            _ = tick.tick() => {
                let rows = progress.rows.load(Ordering::Relaxed);
                if rows != last_rows || last_report.elapsed() >= Duration::from_secs(1) {
                    progress_event(worker, ledger, "GENERATE", rows, None).await;
                    last_rows = rows;
                    last_report = Instant::now();
                }
            }
        }
    };
    drop(rx);
    let rendered = render_task.await.unwrap_or_else(|e| {
        Err(JobError::execution(
            "rendering the document failed",
            format_args!("the renderer crashed: {e}"),
        ))
    });
    let rendered = match (upload, rendered) {
        (Ok(()), Ok(r)) => r,
        (Err(e), _) | (Ok(()), Err(e)) => {
            writer.abort().await;
            return Err(e);
        }
    };
    metrics::histogram!("ledger_job_phase_duration_seconds", "phase" => "FETCH")
        .record(fetch_started.elapsed().as_secs_f64());
    metrics::histogram!("ledger_job_phase_duration_seconds", "phase" => "GENERATE")
        .record(generate_started.elapsed().as_secs_f64());
    let rows = rendered.source.entry_count;
    let checked: Result<(), JobError> = async {
        phase_log!(ledger, "FETCH_DONE", entries = rows);
        timeline
            .phase(
                worker,
                ledger,
                "FETCH_DONE",
                Some(format!("{rows} entries")),
            )
            .await?;
        phase_log!(
            ledger,
            "GENERATE_DONE",
            entries = rows,
            sizeBytes = rendered.sealed.size
        );
        timeline
            .phase(
                worker,
                ledger,
                "GENERATE_DONE",
                Some(format!("{} bytes", rendered.sealed.size)),
            )
            .await?;
        // Self-check before anything becomes visible: a wrong document is never stored.
        match rendered.source.difference(&rendered.written) {
            Some(diff) => Err(JobError::SelfCheck(format!(
                "self-check failed: rendered totals differ from the source ({diff})"
            ))),
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = checked {
        // Nothing of this attempt becomes visible: the upload is abandoned, not completed.
        writer.abort().await;
        return Err(e);
    }
    // Last fenced check before the upload is finished: an attempt that lost its lease (a
    // long pause) stops here. One that pauses right after it still cannot hurt: it writes
    // its own object (the key names the attempt) and its completion is refused. The check
    // is a write, so it is made only when the lease was last confirmed (claimed or renewed)
    // more than a third of the job timeout ago: before that nobody else can hold it (the
    // sweep takes back expired leases only) unless the clocks of the processes are that
    // far apart.
    let timeout = worker.settings.job_timeout;
    if progress.confirmed_since() >= timeout / 3 {
        let until = Utc::now() + chrono::Duration::from_std(timeout).unwrap_or_default();
        match worker
            .store
            .renew_lease(ledger.id, ledger.attempt_count, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                writer.abort().await;
                return Err(JobError::LeaseLost);
            }
            Err(e) => {
                writer.abort().await;
                return Err(JobError::execution(
                    "the job store did not answer",
                    format_args!("renewing the lease: {e}"),
                ));
            }
        }
    }
    progress_event(worker, ledger, "UPLOAD", rows, Some(rows)).await;
    let upload_started = Instant::now();
    writer.finish().await.map_err(|e| {
        JobError::execution(
            "storing the document failed",
            format_args!("completing the upload of {key}: {e}"),
        )
    })?;
    metrics::histogram!("ledger_job_phase_duration_seconds", "phase" => "UPLOAD")
        .record(upload_started.elapsed().as_secs_f64());
    phase_log!(ledger, "UPLOAD_DONE", objectKey = key.as_str());
    timeline.phase(worker, ledger, "UPLOAD_DONE", None).await?;

    // COMPLETE, fenced on the attempt, with the version's signed manifest. Its control
    // totals are the self-check's (the written ones equal the source's by now).
    let manifest = worker.signer.sign(&Manifest {
        iss: worker.signer.issuer().to_owned(),
        ledger_id: ledger.id.to_string(),
        merchant_id: ledger.merchant_id.to_string(),
        ledger_type: ledger.ledger_type.as_str().to_owned(),
        period: ledger.period.to_string(),
        timezone: timezone.name().to_owned(),
        format: ledger.format.as_str().to_owned(),
        stage: header.stage.as_str().to_owned(),
        version: ledger.version,
        sha256: rendered.sealed.sha256.clone(),
        size_bytes: rendered.sealed.size,
        control_totals: ManifestTotals::of(&rendered.written),
        generated_at: header
            .generated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let file = CompletedFile {
        info: FileInfo {
            version: ledger.version,
            content_type: ledger.format.content_type().into(),
            size_bytes: rendered.sealed.size,
            sha256: rendered.sealed.sha256,
            file_name: ledger.file_name(ledger.version),
            shredded_at: None,
        },
        object_key: key,
        header_sha256: rendered.sealed.header_sha256,
        manifest,
        key_id,
    };
    match worker
        .store
        .complete(
            ledger.id,
            ledger.attempt_count,
            &file,
            header.stage,
            timezone,
            Utc::now(),
            &timeline.pending,
        )
        .await
    {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(JobError::LeaseLost),
        Err(crate::store::StoreError::KeyShredded { key_id }) => Err(JobError::KeyShredded {
            key_id,
            object_key: file.object_key,
        }),
        Err(e) => Err(JobError::execution(
            "the job store did not answer",
            format_args!("recording completion: {e}"),
        )),
    }
}
