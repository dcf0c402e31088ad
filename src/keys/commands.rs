//! The operator commands of the key lifecycle: `ledger keys status`, `ledger keys rewrap`,
//! `ledger keys audit` and `ledger merchant shred`. Each prints what it found or did on
//! stdout; progress goes to stderr.

use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Keys;
use super::rewrap::{self, Pass, Progress, RewrapError, Summary};
use crate::domain::MerchantId;
use crate::store::keys::{KeyCounts, ShredError};
use crate::vault::Vault;
use crate::{errln, outln};

/// Files re-sealed at once by `ledger keys rewrap`.
pub const REWRAP_CONCURRENCY: usize = 8;

/// Which keys the process is configured with, for the status's verdicts: the root ids of
/// the configured local keys (current first) and of the KMS key, if any.
fn configured(keys: &Keys) -> Vec<String> {
    let mut ids: Vec<String> = keys
        .local()
        .map(|k| k.ids())
        .unwrap_or_default()
        .into_iter()
        .map(|id| format!("{}{id}", super::LOCAL_PREFIX))
        .collect();
    let current = keys.root().current_id();
    if !ids.contains(&current) {
        ids.insert(0, current);
    }
    ids
}

/// The lines of `ledger keys status`; `secrets` counts webhook secrets by the id of the
/// key that seals them.
pub fn status_lines(
    keys: &Keys,
    counts: &KeyCounts,
    secrets: &std::collections::BTreeMap<String, u64>,
) -> Vec<String> {
    let current = keys.root().current_id();
    let mut out = vec![format!("root key: {current} (wraps new merchant keys)")];
    out.push(format!(
        "{:<48} {:>14} {:>13} {:>12}",
        "root key", "merchant keys", "service keys", "files"
    ));
    for r in &counts.roots {
        out.push(format!(
            "{:<48} {:>14} {:>13} {:>12}",
            r.root_key_id, r.merchant_keys, r.service_keys, r.files
        ));
    }
    out.push(format!(
        "files sealed by a local master key directly (format 1): {}",
        counts.root_sealed_files
    ));
    out.push(format!(
        "shredded: {} merchant key(s), {} file(s)",
        counts.shredded_keys, counts.shredded_files
    ));
    let sealed: Vec<String> = secrets
        .iter()
        .map(|(id, n)| format!("{n} by {id}"))
        .collect();
    out.push(format!(
        "webhook secrets: {}",
        if sealed.is_empty() {
            "none".to_owned()
        } else {
            sealed.join(", ")
        }
    ));
    for id in configured(keys) {
        if id == current {
            continue;
        }
        let share = counts.roots.iter().find(|r| r.root_key_id == id);
        let keys_under = share.map_or(0, |r| r.merchant_keys + r.service_keys);
        let is_local = id.starts_with(super::LOCAL_PREFIX);
        let secrets_under = id
            .strip_prefix(super::LOCAL_PREFIX)
            .and_then(|local| secrets.get(local))
            .copied()
            .unwrap_or(0);
        let verdict = if keys_under > 0 {
            format!("still wraps {keys_under} key(s): run `ledger keys rewrap` before removing it")
        } else if secrets_under > 0 {
            format!(
                "still seals {secrets_under} webhook secret(s): run `ledger keys rewrap` before removing it"
            )
        } else if is_local && counts.root_sealed_files > 0 {
            format!(
                "may still seal some of the {} format-1 file(s): run `ledger keys rewrap` before removing it",
                counts.root_sealed_files
            )
        } else {
            "protects nothing any more: it may be removed".to_owned()
        };
        out.push(format!("old key {id}: {verdict}"));
    }
    out
}

/// `ledger keys status`: which root key protects what, and which old key may go.
pub async fn status(keys: &Keys) -> anyhow::Result<()> {
    let counts = keys.store().key_counts().await?;
    let mut secrets = std::collections::BTreeMap::new();
    let mut after = None;
    loop {
        let page = keys.store().sealed_secrets(after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.webhook_id);
        for s in &page {
            for text in std::iter::once(&s.secret).chain(s.previous.as_ref()) {
                let id = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                    .ok()
                    .and_then(|b| crate::crypto::peek_header(&b))
                    .map_or_else(|| "an unreadable header".to_owned(), |(_, id)| id);
                *secrets.entry(id).or_insert(0) += 1;
            }
        }
    }
    for line in status_lines(keys, &counts, &secrets) {
        outln!("{line}")?;
    }
    Ok(())
}

/// The progress display of a rewrap: a bar on a terminal, a line every few seconds
/// elsewhere.
struct Display {
    bar: ProgressBar,
    printed_at: std::sync::Mutex<Option<Instant>>,
}

