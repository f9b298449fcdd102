//! NTP client access control with the semantics of chrony's `allow` and `deny` directives.
//!
//! Sans-IO: hostnames are kept as [`Target::Name`] and resolved through a caller-supplied
//! function, so the daemon decides how (and whether) to touch DNS.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What to do with a request from a matching client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Serve the client.
    Allow,
    /// Drop the request.
    Deny,
}

/// Why a subnet, hostname or rule could not be turned into table entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// A token could not be parsed; `what` names the kind of value, `expected` its valid form.
    #[error("invalid {what} \"{token}\" (expected {expected})")]
    Invalid {
        /// The kind of value that was being parsed, e.g. "prefix length".
        what: &'static str,
        /// The offending text, verbatim.
        token: String,
        /// A description of what would have been accepted.
        expected: String,
    },
    /// [`Subnet::new`] was given a prefix longer than the address.
    #[error("prefix length {prefix_len} is out of range for {addr} (expected 0-{max})")]
    PrefixOutOfRange {
        /// The address the prefix was meant for.
        addr: IpAddr,
        /// The rejected prefix length.
        prefix_len: u8,
        /// The longest prefix valid for the address family.
        max: u8,
    },
    /// The resolver could not turn a hostname into an address.
    #[error("cannot resolve hostname \"{name}\": {reason}")]
    Resolve {
        /// The hostname from the rule.
        name: String,
        /// The resolver's explanation.
        reason: String,
    },
}

/// An IPv4 or IPv6 network: an address with all bits beyond `prefix_len` cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    /// The network address, already masked to `prefix_len`.
    pub addr: IpAddr,
    /// Number of leading bits that identify the network (0-32 or 0-128).
    pub prefix_len: u8,
}

impl Subnet {
    /// Builds a subnet, clearing host bits as chrony does (10.1.2.3/8 becomes 10.0.0.0/8).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, AclError> {
        let (family, bits) = Family::split(addr);
        if prefix_len > family.width() {
            return Err(AclError::PrefixOutOfRange {
                addr,
                prefix_len,
                max: family.width(),
            });
        }
        Ok(Subnet {
            addr: family.join(mask(bits, prefix_len, family.width())),
            prefix_len,
        })
    }

    /// True if `ip` is of the same family and lies inside this subnet.
    ///
    /// IPv4-mapped IPv6 addresses are not folded here; [`AccessTable::check`] does that.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (family, net) = Family::split(self.addr);
        let (ip_family, bits) = Family::split(ip);
        family == ip_family && mask(bits, self.prefix_len, family.width()) == net
    }

    /// Parses chrony's subnet syntax: `1.2.3.4`, `1.2.3.0/24`, `1.2.3` (= /24), `1.2`, `1`,
    /// `0/0`, and IPv6 with an optional `/len`.
    pub fn parse(s: &str) -> Result<Subnet, AclError> {
        let (addr_part, len_part) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let (addr, default_len) = parse_address(addr_part).ok_or_else(|| AclError::Invalid {
            what: "address",
            token: addr_part.to_string(),
            expected: "an IPv4 or IPv6 address, optionally followed by /PREFIX".to_string(),
        })?;
        let max = Family::split(addr).0.width();
        let prefix_len = match len_part {
            None => default_len,
            Some(len) => parse_prefix_len(len, max).ok_or_else(|| AclError::Invalid {
                what: "prefix length",
                token: len.to_string(),
                expected: format!("an integer 0-{max}"),
            })?,
        };
        Subnet::new(addr, prefix_len)
    }

    /// The single-host subnet for `ip` (/32 or /128), with mapped IPv6 folded to IPv4.
    pub fn host(ip: IpAddr) -> Subnet {
        let ip = canonical_ip(ip);
        let width = Family::split(ip).0.width();
        Subnet {
            addr: ip,
            prefix_len: width,
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Subnet {
    type Err = AclError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Subnet::parse(s)
    }
}

/// What an `allow`/`deny` directive applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// No subnet given: every IPv4 and IPv6 address.
    Everything,
    /// An explicit address or subnet.
    Subnet(Subnet),
    /// A hostname, resolved later by the daemon.
    Name(String),
}

