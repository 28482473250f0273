//! The readouts a page shows besides the chunks (rates and ETA, the verbs the job would
//! accept, the guest's cost, the convergence verdict), all asked of the core at one instant
//! of virtual time so that the numbers on screen agree with each other.

use crate::guest_meter::GuestCost;
use blockmirror_core::job::{JobStatus, MirrorJob, Nanos, Rates, Verb};
use blockmirror_core::sim::Simulation;

/// What the page shows besides the chunks, taken at one instant of virtual time.
#[derive(Debug, Clone, PartialEq)]
pub struct Readouts {
    /// The job's rate estimates as of the simulation's clock, not the job's: the job only
    /// learns the time when something happens to it, so while it is paused, stopped by an
    /// error or idle its own clock (and with it its sliding windows) stands still.
    pub rates: Rates,
    /// The verbs the job would accept now, in [`Verb::ALL`] order.
    pub accepted_verbs: Vec<Verb>,
    /// What mirroring costs the guest, over the last 2 s.
    pub guest: GuestCost,
    /// The core's own verdict ([`MirrorJob::is_not_converging`]): a
    /// `BLOCK_JOB_NOT_CONVERGING` episode is under way. It is asked of the same copy of the
    /// job, told the same instant, as `rates`, so before ready `rates.eta_ready_ns` is
    /// `None` whenever it holds (the core never pairs the verdict with a finite ETA). When
    /// the simulation's clock is ahead of the job's (the end of a frame between two events)
    /// an episode may begin or end here a moment before the job's next event shows it.
    pub not_converging: bool,
    /// The simulation's event count and the job's status when `accepted_verbs` was asked.
    /// What a verb's extra checks look at (a pause or cancel requested, an error winding the
    /// job down, ready reached) only changes through a command or a job event, and every one
    /// of those is recorded in the simulation's event list; so while this key holds, the
    /// answer does, and asking again (a copy of the job per verb) is skipped.
    verbs_asked_at: (usize, JobStatus),
}

impl Readouts {
    /// Takes the readouts of `sim` with the guest's cost `guest`, reusing `previous`'s verbs
    /// when nothing they depend on has happened since.
    pub(crate) fn of(sim: &Simulation, previous: Option<&Readouts>, guest: GuestCost) -> Self {
        // A copy of the job told the simulation's clock; the job itself is untouched.
        let mut job = sim.job().clone();
        job.handle_timeout(Nanos(sim.now_ns()));
        // The verbs are asked of the job as it is: a command reaches it without a clock tick.
        let key = (sim.events().len(), sim.job().status());
        let accepted_verbs = match previous {
            Some(p) if p.verbs_asked_at == key => p.accepted_verbs.clone(),
            _ => Verb::ALL.into_iter().filter(|&verb| accepts(sim.job(), verb)).collect(),
        };
        Self {
            rates: job.rates(),
            accepted_verbs,
            guest,
            not_converging: job.is_not_converging(),
            verbs_asked_at: key,
        }
    }
}