impl Display {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if !bar.is_hidden() {
            let style = ProgressStyle::with_template(
                "{elapsed:>4} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({per_sec})",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
        }
        Self {
            bar,
            printed_at: std::sync::Mutex::new(None),
        }
    }

    fn show(&self, p: Progress) {
        let what = match p.pass {
            Pass::Keys => "merchant keys re-wrapped",
            Pass::Files => "format-1 files re-sealed",
        };
        if self.bar.is_hidden() {
            let mut printed = self.printed_at.lock().unwrap_or_else(|e| e.into_inner());
            let due = printed.is_none_or(|at| at.elapsed() >= Duration::from_secs(5));
            if due || p.handled == p.total {
                *printed = Some(Instant::now());
                errln!("rewrap: {what}: {}/{}", p.handled, p.total);
            }
        } else {
            self.bar.set_length(p.total);
            self.bar.set_position(p.handled);
            self.bar.set_message(what);
        }
    }
}

/// The lines of a rewrap's summary.
pub fn summary_lines(s: &Summary) -> Vec<String> {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let mut out = vec![
        format!("rewrap: everything is under {}", s.root),
        format!(
            "  keys re-wrapped (merchant and service keys): {} ({} changed meanwhile by another process)",
            s.keys_rewrapped, s.keys_raced
        ),
        format!("  webhook secrets re-sealed: {}", s.secrets_resealed),
        format!(
            "  format-1 files re-sealed: {} ({} MiB, {:.1} files/s; {} re-sealed or shredded meanwhile)",
            s.files_resealed,
            s.bytes_resealed / (1024 * 1024),
            s.files_resealed as f64 / secs,
            s.files_raced
        ),
        format!("  took {:.1} s", secs),
    ];
    if !s.failures.is_empty() {
        out[0] = format!(
            "rewrap: {} item(s) failed and are still under an old key; run again once the cause is fixed",
            s.failures.len()
        );
        for f in &s.failures {
            out.push(format!("  failed: {f}"));
        }
    }
    out
}

/// `ledger keys rewrap`: everything under the current root. Fails (non-zero exit) when an
/// item could not be done; a later run takes up what is left.
pub async fn run_rewrap(vault: &Vault) -> anyhow::Result<()> {
    let display = Display::new();
    let result = rewrap::rewrap(vault, REWRAP_CONCURRENCY, &|p| display.show(p)).await;
    display.bar.finish_and_clear();
    let summary = match result {
        Ok(s) => s,
        Err(e @ RewrapError::Busy { .. }) => anyhow::bail!("{e}"),
        Err(e) => return Err(e.into()),
    };
    for line in summary_lines(&summary) {
        outln!("{line}")?;
    }
    if !summary.complete() {
        anyhow::bail!("{} item(s) failed", summary.failures.len());
    }
    Ok(())
}

/// `ledger merchant shred MERCHANT --confirm --actor WHO`.
pub async fn shred(keys: &Keys, merchant: &str, confirm: bool, actor: &str) -> anyhow::Result<()> {
    let merchant = MerchantId::parse(merchant).map_err(|e| anyhow::anyhow!("MERCHANT: {e}"))?;
    if !confirm {
        anyhow::bail!(
            "shredding destroys {merchant}'s key: every file of the merchant becomes unreadable, \
             for good (backups of the job store keep the wrapped key until they expire). Run \
             again with --confirm"
        );
    }
    match keys
        .store()
        .shred_merchant(&merchant, actor, Utc::now())
        .await
    {
        Ok(done) => {
            keys.forget();
            if done.keys == 0 {
                outln!(
                    "{merchant} has no live key: nothing to shred (the audit log records the attempt)"
                )?;
            } else {
                outln!(
                    "shredded {merchant}: {} key(s) destroyed, {} file(s) unreadable; recorded as done by {actor}",
                    done.keys,
                    done.files
                )?;
            }
            Ok(())
        }
        Err(e @ ShredError::RootSealed(_)) => anyhow::bail!("{e}"),
        Err(ShredError::Store(e)) => Err(e.into()),
    }
}

/// `ledger keys audit [--merchant M]`: the key audit log, newest first.
pub async fn audit(keys: &Keys, merchant: Option<&str>, limit: u32) -> anyhow::Result<()> {
    let merchant = merchant
        .map(MerchantId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--merchant: {e}"))?;
    for r in keys.store().audit_log(merchant.as_ref(), limit).await? {
        outln!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            r.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            r.action,
            r.actor,
            r.merchant_id.as_deref().unwrap_or("-"),
            r.key_id.as_deref().unwrap_or("-"),
            r.detail
        )?;
    }
    Ok(())
}
