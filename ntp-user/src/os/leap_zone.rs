//! Leap seconds from the system's tz database (`leapsectz`), parsed by `ntp_proto::leaptz`.

use anyhow::{Context, Result};
use ntp_proto::leaptz::{self, Leap};

/// Reads the zone `name` (e.g. "right/UTC") from the system's tz database.
pub fn load(name: &str) -> Result<Vec<Leap>> {
    let path = std::path::Path::new("/usr/share/zoneinfo").join(name);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    leaptz::parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_right_utc_zone_says_37_seconds_now() {
        // Debian's tzdata ships right/UTC; 37 s has held since 2017.
        let leaps = load("right/UTC").unwrap();
        assert_eq!(leaps.len(), 27);
        assert_eq!(leaptz::tai_offset(&leaps, 1_795_531_348), 37);
    }
}
