//! chrony's simulation scenarios, run against the daemon's code with chrony's bounds.
//! Each is run with three seeds; the figures are printed (`--nocapture`) for the docs.

use super::{Bounds, Network, Scenario, Server, Sim, run_seeds};
use crate::config::refclocks::first_refclock as refclock_line;
use crate::{config::SyncConfig, engine::SourceOptions, poller::PollOptions};

const SEEDS: &[u64] = &[1, 2, 3];

fn opts(minpoll: i8, maxpoll: i8, iburst: bool) -> SourceOptions {
    SourceOptions {
        poll: PollOptions {
            minpoll,
            maxpoll,
            iburst,
            polltarget: 8,
        },
        ..SourceOptions::default()
    }
}

fn makestep(threshold: f64, limit: i32) -> SyncConfig {
    SyncConfig {
        makestep: Some((threshold, limit)),
        ..SyncConfig::default()
    }
}

#[test]
fn defaults() {
    // chrony's 001-defaults: 0.1 s and 100 ppm off, one server, minpoll 6.
    run_seeds(
        "001-defaults",
        &Scenario::default(),
        SEEDS,
        &Bounds::default(),
    );
}

#[test]
fn iburst_fast_start() {
    // The first scenario: iburst, minpoll 4 maxpoll 6, makestep 0.01 1, 100 µs
    // delay with 10 µs exponential jitter. chronyd 4.3: synced in 5 s, RMS 5.5 µs, max 14 µs.
    let sc = Scenario {
        servers: vec![Server::good(opts(4, 6, true))],
        net: Network {
            jitter: 1e-5,
            ..Network::default()
        },
        sync: makestep(0.01, 1),
        limit: 3600.0,
        ..Scenario::default()
    };
    let b = Bounds {
        min_sync: 2.0,
        max_sync: 20.0,
        time_max: 5e-5,
        time_rms: 1e-5,
        ..Bounds::default()
    };
    run_seeds("fast-start", &sc, SEEDS, &b);
}

#[test]
fn the_served_time_is_exact_across_slews() {
    // What a client of this server receives: the system clock plus the correction the
    // reply carries. A slew changing rate must not move it (the outside simulator saw
    // 0.5 ms jumps there before the offset register), and after the fast start it stays
    // within the bounds the clock itself meets (chronyd's served time: 14 µs at most).
    let sc = Scenario {
        servers: vec![Server::good(opts(4, 6, true))],
        net: Network {
            jitter: 1e-5,
            ..Network::default()
        },
        sync: makestep(0.01, 1),
        limit: 1800.0,
        ..Scenario::default()
    };
    for &seed in SEEDS {
        let t = Sim::new(Scenario { seed, ..sc.clone() }).run();
        assert!(
            t.served_across_ticks.len() >= 3,
            "{}",
            t.served_across_ticks.len()
        );
        let jump = t
            .served_across_ticks
            .iter()
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        let window = &t.served[20..];
        let max = window.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let rms = (window.iter().map(|x| x * x).sum::<f64>() / window.len() as f64).sqrt();
        println!(
            "served seed {seed}: jump at slew changes {jump:.1e} s, max {max:.2e} s, RMS {rms:.2e} s"
        );
        assert!(
            jump < 1e-8,
            "seed {seed}: the served time jumped {jump} s at a slew change"
        );
        assert!(
            max < 5e-5 && rms < 1e-5,
            "seed {seed}: max {max}, RMS {rms}"
        );
    }
}

