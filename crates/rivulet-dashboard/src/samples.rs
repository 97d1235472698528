//! Recent backlog samples for the overview's sparklines: a bounded ring buffer per
//! topic or queue, filled when the overview (or its live fragment) is rendered, at most
//! one sample per [`EVERY_MS`] per name.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Samples kept per name.
pub(crate) const KEEP: usize = 60;
/// Names kept at most (the least recently sampled goes first).
const MAX_NAMES: usize = 2_000;
/// The least time between two samples of one name.
const EVERY_MS: u64 = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Samples {
    inner: Mutex<HashMap<String, (u64, VecDeque<u64>)>>,
}

impl Samples {
    /// Records `value` for `key` at `now_ms` (unless sampled less than 10 s ago) and
    /// returns the samples, oldest first.
    pub(crate) fn record(&self, key: &str, value: u64, now_ms: u64) -> Vec<u64> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key)
            && map.len() >= MAX_NAMES
            && let Some(oldest) = map.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let entry = map
            .entry(key.to_owned())
            .or_insert_with(|| (0, VecDeque::with_capacity(KEEP)));
        if entry.1.is_empty() || now_ms.saturating_sub(entry.0) >= EVERY_MS {
            if entry.1.len() == KEEP {
                entry.1.pop_front();
            }
            entry.1.push_back(value);
            entry.0 = now_ms;
        } else if let Some(last) = entry.1.back_mut() {
            *last = value;
        }
        entry.1.iter().copied().collect()
    }
}

/// An SVG polyline's points for `values` in a 100×20 box.
pub(crate) fn sparkline(values: &[u64]) -> String {
    if values.is_empty() {
        return String::new();
    }
    if values.len() == 1 {
        return sparkline(&[values[0], values[0]]);
    }
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        100.0 / (values.len() - 1) as f64
    } else {
        0.0
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                19.0 - (*v as f64 / max) * 18.0
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_is_bounded_and_spaced() {
        let s = Samples::default();
        for i in 0..100u64 {
            s.record("t", i, i * EVERY_MS);
        }
        let v = s.record("t", 7, 100 * EVERY_MS + 1);
        assert_eq!(v.len(), KEEP);
        assert_eq!(v.last(), Some(&7));
        // Within 10 s the last sample is updated, not appended.
        let w = s.record("t", 9, 100 * EVERY_MS + 2);
        assert_eq!(w.len(), KEEP);
        assert_eq!(w.last(), Some(&9));
        assert_eq!(sparkline(&[0, 10]), "0.0,19.0 100.0,1.0");
    }
}
