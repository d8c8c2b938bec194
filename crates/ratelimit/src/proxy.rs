//! Trusted proxies and the client address they may report through `X-Forwarded-For`.
//!
//! Only a peer in `ratelimit.trusted_proxies` may name the client. Its `X-Forwarded-For` list is
//! read from the right (the entry the nearest proxy appended) leftwards, skipping addresses that
//! are trusted proxies themselves; the first untrusted address is the client. A malformed entry
//! ends the walk: the address found so far (at worst the peer's) is used, never an error.

use std::net::IpAddr;

use crate::config::ConfigError;
use crate::identity::ClientNetwork;

/// One address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    network: IpAddr,
    prefix: u8,
}

impl Block {
    /// Whether `address` is in the block: the same network at the block's prefix (addresses of
    /// the other family never are).
    fn contains(&self, address: IpAddr) -> bool {
        let network = |address| ClientNetwork::of(address, self.prefix, self.prefix);
        network(self.network) == network(address)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as the IPv4 address they carry.
pub(crate) fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The peers trusted to report the client address.
///
/// ```
/// use std::net::IpAddr;
/// use mainstay_ratelimit::TrustedProxies;
///
/// let proxies = TrustedProxies::parse(&["10.0.0.0/8".to_owned()])?;
/// let proxy: IpAddr = "10.1.2.3".parse().unwrap();
/// let stranger: IpAddr = "203.0.113.9".parse().unwrap();
/// let header: &[u8] = b"198.51.100.7, 10.0.0.5";
/// assert_eq!(proxies.client_address(Some(proxy), [header]), Some("198.51.100.7".parse().unwrap()));
/// // From anyone else the header is ignored.
/// assert_eq!(proxies.client_address(Some(stranger), [header]), Some(stranger));
/// # Ok::<(), mainstay_ratelimit::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

impl TrustedProxies {
    /// Parses addresses and CIDR blocks (`10.0.0.0/8`, `::1`, `fd00::/8`); the error names the entry
    /// of `ratelimit.trusted_proxies` that is wrong.
    pub fn parse(entries: &[String]) -> Result<Self, ConfigError> {
        let mut blocks = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let error = || {
                ConfigError::new(
                    format!("ratelimit.trusted_proxies[{index}]"),
                    entry,
                    "an IP address or a CIDR block such as 10.0.0.0/8 or fd00::/8",
                )
            };
            let (address, prefix) = match entry.trim().split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (entry.trim(), None),
            };
            let network: IpAddr = address.parse().map_err(|_| error())?;
            let network = canonical(network);
            let max = if network.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(prefix) => prefix.parse::<u8>().map_err(|_| error())?,
                None => max,
            };
            if prefix > max {
                return Err(error());
            }
            blocks.push(Block { network, prefix });
        }
        Ok(Self { blocks })
    }

    /// Whether `address` is a trusted proxy.
    #[must_use]
    pub fn is_trusted(&self, address: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(address))
    }

    /// The client's address: the peer's own, unless the peer is a trusted proxy, in which case the
    /// rightmost untrusted address of the `X-Forwarded-For` values (in header order). Malformed
    /// values never fail: the walk stops at them.
    pub fn client_address<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<IpAddr> {
        let peer = peer?;
        if self.blocks.is_empty() || !self.is_trusted(peer) {
            return Some(peer);
        }
        let values: Vec<&[u8]> = forwarded_for.into_iter().collect();
        let mut client = peer;
        for value in values.iter().rev() {
            let Ok(text) = std::str::from_utf8(value) else {
                return Some(client);
            };
            for entry in text.rsplit(',') {
                let Some(address) = parse_entry(entry) else {
                    return Some(client);
                };
                client = address;
                if !self.is_trusted(address) {
                    return Some(address);
                }
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn walks_from_the_right_skipping_trusted_hops() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let header: &[u8] = b"1.1.1.1, 2.2.2.2, 10.0.0.9";
        assert_eq!(
            proxies.client_address(Some(ip("10.0.0.1")), [header]),
            Some(ip("2.2.2.2"))
        );
        assert_eq!(
            proxies.client_address(Some(ip("::1")), [&b"[2001:db8::1]:443"[..]]),
            Some(ip("2001:db8::1"))
        );
        // Every hop trusted: the leftmost is the best we know.
        assert_eq!(
            proxies.client_address(Some(ip("10.0.0.1")), [&b"10.0.0.3"[..]]),
            Some(ip("10.0.0.3"))
        );
    }

    #[test]
    fn malformed_values_stop_the_walk() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        for header in [&b"garbage"[..], b"", b"\xff\xfe", b"1.1.1.1, nonsense"] {
            assert_eq!(
                proxies.client_address(Some(ip("10.0.0.1")), [header]),
                Some(ip("10.0.0.1")),
                "{header:?}"
            );
        }
    }

    #[test]
    fn bad_entries_name_their_index() {
        for entry in ["10.0.0.0/33", "nonsense", "::1/129", "10.0.0.0/x"] {
            let error = TrustedProxies::parse(&["::1".into(), entry.into()]).unwrap_err();
            assert_eq!(error.key, "ratelimit.trusted_proxies[1]");
        }
    }

    #[test]
    fn mapped_addresses_match_ipv4_blocks() {
        let proxies = TrustedProxies::parse(&["192.168.0.0/16".into()]).unwrap();
        assert!(proxies.is_trusted(ip("::ffff:192.168.1.1")));
        assert!(!proxies.is_trusted(ip("192.169.0.1")));
        let everyone = TrustedProxies::parse(&["0.0.0.0/0".into()]).unwrap();
        assert!(everyone.is_trusted(ip("8.8.8.8")));
    }
}