impl Target {
    /// Parses a directive argument: a subnet, or failing that a plausible hostname.
    pub fn parse(s: &str) -> Result<Target, AclError> {
        match Subnet::parse(s) {
            Ok(subnet) => Ok(Target::Subnet(subnet)),
            // Digits-and-dots or colons mean the user meant an address, so reporting a bad
            // address is more useful than silently treating it as a name that won't resolve.
            Err(err) if s.contains('/') || s.contains(':') || is_numeric_dotted(s) => Err(err),
            Err(_) if is_plausible_hostname(s) => Ok(Target::Name(s.to_string())),
            Err(_) => Err(AclError::Invalid {
                what: "subnet or hostname",
                token: s.to_string(),
                expected: "ADDRESS, ADDRESS/PREFIX, a partial IPv4 address like 192.168, \
                           or a hostname"
                    .to_string(),
            }),
        }
    }
}

/// One `allow`/`deny` directive as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Whether matching clients are served.
    pub action: Action,
    /// The `all` keyword: first drop earlier rules for subnets inside the target.
    pub all: bool,
    /// The addresses the rule covers.
    pub target: Target,
}

/// The resolved access table: longest matching prefix decides, no match denies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessTable {
    v4: Prefixes,
    v6: Prefixes,
}

impl AccessTable {
    /// An empty table, which denies every client.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one directive; `None` means every IPv4 and IPv6 address.
    pub fn apply(&mut self, action: Action, all: bool, target: Option<Subnet>) {
        match target {
            None => {
                self.v4.apply(action, all, 0, 0, 32);
                self.v6.apply(action, all, 0, 0, 128);
            }
            Some(subnet) => match Family::split(subnet.addr) {
                (Family::V4, bits) => self.v4.apply(action, all, bits, subnet.prefix_len, 32),
                (Family::V6, bits) => self.v6.apply(action, all, bits, subnet.prefix_len, 128),
            },
        }
    }

    /// Builds a table from rules in configuration order, resolving hostnames with `resolve`.
    ///
    /// As in chrony, only the first address a hostname resolves to is used.
    pub fn from_rules(
        rules: &[Rule],
        mut resolve: impl FnMut(&str) -> Result<Vec<IpAddr>, String>,
    ) -> Result<Self, AclError> {
        let mut table = Self::new();
        for rule in rules {
            let target = match &rule.target {
                Target::Everything => None,
                Target::Subnet(subnet) => Some(*subnet),
                Target::Name(name) => {
                    let addrs = resolve(name).map_err(|reason| AclError::Resolve {
                        name: name.clone(),
                        reason,
                    })?;
                    let first = addrs.first().ok_or_else(|| AclError::Resolve {
                        name: name.clone(),
                        reason: "no addresses returned".to_string(),
                    })?;
                    Some(Subnet::host(*first))
                }
            };
            table.apply(rule.action, rule.all, target);
        }
        Ok(table)
    }

    /// Decides whether `ip` may be served; IPv4-mapped IPv6 is checked as IPv4.
    pub fn check(&self, ip: IpAddr) -> Action {
        match Family::split(canonical_ip(ip)) {
            (Family::V4, bits) => self.v4.lookup(bits, 32),
            (Family::V6, bits) => self.v6.lookup(bits, 128),
        }
    }

    /// IPv4 entries as (network, prefix length, action), sorted, for loading an LPM trie.
    pub fn v4_entries(&self) -> Vec<([u8; 4], u8, Action)> {
        self.v4
            .entries()
            .map(|(bits, len, action)| ((bits as u32).to_be_bytes(), len, action))
            .collect()
    }

    /// IPv6 entries as (network, prefix length, action), sorted, for loading an LPM trie.
    pub fn v6_entries(&self) -> Vec<([u8; 16], u8, Action)> {
        self.v6
            .entries()
            .map(|(bits, len, action)| (bits.to_be_bytes(), len, action))
            .collect()
    }
}