/// Whether `job` would accept `verb` now: the core's verb table, then the verb itself tried
/// on a copy of the job (the core's own extra checks, e.g. `resume` needs a pause in force),
/// so the answer is always the core's and a refused button cannot be offered.
fn accepts(job: &MirrorJob, verb: Verb) -> bool {
    if !verb.allowed_in(job.status()) {
        return false;
    }
    let mut what_if = job.clone();
    let result = match verb {
        Verb::Start => what_if.start(job.now()),
        Verb::Pause => what_if.pause(),
        Verb::Resume => what_if.resume(),
        Verb::SetSpeed => what_if.set_speed(job.config().speed_bytes_per_sec),
        Verb::Complete => what_if.complete(),
        Verb::Cancel => what_if.cancel(false),
        Verb::Dismiss => what_if.dismiss(),
        Verb::Change => what_if.set_copy_mode(job.config().copy_mode),
        // A verb newer than this page: the table's answer.
        _ => Ok(()),
    };
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use crate::demo::testing::*;
    use crate::demo::Demo;
    use crate::settings::DemoSettings;
    use blockmirror_core::job::{Event, JobStatus, Verb};
    use blockmirror_core::sim::SimEventKind;

    /// Write-blocking's price: guest writes wait for the slower target, so the guest gets
    /// far less than it asks and each write takes much longer than in background mode.
    #[test]
    fn write_blocking_costs_the_guest_throughput_and_latency() {
        let background = busy_with_readouts("background", 3_000);
        let blocking = busy_with_readouts("write-blocking", 3_000);
        let (b, w) = (background.guest_cost(), blocking.guest_cost());
        let asked = 160.0 * MIB;
        assert!(b.bytes_per_sec > 0.9 * asked, "background: the guest gets its rate: {b:?}");
        assert!(w.bytes_per_sec < 0.5 * asked, "write-blocking: the guest is held back: {w:?}");
        let (lb, lw) = (b.latency_ns.unwrap(), w.latency_ns.unwrap());
        assert!(lw > 5.0 * lb, "write-blocking latency {lw} ns against background {lb} ns");
        assert_eq!(blocking.asked_write_rate(), 160 << 20);
    }

    /// Frame by frame, as the page reads them: while NOT_CONVERGING holds no readout
    /// promises a time to ready, and write-blocking ends the verdict.
    #[test]
    fn the_not_converging_verdict_holds_until_write_blocking_takes_over() {
        let mut d = busy_with_readouts("background", 0);
        let mut frames_held = 0;
        for _ in 0..12_000 / 16 {
            d.run_for(16_000_000, 1_000_000);
            d.refresh_readouts();
            if d.not_converging() {
                frames_held += 1;
                assert_eq!(d.rates().eta_ready_ns, None, "an ETA beside the verdict at {} ns", d.now_ns());
            }
        }
        assert!(job_events(&d).contains(&"BLOCK_JOB_NOT_CONVERGING"));
        assert!(frames_held > 100, "the verdict held for {frames_held} frames");
        assert!(d.not_converging(), "the verdict holds while the backlog does not shrink fast enough");
        d.set_copy_mode("write-blocking").unwrap();
        d.refresh_readouts();
        assert!(!d.not_converging(), "write-blocking converges under any write rate");
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Ready);
    }

    /// Event by event through a busy disk until write-blocking takes over: the page's
    /// verdict is the core's at every step, turns true only at a step that emits
    /// `BLOCK_JOB_NOT_CONVERGING`, and never stands beside a finite ETA.
    #[test]
    fn the_verdict_is_the_cores_at_every_step_and_never_beside_an_eta() {
        let settings = DemoSettings::parse(64.0 * MIB, 65536.0, "background", "report", "report", 5).unwrap();
        let mut d = Demo::new(settings).unwrap();
        d.set_write_rate(160.0 * MIB).unwrap();
        d.set_target_bandwidth(100.0 * MIB).unwrap();
        let (mut steps_held, mut episodes, mut events_read, mut was) = (0u64, 0, 0, false);
        for step in 0.. {
            if steps_held == 20_000 {
                break;
            }
            assert!(d.now_ns() < 30_000_000_000, "no long not-converging episode after {step} steps");
            assert_eq!(d.step(1), 1, "a busy disk always has a next event");
            d.refresh_readouts();
            let now = d.not_converging();
            let at = format!("step {step}, {} ns", d.now_ns());
            assert_eq!(now, d.sim().job().is_not_converging(), "{at}");
            let emitted = d.events_since(events_read).iter().any(|e| {
                matches!(e.kind, SimEventKind::Job(Event::NotConverging { .. }))
            });
            events_read = d.sim().events().len() as u64;
            if now && !was {
                assert!(emitted, "the verdict turned true without the event: {at}");
                episodes += 1;
            }
            if now {
                steps_held += 1;
                assert_eq!(d.rates().eta_ready_ns, None, "an ETA beside the verdict: {at}");
            }
            was = now;
        }
        assert!(episodes >= 1);
        d.set_copy_mode("write-blocking").unwrap();
        for _ in 0..1_000 {
            d.step(1);
            d.refresh_readouts();
            assert!(!d.not_converging() && !d.sim().job().is_not_converging());
        }
    }

    /// The table allows `resume` while running and `pause` while paused; the job refuses
    /// both. The accepted verbs follow the job, and a verb they list is one it takes.
    #[test]
    fn accepted_verbs_are_what_the_job_takes_not_just_the_table() {
        let mut d = demo(64.0, "report");
        d.set_target_bandwidth(50.0 * MIB).unwrap();
        assert!(d.verb_allowed(Verb::Resume), "the table allows resume while running");
        let running = accepted(&mut d);
        assert!(running.contains(&Verb::Pause) && running.contains(&Verb::Cancel));
        assert!(!running.contains(&Verb::Resume) && !running.contains(&Verb::Complete));
        assert!(d.resume().is_err(), "and the job refuses it");
        d.pause().unwrap();
        let paused = accepted(&mut d);
        assert!(paused.contains(&Verb::Resume) && !paused.contains(&Verb::Pause));
        d.resume().unwrap();
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Ready);
        assert!(accepted(&mut d).contains(&Verb::Complete));
        d.cancel(false).unwrap();
        assert!(!accepted(&mut d).contains(&Verb::Complete), "complete after a cancel is refused");
        assert!(d.complete().is_err());
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Concluded);
        assert_eq!(accepted(&mut d), [Verb::Dismiss]);
        assert!(d.ended());
    }

    /// The job's own clock stops while it is paused with an idle guest; the readouts are
    /// taken at the simulation's clock, so the copy rate falls to zero instead of holding
    /// its last value.
    #[test]
    fn the_copy_rate_falls_to_zero_while_paused() {
        let mut d = demo(256.0, "report");
        d.set_target_bandwidth(50.0 * MIB).unwrap();
        d.run_for(1_000_000_000, u64::MAX);
        d.refresh_readouts();
        assert!(d.rates().copy_bytes_per_sec > 0);
        d.pause().unwrap();
        run_until(&mut d, 1_000, |d| d.status() == JobStatus::Paused);
        let stalled = d.sim().job().rates().copy_bytes_per_sec;
        assert!(stalled > 0, "the job last saw itself copying");
        d.run_for(3_000_000_000, u64::MAX);
        assert_eq!(d.sim().job().rates().copy_bytes_per_sec, stalled, "the job's clock stands still");
        d.refresh_readouts();
        assert_eq!(d.rates().copy_bytes_per_sec, 0);
        assert_eq!(d.status(), JobStatus::Paused, "reading the readouts changed nothing");
    }
}
