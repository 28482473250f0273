//! Prints when the guided scenarios' milestones happen in virtual time (a design aid for
//! the page's scenario settings): `cargo run --release -p blockmirror-wasm --example scenario_times`.
use blockmirror_core::sim::SimEventKind;
use blockmirror_wasm::demo::Demo;
use blockmirror_wasm::settings::DemoSettings;

const MIB: f64 = 1048576.0;

fn main() {
    for (name, mode, write_mib, target_mib) in [
        ("2. busy, background", "background", 160.0, 100.0),
        ("3. busy, write-blocking", "write-blocking", 160.0, 100.0),
    ] {
        for seed in 1..=5 {
            let settings = DemoSettings::parse(1024.0 * MIB, 65536.0, mode, "report", "report", seed).unwrap();
            let mut d = Demo::new(settings).unwrap();
            d.set_write_rate(write_mib * MIB).unwrap();
            d.set_target_bandwidth(target_mib * MIB).unwrap();
            let mut milestones = Vec::new();
            for _ in 0..(120_000 / 50) {
                d.run_for(50_000_000, u64::MAX);
                if d.status().as_str() == "ready" {
                    break;
                }
            }
            for e in d.events_since(0) {
                if let SimEventKind::Job(ev) = &e.kind {
                    if ev.type_name() != "JOB_STATUS_CHANGE" {
                        milestones.push(format!("{} at {:.1} s", ev.type_name(), e.time_ns as f64 / 1e9));
                    }
                }
            }
            println!("{name} seed {seed}: {} (status {} at {:.1} s)", milestones.join(", "), d.status(), d.now_ns() as f64 / 1e9);
        }
    }
}
