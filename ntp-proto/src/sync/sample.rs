//! One measurement of a source, from the four timestamps of an exchange (RFC 5905 8).

/// Dispersion growth rate (RFC 5905 PHI): 15 ppm.
pub const PHI: f64 = 15e-6;

/// A measurement of one source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Local time of the measurement (midpoint of the exchange), seconds.
    pub time: f64,
    /// True time minus local time, seconds.
    pub offset: f64,
    /// Round-trip delay, seconds.
    pub delay: f64,
    /// Error of this measurement alone (the precisions, and the frequency bound over the
    /// exchange), seconds.
    pub dispersion: f64,
    /// Root delay through the source: its own plus this exchange's, seconds.
    pub root_delay: f64,
    /// Root dispersion through the source: its own plus this measurement's, seconds.
    pub root_dispersion: f64,
    /// The source's stratum.
    pub stratum: u8,
    /// The source's leap indicator.
    pub leap: u8,
}

/// What the reply says about the source itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SourceInfo {
    /// Root delay, seconds.
    pub root_delay: f64,
    /// Root dispersion, seconds.
    pub root_dispersion: f64,
    /// Stratum.
    pub stratum: u8,
    /// Leap indicator.
    pub leap: u8,
    /// The server's precision, seconds.
    pub precision: f64,
}

impl Sample {
    /// From t1 (request sent, local), t2 (received, server), t3 (reply sent, server) and
    /// t4 (reply received, local), with the local clock's precision and the source's
    /// frequency bound `skew` (how fast the two clocks may drift apart during the
    /// exchange), in seconds and as a ratio.
    pub fn from_timestamps(
        t: [f64; 4],
        local_precision: f64,
        skew: f64,
        src: &SourceInfo,
    ) -> Sample {
        let [t1, t2, t3, t4] = t;
        let offset = f64::midpoint(t2 - t1, t3 - t4);
        let precision = local_precision + src.precision;
        // The delay cannot be below what the clocks can resolve; a server that seems to
        // answer before it received (timestamps fuzzed below its precision) costs nothing.
        let local_interval = t4 - t1;
        let delay = (local_interval - (t3 - t2)).abs().max(precision);
        let dispersion = precision + skew * local_interval.abs();
        Sample {
            time: f64::midpoint(t1, t4),
            offset,
            delay,
            dispersion,
            root_delay: src.root_delay + delay,
            root_dispersion: src.root_dispersion + dispersion,
            stratum: src.stratum,
            leap: src.leap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_wire_offset_and_delay() {
        // Server 1 s ahead, 10 ms out and 30 ms back, 1 ms in the server.
        let t1 = 100.0;
        let t2 = 101.010;
        let t3 = 101.011;
        let t4 = 100.041;
        let s = Sample::from_timestamps(
            [t1, t2, t3, t4],
            1e-6,
            PHI,
            &SourceInfo {
                precision: 1e-6,
                root_delay: 0.01,
                ..Default::default()
            },
        );
        assert!(
            (s.offset - 0.990).abs() < 1e-9,
            "asymmetry shows as 10 ms of error: {}",
            s.offset
        );
        assert!((s.delay - 0.040).abs() < 1e-9);
        assert!((s.time - 100.0205).abs() < 1e-9);
        assert!((s.dispersion - (2e-6 + PHI * 0.041)).abs() < 1e-12);
        assert!(
            (s.root_delay - 0.050).abs() < 1e-9,
            "the source's plus this exchange's"
        );
        // A reply that seems to arrive before it left is held at the precision.
        let s = Sample::from_timestamps([0.0, 0.0, 0.0, 0.0], 1e-6, PHI, &SourceInfo::default());
        assert_eq!(s.delay, 1e-6);
        // A server whose transmit stamp is a fuzz below its receive stamp: taken, with the
        // delay's magnitude.
        let s = Sample::from_timestamps(
            [0.0, 1.0, 1.0 - 1e-9, 1e-4],
            1e-7,
            PHI,
            &SourceInfo::default(),
        );
        assert!((s.delay - (1e-4 + 1e-9)).abs() < 1e-12);
    }
}
