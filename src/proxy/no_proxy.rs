//! `NO_PROXY`: which destinations are reached directly although a proxy is set.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// A parsed `NO_PROXY` list. Entries are separated by commas, whitespace around them ignored:
///
/// | entry | matches |
/// |---|---|
/// | `*` | every destination |
/// | `example.com`, `.example.com`, `*.example.com` | the name and every name under it (ASCII case and a trailing dot ignored) |
/// | `10.1.2.3`, `10.0.0.0/8`, `fd00::/8`, `[fd00::1]` | destinations written as an IP address inside it; a name is never resolved to be compared |
/// | any of these with `:port`: `example.com:8443`, `[fd00::1]:443` | the same, on that port only |
///
/// This is curl's and reqwest's rule for names (a leading dot is optional), with Go's `*.`
/// prefix and ports accepted, so lists written for other tools in the same environment mean the
/// same here. An entry that cannot be read (a bad port) never matches.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// As written, for messages.
    text: String,
    what: What,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum What {
    All,
    /// Lowercase, without leading `*.`/`.` and trailing dot.
    Name(String),
    Net(IpNet),
    /// Unreadable: never matches.
    Invalid,
}

impl NoProxy {
    /// Parses a `NO_PROXY` value.
    pub fn parse(list: &str) -> Self {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|text| {
                let (what, port) = parse_entry(text);
                Entry {
                    text: text.to_string(),
                    what,
                    port,
                }
            })
            .collect();
        Self { entries }
    }

    /// The entry that excludes `host` on `port`, if any.
    pub fn matching(&self, host: &url::Host<&str>, port: Option<u16>) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.port.is_none_or(|p| Some(p) == port) && e.what.matches(host))
            .map(|e| e.text.as_str())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for NoProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.entries.iter().map(|e| e.text.as_str()).collect();
        f.write_str(&texts.join(","))
    }
}

impl fmt::Debug for NoProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl What {
    fn matches(&self, host: &url::Host<&str>) -> bool {
        match (self, host) {
            (What::All, _) => true,
            (What::Name(n), url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d == *n
                    || d.strip_suffix(n.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
            (What::Net(net), url::Host::Ipv4(ip)) => net.contains(&IpAddr::V4(*ip)),
            (What::Net(net), url::Host::Ipv6(ip)) => net.contains(&IpAddr::V6(*ip)),
            _ => false,
        }
    }
}

/// One entry: what it names and the port it is limited to.
fn parse_entry(text: &str) -> (What, Option<u16>) {
    if text == "*" {
        return (What::All, None);
    }
    // Split off a port: `[v6]:port`, or `host:port` with a single colon (a bare IPv6 address
    // has several and no port).
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, "")) => (inside, None),
            Some((inside, after)) => match after.strip_prefix(':').map(str::parse::<u16>) {
                Some(Ok(p)) => (inside, Some(p)),
                _ => return (What::Invalid, None),
            },
            None => return (What::Invalid, None),
        }
    } else if text.matches(':').count() == 1 {
        let (h, p) = text.split_once(':').unwrap_or((text, ""));
        match p.parse::<u16>() {
            Ok(p) => (h, Some(p)),
            Err(_) => return (What::Invalid, None),
        }
    } else {
        (text, None)
    };
    if let Ok(net) = host.parse::<IpNet>() {
        return (What::Net(net), port);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return (What::Net(IpNet::from(ip)), port);
    }
    let name = host
        .strip_prefix("*.")
        .or_else(|| host.strip_prefix('.'))
        .unwrap_or(host)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if name.is_empty() || name.contains(['/', '*', '@', ' ']) {
        return (What::Invalid, None);
    }
    (What::Name(name), port)
}
