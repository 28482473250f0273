//! Liveness of write-blocking mode (it reaches ready under any sustained guest write rate) under guest streams that keep dirty chunks
//! busy: partial writes cycling through a few hot chunks with several writes in flight, and
//! completions in random order. READY must come while the guest keeps writing, and the
//! target must equal the source at the end.

mod support;

use blockmirror_core::job::*;
use proptest::prelude::*;
use support::Harness;

const CHUNK: u64 = 64 << 10;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn write_blocking_streams_do_not_starve_the_copy(
        queue_depth in 1usize..=4,
        write_bytes in prop_oneof![Just(512u64), Just(4096), Just(20_000)],
        hot_chunks in 1u64..=3,
        paused_at_start in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut config = Harness::config(16 * CHUNK, CHUNK);
        config.copy_mode = CopyMode::WriteBlocking;
        config.max_in_flight = 4;
        let mut h = Harness::new(config);
        if paused_at_start {
            h.job.pause().unwrap();
        }
        h.start();
        let mut rng = seed | 1;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let span = hot_chunks * CHUNK;
        let mut position = 0u64;
        let mut ready_at = None;
        for step in 0..20_000 {
            if h.job.status() == JobStatus::Ready {
                ready_at = Some(step);
                break;
            }
            if step == 50 && paused_at_start {
                h.job.resume().unwrap();
                h.drain();
            }
            // The guest keeps `queue_depth` writes unacknowledged.
            while h.job.ops().filter(|v| matches!(v.kind, OpViewKind::GuestWriting | OpViewKind::WaitingGuestWrite)).count() < queue_depth {
                let offset = position % (span - write_bytes);
                position += write_bytes;
                h.guest_write(offset, &vec![(position / 512) as u8; write_bytes as usize]);
            }
            if !h.pending.is_empty() {
                let index = (next() % h.pending.len() as u64) as usize;
                h.perform(index);
            }
        }
        prop_assert!(ready_at.is_some(), "no READY under the stream");
        h.job.complete().unwrap();
        h.drain();
        while h.job.status() != JobStatus::Concluded {
            prop_assert!(!h.pending.is_empty(), "stuck in {}", h.job.status());
            let index = (next() % h.pending.len() as u64) as usize;
            h.perform(index);
        }
        prop_assert_eq!(&h.source, &h.target);
    }
}
