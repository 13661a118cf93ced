//! The client behind a load balancer: its address read from
//! `X-Forwarded-For`, believed only on connections from a proxy named
//! trusted (`--trusted-proxy`).
//!
//! Why: rate limits, shares of the execution slots and the instance caps
//! count clients by address when there are no tokens ([`ClientId`]).
//! Behind a balancer every connection comes from the balancer, so every
//! client was one client: one rate-limit bucket and one share of the slots
//! for everybody. The header is written by whoever sends the request, so
//! it is read only when the peer is a trusted proxy, and from its right
//! end: each trusted proxy appends the address it was connected from, so
//! the rightmost address that is not a trusted proxy's is the client a
//! trusted hop saw; anything to its left may be made up.
//!
//! [`ClientId`]: super::client::ClientId

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header proxies append the address they were connected from to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The networks whose connections may say which client they carry. Empty
/// by default: then the header is never read.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&ip))
    }

    /// The client a request from `peer` comes from: `peer` itself unless it
    /// is a trusted proxy; else, walking `X-Forwarded-For` from its right
    /// end, the first address that is not a trusted proxy's (or, if every
    /// one is, the leftmost). An entry that is not an address (`unknown`,
    /// an obfuscated name) ends the walk at the hop before it.
    /// Addresses are compared in their canonical form: on a dual-stack
    /// socket (`--bind ::`) an IPv4 peer arrives as `::ffff:10.0.0.2`,
    /// which `--trusted-proxy 10.0.0.2` names too.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        // Several headers are one list, in order (RFC 9110, 5.3), walked
        // from its end without collecting it: behind a balancer every
        // request comes this way.
        let hops = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','));
        let mut client = peer;
        for hop in hops.rev() {
            let Some(ip) = address(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }

    /// Puts the client's address in place of a trusted proxy's in the
    /// request's connection info, which [`ClientId`] reads; nothing to do
    /// when no proxy is trusted.
    ///
    /// [`ClientId`]: super::client::ClientId
    pub fn apply(&self, request: &mut Request) {
        if self.0.is_empty() {
            return;
        }
        let Some(&ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
            return;
        };
        let client = self.client(peer.ip(), request.headers());
        if client != peer.ip() {
            // The client's port is not known; the proxy's would mislead.
            request.extensions_mut().insert(ConnectInfo(SocketAddr::new(client, 0)));
        }
    }
}

/// One entry of the header: an address, with or without a port
/// (`192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`).
fn address(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))?;
    Some(ip.to_canonical())
}

/// A `--trusted-proxy` value: a network (`10.0.0.0/8`) or one address.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is neither an address nor a network such as 10.0.0.0/8"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| parse_network(n).unwrap()).collect())
    }

    fn forwarded(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        // What the client wrote itself (left) is passed over.
        let headers = forwarded(&[b"6.6.6.6, 192.0.2.7, 10.1.2.3"]);
        assert_eq!(trusted.client(peer, &headers), ip("192.0.2.7"));
        // Several headers are one list; ports and IPv6 are read.
        let headers = forwarded(&[b"6.6.6.6", b"[2001:db8::7]:4711", b"10.0.0.1:80"]);
        assert_eq!(trusted.client(peer, &headers), ip("2001:db8::7"));
        // Every hop trusted: the leftmost.
        let headers = forwarded(&[b"10.9.9.9, 10.0.0.1"]);
        assert_eq!(trusted.client(peer, &headers), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(trusted.client(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn an_untrusted_peer_says_nothing_of_who_it_carries() {
        let headers = forwarded(&[b"192.0.2.7"]);
        let peer = ip("198.51.100.1");
        assert_eq!(proxies(&["10.0.0.0/8"]).client(peer, &headers), peer);
        assert_eq!(proxies(&[]).client(peer, &headers), peer);
    }

    #[test]
    fn an_ipv4_peer_on_a_dual_stack_socket_is_its_ipv4_address() {
        let trusted = proxies(&["10.0.0.2"]);
        let headers = forwarded(&[b"::ffff:192.0.2.7"]);
        assert_eq!(trusted.client(ip("::ffff:10.0.0.2"), &headers), ip("192.0.2.7"));
    }

    #[test]
    fn an_unreadable_hop_ends_the_walk_at_the_one_before() {
        let trusted = proxies(&["127.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        let headers = forwarded(&[b"192.0.2.7, unknown, 127.0.0.2"]);
        assert_eq!(trusted.client(peer, &headers), ip("127.0.0.2"));
        // Bytes that are not text, left of the client, change nothing.
        let headers = forwarded(&[b"\xff\xfe, 192.0.2.7"]);
        assert_eq!(trusted.client(peer, &headers), ip("192.0.2.7"));
    }

    #[test]
    fn networks_and_single_addresses_are_accepted() {
        assert_eq!(parse_network("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_network("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("localhost").is_err());
    }
}