/// One address family's entries keyed by (masked network bits, prefix length), and
/// which prefix lengths occur among them.
///
/// IPv4 networks are held in the low 32 bits of a u128 so both families share the code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Prefixes {
    entries: BTreeMap<(u128, u8), Action>,
    // A lookup tries only these (a server's table has a few): it runs for every
    // request that reaches a socket, and trying all 33 or 129 lengths was a few
    // percent of an NTS reply's time.
    lengths: [u64; 3],
}

impl Prefixes {
    fn apply(&mut self, action: Action, all: bool, net: u128, len: u8, width: u8) {
        if all {
            self.entries
                .retain(|&(other, other_len), _| other_len < len || mask(other, len, width) != net);
        }
        self.entries.insert((net, len), action);
        self.lengths = [0; 3];
        for &(_, len) in self.entries.keys() {
            // A length past the family's width never matches (a `Subnet` made by hand).
            if let Some(word) = self.lengths.get_mut(usize::from(len / 64)) {
                *word |= 1 << (len % 64);
            }
        }
    }

    fn lookup(&self, bits: u128, width: u8) -> Action {
        (0..=width)
            .rev()
            .filter(|len| self.lengths[usize::from(len / 64)] & 1 << (len % 64) != 0)
            .find_map(|len| self.entries.get(&(mask(bits, len, width), len)).copied())
            .unwrap_or(Action::Deny)
    }

    fn entries(&self) -> impl Iterator<Item = (u128, u8, Action)> + '_ {
        self.entries
            .iter()
            .map(|(&(bits, len), &action)| (bits, len, action))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn split(addr: IpAddr) -> (Family, u128) {
        match addr {
            IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
        }
    }

    fn join(self, bits: u128) -> IpAddr {
        match self {
            // Callers only pass bits derived from an IPv4 address, so nothing is lost.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(bits as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
        }
    }

    fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// Keeps the top `len` of `width` bits of `bits`.
fn mask(bits: u128, len: u8, width: u8) -> u128 {
    let host_bits = u32::from(width.saturating_sub(len));
    // A zero-length prefix would shift by the full 128 bits, which overflows.
    let keep = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    bits & keep
}

/// Maps an IPv4-mapped IPv6 address to IPv4, so access rules see one form.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Parses an address and its default prefix length (dotted forms imply /8 per part).
fn parse_address(s: &str) -> Option<(IpAddr, u8)> {
    if s.contains(':') {
        return Ipv6Addr::from_str(s).ok().map(|v6| (IpAddr::V6(v6), 128));
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip(&parts) {
        // chrony reads these as plain decimal, so "010" is ten, not octal eight.
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    let default_len = u8::try_from(parts.len() * 8).ok()?;
    Some((IpAddr::V4(Ipv4Addr::from(octets)), default_len))
}

fn parse_prefix_len(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|&len| len <= max)
}

fn is_numeric_dotted(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// RFC 1123-ish check; the resolver has the final say, this only catches obvious typos.
fn is_plausible_hostname(s: &str) -> bool {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    // An all-numeric last label would be read as an address by resolvers, not a name.
    let tld_ok = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && tld_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Subnet {
        Subnet::parse(s).unwrap()
    }

    fn table(directives: &[(Action, bool, Option<&str>)]) -> AccessTable {
        let mut t = AccessTable::new();
        for &(action, all, target) in directives {
            t.apply(action, all, target.map(net));
        }
        t
    }

    use Action::{Allow, Deny};

    #[test]
    fn parses_chrony_subnet_forms() {
        let cases: &[(&str, &str, u8)] = &[
            ("1.2.3.4", "1.2.3.4", 32),
            ("3.4.5.0/24", "3.4.5.0", 24),
            ("3.4.5", "3.4.5.0", 24),
            ("192.168", "192.168.0.0", 16),
            ("10", "10.0.0.0", 8),
            ("192.168/16", "192.168.0.0", 16),
            ("192.168.100/24", "192.168.100.0", 24),
            ("0/0", "0.0.0.0", 0),
            ("10.1.2.3/8", "10.0.0.0", 8),
            ("1.2.3.4/0", "0.0.0.0", 0),
            ("010.1.1.1", "10.1.1.1", 32),
            ("2001:db8::1", "2001:db8::1", 128),
            ("2001:db8::/32", "2001:db8::", 32),
            ("2001:db8:ffff::1/33", "2001:db8:8000::", 33),
            ("::/0", "::", 0),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4", 128),
        ];
        for &(input, addr, len) in cases {
            let subnet = Subnet::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(subnet.addr, ip(addr), "{input}");
            assert_eq!(subnet.prefix_len, len, "{input}");
        }
        assert_eq!(
            "10.1.2.3/8".parse::<Subnet>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn rejects_malformed_subnets_naming_the_token() {
        let cases: &[(&str, &str)] = &[
            (
                "1.2.3.256",
                "invalid address \"1.2.3.256\" (expected an IPv4 or IPv6 address, \
                 optionally followed by /PREFIX)",
            ),
            (
                "1.2.3.4/33",
                "invalid prefix length \"33\" (expected an integer 0-32)",
            ),
            (
                "::1/129",
                "invalid prefix length \"129\" (expected an integer 0-128)",
            ),
            (
                "1.2.3.4/",
                "invalid prefix length \"\" (expected an integer 0-32)",
            ),
            (
                "1.2.3.4/+8",
                "invalid prefix length \"+8\" (expected an integer 0-32)",
            ),
            (
                "1.2.3.4/1000",
                "invalid prefix length \"1000\" (expected an integer 0-32)",
            ),
            (
                "1.2.3.4.5",
                "invalid address \"1.2.3.4.5\" (expected an IPv4 or IPv6 address, \
                 optionally followed by /PREFIX)",
            ),
            (
                "1..2",
                "invalid address \"1..2\" (expected an IPv4 or IPv6 address, \
                 optionally followed by /PREFIX)",
            ),
            (
                "2001:db8:::1",
                "invalid address \"2001:db8:::1\" (expected an IPv4 or IPv6 address, \
                 optionally followed by /PREFIX)",
            ),
            (
                "host.example/24",
                "invalid address \"host.example\" (expected an IPv4 or IPv6 address, \
                 optionally followed by /PREFIX)",
            ),
            (
                "-bad-.example",
                "invalid subnet or hostname \"-bad-.example\" (expected ADDRESS, \
                 ADDRESS/PREFIX, a partial IPv4 address like 192.168, or a hostname)",
            ),
            (
                "bad!name",
                "invalid subnet or hostname \"bad!name\" (expected ADDRESS, \
                 ADDRESS/PREFIX, a partial IPv4 address like 192.168, or a hostname)",
            ),
        ];
        for &(input, message) in cases {
            let err = Target::parse(input).expect_err(input);
            assert_eq!(err.to_string(), message, "{input}");
        }
        // A hostname is only acceptable where a name is; Subnet::parse wants an address.
        assert!(Subnet::parse("ntp.example.com").is_err());
    }

    #[test]
    fn non_address_tokens_become_hostnames() {
        for name in [
            "localhost",
            "ntp.example.com",
            "ntp.example.com.",
            "a-b_c.lan",
        ] {
            assert_eq!(Target::parse(name), Ok(Target::Name(name.to_string())));
        }
        assert_eq!(
            Target::parse("3.4.5"),
            Ok(Target::Subnet(net("3.4.5.0/24")))
        );
    }

    #[test]
    fn subnet_new_masks_and_checks_range() {
        let s = Subnet::new(ip("192.168.77.9"), 16).unwrap();
        assert_eq!(s.addr, ip("192.168.0.0"));
        assert_eq!(
            Subnet::new(ip("1.2.3.4"), 33),
            Err(AclError::PrefixOutOfRange {
                addr: ip("1.2.3.4"),
                prefix_len: 33,
                max: 32
            })
        );
        assert!(Subnet::new(ip("::1"), 128).is_ok());
        assert!(Subnet::new(ip("::1"), 129).is_err());
    }

    #[test]
    fn subnet_contains_respects_prefix_and_family() {
        let s = net("10.1.0.0/16");
        assert!(s.contains(ip("10.1.255.3")));
        assert!(!s.contains(ip("10.2.0.1")));
        assert!(!s.contains(ip("::ffff:10.1.0.1")));
        assert!(net("0/0").contains(ip("255.255.255.255")));
        assert!(!net("0/0").contains(ip("::1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::5")));
    }

    #[test]
    fn empty_table_denies_everything() {
        let t = AccessTable::new();
        assert_eq!(t.check(ip("127.0.0.1")), Deny);
        assert_eq!(t.check(ip("::1")), Deny);
        assert!(t.v4_entries().is_empty() && t.v6_entries().is_empty());
    }

    #[test]
    fn bare_directive_covers_both_families() {
        let t = table(&[(Allow, false, None)]);
        assert_eq!(t.check(ip("203.0.113.5")), Allow);
        assert_eq!(t.check(ip("2001:db8::5")), Allow);
        let t = table(&[(Allow, false, None), (Deny, false, None)]);
        assert_eq!(t.check(ip("203.0.113.5")), Deny);
        assert_eq!(t.check(ip("2001:db8::5")), Deny);
    }

    #[test]
    fn longest_prefix_wins_regardless_of_order() {
        let rules = [
            (Allow, false, Some("1.2.3.4")),
            (Deny, false, Some("1.2.3.0/24")),
            (Allow, false, Some("1.2.0.0/16")),
        ];
        let mut reversed = rules;
        reversed.reverse();
        for t in [table(&rules), table(&reversed)] {
            assert_eq!(t.check(ip("1.2.3.4")), Allow);
            assert_eq!(t.check(ip("1.2.3.5")), Deny);
            assert_eq!(t.check(ip("1.2.4.1")), Allow);
            assert_eq!(t.check(ip("1.3.0.1")), Deny);
        }
    }

    #[test]
    fn later_directive_for_same_subnet_replaces_earlier() {
        let t = table(&[
            (Allow, false, Some("10.0.0.0/8")),
            (Deny, false, Some("10.9.9.9/8")),
        ]);
        assert_eq!(t.check(ip("10.1.1.1")), Deny);
        assert_eq!(t.v4_entries(), vec![([10, 0, 0, 0], 8, Deny)]);
    }

    #[test]
    fn all_keyword_drops_earlier_entries_inside_subnet() {
        let t = table(&[
            (Allow, false, Some("1.2.3.4")),
            (Deny, false, Some("1.2.3.0/24")),
            (Deny, false, Some("1.3.0.0/16")),
            (Deny, false, Some("1.0.0.0/8")),
            (Allow, true, Some("1.2.0.0/16")),
        ]);
        assert_eq!(t.check(ip("1.2.3.4")), Allow);
        assert_eq!(t.check(ip("1.2.3.5")), Allow);
        // Siblings and enclosing subnets are outside the `all` subnet and survive.
        assert_eq!(t.check(ip("1.3.0.1")), Deny);
        assert_eq!(t.check(ip("1.4.0.1")), Deny);
        assert_eq!(
            t.v4_entries(),
            vec![
                ([1, 0, 0, 0], 8, Deny),
                ([1, 2, 0, 0], 16, Allow),
                ([1, 3, 0, 0], 16, Deny)
            ]
        );
    }

    #[test]
    fn all_keyword_only_affects_earlier_directives() {
        let t = table(&[
            (Deny, true, Some("1.2.0.0/16")),
            (Allow, false, Some("1.2.3.0/24")),
        ]);
        assert_eq!(t.check(ip("1.2.3.1")), Allow);
        assert_eq!(t.check(ip("1.2.4.1")), Deny);
    }

    #[test]
    fn all_without_subnet_resets_both_families() {
        let t = table(&[
            (Allow, false, Some("192.168.0.0/16")),
            (Allow, false, Some("2001:db8::/32")),
            (Deny, true, None),
        ]);
        assert_eq!(t.check(ip("192.168.1.1")), Deny);
        assert_eq!(t.check(ip("2001:db8::1")), Deny);
        assert_eq!(t.v4_entries(), vec![([0; 4], 0, Deny)]);
        assert_eq!(t.v6_entries(), vec![([0; 16], 0, Deny)]);
    }

    #[test]
    fn families_are_independent() {
        let t = table(&[(Allow, false, Some("0/0"))]);
        assert_eq!(t.check(ip("8.8.8.8")), Allow);
        assert_eq!(t.check(ip("2001:db8::1")), Deny);
        let t = table(&[(Allow, false, Some("::/0"))]);
        assert_eq!(t.check(ip("2001:db8::1")), Allow);
        assert_eq!(t.check(ip("8.8.8.8")), Deny);
        // `all` on one family must not clear the other.
        let t = table(&[(Allow, false, Some("::/0")), (Deny, true, Some("0/0"))]);
        assert_eq!(t.check(ip("2001:db8::1")), Allow);
    }

    #[test]
    fn mapped_ipv6_is_checked_as_ipv4() {
        let t = table(&[
            (Allow, false, Some("192.168.0.0/16")),
            (Allow, false, Some("::/0")),
        ]);
        assert_eq!(t.check(ip("::ffff:192.168.4.4")), Allow);
        assert_eq!(t.check(ip("::ffff:10.0.0.1")), Deny);
    }

    #[test]
    fn entry_lists_are_sorted_and_family_specific() {
        let t = table(&[
            (Allow, false, Some("192.168/16")),
            (Deny, false, Some("192.168.100/24")),
            (Allow, false, Some("10")),
            (Deny, false, Some("2001:db8::/32")),
            (Allow, false, Some("2001:db8::1")),
        ]);
        assert_eq!(
            t.v4_entries(),
            vec![
                ([10, 0, 0, 0], 8, Allow),
                ([192, 168, 0, 0], 16, Allow),
                ([192, 168, 100, 0], 24, Deny),
            ]
        );
        let mut host = [0u8; 16];
        host[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let network = host;
        host[15] = 1;
        assert_eq!(
            t.v6_entries(),
            vec![(network, 32, Deny), (host, 128, Allow)]
        );
    }

    #[test]
    fn from_rules_resolves_names_to_first_address() {
        let rules = vec![
            Rule {
                action: Allow,
                all: false,
                target: Target::Subnet(net("10.0.0.0/8")),
            },
            Rule {
                action: Deny,
                all: false,
                target: Target::Name("bad.example".into()),
            },
            Rule {
                action: Allow,
                all: false,
                target: Target::Everything,
            },
        ];
        let mut asked = Vec::new();
        let t = AccessTable::from_rules(&rules, |name| {
            asked.push(name.to_string());
            Ok(vec![ip("::ffff:10.1.2.3"), ip("10.9.9.9")])
        })
        .unwrap();
        assert_eq!(asked, ["bad.example"]);
        assert_eq!(t.check(ip("10.1.2.3")), Deny);
        assert_eq!(t.check(ip("10.9.9.9")), Allow);
        assert_eq!(t.check(ip("2001:db8::1")), Allow);
    }

    #[test]
    fn from_rules_reports_resolution_failures() {
        let rules = [Rule {
            action: Allow,
            all: false,
            target: Target::Name("nowhere.example".into()),
        }];
        let err = AccessTable::from_rules(&rules, |_| Err("NXDOMAIN".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot resolve hostname \"nowhere.example\": NXDOMAIN"
        );
        let err = AccessTable::from_rules(&rules, |_| Ok(vec![])).unwrap_err();
        assert!(matches!(err, AclError::Resolve { ref name, .. } if name == "nowhere.example"));
    }
}
