//! Server statistics as `ntpxc serverstats` prints them, in chronyc's layout.

use serde::{Deserialize, Serialize};

/// Counters of both answering paths, as reported over the control socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// NTP requests seen by either path (each request once).
    pub ntp_received: u64,
    /// NTP requests dropped (access denied) by either path.
    pub ntp_dropped: u64,
    /// Control requests received.
    pub cmd_received: u64,
    /// Control requests rejected (malformed or not permitted).
    pub cmd_dropped: u64,
    /// Client records evicted from a full client log.
    pub client_log_dropped: u64,
    /// Requests answered by the XDP program; `None` when the fast path is off.
    pub kernel_answered: Option<u64>,
    /// Requests the XDP program passed up to the stack.
    pub kernel_passed: Option<u64>,
    /// Requests the XDP program dropped.
    pub kernel_dropped: Option<u64>,
    /// Requests answered from the daemon's socket.
    pub daemon_answered: u64,
    /// Requests the daemon's socket ignored (not a plain client request).
    pub daemon_ignored: u64,
    /// Replies sent in interleaved mode.
    #[serde(default)]
    pub interleaved: u64,
    /// Authenticated requests answered (a MAC under the request's key, or NTS).
    #[serde(default)]
    pub authenticated: u64,
    /// NTS-KE connections accepted.
    #[serde(default)]
    pub nts_ke_accepted: u64,
    /// NTS-KE connections dropped (over `maxntsconnections`).
    #[serde(default)]
    pub nts_ke_dropped: u64,
    /// Clients whose last reply's transmit timestamp is held for interleaved mode.
    #[serde(default)]
    pub timestamps_held: u64,
    /// Seconds between the oldest and newest held timestamps.
    #[serde(default)]
    pub timestamp_span: u64,
    /// Kernel transmit timestamps the daemon matched to its replies (interleaved mode).
    #[serde(default)]
    pub daemon_tx_stamps: u64,
    /// Requests answered, by who stamped their reception: the daemon, the kernel (the
    /// XDP program's clock read or a socket's software stamp), the NIC (chrony 4.4's
    /// lines).
    #[serde(default)]
    pub rx_timestamps: [u64; 3],
    /// Replies sent, by who stamped the transmit timestamp they carry (the same three).
    #[serde(default)]
    pub tx_timestamps: [u64; 3],
    /// The longest the publication of the server state came after its time, µs.
    #[serde(default)]
    pub publish_late_max_us: u64,
    /// The longest a planned change of the slew rate came after its time, µs.
    #[serde(default)]
    pub slew_late_max_us: u64,
}

/// One counter of the XDP program, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCounter {
    /// Stable counter name (see `ntp_common::Counter::name`).
    pub name: String,
    /// Value summed over CPUs.
    pub value: u64,
}

/// The XDP path in detail: where it is attached and every counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpStats {
    /// (interface, attach mode) pairs.
    pub interfaces: Vec<(String, String)>,
    /// Every counter.
    pub counters: Vec<NamedCounter>,
}

fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("{label:<27}: {value}\n"));
}

impl ServerStats {
    /// The chronyc-style report; the ntpx kernel lines follow chrony's own.
    pub fn render(&self) -> String {
        let mut s = String::new();
        line(&mut s, "NTP packets received", self.ntp_received);
        line(&mut s, "NTP packets dropped", self.ntp_dropped);
        line(&mut s, "Command packets received", self.cmd_received);
        line(&mut s, "Command packets dropped", self.cmd_dropped);
        line(
            &mut s,
            "Client log records dropped",
            self.client_log_dropped,
        );
        line(&mut s, "NTS-KE connections accepted", self.nts_ke_accepted);
        line(&mut s, "NTS-KE connections dropped", self.nts_ke_dropped);
        line(&mut s, "Authenticated NTP packets", self.authenticated);
        line(&mut s, "Interleaved NTP packets", self.interleaved);
        line(&mut s, "NTP timestamps held", self.timestamps_held);
        line(&mut s, "NTP timestamp span", self.timestamp_span);
        for (i, who) in ["daemon", "kernel", "hardware"].iter().enumerate() {
            line(
                &mut s,
                &format!("NTP {who} RX timestamps"),
                self.rx_timestamps[i],
            );
            line(
                &mut s,
                &format!("NTP {who} TX timestamps"),
                self.tx_timestamps[i],
            );
        }
        if let (Some(a), Some(p), Some(d)) = (
            self.kernel_answered,
            self.kernel_passed,
            self.kernel_dropped,
        ) {
            line(&mut s, "Kernel NTP packets answered", a);
            line(&mut s, "Kernel NTP packets passed", p);
            line(&mut s, "Kernel NTP packets dropped", d);
        }
        line(&mut s, "Daemon NTP packets answered", self.daemon_answered);
        line(&mut s, "Daemon TX timestamps", self.daemon_tx_stamps);
        line(
            &mut s,
            "Longest publication delay",
            format!("{} us", self.publish_late_max_us),
        );
        line(
            &mut s,
            "Longest slew change delay",
            format!("{} us", self.slew_late_max_us),
        );
        s
    }