#[test]
fn log_lines_carry_chronys_signs() {
    // The client starts 0.1 s fast and 100 ppm fast. chrony's measurements.log: the
    // offset is positive when the local clock is slow; statistics.log: the estimated
    // offset and frequency are positive when it is fast (gaining); tracking.log: the
    // frequency is the clock's own, positive when it runs fast (as chronyd logs it).
    let t = Sim::new(Scenario {
        limit: 200.0,
        ..Scenario::default()
    })
    .run();
    let column = |file_start: &str, k: usize| -> f64 {
        let line = t
            .records
            .iter()
            .find(|l| l.contains(file_start))
            .unwrap_or_else(|| panic!("no line with {file_start}: {:?}", t.records));
        line.split_whitespace()
            .nth(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("column {k} of {line}"))
    };
    // The first of each: measurements carry " 111 111 1111 ", statistics do not.
    let first_measurement = column(" 111 111 1111 ", 11);
    assert!(
        (first_measurement + 0.1).abs() < 1e-3,
        "{first_measurement}"
    );
    let stats = t
        .records
        .iter()
        .find(|l| !l.contains(" 111 ") && l.split_whitespace().count() == 13)
        .expect("a statistics line");
    let est_offset: f64 = stats
        .split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .expect("offset");
    assert!((est_offset - 0.1).abs() < 1e-3, "{stats}");
    let tracking = t
        .records
        .iter()
        .rev()
        .find(|l| l.split_whitespace().count() == 14)
        .expect("a tracking line");
    let freq: f64 = tracking
        .split_whitespace()
        .nth(4)
        .and_then(|v| v.parse().ok())
        .expect("freq");
    assert!((freq - 100.0).abs() < 1.0, "{tracking}");
}

#[test]
fn poll_4() {
    // chrony's 101-poll at minpoll 4 maxpoll 4: no wander, 1 µs jitter; synced within
    // [2·16, 2.1·16 + 1] s, then within 10 µs (RMS 5 µs) and 10 ppm (RMS 5 ppm).
    let sc = Scenario {
        wander: 0.0,
        servers: vec![Server::good(opts(4, 4, false))],
        net: Network {
            jitter: 1e-6,
            ..Network::default()
        },
        sync: makestep(1e-2, 1),
        limit: 160.0,
        ..Scenario::default()
    };
    let b = Bounds {
        min_sync: 32.0,
        max_sync: 34.6,
        time_max: 1e-5,
        freq_max: 1e-5,
        time_rms: 5e-6,
        freq_rms: 5e-6,
    };
    run_seeds("101-poll-4", &sc, SEEDS, &b);
}

#[test]
fn poll_8() {
    // 101-poll at poll 8: a sample every 256 s.
    let sc = Scenario {
        wander: 0.0,
        servers: vec![Server::good(opts(8, 8, false))],
        net: Network {
            jitter: 1e-6,
            ..Network::default()
        },
        sync: makestep(1e-2, 1),
        limit: 2560.0,
        ..Scenario::default()
    };
    let b = Bounds {
        min_sync: 512.0,
        max_sync: 2.1 * 256.0 + 1.0,
        time_max: 1e-5,
        freq_max: 1e-5,
        time_rms: 5e-6,
        freq_rms: 5e-6,
    };
    run_seeds("101-poll-8", &sc, SEEDS, &b);
}

#[test]
fn iburst_with_driftfile() {
    // chrony's 102-iburst: a driftfile with the right frequency (100 ppm, skew 1 ppm),
    // iburst, makestep 0.01 1: synced in 4-6 s. chronyd 4.3: 5 s, RMS 58 µs, max 158 µs.
    let sc = Scenario {
        servers: vec![Server::good(opts(6, 10, true))],
        drift: Some((100.0, 1.0)),
        sync: makestep(1e-2, 1),
        ..Scenario::default()
    };
    let b = Bounds {
        min_sync: 4.0,
        max_sync: 6.0,
        ..Bounds::default()
    };
    run_seeds("102-iburst", &sc, SEEDS, &b);
}

#[test]
fn large_wander_and_an_outage() {
    // chrony's 007-largewander (random-walk wander 0.1 ppm/s) with the server out of reach
    // for 1000 s: sync in 120-210 s, max 5 ms, RMS 1 ms, frequency max 5000 ppm, RMS
    // 100 ppm. chronyd 4.3: 131 s, RMS 0.48 ms, max 1.7 ms.
    let sc = Scenario {
        wander: 1e-7,
        net: Network {
            outages: vec![(5000.0, 6000.0)],
            ..Network::default()
        },
        ..Scenario::default()
    };
    let b = Bounds {
        time_max: 5e-3,
        freq_max: 5e-3,
        time_rms: 1e-3,
        freq_rms: 1e-4,
        ..Bounds::default()
    };
    run_seeds("007-largewander+outage", &sc, SEEDS, &b);
}

