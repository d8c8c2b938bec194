//! Who a request counts against, and the HMAC that keeps identities out of Redis keys and logs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The caller of a request as the application identified it (its auth layer has already run).
///
/// The application converts its own caller type into this one in the identity callback of the
/// HTTP layer, or passes it to [`crate::RateLimiter::check`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerIdentity {
    /// The organisation the caller acts for; its hourly quota is shared by all its keys.
    pub organisation: String,
    /// The caller's tier (a key of `ratelimit.tiers`).
    pub tier: String,
    /// The organisation's plan (a key of `ratelimit.plans`).
    pub plan: String,
    /// A stable identifier of the caller (an API key's pseudonym). `None` for an anonymous caller,
    /// who is then counted by client address, quota included.
    pub principal: Option<String>,
}

impl CallerIdentity {
    /// An identified caller.
    #[must_use]
    pub fn new(
        organisation: impl Into<String>,
        tier: impl Into<String>,
        plan: impl Into<String>,
        principal: impl Into<String>,
    ) -> Self {
        Self {
            organisation: organisation.into(),
            tier: tier.into(),
            plan: plan.into(),
            principal: Some(principal.into()),
        }
    }

    /// An anonymous caller of a tier and plan: counted by client address.
    #[must_use]
    pub fn anonymous(tier: impl Into<String>, plan: impl Into<String>) -> Self {
        Self {
            organisation: String::new(),
            tier: tier.into(),
            plan: plan.into(),
            principal: None,
        }
    }
}

/// A 128-bit pseudonym: the first half of an HMAC-SHA256. Used as an in-process key and, in hex,
/// in Redis keys. Its `Debug` and `Display` forms are hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(pub [u8; 16]);

impl Pseudonym {
    /// The pseudonym as 32 lowercase hex digits.
    #[must_use]
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Pseudonym({})", self.to_hex())
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_hex())
    }
}

/// The network an anonymous client is counted by: its address cut to `ratelimit.ipv4_prefix_len`
/// or `ratelimit.ipv6_prefix_len` bits (an IPv4-mapped IPv6 address counts as its IPv4 address), so
/// that a caller who holds a whole IPv6 /64 cannot multiply its limits by changing addresses.
/// `Display` is CIDR notation (`2001:db8:1:2::/64`).
///
/// ```
/// use mainstay_ratelimit::ClientNetwork;
///
/// let network = ClientNetwork::of("2001:db8:1:2:aaaa::1".parse().unwrap(), 32, 64);
/// assert_eq!(network.to_string(), "2001:db8:1:2::/64");
/// let mapped = ClientNetwork::of("::ffff:192.0.2.7".parse().unwrap(), 24, 64);
/// assert_eq!(mapped.to_string(), "192.0.2.0/24");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNetwork {
    /// The first address of the network.
    pub address: IpAddr,
    /// Its prefix length in bits.
    pub prefix_len: u8,
}

impl ClientNetwork {
    /// The network of `address` for the given prefix lengths (clamped to 32 and 128 bits).
    #[must_use]
    pub fn of(address: IpAddr, ipv4_prefix_len: u8, ipv6_prefix_len: u8) -> Self {
        match crate::proxy::canonical(address) {
            IpAddr::V4(v4) => {
                let prefix_len = ipv4_prefix_len.min(32);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                Self {
                    address: IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask)),
                    prefix_len,
                }
            }
            IpAddr::V6(v6) => {
                let prefix_len = ipv6_prefix_len.min(128);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                Self {
                    address: IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask)),
                    prefix_len,
                }
            }
        }
    }
}

impl fmt::Display for ClientNetwork {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.address, self.prefix_len)
    }
}

/// Hashes identities with `ratelimit.secret` (HMAC-SHA256) before they become keys or log fields.
#[derive(Clone)]
pub struct IdentityHasher {
    /// The keyed state after absorbing the secret, cloned per identity: no key schedule per call.
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for IdentityHasher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("IdentityHasher")
            .finish_non_exhaustive()
    }
}

impl IdentityHasher {
    /// A hasher keyed with `secret` (any length; the configuration asks for 16 bytes or more).
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
        Self { keyed }
    }

    /// A hasher with a random 32-byte secret, for a process that shares its keys with no one.
    #[must_use]
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self::new(&secret)
    }

    /// The pseudonym of `value` of a `kind` (`b"org"`, `b"principal"`, `b"addr"`; the kind keeps
    /// equal strings of different kinds apart).
    #[must_use]
    pub fn pseudonym(&self, kind: &[u8], value: &[u8]) -> Pseudonym {
        let mut mac = self.keyed.clone();
        mac.update(kind);
        mac.update(b":");
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut half = [0u8; 16];
        half.copy_from_slice(&digest[..16]);
        Pseudonym(half)
    }

    /// The pseudonym of a principal within its organisation (the same principal string in two
    /// organisations is two callers).
    #[must_use]
    pub fn principal(&self, organisation: &str, principal: &str) -> Pseudonym {
        let mut mac = self.keyed.clone();
        mac.update(b"principal:");
        // Length-prefixed, so that no two (organisation, principal) pairs share an input.
        mac.update(&(organisation.len() as u64).to_le_bytes());
        mac.update(organisation.as_bytes());
        mac.update(principal.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut half = [0u8; 16];
        half.copy_from_slice(&digest[..16]);
        Pseudonym(half)
    }

    /// The pseudonym of a client network (what anonymous callers are counted by). Networks of
    /// different prefix lengths never share a pseudonym.
    #[must_use]
    pub fn network(&self, network: ClientNetwork) -> Pseudonym {
        let mut input = [0u8; 17];
        let length = match network.address {
            IpAddr::V4(v4) => {
                input[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                input[..16].copy_from_slice(&v6.octets());
                16
            }
        };
        input[length] = network.prefix_len;
        self.pseudonym(b"net", &input[..=length])
    }

    /// The pseudonym of a client address.
    #[must_use]
    pub fn address(&self, address: IpAddr) -> Pseudonym {
        match address {
            IpAddr::V4(v4) => self.pseudonym(b"addr", &v4.octets()),
            IpAddr::V6(v6) => self.pseudonym(b"addr", &v6.octets()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_depend_on_secret_kind_and_value() {
        let one = IdentityHasher::new(b"0123456789abcdef");
        let other = IdentityHasher::new(b"fedcba9876543210");
        let org = one.pseudonym(b"org", b"acme");
        assert_eq!(org, one.pseudonym(b"org", b"acme"));
        assert_ne!(org, other.pseudonym(b"org", b"acme"));
        assert_ne!(org, one.pseudonym(b"principal", b"acme"));
        assert_eq!(org.to_hex().len(), 32);
        assert!(!format!("{org:?}").contains("acme"));
    }
}
