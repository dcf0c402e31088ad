//! A renderer that loses a row, for the self-check's test: armed per ledger id, so tests
//! running in parallel never see it.
use std::collections::HashSet;
use std::io::Write;
use std::sync::Mutex;

use crate::domain::{ControlTotals, Entry, LedgerId};
use crate::render::{RenderError, Renderer};

static ARMED: Mutex<Option<HashSet<LedgerId>>> = Mutex::new(None);

/// The next render of `id` silently skips its second entry.
pub fn arm(id: LedgerId) {
    ARMED
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(id);
}

pub fn wrap<W: Write + Send + 'static>(
    id: LedgerId,
    inner: Box<dyn Renderer<W>>,
) -> Box<dyn Renderer<W>> {
    let armed = ARMED
        .lock()
        .unwrap()
        .as_mut()
        .is_some_and(|set| set.remove(&id));
    if armed {
        Box::new(DropsARow { inner, seen: 0 })
    } else {
        inner
    }
}

struct DropsARow<W> {
    inner: Box<dyn Renderer<W>>,
    seen: u64,
}

impl<W: Write + Send> Renderer<W> for DropsARow<W> {
    fn entry(&mut self, entry: &Entry) -> Result<(), RenderError> {
        self.seen += 1;
        if self.seen == 2 {
            return Ok(());
        }
        self.inner.entry(entry)
    }

    fn finish(self: Box<Self>) -> Result<(ControlTotals, W), RenderError> {
        self.inner.finish()
    }
}