#[test]
fn an_upstream_step_is_followed_without_a_step() {
    // The server steps +50 ms at 3000 s; makestep allows only the first update to step.
    // chronyd 4.3 is back within 13 µs RMS by about 3500 s. Offsets are measured against
    // the server's time.
    let sc = Scenario {
        servers: vec![Server {
            steps: vec![(3000.0, 0.05)],
            ..Server::good(opts(4, 6, true))
        }],
        net: Network {
            jitter: 1e-5,
            ..Network::default()
        },
        sync: makestep(0.01, 1),
        limit: 6000.0,
        ..Scenario::default()
    };
    let sim = super::Sim::new(sc.clone());
    let trace = sim.run();
    assert_eq!(
        trace.steps.len(),
        1,
        "only the first update steps: {:?}",
        trace.steps
    );
    for seed in SEEDS {
        let trace = super::Sim::new(Scenario {
            seed: *seed,
            ..sc.clone()
        })
        .run();
        let f = trace.figures(&Bounds::default(), 3600.0);
        println!(
            "upstream-step seed {seed}: from 3600 s max {:.2e} s, RMS {:.2e} s, max freq {:.2e}",
            f.max_offset, f.rms_offset, f.max_freq
        );
        assert!(f.rms_offset < 2e-5 && f.max_offset < 1e-4, "{f:?}");
        let worst = trace.offset[3000..]
            .iter()
            .fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(worst < 0.06, "never ran away: {worst}");
    }
}

#[test]
fn falsetickers_are_outvoted() {
    // chrony's 009-sourceselection: five servers, 1 ms base delay, one or two of them a
    // second or two off: the client must sync to the others within the default bounds.
    for bad in [1, 2] {
        let mut servers = vec![Server::good(SourceOptions::default()); 5];
        for (i, s) in servers.iter_mut().take(bad).enumerate() {
            s.offset = (i + 1) as f64;
        }
        let sc = Scenario {
            servers,
            net: Network {
                base_delay: 1e-3,
                ..Network::default()
            },
            ..Scenario::default()
        };
        run_seeds(
            &format!("009-falsetickers-{bad}"),
            &sc,
            SEEDS,
            &Bounds::default(),
        );
    }
}

#[test]
fn three_falsetickers_of_five_leave_no_majority() {
    let mut servers = vec![Server::good(SourceOptions::default()); 5];
    for (i, s) in servers.iter_mut().take(3).enumerate() {
        s.offset = (i + 1) as f64;
    }
    let trace = super::Sim::new(Scenario {
        servers,
        net: Network {
            base_delay: 1e-3,
            ..Network::default()
        },
        limit: 2000.0,
        ..Scenario::default()
    })
    .run();
    assert_eq!(trace.count("Selected source"), 0);
    assert_eq!(
        trace.count("no majority (only 2 of 5 sources agree)"),
        1,
        "{:?}",
        trace.log
    );
}

#[test]
fn asymmetric_jitter() {
    // chrony's 011-asymjitter: 0.5 ms jitter of which 97 % on one direction.
    let sc = Scenario {
        net: Network {
            jitter: 5e-4,
            asymmetry: 0.47,
            ..Network::default()
        },
        limit: 100_000.0,
        ..Scenario::default()
    };
    let b = Bounds {
        max_sync: 2000.0,
        ..Bounds::default()
    };
    run_seeds("011-asymjitter", &sc, SEEDS, &b);
}

#[test]
fn intermittent_connection() {
    // chrony's 014-intermittent: packets pass only in the first 1200 s of every 10000 s.
    let outages = (0..10)
        .map(|i| {
            (
                f64::from(i) * 10_000.0 + 1200.0,
                f64::from(i + 1) * 10_000.0,
            )
        })
        .collect();
    let sc = Scenario {
        net: Network {
            outages,
            ..Network::default()
        },
        limit: 100_000.0,
        ..Scenario::default()
    };
    let b = Bounds {
        time_max: 0.1,
        freq_max: 1e-2,
        time_rms: 2e-3,
        freq_rms: 2e-5,
        ..Bounds::default()
    };
    run_seeds("014-intermittent", &sc, SEEDS, &b);
    // And only one request in twenty passing.
    let sc = Scenario {
        net: Network {
            pass_every: 20,
            ..Network::default()
        },
        limit: 100_000.0,
        ..Scenario::default()
    };
    let b = Bounds {
        max_sync: 22_000.0,
        time_max: 1e-2,
        freq_max: 1e-4,
        time_rms: 5e-3,
        ..Bounds::default()
    };
    run_seeds("014-every-20th", &sc, SEEDS, &b);
}

