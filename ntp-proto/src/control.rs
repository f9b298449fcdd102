//! The control protocol between `ntpxc` and `ntpxd`: one JSON request line, one JSON
//! response line, over a Unix stream socket (the path chrony calls `bindcmdaddress`) or
//! one datagram each way on the UDP command port. The transports are the daemon's and
//! ntpxc's; this module is what travels.

use crate::report::{
    ActivityReport, AuthDataReport, ClientReport, NtpDataReport, SelectDataReport, SourceReport,
    SourceStatsReport, TrackingReport,
    stats::{ServerStats, XdpStats},
};
use serde::{Deserialize, Serialize};

/// Largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 4096;

/// A control request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    /// Server counters (chronyc serverstats).
    Serverstats,
    /// The XDP fast path's attachment and counters.
    Xdpstats,
    /// The sources and their state (chronyc sources).
    Sources,
    /// The reference and the clock's state (chronyc tracking).
    Tracking,
    /// Per-source regression statistics (chronyc sourcestats).
    Sourcestats,
    /// How many sources are online (chronyc activity).
    Activity,
    /// Each source's state in selection (chronyc selectdata).
    Selectdata,
    /// Per-client request counts, kernel and daemon merged (chronyc clients).
    Clients,
    /// The last exchange with each source, or one (chronyc ntpdata).
    Ntpdata {
        /// Which source.
        address: Option<std::net::IpAddr>,
    },
    /// How each source's exchanges are authenticated (chronyc authdata).
    Authdata,
    /// Poll every source now, four times (chronyc burst).
    Burst,
    /// Re-read the sourcedir files, adding and removing sources (chronyc reload sources).
    ReloadSources,
    /// Stop polling the source at `address` (all sources without one).
    Offline {
        /// Which source.
        address: Option<std::net::IpAddr>,
    },
    /// Resume polling (chronyc online).
    Online {
        /// Which source.
        address: Option<std::net::IpAddr>,
    },
    /// Step by the correction left (no arguments) or set makestep (chronyc makestep).
    Makestep {
        /// Threshold in seconds, with `limit`.
        threshold: Option<f64>,
        /// Update limit (-1: no limit).
        limit: Option<i32>,
    },
}

/// A control response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Answer to [`Request::Serverstats`].
    Serverstats(ServerStats),
    /// Answer to [`Request::Xdpstats`].
    Xdpstats(XdpStats),
    /// Answer to [`Request::Sources`].
    Sources(Vec<SourceReport>),
    /// Answer to [`Request::Tracking`].
    Tracking(TrackingReport),
    /// Answer to [`Request::Sourcestats`].
    Sourcestats(Vec<SourceStatsReport>),
    /// Answer to [`Request::Activity`].
    Activity(ActivityReport),
    /// Answer to [`Request::Clients`].
    Clients(Vec<ClientReport>),
    /// Answer to [`Request::Selectdata`].
    Selectdata(Vec<SelectDataReport>),
    /// Answer to [`Request::Ntpdata`].
    Ntpdata(Vec<NtpDataReport>),
    /// Answer to [`Request::Authdata`].
    Authdata(Vec<AuthDataReport>),
    /// A command was carried out (chronyc's "200 OK").
    Ok,
    /// Over the UDP command port: the reply needs this many bytes, more than the request
    /// had; send it again padded to that size.
    TooLarge(usize),
    /// The request failed.
    Error(String),
}

impl Request {
    /// chronyc's name of the command (as `opencommands` names it).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Serverstats => "serverstats",
            Request::Xdpstats => "xdpstats",
            Request::Sources => "sources",
            Request::Tracking => "tracking",
            Request::Sourcestats => "sourcestats",
            Request::Activity => "activity",
            Request::Selectdata => "selectdata",
            Request::Clients => "clients",
            Request::Ntpdata { .. } => "ntpdata",
            Request::Authdata => "authdata",
            Request::Burst => "burst",
            Request::ReloadSources => "reload sources",
            Request::Offline { .. } => "offline",
            Request::Online { .. } => "online",
            Request::Makestep { .. } => "makestep",
        }
    }

    /// Whether the command only reads state (allowed over the UDP command port).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Request::Serverstats
                | Request::Xdpstats
                | Request::Sources
                | Request::Tracking
                | Request::Sourcestats
                | Request::Activity
                | Request::Ntpdata { .. }
                | Request::Authdata
                | Request::Selectdata
                | Request::Clients
        )
    }
}

