//! Knobs a driver may turn while a simulation runs (the browser demo's live controls),
//! beside `set_write_rate` and `set_target_bandwidth`.

use super::config::{Pattern, SimConfigError};
use super::engine::Simulation;
use crate::job::IoErrorKind;

impl Simulation {
    /// Change where the guest writes from now on (the rate stays as it is).
    pub fn set_pattern(&mut self, pattern: Pattern) -> Result<(), SimConfigError> {
        if let Pattern::HotSpot { hot_fraction, hot_share } = pattern {
            if !(hot_fraction > 0.0 && hot_fraction <= 1.0) {
                return Err(SimConfigError::Fraction { what: "hot_fraction", value: hot_fraction });
            }
            if !(0.0..=1.0).contains(&hot_share) {
                return Err(SimConfigError::Fraction { what: "hot_share", value: hot_share });
            }
        }
        self.config.guest.pattern = pattern;
        // Rebuilds the workload from the guest configuration, as a rate change does.
        self.set_write_rate(self.config.guest.write_rate_bytes_per_sec);
        Ok(())
    }

    /// Change random fault injection from now on: each job I/O issued on the source
    /// (target) fails with probability `source_rate` (`target_rate`), with `error`.
    /// Scripted faults and the fault window stay as configured.
    pub fn set_random_faults(&mut self, source_rate: f64, target_rate: f64, error: IoErrorKind) -> Result<(), SimConfigError> {
        for (what, value) in [("source_fault_rate", source_rate), ("target_fault_rate", target_rate)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimConfigError::Fraction { what, value });
            }
        }
        self.config.faults.source_rate = source_rate;
        self.config.faults.target_rate = target_rate;
        self.config.faults.random_error = Some(error);
        Ok(())
    }
}