#[test]
fn large_frequency_offsets() {
    // chrony's 003-largefreqoffset: up to 5 % off, the time offset chosen to be near zero
    // at the first update; needs the tick for corrections past 500 ppm.
    for f in [-5e-2, -5e-3, 5e-3, 5e-2] {
        let sc = Scenario {
            freq_offset: f,
            time_offset: -130.0 * f,
            ..Scenario::default()
        };
        let b = Bounds {
            max_sync: 1000.0,
            ..Bounds::default()
        };
        run_seeds(&format!("003-freq-{f}"), &sc, &[1], &b);
    }
}

#[test]
fn large_time_offsets_are_slewed_at_the_maximum_rate() {
    // chrony's 004-largetimeoffset: ±100 s without makestep takes 1200 s at 1/12.
    for off in [-100.0, 100.0] {
        let sc = Scenario {
            time_offset: off,
            ..Scenario::default()
        };
        let b = Bounds {
            min_sync: 1300.0,
            max_sync: 1400.0,
            ..Bounds::default()
        };
        run_seeds(&format!("004-offset-{off}"), &sc, &[1], &b);
    }
}

#[test]
fn makestep_thresholds() {
    // chrony's 109-makestep: `makestep 2 1`; offsets under 2 s are slewed, larger stepped.
    for (off, min, max) in [
        (0.1, 130.0, 150.0),
        (1.0, 130.0, 150.0),
        (100.0, 120.0, 140.0),
    ] {
        let sc = Scenario {
            time_offset: off,
            net: Network {
                jitter: 1e-5,
                ..Network::default()
            },
            sync: makestep(2.0, 1),
            limit: 200.0,
            ..Scenario::default()
        };
        let b = Bounds {
            min_sync: min,
            max_sync: max,
            ..Bounds::default()
        };
        run_seeds(&format!("109-makestep-{off}"), &sc, &[1, 2], &b);
    }
}

#[test]
fn minsources() {
    // chrony's 116-minsources: minsources 3 with one server never syncs; with three it does.
    let sc = Scenario {
        sync: SyncConfig {
            min_sources: 3,
            ..SyncConfig::default()
        },
        limit: 1000.0,
        ..Scenario::default()
    };
    let trace = super::Sim::new(sc.clone()).run();
    assert_eq!(trace.count("Selected source"), 0);
    let sc = Scenario {
        servers: vec![Server::good(SourceOptions::default()); 3],
        ..sc
    };
    let trace = super::Sim::new(sc).run();
    assert!(trace.count("Selected source") >= 1);
}

#[test]
fn frequency_from_one_update() {
    // chrony's 201-freqaccumulation: a wrong driftfile (skew 0.1), makestep 1 1, 100 s off:
    // after the first update (three samples) the frequency must be right to 0.1 ppm.
    for (drift, freq) in [(100.0, 5e-4), (-1e4, -5e-2), (1e4, 5e-4)] {
        let sc = Scenario {
            time_offset: 100.0,
            freq_offset: freq,
            wander: 0.0,
            servers: vec![Server::good(opts(6, 6, false))],
            net: Network {
                base_delay: 1e-6,
                jitter: 1e-6,
                ..Network::default()
            },
            drift: Some((drift, 100_000.0)),
            sync: makestep(1.0, 1),
            limit: 180.0,
            ..Scenario::default()
        };
        let b = Bounds {
            min_sync: 120.0,
            max_sync: 140.0,
            time_max: 1e-5,
            time_rms: 1e-5,
            freq_max: 1e-7,
            freq_rms: 1e-7,
        };
        run_seeds(&format!("201-drift-{drift}-freq-{freq}"), &sc, &[1], &b);
    }
}