/// Largest UDP command datagram.
pub const MAX_DATAGRAM: usize = 65_000;

/// What ntpxc pads its UDP requests to at first (one unfragmented packet): the daemon
/// never answers with more bytes than it received (no amplification), so the request
/// makes room for the reply; a larger reply asks for a larger request
/// ([`Response::TooLarge`]).
pub const UDP_REQUEST_SIZE: usize = 1400;

/// The commands the UDP command port answers by default (chrony's open set, of those
/// ntpx has).
pub const DEFAULT_OPEN_COMMANDS: &[&str] = &["activity", "sources", "sourcestats", "tracking"];

/// The commands `opencommands` may open (chrony's names; `xdpstats` is ntpx's own).
pub const OPENABLE_COMMANDS: &[&str] = &[
    "activity",
    "authdata",
    "clients",
    "manual",
    "ntpdata",
    "rtcdata",
    "selectdata",
    "serverstats",
    "smoothing",
    "sourcename",
    "sources",
    "sourcestats",
    "tracking",
    "xdpstats",
];

/// Why a control message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Longer than [`MAX_REQUEST`].
    #[error("request of {0} bytes exceeds {MAX_REQUEST}")]
    TooLong(usize),
    /// Not a request or response of this protocol.
    #[error("malformed control message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Decodes one request line; errors say what was wrong with it.
pub fn decode_request(line: &[u8]) -> Result<Request, ControlError> {
    if line.len() > MAX_REQUEST {
        return Err(ControlError::TooLong(line.len()));
    }
    Ok(serde_json::from_slice(line)?)
}

/// One request as sent (without the line end).
pub fn encode_request(req: &Request) -> Vec<u8> {
    // Serializing these plain types cannot fail: no maps with non-string keys, no I/O.
    serde_json::to_vec(req).unwrap_or_default()
}

/// One response as sent (without the line end).
pub fn encode_response(resp: &Response) -> Vec<u8> {
    serde_json::to_vec(resp).unwrap_or_default()
}

/// The answer to one datagram on the UDP command port, or nothing: only the `open`
/// commands are carried out (`handle` gets the others as errors, with why), and the
/// answer is never longer than the datagram, so the port cannot amplify a spoofed
/// request; a reply that does not fit becomes [`Response::TooLarge`] when that fits.
pub fn udp_answer(
    datagram: &[u8],
    open: &[String],
    handle: impl FnOnce(Result<Request, String>) -> Response,
) -> Option<Vec<u8>> {
    let response = match decode_request(datagram.trim_ascii()) {
        Ok(r) if !open.iter().any(|c| c == r.name()) => handle(Err(format!(
            "{} is not open on the command port (opencommands); use the Unix socket",
            r.name()
        ))),
        Ok(r) => handle(Ok(r)),
        Err(e) => handle(Err(e.to_string())),
    };
    let out = encode_response(&response);
    if out.len() <= datagram.len() {
        return Some(out);
    }
    let too_big = encode_response(&Response::TooLarge(out.len()));
    (too_big.len() <= datagram.len()).then_some(too_big)
}

/// Decodes a response.
pub fn decode_response(bytes: &[u8]) -> Result<Response, ControlError> {
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_an_error() {
        assert_eq!(
            decode_request(br#"{"command":"serverstats"}"#).unwrap(),
            Request::Serverstats
        );
        assert_eq!(
            decode_request(br#"{"command":"xdpstats"}"#).unwrap(),
            Request::Xdpstats
        );
        assert!(decode_request(br#"{"command":"reboot"}"#).is_err());
        assert!(decode_request(b"\xff\x00garbage").is_err());
        assert!(decode_request(&vec![b' '; MAX_REQUEST + 1]).is_err());
    }
}