    /// chronyc -c: the values of the report, comma-separated, in the same order.
    pub fn render_csv(&self) -> String {
        let mut v = vec![
            self.ntp_received,
            self.ntp_dropped,
            self.cmd_received,
            self.cmd_dropped,
            self.client_log_dropped,
            0,
            0,
            0,
            self.interleaved,
            self.timestamps_held,
            self.timestamp_span,
        ];
        for i in 0..3 {
            v.extend([self.rx_timestamps[i], self.tx_timestamps[i]]);
        }
        if let (Some(a), Some(p), Some(d)) = (
            self.kernel_answered,
            self.kernel_passed,
            self.kernel_dropped,
        ) {
            v.extend([a, p, d]);
        }
        v.push(self.daemon_answered);
        v.push(self.daemon_tx_stamps);
        v.push(self.publish_late_max_us);
        v.push(self.slew_late_max_us);
        let strs: Vec<String> = v.iter().map(u64::to_string).collect();
        strs.join(",") + "\n"
    }
}

impl XdpStats {
    /// One line per interface and per counter.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (iface, mode) in &self.interfaces {
            line(&mut s, &format!("Attached to {iface}"), mode);
        }
        if self.interfaces.is_empty() {
            s.push_str("XDP fast path not attached\n");
        }
        for c in &self.counters {
            line(&mut s, &c.name, c.value);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chronyc 4.3 capture in shared/fixtures (copied into tests/fixtures): our first
    /// eleven lines must align with it.
    const CHRONYC_SERVERSTATS: &str = include_str!("../../tests/fixtures/chronyc/serverstats.txt");

    #[test]
    fn layout_matches_chronyc_and_adds_kernel_lines() {
        let st = ServerStats {
            ntp_received: 3,
            cmd_received: 11,
            kernel_answered: Some(2),
            kernel_passed: Some(1),
            kernel_dropped: Some(0),
            daemon_answered: 1,
            daemon_tx_stamps: 5,
            publish_late_max_us: 1200,
            slew_late_max_us: 3,
            rx_timestamps: [1, 2, 0],
            tx_timestamps: [1, 2, 0],
            ..Default::default()
        };
        let out = st.render();
        let expected = CHRONYC_SERVERSTATS
            .split_once('\n')
            .map_or("", |(_, body)| body);
        assert!(out.starts_with(expected), "{out}");
        let tail: Vec<&str> = out.lines().skip(11).collect();
        assert_eq!(
            tail,
            [
                "NTP daemon RX timestamps   : 1",
                "NTP daemon TX timestamps   : 1",
                "NTP kernel RX timestamps   : 2",
                "NTP kernel TX timestamps   : 2",
                "NTP hardware RX timestamps : 0",
                "NTP hardware TX timestamps : 0",
                "Kernel NTP packets answered: 2",
                "Kernel NTP packets passed  : 1",
                "Kernel NTP packets dropped : 0",
                "Daemon NTP packets answered: 1",
                "Daemon TX timestamps       : 5",
                "Longest publication delay  : 1200 us",
                "Longest slew change delay  : 3 us",
            ]
        );
        assert_eq!(
            st.render_csv(),
            "3,0,11,0,0,0,0,0,0,0,0,1,1,2,2,0,0,2,1,0,1,5,1200,3\n"
        );
    }

    #[test]
    fn without_the_fast_path_the_kernel_lines_are_absent() {
        let out = ServerStats::default().render();
        assert!(!out.contains("Kernel"));
        assert_eq!(out.lines().count(), 21);
    }
}
