//! ε and the budget left as burn-train metrics: they show in the dashboard
//! and the metric logs beside loss and accuracy.
//!
//! The DP strategy publishes the ε spent after each step it hands to
//! burn-train's event processor, in the order of its events; each metric
//! reads its own copy of that sequence, so the value logged for an
//! iteration is the ε after that iteration's step even though burn-train
//! processes events on another thread.

use burn::tensor::TensorReadError;
use burn_train::metric::state::{FormatOptions, NumericMetricState};
use burn_train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// The most values a metric's queue keeps unread.
const MAX_UNREAD: usize = 1 << 16;

/// The ε of each released step, fanned out to every metric that reads it.
#[derive(Default)]
pub(crate) struct PrivacyLog {
    readers: Mutex<Vec<Arc<Mutex<Reader>>>>,
}

#[derive(Default)]
struct Reader {
    queue: VecDeque<f64>,
    last: Option<f64>,
}

impl PrivacyLog {
    fn subscribe(&self) -> Arc<Mutex<Reader>> {
        let reader = Arc::new(Mutex::new(Reader::default()));
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(reader.clone());
        reader
    }

    /// ε after the step whose item is processed next.
    pub(crate) fn publish(&self, epsilon: f64) {
        for reader in self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let mut reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
            // A metric that is never registered is never read: keep its
            // queue bounded (a registered one is read at every step).
            if reader.queue.len() >= MAX_UNREAD {
                reader.queue.pop_front();
            }
            reader.queue.push_back(epsilon);
        }
    }
}

impl Reader {
    /// The next published ε (the last one again when an event came
    /// without a step, e.g. a validation item).
    fn next(&mut self) -> Option<f64> {
        if let Some(epsilon) = self.queue.pop_front() {
            self.last = Some(epsilon);
        }
        self.last
    }
}

/// What a privacy metric shows.
#[derive(Clone, Copy)]
enum Shown {
    Spent,
    Left(f64),
}

/// ε spent so far (at the run's δ), as a burn-train numeric metric:
/// register it with `SupervisedTraining::metric_train_numeric` (the
/// training split only: it reads the values the DP strategy publishes for
/// each training step, in order; a step whose Poisson batch was empty has
/// no item for burn-train's metrics, so its ε shows with the next one).
///
/// Get one from `DpTraining::epsilon_metric`; its input is `()`, so it
/// fits every model output.
#[derive(Clone)]
pub struct EpsilonMetric {
    name: MetricName,
    shown: Shown,
    reader: Arc<Mutex<Reader>>,
    delta: f64,
    state: NumericMetricState,
}

impl EpsilonMetric {
    pub(crate) fn spent(log: &PrivacyLog, delta: f64) -> Self {
        Self {
            name: Arc::new("Epsilon".to_string()),
            shown: Shown::Spent,
            reader: log.subscribe(),
            delta,
            state: NumericMetricState::new(),
        }
    }

    pub(crate) fn left(log: &PrivacyLog, budget: f64, delta: f64) -> Self {
        Self {
            name: Arc::new("Epsilon left".to_string()),
            shown: Shown::Left(budget),
            reader: log.subscribe(),
            delta,
            state: NumericMetricState::new(),
        }
    }

    fn format(&self) -> FormatOptions {
        FormatOptions::new(self.name.clone()).precision(3)
    }
}

impl Metric for EpsilonMetric {
    type Input = ();

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn description(&self) -> Option<String> {
        Some(match self.shown {
            Shown::Spent => format!(
                "ε spent so far by DP-SGD at δ = {:e} (the accountant's bound)",
                self.delta
            ),
            Shown::Left(budget) => format!("ε the budget of {budget} still allows"),
        })
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: matches!(self.shown, Shown::Left(_)),
        }
        .into()
    }

    fn update(
        &mut self,
        _item: &(),
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        let spent = self
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next()
            .unwrap_or(0.0);
        let value = match self.shown {
            Shown::Spent => spent,
            Shown::Left(budget) => (budget - spent).max(0.0),
        };
        // A level, not a rate: the state is reset so that the "epoch"
        // value is the latest one rather than an average over the epoch.
        self.state.reset();
        self.state.update(value, 1);
        Ok(self.state.compute_update(self.format()))
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(self.state.compute_final(self.format()))
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for EpsilonMetric {
    fn value(&self) -> Option<NumericEntry> {
        Some(self.state.current_value())
    }

    fn running_value(&self) -> Option<NumericEntry> {
        Some(self.state.running_value())
    }

    fn final_value(&self) -> NumericEntry {
        self.state.final_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataloader::Progress;

    fn meta() -> MetricMetadata {
        MetricMetadata {
            progress: Progress::new(1, 1, None),
            iteration: Some(1),
            lr: None,
        }
    }

    #[test]
    fn each_metric_reads_every_published_epsilon_in_order() {
        let log = PrivacyLog::default();
        let mut spent = EpsilonMetric::spent(&log, 1e-5);
        let mut left = EpsilonMetric::left(&log, 3.0, 1e-5);
        for e in [0.5, 1.25, 2.0] {
            log.publish(e);
        }
        for expected in [0.5, 1.25, 2.0] {
            spent.update(&(), &meta()).unwrap();
            left.update(&(), &meta()).unwrap();
            assert_eq!(spent.value().unwrap().current(), expected);
            assert_eq!(left.value().unwrap().current(), 3.0 - expected);
        }
        // An event without a step (nothing published) repeats the last ε,
        // and the epoch's value is the last ε, not an average.
        spent.update(&(), &meta()).unwrap();
        assert_eq!(spent.value().unwrap().current(), 2.0);
        assert_eq!(spent.final_value().current(), 2.0);
    }
}
