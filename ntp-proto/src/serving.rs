//! Where the fast path serves, as interfaces and addresses come and go: which interfaces
//! to attach to, which to leave, and which addresses to answer for. Pure: the daemon feeds
//! it what the kernel reports on each change and applies the answer.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// One network interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// Index (a removed and re-created interface gets a new one).
    pub index: u32,
    /// Administratively up.
    pub up: bool,
    /// A loopback interface.
    pub loopback: bool,
    /// Its unicast addresses.
    pub addrs: Vec<IpAddr>,
}

/// An interface the program is, or should be, attached to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attachment {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
}

/// What the configuration asks to serve on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wish {
    /// Interfaces named on the command line (`-i`): only those, whenever they exist and
    /// are up; empty: chosen from the addresses.
    pub named: Vec<String>,
    /// `bindaddress` addresses; unspecified ones (`0.0.0.0`, `::`) bind nothing specific.
    pub bind: Vec<IpAddr>,
}

impl Wish {
    fn specific(&self) -> Vec<IpAddr> {
        self.bind
            .iter()
            .copied()
            .filter(|a| !a.is_unspecified())
            .collect()
    }

    /// The interfaces to serve on: the named ones that exist and are up; else those
    /// carrying a bound address; else, with no specific bind address, every interface
    /// that is up, not loopback, and has an address beyond link-local (a container's
    /// veth end, with only an `fe80::` address, is no place to serve).
    pub fn interfaces(&self, all: &[Interface]) -> Vec<Attachment> {
        let specific = self.specific();
        let mut out: BTreeSet<Attachment> = BTreeSet::new();
        for i in all {
            let wanted = if !self.named.is_empty() {
                i.up && self.named.contains(&i.name)
            } else if !specific.is_empty() {
                i.up && i.addrs.iter().any(|a| specific.contains(a))
            } else {
                i.up && !i.loopback && i.addrs.iter().any(|a| !link_local(a))
            };
            if wanted {
                out.insert(Attachment {
                    name: i.name.clone(),
                    index: i.index,
                });
            }
        }
        out.into_iter().collect()
    }

    /// The addresses the program answers for on `attached`: the bound ones present
    /// there, or with no specific bind address every address they carry.
    pub fn addresses(&self, all: &[Interface], attached: &[Attachment]) -> Vec<IpAddr> {
        let specific = self.specific();
        let mut out: BTreeSet<IpAddr> = BTreeSet::new();
        for i in all
            .iter()
            .filter(|i| attached.iter().any(|a| a.index == i.index))
        {
            out.extend(
                i.addrs
                    .iter()
                    .filter(|a| specific.is_empty() || specific.contains(a)),
            );
        }
        out.into_iter().collect()
    }

    /// What the daemon waits for while nothing is served, for its log.
    pub fn awaited(&self) -> String {
        let specific = self.specific();
        if !self.named.is_empty() {
            format!("interface(s) {} to exist and be up", self.named.join(", "))
        } else if !specific.is_empty() {
            let list: Vec<String> = specific.iter().map(ToString::to_string).collect();
            format!("an interface with address {}", list.join(" or "))
        } else {
            "an interface that is up with an address".to_string()
        }
    }
}

/// Whether `a` is link-local (169.254.0.0/16, `fe80::/10`).
fn link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// The attachments to make and to undo to go from `current` to `wanted`. An interface
/// whose index changed (removed and re-created) is detached under its old index and
/// attached under its new one.
pub fn changes(
    current: &[Attachment],
    wanted: &[Attachment],
) -> (Vec<Attachment>, Vec<Attachment>) {
    let attach = wanted
        .iter()
        .filter(|w| !current.contains(w))
        .cloned()
        .collect();
    let detach = current
        .iter()
        .filter(|c| !wanted.contains(c))
        .cloned()
        .collect();
    (attach, detach)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, up: bool, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            index,
            up,
            loopback: name == "lo",
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn at(name: &str, index: u32) -> Attachment {
        Attachment {
            name: name.into(),
            index,
        }
    }

    fn host() -> Vec<Interface> {
        vec![
            iface("lo", 1, true, &["127.0.0.1", "::1"]),
            iface("eth0", 2, true, &["198.18.0.1", "fd00::1"]),
            iface("eth1", 3, true, &["198.18.1.1"]),
            iface("eth2", 4, false, &["198.18.2.1"]),
            iface("eth3", 5, true, &[]),
            iface("veth7", 6, true, &["fe80::1"]),
        ]
    }

    #[test]
    fn with_no_bind_address_every_up_interface_with_an_address_but_loopback() {
        let w = Wish::default();
        let ifs = w.interfaces(&host());
        assert_eq!(ifs, vec![at("eth0", 2), at("eth1", 3)]);
        let addrs: Vec<String> = w
            .addresses(&host(), &ifs)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addrs, ["198.18.0.1", "198.18.1.1", "fd00::1"]);
        // Only lo: nothing yet, and the log says what is awaited.
        assert!(w.interfaces(&host()[..1]).is_empty());
        assert_eq!(w.awaited(), "an interface that is up with an address");
    }

    #[test]
    fn a_bind_address_picks_its_interface_and_only_itself_is_served() {
        let w = Wish {
            named: vec![],
            bind: vec!["198.18.1.1".parse().unwrap(), "0.0.0.0".parse().unwrap()],
        };
        let ifs = w.interfaces(&host());
        assert_eq!(ifs, vec![at("eth1", 3)]);
        assert_eq!(
            w.addresses(&host(), &ifs),
            vec!["198.18.1.1".parse::<IpAddr>().unwrap()]
        );
        // Not present yet: nothing, and the wait names it.
        let missing = Wish {
            named: vec![],
            bind: vec!["198.18.9.1".parse().unwrap()],
        };
        assert!(missing.interfaces(&host()).is_empty());
        assert_eq!(missing.awaited(), "an interface with address 198.18.9.1");
    }

    #[test]
    fn named_interfaces_are_served_whenever_they_exist_and_are_up() {
        let w = Wish {
            named: vec!["eth3".into(), "eth9".into(), "eth2".into()],
            bind: vec![],
        };
        // eth3 has no address yet but is up: attached, serving nothing until one comes.
        assert_eq!(w.interfaces(&host()), vec![at("eth3", 5)]);
        assert!(w.addresses(&host(), &[at("eth3", 5)]).is_empty());
        assert!(w.awaited().contains("eth3, eth9, eth2"));
    }

    #[test]
    fn a_recreated_interface_is_detached_under_its_old_index() {
        let current = vec![at("eth0", 2), at("eth1", 3)];
        let wanted = vec![at("eth0", 7), at("eth4", 8)];
        let (attach, detach) = changes(&current, &wanted);
        assert_eq!(attach, wanted);
        assert_eq!(detach, current);
        let (attach, detach) = changes(&wanted, &wanted);
        assert!(attach.is_empty() && detach.is_empty());
    }
}
