//! Address ranges (`10.0.0.0/8`, `::1/128`) for the trusted proxy list.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An IPv4 or IPv6 network in CIDR notation; a bare address means that one host.
///
/// ```
/// use host_hyper::Cidr;
/// let net: Cidr = "10.1.0.0/16".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("10.2.0.1".parse().unwrap()));
/// // IPv4 clients seen on a dual-stack socket match their IPv4 range.
/// assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is not a CIDR range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{input:?} is not an address range: {reason} (expected e.g. 10.0.0.0/8, 127.0.0.1 or ::1/128)"
)]
pub struct InvalidCidr {
    input: String,
    reason: &'static str,
}

impl Cidr {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, InvalidCidr> {
        let err = |reason| InvalidCidr {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| err("prefix length is not a number"))?,
        };
        if prefix > max {
            return Err(err("prefix length is longer than the address"));
        }
        let net = Cidr { addr, prefix };
        if !net.contains(addr) || net.host_bits_set() {
            return Err(err("address has bits set beyond the prefix length"));
        }
        Ok(net)
    }
}

impl Cidr {
    fn host_bits_set(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => {
                u32::from(a)
                    & !u32::MAX
                        .checked_shl(32 - u32::from(self.prefix))
                        .unwrap_or(0)
                    != 0
            }
            IpAddr::V6(a) => {
                u128::from(a)
                    & !u128::MAX
                        .checked_shl(128 - u32::from(self.prefix))
                        .unwrap_or(0)
                    != 0
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_networks_and_refuses_nonsense() {
        assert_eq!(
            "127.0.0.1".parse::<Cidr>().unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!("fd00::/8"
            .parse::<Cidr>()
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "example.com",
            "10.0.0.0/x",
            "::1/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn families_do_not_mix() {
        let v4: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(!v4.contains("::1".parse().unwrap()));
        let v6: Cidr = "::1".parse().unwrap();
        assert!(!v6.contains("127.0.0.1".parse().unwrap()));
    }
}
