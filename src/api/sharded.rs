//! The metrics' counters and histograms, kept per thread
//! (`crate::per_thread`): a thread updates its own cell, and a scrape
//! adds the cells up.
//!
//! Why not prometheus-client's own: its counter is one atomic and its
//! histogram one lock, and the request path updates the same few series on
//! every request (the `200` series of a route, the `ok` duration of an
//! endpoint, the fuel total), so on eight cores every request would move
//! those cache lines and wait for the histogram's lock while another core
//! holds it. A scrape reads a few dozen cells more, which costs nothing
//! that matters.

use std::sync::{Mutex, MutexGuard};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Atomic;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::per_thread::{Counter, Padded, SHARDS, shard};

/// A `u64` counter's value in per-thread cells, for
/// `prometheus_client::metrics::counter::Counter<u64, ShardedU64>`
/// ([`ShardedCounter`]).
#[derive(Default)]
pub struct ShardedU64(Counter);

impl std::fmt::Debug for ShardedU64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardedU64({})", Atomic::<u64>::get(self))
    }
}

impl Atomic<u64> for ShardedU64 {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns this shard's value before the add, not the total: nothing
    /// here reads it, and the total would read every cell.
    fn inc_by(&self, v: u64) -> u64 {
        self.0.add(v)
    }

    fn get(&self) -> u64 {
        self.0.total()
    }
}

/// A counter every core adds to without contention.
pub type ShardedCounter = prometheus_client::metrics::counter::Counter<u64, ShardedU64>;

/// A classic histogram (sum, count, fixed buckets) whose observations go
/// to the observing thread's shard. Cloning shares the cells, as
/// prometheus-client's own metrics do.
#[derive(Clone)]
pub struct ShardedHistogram {
    inner: std::sync::Arc<HistogramCells>,
}

struct HistogramCells {
    /// Upper bounds, ascending; the last bucket (`+Inf`) is implied.
    bounds: Vec<f64>,
    shards: [Padded<Mutex<Tally>>; SHARDS],
}

/// One shard's observations.
#[derive(Default, Clone)]
struct Tally {
    sum: f64,
    count: u64,
    /// Per bucket, not cumulative: one more than `bounds` (the `+Inf`
    /// bucket last).
    buckets: Vec<u64>,
}

impl ShardedHistogram {
    /// A histogram with these bucket upper bounds (plus `+Inf`, always
    /// there; a bound that is not finite is dropped, as prometheus-client
    /// drops it).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.into_iter().filter(|bound| bound.is_finite()).collect();
        let empty = Tally {
            buckets: vec![0; bounds.len() + 1],
            ..Tally::default()
        };
        ShardedHistogram {
            inner: std::sync::Arc::new(HistogramCells {
                shards: std::array::from_fn(|_| Padded(Mutex::new(empty.clone()))),
                bounds,
            }),
        }
    }

    /// Records one observation of `value`.
    pub fn observe(&self, value: f64) {
        let bucket = self
            .inner
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.inner.bounds.len());
        let mut tally = lock(&self.inner.shards[shard()].0);
        tally.sum += value;
        tally.count += 1;
        tally.buckets[bucket] += 1;
    }

    /// Every shard's observations added up.
    fn total(&self) -> Tally {
        let mut total = Tally {
            buckets: vec![0; self.inner.bounds.len() + 1],
            ..Tally::default()
        };
        for shard in &self.inner.shards {
            let tally = lock(&shard.0);
            total.sum += tally.sum;
            total.count += tally.count;
            for (sum, n) in total.buckets.iter_mut().zip(&tally.buckets) {
                *sum += n;
            }
        }
        total
    }
}

/// Locks a shard, also after a panic elsewhere: a tally is plain numbers.
fn lock(mutex: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for ShardedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.total();
        f.debug_struct("ShardedHistogram")
            .field("count", &total.count)
            .field("sum", &total.sum)
            .finish()
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let total = self.total();
        let buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(total.buckets)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(total.sum, total.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    use super::*;

    /// A sharded histogram fed from several threads is exposed exactly as
    /// prometheus-client's own histogram fed the same values.
    #[test]
    fn a_sharded_histogram_encodes_as_prometheus_client_s_own() {
        let bounds = [0.001, 0.01, 0.1, 1.0];
        // Binary fractions, so that the sum is exact in any order.
        let values = [0.000_488_281_25, 0.001, 0.001_953_125, 0.0625, 0.5, 1.0, 2.0, 8.0];
        let sharded = ShardedHistogram::new(bounds);
        let plain = Histogram::new(bounds);
        std::thread::scope(|scope| {
            for chunk in values.chunks(3) {
                let sharded = &sharded;
                scope.spawn(move || chunk.iter().for_each(|v| sharded.observe(*v)));
            }
        });
        values.iter().for_each(|v| plain.observe(*v));
        let text = |metric: Box<dyn FnOnce(&mut Registry)>| {
            let mut registry = Registry::default();
            metric(&mut registry);
            let mut text = String::new();
            encode(&mut text, &registry).unwrap();
            text
        };
        let ours = text(Box::new(move |r| r.register("d", "durations", sharded)));
        let theirs = text(Box::new(move |r| r.register("d", "durations", plain)));
        assert_eq!(ours, theirs);
        assert!(ours.contains("d_count 8"), "{ours}");
    }
}
