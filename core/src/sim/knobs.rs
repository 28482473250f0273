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

    /// Change random fault injection from now on: each job I/O issued on the source fails
    /// with probability `source_rate` and `source_error`, each on the target with
    /// `target_rate` and `target_error`. Scripted faults and the fault window stay as they are.
    pub fn set_random_faults(
        &mut self,
        source_rate: f64,
        source_error: IoErrorKind,
        target_rate: f64,
        target_error: IoErrorKind,
    ) -> Result<(), SimConfigError> {
        for (what, value) in [("source_fault_rate", source_rate), ("target_fault_rate", target_rate)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimConfigError::Fraction { what, value });
            }
        }
        let faults = &mut self.config.faults;
        faults.source_rate = source_rate;
        faults.target_rate = target_rate;
        faults.random_error = Some(source_error);
        faults.target_random_error = Some(target_error);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ErrorPolicy, Event, JobStatus, MirrorConfig};
    use crate::sim::{Goal, SimConfig, SimEventKind};

    fn sim() -> Simulation {
        let mut job = MirrorConfig::new(4 << 20);
        job.on_target_error = ErrorPolicy::Enospc;
        Simulation::new(SimConfig::new(job)).expect("valid config")
    }

    #[test]
    fn out_of_range_knobs_are_refused_and_change_nothing() {
        let mut s = sim();
        let bad = Pattern::HotSpot { hot_fraction: 0.0, hot_share: 0.5 };
        assert!(matches!(s.set_pattern(bad), Err(SimConfigError::Fraction { what: "hot_fraction", .. })));
        assert_eq!(s.config().guest.pattern, Pattern::Uniform);
        assert!(s.set_random_faults(1.5, IoErrorKind::Io, 0.0, IoErrorKind::Io).is_err());
        assert_eq!(s.config().faults.source_rate, 0.0);
        s.set_pattern(Pattern::Sequential).unwrap();
        assert_eq!(s.config().guest.pattern, Pattern::Sequential);
    }

    #[test]
    fn a_full_target_turned_on_while_running_stops_the_job() {
        let mut s = sim();
        s.set_random_faults(0.0, IoErrorKind::Io, 1.0, IoErrorKind::NoSpace).unwrap();
        s.run_until_within(Goal::Time(1_000_000_000), 100_000, 1_000_000_000);
        assert_eq!(s.job().status(), JobStatus::Paused);
        assert!(s.events().iter().any(|e| matches!(
            e.kind,
            SimEventKind::Job(Event::Error { error: IoErrorKind::NoSpace, .. })
        )));
        s.set_random_faults(0.0, IoErrorKind::Io, 0.0, IoErrorKind::NoSpace).unwrap();
        s.command(crate::sim::Command::Resume).unwrap();
        s.run_until_within(Goal::Ready, 100_000, 10_000_000_000);
        assert_eq!(s.job().status(), JobStatus::Ready);
    }

    #[test]
    fn each_side_fails_with_its_own_kind() {
        let mut job = MirrorConfig::new(64 << 20);
        job.on_source_error = ErrorPolicy::Ignore;
        job.on_target_error = ErrorPolicy::Ignore;
        let mut s = Simulation::new(SimConfig::new(job)).expect("valid config");
        s.set_random_faults(0.5, IoErrorKind::Io, 0.5, IoErrorKind::NoSpace).unwrap();
        s.run_until_within(Goal::Time(200_000_000), 100_000, 200_000_000);
        let errors: Vec<(crate::job::Operation, IoErrorKind)> = s
            .events()
            .iter()
            .filter_map(|e| match e.kind {
                SimEventKind::Job(Event::Error { operation, error, .. }) => Some((operation, error)),
                _ => None,
            })
            .collect();
        assert!(errors.contains(&(crate::job::Operation::Read, IoErrorKind::Io)), "{errors:?}");
        assert!(errors.contains(&(crate::job::Operation::Write, IoErrorKind::NoSpace)), "{errors:?}");
        assert!(errors.iter().all(|(op, error)| match op {
            crate::job::Operation::Read => *error == IoErrorKind::Io,
            _ => *error == IoErrorKind::NoSpace,
        }));
    }
}