#[test]
fn like_the_namespace_comparison() {
    // What tests/sync.rs does with the test server: 25 ms off, drifting 40 ppm, queueing
    // of 100 µs on average each way, polled every 1/8 s from the start, for two minutes;
    // the frequency error at the end.
    let sc = Scenario {
        time_offset: 0.0,
        freq_offset: 0.0,
        wander: 0.0,
        servers: vec![Server {
            offset: 0.025,
            drift: 40e-6,
            ..Server::good(opts(-3, -3, true))
        }],
        net: Network {
            base_delay: 1e-5,
            jitter: 1e-4,
            ..Network::default()
        },
        limit: 120.0,
        ..Scenario::default()
    };
    for seed in SEEDS {
        let trace = super::Sim::new(Scenario {
            seed: *seed,
            ..sc.clone()
        })
        .run();
        let n = trace.base_freq.len();
        let freq_error = trace.base_freq[n - 1] - 40e-6;
        let f = trace.figures(&Bounds::default(), 60.0);
        println!(
            "testserver-like seed {seed}: frequency error {:+.2} ppm, offset RMS {:.1} µs",
            freq_error * 1e6,
            f.rms_offset * 1e6
        );
        assert!(freq_error.abs() < 5e-6 && f.rms_offset < 5e-5, "{f:?}");
    }
}

#[test]
fn asymmetry_correction_reduces_the_bias() {
    // Jitter 0.5 ms of which 97 % on the way out: the offsets lean with the delay. The
    // automatic correction must bring the mean error closer to zero than none does.
    let mean = |asym: Option<f64>| {
        let o = SourceOptions {
            asymmetry: asym,
            ..SourceOptions::default()
        };
        let trace = super::Sim::new(Scenario {
            servers: vec![Server::good(o)],
            net: Network {
                jitter: 5e-4,
                asymmetry: 0.47,
                ..Network::default()
            },
            limit: 20_000.0,
            ..Scenario::default()
        })
        .run();
        let w = &trace.offset[5000..];
        w.iter().sum::<f64>() / w.len() as f64
    };
    let (auto, off) = (mean(None), mean(Some(0.0)));
    println!(
        "asymmetry: mean error {:.1} us estimated, {:.1} us without",
        auto * 1e6,
        off * 1e6
    );
    assert!(auto.abs() < off.abs(), "auto {auto}, none {off}");
}

#[test]
fn a_lasting_route_change_is_taken_in_stride() {
    // From 4000 s the way to the server is 2 ms longer: the offset moves by 1 ms, and the
    // client must follow the new path (not reject it as outliers for hours). Offsets are
    // judged against what the new path makes right: ahead by half the extra delay.
    let sc = Scenario {
        servers: vec![Server {
            route_change: Some((4000.0, 2e-3)),
            ..Server::good(opts(4, 6, true))
        }],
        limit: 8000.0,
        ..Scenario::default()
    };
    for seed in SEEDS {
        let trace = super::Sim::new(Scenario {
            seed: *seed,
            ..sc.clone()
        })
        .run();
        // After the change the client's best estimate is 1 ms ahead of true time.
        let after: Vec<f64> = trace.offset[5000..].iter().map(|o| o - 1e-3).collect();
        let rms = (after.iter().map(|x| x * x).sum::<f64>() / after.len() as f64).sqrt();
        println!(
            "route-change seed {seed}: RMS about the new path's offset {:.1} µs ({} restarts)",
            rms * 1e6,
            trace.count("statistics start over")
        );
        assert!(rms < 1e-4, "still following the old path: {rms}");
        assert_eq!(trace.count("statistics start over"), 1);
    }
}

#[test]
fn sources_at_different_polls() {
    // Three servers polled at 16 s, 64 s and 256 s: the clock syncs and stays within
    // chrony's default bounds, whichever is selected.
    let sc = Scenario {
        servers: vec![
            Server::good(opts(4, 4, true)),
            Server::good(opts(6, 6, false)),
            Server::good(opts(8, 8, false)),
        ],
        ..Scenario::default()
    };
    let b = Bounds {
        min_sync: 2.0,
        ..Bounds::default()
    };
    run_seeds("different-polls", &sc, SEEDS, &b);
}

