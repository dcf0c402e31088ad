//! The HTTP client webhook deliveries go out with, and the rules for where they may go.
//!
//! A receiver's URL is chosen by a user of the service, so a delivery must never become a
//! way into the service's own network (SSRF): unless private networks are allowed
//! (`APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`, for on-premise receivers and tests),
//!
//! - the URL is `https`;
//! - a host written as an address must be a public one;
//! - a host name is resolved by this module's resolver, which hands the connector only the
//!   public addresses it resolved to (and fails when there are none). For names the check
//!   and the connection use the very same addresses, so a name that resolves to a public
//!   address when the endpoint is registered and to `127.0.0.1` at delivery time (DNS
//!   rebinding) is refused at delivery time. A host written as an address never reaches a
//!   resolver: [`DeliveryClient::post`] judges the URL again before every request;
//! - no redirect is followed (a 3xx is a failed attempt) and no proxy is used (a proxy
//!   would resolve the name itself);
//! - a response body is read up to [`MAX_RESPONSE_BYTES`], the rest ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

/// How long one delivery attempt may take, connection included (SPEC §12).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of a receiver's answer that is read (kept for the deliveries list).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024;
/// The longest URL an endpoint may have.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a URL may not receive deliveries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// Not an absolute http(s) URL of at most [`MAX_URL_CHARS`] characters with a host.
    #[error("expected an absolute https URL with a host (at most {MAX_URL_CHARS} characters)")]
    Malformed,
    /// `http` where only `https` is allowed.
    #[error("must be https (http only with APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true)")]
    NotHttps,
    /// Credentials in the URL would be sent to the receiver in clear in logs and lists.
    #[error("must not carry a user name or password")]
    Credentials,
    /// The host is an address that is not public.
    #[error("points to a private, loopback or link-local address")]
    PrivateAddress,
}

/// Where deliveries may go: the public internet only, or private networks too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// `APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS`: private, loopback and link-local addresses
    /// (and plain `http`) allowed.
    pub allow_private: bool,
}

impl Reach {
    /// Checks a receiver's URL as written (a host name is judged again by its addresses at
    /// every connection).
    pub fn check_url(&self, raw: &str) -> Result<Url, UrlRefused> {
        if raw.chars().count() > MAX_URL_CHARS {
            return Err(UrlRefused::Malformed);
        }
        let url = Url::parse(raw).map_err(|_| UrlRefused::Malformed)?;
        // Percent-encoding can make the stored URL much longer than the text given.
        if url.as_str().len() > 4 * MAX_URL_CHARS {
            return Err(UrlRefused::Malformed);
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            "http" => return Err(UrlRefused::NotHttps),
            _ => return Err(UrlRefused::Malformed),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefused::Credentials);
        }
        let ip = match url.host() {
            None => return Err(UrlRefused::Malformed),
            Some(url::Host::Domain("")) => return Err(UrlRefused::Malformed),
            Some(url::Host::Domain(_)) => None,
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        };
        if let Some(ip) = ip
            && !self.allow_private
            && !is_public(ip)
        {
            return Err(UrlRefused::PrivateAddress);
        }
        Ok(url)
    }
}

/// The client deliveries go out with. Every request goes through [`Reach::check_url`] first
/// (a host written as an address never reaches the resolver, so it is judged there), then
/// through the resolver that keeps only allowed addresses.
pub struct DeliveryClient {
    reach: Reach,
    http: reqwest::Client,
}

impl DeliveryClient {
    /// A client for `reach`: its resolver, `https` only unless private networks are allowed,
    /// no redirects, no proxy, the attempt timeout.
    pub fn new(reach: Reach) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(Resolver { reach }))
            .https_only(!reach.allow_private)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("ledger-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { reach, http })
    }

    /// A POST to `url`, once the URL passed the checks of this client's reach.
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, UrlRefused> {
        let url = self.reach.check_url(url)?;
        Ok(self.http.post(url))
    }
}

/// The status and at most [`MAX_RESPONSE_BYTES`] of the body of a receiver's answer (cut
/// at a character boundary); the rest is never read.
pub async fn read_answer(mut response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_RESPONSE_BYTES);
    let text = match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).unwrap_or_default()
        }
    };
    (status, text)
}

/// Resolves with the system resolver, then keeps only the addresses this reach allows.
struct Resolver {
    reach: Reach,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let reach = self.reach;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| reach.allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                let reason = if found.is_empty() {
                    format!("{host} resolves to no address")
                } else {
                    format!("{host} resolves to private, loopback or link-local addresses only")
                };
                return Err(reason.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918, ULA),
/// link-local, shared (CGNAT), documentation, benchmarking, multicast, broadcast,
/// unspecified or reserved — nor an IPv6 address standing for one of those IPv4 ones.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0                                   // "this network"
        || (a == 100 && (64..128).contains(&b))     // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0)           // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b))      // benchmarking
        || a >= 240) // reserved, broadcast
}

