//! What one client receives: the merchants in its read scope, narrowed by its
//! `subscribe` / `unsubscribe` messages.

use std::collections::BTreeSet;

use super::frames::{
    ErrorFrame, ErrorFrameDetail, ServerFrame, SubscribedFrame, UnsubscribedFrame, frame,
};
use crate::auth::MerchantScope;
use crate::domain::{Event, MerchantId};

/// Merchants one client's subscription, or its unsubscriptions, may hold: without a cap a
/// client of a platform admin (every merchant readable) could grow them without bound, one
/// message at a time. Far above any screen's worth of merchants.
const MAX_FILTER_MERCHANTS: usize = 1_000;

/// What one client receives: merchants in its read scope, narrowed by its messages.
pub(super) struct Filter {
    /// What the caller may read.
    pub(super) scope: MerchantScope,
    /// `None` until the first `subscribe`: every merchant in scope; then only these.
    only: Option<BTreeSet<MerchantId>>,
    /// Unsubscribed while not narrowed.
    excluded: BTreeSet<MerchantId>,
}

/// Which events a client may want, for the fan-out's index: every merchant's, or those
/// of a list (its filter has the last word on each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Interest {
    /// Every merchant's (a scope of every merchant, not narrowed).
    Every,
    /// Only these merchants' (sorted).
    Merchants(Vec<MerchantId>),
}

impl Filter {
    /// Which merchants' events the client may want.
    pub(super) fn interest(&self) -> Interest {
        match (&self.only, &self.scope) {
            (Some(only), scope) => {
                Interest::Merchants(only.iter().filter(|m| scope.contains(m)).cloned().collect())
            }
            (None, MerchantScope::Only(list)) => {
                let mut list: Vec<MerchantId> = list
                    .iter()
                    .filter(|m| !self.excluded.contains(*m))
                    .cloned()
                    .collect();
                list.sort();
                Interest::Merchants(list)
            }
            (None, MerchantScope::All) => Interest::Every,
        }
    }

    /// Every merchant in `scope`, until the client narrows the flow.
    pub(super) fn new(scope: MerchantScope) -> Self {
        Self {
            scope,
            only: None,
            excluded: BTreeSet::new(),
        }
    }

    /// Whether the client of `subject` gets `event`: a ledger's when it wants the
    /// merchant; a batch's when it is the batch's creator's or may read every merchant
    /// (SPEC §11), whatever it subscribed to.
    pub(super) fn wants_event(&self, event: &Event, subject: &str) -> bool {
        match event {
            Event::BatchProgress(b) => {
                b.created_by == subject || matches!(self.scope, MerchantScope::All)
            }
            other => other.merchant_id().is_some_and(|m| self.wants(m)),
        }
    }

    /// Whether the client gets `merchant`'s events.
    pub(super) fn wants(&self, merchant: &MerchantId) -> bool {
        self.scope.contains(merchant)
            && !self.excluded.contains(merchant)
            && self
                .only
                .as_ref()
                .is_none_or(|only| only.contains(merchant))
    }
}

/// Handles one client message and returns the answer frame.
pub(super) fn command(filter: &mut Filter, text: &str) -> String {
    let error = |code: &'static str, message: String| {
        frame(&ServerFrame::Error(ErrorFrame {
            error: ErrorFrameDetail { code, message },
        }))
    };
    let usage = || {
        error(
            "VALIDATION_ERROR",
            "expected {\"subscribe\":[merchant ids]} or {\"unsubscribe\":[merchant ids]}".into(),
        )
    };
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return usage();
    };
    let (key, list) = match object.iter().next() {
        Some((key, serde_json::Value::Array(list)))
            if object.len() == 1 && (key == "subscribe" || key == "unsubscribe") =>
        {
            (key.as_str(), list)
        }
        _ => return usage(),
    };
    let mut merchants = Vec::new();
    for (i, item) in list.iter().enumerate() {
        match item.as_str().map(MerchantId::parse) {
            Some(Ok(m)) => merchants.push(m),
            _ => {
                return error(
                    "VALIDATION_ERROR",
                    format!("{key}[{i}]: expected a merchant id"),
                );
            }
        }
    }
    let names: Vec<String> = merchants.iter().map(|m| m.as_str().to_owned()).collect();
    let too_many = |what: &str| {
        error(
            "VALIDATION_ERROR",
            format!(
                "{key}: at most {MAX_FILTER_MERCHANTS} merchants may be {what} at once; \
                 subscribe to the ones wanted instead"
            ),
        )
    };
    if key == "unsubscribe" {
        match &mut filter.only {
            Some(only) => {
                for m in &merchants {
                    only.remove(m);
                }
            }
            None => {
                // Only merchants that would be delivered need excluding: the set stays
                // within the scope (and the cap, for a scope of every merchant).
                let new: BTreeSet<&MerchantId> = merchants
                    .iter()
                    .filter(|m| filter.scope.contains(m) && !filter.excluded.contains(*m))
                    .collect();
                if filter.excluded.len() + new.len() > MAX_FILTER_MERCHANTS {
                    return too_many("unsubscribed");
                }
                filter.excluded.extend(new.into_iter().cloned());
            }
        }
        return frame(&ServerFrame::Unsubscribed(UnsubscribedFrame {
            unsubscribed: names,
        }));
    }
    let forbidden: Vec<&str> = merchants
        .iter()
        .filter(|m| !filter.scope.contains(m))
        .map(MerchantId::as_str)
        .collect();
    if !forbidden.is_empty() {
        return error(
            "FORBIDDEN",
            format!("not allowed to read {}", forbidden.join(", ")),
        );
    }
    let subscribed = filter.only.as_ref().map_or(0, BTreeSet::len);
    let new: BTreeSet<&MerchantId> = merchants
        .iter()
        .filter(|m| filter.only.as_ref().is_none_or(|only| !only.contains(*m)))
        .collect();
    if subscribed + new.len() > MAX_FILTER_MERCHANTS {
        return too_many("subscribed to");
    }
    for m in &merchants {
        filter.excluded.remove(m);
    }
    filter
        .only
        .get_or_insert_with(BTreeSet::new)
        .extend(new.into_iter().cloned());
    frame(&ServerFrame::Subscribed(SubscribedFrame {
        subscribed: names,
    }))
}