#[test]
fn filter() {
    // chrony's 127-filter. The samples of 15 polls at 16 s make one: three of them, the
    // least a source needs to be selected, take 720 s.
    let sc = Scenario {
        servers: vec![Server::good(SourceOptions {
            max_delay: 3.5e-4,
            filter: Some(15),
            ..opts(4, 4, false)
        })],
        ..Scenario::default()
    };
    let b = Bounds {
        min_sync: 710.0,
        max_sync: 720.0,
        ..Bounds::default()
    };
    run_seeds("127-filter 15", &sc, SEEDS, &b);
    // 30 % of the packets lost: missing polls still count, so the filter keeps its pace.
    let sc = Scenario {
        servers: vec![Server::good(SourceOptions {
            filter: Some(3),
            ..opts(4, 4, false)
        })],
        net: Network {
            loss: 0.3,
            ..Network::default()
        },
        ..Scenario::default()
    };
    let b = Bounds {
        min_sync: 130.0,
        max_sync: 720.0,
        ..Bounds::default()
    };
    run_seeds("127-filter 3, 30 % loss", &sc, SEEDS, &b);
}

#[test]
fn filter_at_sub_second_polls_only_on_a_lan() {
    // chrony's 127-filter, last cases: poll -6 with filter 1 for 10 s sends 590-640
    // requests on a 100 µs path, and 9-10 (one a second) on a 20 ms one.
    for (delay, lo, hi) in [(1e-4, 590, 640), (2e-2, 9, 10)] {
        let sc = Scenario {
            servers: vec![Server::good(SourceOptions {
                filter: Some(1),
                ..opts(-6, -6, false)
            })],
            net: Network {
                base_delay: delay,
                ..Network::default()
            },
            limit: 10.0,
            ..Scenario::default()
        };
        let t = Sim::new(sc).run();
        println!("poll -6, filter 1, delay {delay}: {} requests", t.requests);
        assert!(
            (lo..=hi).contains(&t.requests),
            "delay {delay}: {} requests",
            t.requests
        );
    }
}

#[test]
fn the_local_reference_takes_over_when_the_distance_has_grown() {
    // `local stratum 10 distance 0.002`: synchronised, the server serves its source's
    // reference; when the source goes silent it keeps doing so (as chronyd does) while
    // the root distance grows with the time since the last update, and serves its own
    // clock at stratum 10 once the distance passes 2 ms.
    let sc = Scenario {
        servers: vec![Server::good(opts(6, 6, true))],
        net: Network {
            outages: vec![(2000.0, 1e9)],
            ..Network::default()
        },
        local: Some(crate::config::LocalConfig {
            distance: 0.002,
            ..crate::config::LocalConfig::default()
        }),
        limit: 6000.0,
        ..Scenario::default()
    };
    let t = Sim::new(sc).run();
    let server_refid = [192, 168, 123, 1];
    assert_eq!(t.reference[1500].0, 2);
    assert_eq!(t.reference[1500].1, server_refid);
    assert_eq!(
        t.reference[2100].1, server_refid,
        "still following after 100 s"
    );
    let handover = 1500
        + t.reference[1500..]
            .iter()
            .position(|r| r.1 == crate::reference::REFID_LOCAL)
            .expect("the local reference took over");
    let (_, _, distance_before) = t.reference[handover - 1];
    println!("local reference from {handover} s, the distance then {distance_before:.6} s");
    assert!(
        handover > 2100 && distance_before > 0.0019,
        "{handover} {distance_before}"
    );
    assert!(t.reference[handover..].iter().all(|r| r.0 == 10));
    // Before the first synchronisation it was serving its local time too (waitunsynced 0).
    assert_eq!(t.reference[0].1, crate::reference::REFID_LOCAL);
}