/// Global unicast (2000::/3) minus its special-purpose blocks. Everything else — loopback,
/// unspecified, IPv4-compatible and IPv4-translated forms, NAT64 (64:ff9b::/96, which on an
/// IPv6-only network with DNS64 carries every IPv4-only receiver: those are refused), unique
/// local, link-local, multicast, discard — is outside 2000::/3.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let global = (s[0] & 0xe000) == 0x2000;
    let special = match s[0] {
        // Documentation 2001:db8::/32; IETF protocol assignments 2001::/27 (Teredo, which
        // embeds an IPv4 address, benchmarking, ORCHID among them) and ORCHIDv2 2001:20::/28.
        0x2001 => s[1] == 0x0db8 || s[1] < 0x0030,
        0x2002 => true,                 // 6to4 (embeds an IPv4 address)
        0x3fff => (s[1] & 0xf000) == 0, // documentation 3fff::/20
        _ => false,
    };
    global && !special
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: Reach = Reach {
        allow_private: false,
    };
    const PRIVATE: Reach = Reach {
        allow_private: true,
    };

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "127.8.9.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
            "ff02::1",
            "::ffff:0:7f00:1",
            "100::1",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "3fff::1",
            "5f00::1",
            "::2",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_https_public_and_without_credentials() {
        assert!(
            PUBLIC
                .check_url("https://hooks.example.com/ledger?x=1")
                .is_ok()
        );
        assert_eq!(
            PUBLIC.check_url("http://hooks.example.com/").unwrap_err(),
            UrlRefused::NotHttps
        );
        assert_eq!(
            PUBLIC.check_url("https://127.0.0.1/").unwrap_err(),
            UrlRefused::PrivateAddress
        );
        assert_eq!(
            PUBLIC.check_url("https://[::1]:8443/").unwrap_err(),
            UrlRefused::PrivateAddress
        );
        assert_eq!(
            PUBLIC
                .check_url("https://169.254.169.254/latest/meta-data")
                .unwrap_err(),
            UrlRefused::PrivateAddress
        );
        assert_eq!(
            PUBLIC
                .check_url("https://user:pw@hooks.example.com/")
                .unwrap_err(),
            UrlRefused::Credentials
        );
        for bad in [
            "",
            "hooks.example.com",
            "ftp://x/",
            "file:///etc/passwd",
            "https://",
        ] {
            assert_eq!(
                PUBLIC.check_url(bad).unwrap_err(),
                UrlRefused::Malformed,
                "{bad}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(PUBLIC.check_url(&long).unwrap_err(), UrlRefused::Malformed);
        assert!(PRIVATE.check_url("http://127.0.0.1:9000/hook").is_ok());
    }

    /// A local receiver that answers `answer` (a whole HTTP response) to every request.
    async fn receiver(answer: Vec<u8>) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket.write_all(&answer).await;
                });
            }
        });
        (port, task)
    }

    /// POSTs to `http://127.0.0.1:{port}/` with private networks allowed.
    async fn post_locally(port: u16) -> reqwest::Response {
        DeliveryClient::new(PRIVATE)
            .unwrap()
            .post(&format!("http://127.0.0.1:{port}/"))
            .unwrap()
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_connect_time() {
        let (port, task) =
            receiver(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_vec()).await;
        // `localhost` passes the URL check (a name), and is refused by its addresses.
        let url = format!("https://localhost:{port}/hook");
        let public = DeliveryClient::new(PUBLIC).unwrap();
        let err = public.post(&url).unwrap().send().await.unwrap_err();
        assert!(err.is_connect() || err.is_request(), "{err:?}");
        let chain = format!("{:?}", err);
        assert!(chain.contains("private, loopback or link-local"), "{chain}");
        // Allowed for on-premise receivers.
        let private = DeliveryClient::new(PRIVATE).unwrap();
        let url = format!("http://localhost:{port}/hook");
        let ok = private.post(&url).unwrap().send().await.unwrap();
        assert_eq!(ok.status(), 204);
        task.abort();
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (port, task) = receiver(
            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://10.0.0.1/\r\ncontent-length: 0\r\n\r\n"
                .to_vec(),
        )
        .await;
        let r = post_locally(port).await;
        let (status, _) = read_answer(r).await;
        assert_eq!(status, 307, "the redirect is the answer, not followed");
        task.abort();
    }

    #[test]
    fn an_address_is_judged_before_any_connection() {
        let public = DeliveryClient::new(PUBLIC).unwrap();
        for url in [
            "https://127.0.0.1:9/",
            "https://[::1]/",
            "https://169.254.169.254/",
        ] {
            assert_eq!(
                public.post(url).unwrap_err(),
                UrlRefused::PrivateAddress,
                "{url}"
            );
        }
        assert_eq!(
            public.post("http://hooks.example.com/").unwrap_err(),
            UrlRefused::NotHttps
        );
    }

    #[tokio::test]
    async fn an_answer_is_read_up_to_the_bound_only() {
        // "é" is two bytes: the cut may fall inside one.
        let mut answer =
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1000000\r\n\r\n".to_vec();
        answer.extend_from_slice("é".repeat(500_000).as_bytes());
        let (port, task) = receiver(answer).await;
        let r = post_locally(port).await;
        let (status, text) = read_answer(r).await;
        assert_eq!(status, 500);
        assert!(text.len() <= MAX_RESPONSE_BYTES && text.len() >= MAX_RESPONSE_BYTES - 1);
        assert!(text.chars().all(|c| c == 'é'));
        task.abort();
    }
}