#[test]
fn maxchange_ignores_then_gives_up() {
    // chrony's 131-maxchange: 2 s off at the start (the first update may correct it),
    // then the clock jumps 1 s at 300 s behind the daemon's back (under the 10 s an
    // external step needs): three corrections over 0.1 s are ignored, the fourth ends
    // the daemon.
    let sc = Scenario {
        time_offset: 2.0,
        sync: SyncConfig {
            max_change: Some((0.1, 1, 3)),
            ..SyncConfig::default()
        },
        client_jumps: vec![(300.0, 1.0)],
        limit: 5000.0,
        ..Scenario::default()
    };
    for &seed in SEEDS {
        let t = Sim::new(Scenario { seed, ..sc.clone() }).run();
        let ignored = t.count("seconds exceeds the allowed maximum of 0.100 seconds (ignored)");
        let exiting = t.count("seconds exceeds the allowed maximum of 0.100 seconds (exiting)");
        println!(
            "131-maxchange seed {seed}: {ignored} ignored, exit at {:?} s",
            t.exited
        );
        assert_eq!((ignored, exiting), (3, 1), "{:?}", t.log);
        assert!(t.exited.is_some_and(|e| e > 300.0));
        // Before the jump the clock was synchronised: the first update's 2 s was allowed.
        assert!(t.offset[250].abs() < 1e-3, "{}", t.offset[250]);
    }
}

/// chrony's 106-refclock bounds: synced in 45-70 s, then the default bounds.
fn refclock_bounds() -> Bounds {
    Bounds {
        min_sync: 45.0,
        max_sync: 70.0,
        ..Bounds::default()
    }
}

#[test]
fn reference_clock() {
    // chrony's 106-refclock: no server, `refclock SHM 0 stratum 3 delay 1e-3 refid GPS`
    // read every second with 100 µs of normal noise; synced in 45-70 s, then the
    // default bounds; the server reports stratum 4, refid GPS, root delay 1 ms.
    let sc = Scenario {
        servers: Vec::new(),
        refclocks: vec![super::SimRefclock {
            config: refclock_line("refclock SHM 0 stratum 3 delay 1e-3 refid GPS"),
            offset: 0.0,
            jitter: 1e-4,
        }],
        limit: 1000.0,
        ..Scenario::default()
    };
    let b = refclock_bounds();
    run_seeds("106-refclock", &sc, SEEDS, &b);
    let trace = Sim::new(sc).run();
    let (stratum, refid, _) = trace.reference[999];
    assert_eq!((stratum, &refid), (4, b"GPS\0"));
    let updates = trace
        .records
        .iter()
        .filter(|l| {
            // tracking.log: date, time, source, our stratum.
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(2..4) == Some(&["GPS", "4"][..])
        })
        .count();
    // One update per 16 s poll after the first three samples.
    assert!((55..=62).contains(&updates), "{updates} updates");
}

/// A NIC whose clock is `offset` s off true time and `freq` fast, read every second 25
/// times at 1 µs ± 0.1 µs a reading (clknetsim's PHC model in chrony's tests), `asym` of
/// the extra time before the PHC is read.
fn phc_nic(offset: f64, freq: f64, asym: f64) -> super::SimNic {
    super::SimNic {
        offset,
        freq,
        phc_delay: 1e-6,
        phc_jitter: 1e-7,
        phc_asym: asym,
        poll: 0,
        readings: 25,
    }
}

#[test]
fn pps_on_a_phc_pin_locked_to_nmea() {
    // chrony's 106-refclock PPS case with the pulse timestamped by a NIC's clock on a pin
    // (`refclock PHC ...:extpps`): the serial NMEA time 0.35 s off with 50 ms of noise,
    // not selectable, numbers the pulses; the PHC keeps TAI, runs 30 ppm fast and is read
    // every second against the system clock; each pulse's stamp has 20 ns of noise.
    // chrony's bounds for its PPS driver: synced in 45-70 s, then the default bounds;
    // the server reports stratum 1 and the pulse clock's refid.
    let mut nmea = refclock_line("refclock SHM 0 refid NMEA noselect");
    nmea.poll = 4;
    let sc = Scenario {
        servers: Vec::new(),
        refclocks: vec![
            super::SimRefclock {
                config: nmea,
                offset: 0.35,
                jitter: 0.05,
            },
            super::SimRefclock {
                config: refclock_line("refclock PHC /dev/ptp0:extpps:pin=0 lock NMEA"),
                offset: 0.0,
                jitter: 2e-8,
            },
        ],
        nic: Some(phc_nic(37.0, 3e-5, 0.5)),
        limit: 1000.0,
        ..Scenario::default()
    };
    let b = refclock_bounds();
    run_seeds("106-refclock PPS on a PHC pin", &sc, SEEDS, &b);
    let trace = Sim::new(sc).run();
    let (stratum, refid, _) = trace.reference[999];
    assert_eq!((stratum, &refid), (1, b"PHC1"));
}

#[test]
fn nic_stamping_server_at_poll_0() {
    // chrony's 133-hwtimestamp as the client sees it: a server answering with NIC
    // timestamps cooked through its PHC readings (100 ns of noise on each), 10 ns of
    // network jitter, the client 10 ppm off, polling every second (minpoll 0 maxpoll 0);
    // bounds: synced in 4-20 s, RMS offset 100 ns, RMS frequency 0.03 ppm. chronyd 4.3
    // with NIC timestamps of its own: RMS 20 ns. The client here uses kernel software
    // stamps (hardware ones are not used yet), which are exact in simulation.
    let mut server = Server::good(opts(0, 0, false));
    server.stamp_jitter = 1e-7;
    let sc = Scenario {
        freq_offset: 1e-5,
        servers: vec![server],
        net: Network {
            jitter: 1e-8,
            ..Network::default()
        },
        limit: 200.0,
        ..Scenario::default()
    };
    let b = Bounds {
        min_sync: 4.0,
        max_sync: 20.0,
        time_rms: 1e-7,
        freq_rms: 3e-8,
        ..Bounds::default()
    };
    run_seeds("133-hwtimestamp (server stamps)", &sc, SEEDS, &b);
}

/// chrony's 133-hwtimestamp with the client's packets stamped by its NIC or by the
/// kernel: the server stamps in hardware (20 ns of noise after its own PHC mapping), 10
/// ns of network jitter, polling every second; kernel software stamps come a mean 2 µs
/// after arrival and before departure, the NIC's clock runs 20 ppm fast and is read 25
/// times a second at 1 µs ± 0.1 µs per reading (clknetsim's PHC model in that test).
fn hw_scenario(nic: bool) -> Scenario {
    let mut server = Server::good(opts(0, 0, false));
    server.stamp_jitter = 2e-8;
    Scenario {
        freq_offset: 1e-5,
        servers: vec![server],
        nic: nic.then_some(phc_nic(0.01, 2e-5, 0.4)),
        net: Network {
            jitter: 1e-8,
            sw_stamp_latency: 2e-6,
            ..Network::default()
        },
        limit: 200.0,
        ..Scenario::default()
    }
}

#[test]
fn nic_timestamps_reach_chronys_133_bounds() {
    // Bounds of 133-hwtimestamp: synced in 4-20 s, RMS offset 100 ns, RMS frequency
    // 0.03 ppm. chronyd 4.3 there: synced in 6 s, RMS 20 ns.
    let b = Bounds {
        min_sync: 4.0,
        max_sync: 20.0,
        time_rms: 1e-7,
        freq_rms: 3e-8,
        ..Bounds::default()
    };
    let hw = run_seeds(
        "133-hwtimestamp (NIC stamps)",
        &hw_scenario(true),
        SEEDS,
        &b,
    );
    // The same with kernel software stamps: their latency costs what the NIC saves.
    for (seed, h) in SEEDS.iter().zip(&hw) {
        let sw = Sim::new(Scenario {
            seed: *seed,
            ..hw_scenario(false)
        })
        .run()
        .figures(&b, b.max_sync);
        println!(
            "133 seed {seed}: RMS {:.2e} s with NIC stamps, {:.2e} s with software stamps",
            h.rms_offset, sw.rms_offset
        );
        assert!(sw.rms_offset > 3.0 * h.rms_offset, "{sw:?} vs {h:?}");
    }
}

#[test]
fn samples_close_to_a_leap_second_are_not_used() {
    // As chronyd: measurements within 5 s of a leap second (from the leap table here)
    // are dropped; polling every second, about ten of them.
    let mut sim = Sim::new(Scenario {
        servers: vec![Server::good(opts(0, 0, false))],
        limit: 200.0,
        ..Scenario::default()
    });
    let at = (super::kernel::EPOCH_NS / 1_000_000_000) as i64 + 100;
    sim.engine
        .set_leap_table(vec![crate::leaptz::Leap { at, tai_offset: 37 }]);
    let t = sim.run();
    let n = t.count("close to a leap second");
    assert!((5..=12).contains(&n), "{n} samples dropped");
}
