//! Name resolution: the service's host name to socket addresses, the way
//! SPCS's resolv.conf means it, and more forgiving than musl's own lookup.
//!
//! musl asks A and AAAA together and takes an NXDOMAIN for either as "no such
//! name"; it also gives up on the whole search list when one domain's server
//! fails. So this module asks for IPv4 first (A queries only), and walks the
//! resolv.conf search list itself, asking libc for one absolute name at a time
//! and moving on after a failure, as glibc and Go order the names. Answers are
//! reused for a few seconds and dropped after a failed attempt.
//!
//! It plugs into ureq as its resolver, through ureq's `unversioned` module:
//! that interface is outside ureq's semver promise, so Cargo.toml pins ureq
//! to one version.

use std::ffi::{CStr, CString};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq::config::Config as AgentConfig;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a resolved address is reused while connections succeed.
const RESOLVE_TTL: Duration = Duration::from_secs(5);

/// glibc and musl both cap `ndots` here.
const MAX_NDOTS: usize = 15;

/// The last address lookup, shared by all worker threads.
///
/// A lookup runs on a thread of its own so that a slow DNS server cannot
/// outlive the request timeout, even when a kept-alive connection makes the
/// answer unused. In a batch job that thread cost more CPU than the rows
/// themselves, so answers are reused for a few seconds, and dropped at once
/// when an attempt fails (the service may have moved).
#[derive(Default)]
pub struct ResolveCache {
    last: Mutex<Option<Lookup>>,
}

/// One lookup's answer: for which `host:port`, and when.
struct Lookup {
    authority: String,
    at: Instant,
    addresses: ResolvedSocketAddrs,
}

impl ResolveCache {
    pub fn forget(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = None;
        }
    }
}

/// ureq's resolver, answering from the shared cache.
pub struct CachingResolver(pub Arc<ResolveCache>);

/// ureq asks its resolver for `Debug`; the cache's answers are left out
/// (a derived `Debug` would link formatters for them that nothing uses).
impl std::fmt::Debug for CachingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachingResolver")
    }
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &AgentConfig,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let authority = uri.authority().map_or("", |a| a.as_str());
        if let Ok(last) = self.0.last.lock() {
            if let Some(last) = last.as_ref() {
                if last.authority == authority && last.at.elapsed() < RESOLVE_TTL {
                    return Ok(last.addresses.clone());
                }
            }
        }
        let host = uri
            .host()
            .ok_or_else(|| ureq::Error::BadUri("no host".to_owned()))?;
        let port = uri.port_u16().unwrap_or(80);
        let found = match ip_literal(host) {
            Some(ip) => vec![ip],
            None => lookup_within(host, timeout)?,
        };
        let mut addresses = self.empty();
        for ip in found {
            // ureq tries no more than it can hold.
            if addresses.try_push(SocketAddr::new(ip, port)).is_err() {
                break;
            }
        }
        log::debug!("Resolved {host} to {:?}", &addresses[..]);
        if let Ok(mut last) = self.0.last.lock() {
            *last = Some(Lookup {
                authority: authority.to_owned(),
                at: Instant::now(),
                addresses: addresses.clone(),
            });
        }
        Ok(addresses)
    }
}

/// `127.0.0.1` or `[::1]`: no lookup at all.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Looks `host` up on a thread, giving up when the attempt's time is over;
/// the thread finishes on its own and its answer is dropped.
fn lookup_within(host: &str, timeout: NextTimeout) -> Result<Vec<IpAddr>, ureq::Error> {
    let failed = |message: String| ureq::Error::Io(std::io::Error::other(message));
    let answer = Arc::new(Answer::default());
    let given = Arc::clone(&answer);
    let name = host.to_owned();
    std::thread::spawn(move || given.give(lookup(&name)));
    // No timeout at all: wait as long as the lookup takes.
    let left = timeout.not_zero().map_or(Duration::MAX, |left| *left);
    let found = answer.found.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut found, _) = answer
        .ready
        .wait_timeout_while(found, left, |found| found.is_none())
        .unwrap_or_else(PoisonError::into_inner);
    match found.take() {
        Some(found) => found.map_err(failed),
        None => Err(failed(format!(
            "DNS lookup of {host} did not finish within REQUEST_TIMEOUT"
        ))),
    }
}

/// Where a lookup thread leaves its answer for the attempt waiting on it.
/// (Not a channel: std's channels cost kilobytes of binary for this one
/// use.)
#[derive(Default)]
struct Answer {
    found: Mutex<Option<Result<Vec<IpAddr>, String>>>,
    ready: Condvar,
}

impl Answer {
    fn give(&self, found: Result<Vec<IpAddr>, String>) {
        *self.found.lock().unwrap_or_else(PoisonError::into_inner) = Some(found);
        self.ready.notify_one();
    }
}

/// /etc/hosts, then each name of the search list in turn: IPv4 first, and any
/// family only where a name exists without an IPv4 address.
fn lookup(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        let found = from_hosts(&hosts, host);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let search = std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| Search::parse(&text))
        .unwrap_or_default();
    // The error, to which each name that fails adds itself.
    let mut failed = format!("DNS lookup of {host} failed: ");
    for (n, name) in search.candidates(host).iter().enumerate() {
        let outcome = match getaddrinfo(name, libc::AF_INET) {
            Err(libc::EAI_NODATA) => getaddrinfo(name, libc::AF_UNSPEC),
            other => other,
        };
        match outcome {
            Ok(found) => return Ok(found),
            Err(code) => {
                let comma = if n > 0 { ", " } else { "" };
                let _ = write!(failed, "{comma}{name} {}", describe(code));
            }
        }
    }
    Err(failed)
}

fn describe(code: i32) -> String {
    match code {
        libc::EAI_NONAME => "does not exist".to_owned(),
        libc::EAI_NODATA => "has no address".to_owned(),
        libc::EAI_AGAIN => "got no answer (server failure or timeout)".to_owned(),
        // SAFETY: gai_strerror returns a static string for any code.
        _ => unsafe { CStr::from_ptr(libc::gai_strerror(code)) }
            .to_string_lossy()
            .into_owned(),
    }
}

/// The addresses /etc/hosts gives `host`, IPv4 first.
fn from_hosts(hosts: &str, host: &str) -> Vec<IpAddr> {
    ipv4_first(hosts.lines().filter_map(|line| {
        let mut fields = line.split('#').next()?.split_whitespace();
        let ip = fields.next()?.parse().ok()?;
        fields
            .any(|name| name.eq_ignore_ascii_case(host))
            .then_some(ip)
    }))
}

/// Keeps the order within each family. (A partition, not a sort: a stable
/// sort's code costs kilobytes of binary.)
fn ipv4_first(addresses: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let (mut v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = addresses.partition(IpAddr::is_ipv4);
    v4.extend(v6);
    v4
}

/// The part of resolv.conf that decides which names are asked.
#[derive(Debug, PartialEq)]
struct Search {
    domains: Vec<String>,
    ndots: usize,
}

impl Default for Search {
    fn default() -> Self {
        Search {
            domains: Vec::new(),
            ndots: 1,
        }
    }
}

impl Search {
    /// As resolv.conf(5) says: the last `search` or `domain` line wins;
    /// `ndots` is capped at 15.
    fn parse(text: &str) -> Search {
        let mut search = Search::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search" | "domain") => {
                    search.domains = words
                        .take_while(|word| !word.starts_with(['#', ';']))
                        .map(|domain| domain.trim_end_matches('.').to_owned())
                        .filter(|domain| !domain.is_empty())
                        .collect();
                }
                Some("options") => {
                    for option in words {
                        if let Some(Ok(n)) = option.strip_prefix("ndots:").map(str::parse::<usize>)
                        {
                            search.ndots = n.min(MAX_NDOTS);
                        }
                    }
                }
                _ => {}
            }
        }
        search
    }

    /// The absolute names to ask, in glibc's and Go's order: a name with a
    /// final dot is asked alone; one with at least `ndots` dots as it is
    /// first, then with each search domain; any other with each search domain
    /// first, then as it is.
    fn candidates(&self, host: &str) -> Vec<String> {
        if host.ends_with('.') {
            return vec![host.to_owned()];
        }
        let mut names: Vec<String> = self
            .domains
            .iter()
            .map(|domain| format!("{host}.{domain}."))
            .collect();
        let as_is = format!("{host}.");
        if host.matches('.').count() >= self.ndots {
            names.insert(0, as_is);
        } else {
            names.push(as_is);
        }
        names
    }
}

/// One libc lookup of an absolute name (the final dot keeps libc from
/// applying its own search list). The error is the `EAI_*` code.
fn getaddrinfo(name: &str, family: i32) -> Result<Vec<IpAddr>, i32> {
    let name = CString::new(name).map_err(|_| libc::EAI_NONAME)?;
    // SAFETY: addrinfo is plain data; all-zero is the documented empty hints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = family;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut list = std::ptr::null_mut();
    // SAFETY: the name is NUL-terminated, the hints valid, and `list` is
    // written only on success and freed below.
    let code = unsafe { libc::getaddrinfo(name.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if code != 0 {
        return Err(code);
    }
    let mut found = Vec::new();
    let mut next = list;
    while !next.is_null() {
        // SAFETY: every node of the list getaddrinfo returned is valid until
        // freeaddrinfo, and ai_addr matches ai_family.
        let entry = unsafe { &*next };
        match entry.ai_family {
            libc::AF_INET => {
                // SAFETY: an AF_INET entry's ai_addr is a sockaddr_in.
                let v4 = unsafe { &*(entry.ai_addr as *const libc::sockaddr_in) };
                found.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 entry's ai_addr is a sockaddr_in6.
                let v6 = unsafe { &*(entry.ai_addr as *const libc::sockaddr_in6) };
                found.push(IpAddr::from(v6.sin6_addr.s6_addr));
            }
            _ => {}
        }
        next = entry.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    let found = ipv4_first(found.into_iter());
    if found.is_empty() {
        Err(libc::EAI_NODATA)
    } else {
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPCS: &str = "\
# written by the platform
nameserver 10.0.0.10
search abc123.svc.spcs.internal svc.spcs.internal spcs.internal
options ndots:5 timeout:1 attempts:2
";

    #[test]
    fn reads_the_search_list_and_ndots() {
        assert_eq!(
            Search::parse(SPCS),
            Search {
                domains: vec![
                    "abc123.svc.spcs.internal".to_owned(),
                    "svc.spcs.internal".to_owned(),
                    "spcs.internal".to_owned()
                ],
                ndots: 5
            }
        );
    }

    #[test]
    fn the_last_search_or_domain_line_wins_and_defaults_hold() {
        assert_eq!(Search::parse(""), Search::default());
        assert_eq!(Search::default().ndots, 1);
        let parsed = Search::parse("search a.example b.example\ndomain c.example.\n");
        assert_eq!(parsed.domains, ["c.example"]);
        let parsed = Search::parse("domain c.example\nsearch a.example ; comment\n");
        assert_eq!(parsed.domains, ["a.example"]);
        assert_eq!(Search::parse("options ndots:99").ndots, 15);
        assert_eq!(Search::parse("options ndots:0 rotate").ndots, 0);
        assert_eq!(Search::parse("options ndots:x").ndots, 1);
        assert_eq!(Search::parse("search .").domains, Vec::<String>::new());
    }

    #[test]
    fn short_names_try_the_search_list_first() {
        let search = Search::parse(SPCS);
        assert_eq!(
            search.candidates("echo-service"),
            [
                "echo-service.abc123.svc.spcs.internal.",
                "echo-service.svc.spcs.internal.",
                "echo-service.spcs.internal.",
                "echo-service.",
            ]
        );
        // Four dots are still fewer than ndots:5.
        assert_eq!(
            search.candidates("echo.abc123.svc.spcs.internal")[0],
            "echo.abc123.svc.spcs.internal.abc123.svc.spcs.internal."
        );
    }

    #[test]
    fn names_with_ndots_dots_are_tried_as_they_are_first() {
        let search = Search {
            domains: vec!["svc.example".to_owned()],
            ndots: 1,
        };
        assert_eq!(
            search.candidates("echo.example"),
            ["echo.example.", "echo.example.svc.example."]
        );
        assert_eq!(search.candidates("echo"), ["echo.svc.example.", "echo."]);
        let zero = Search {
            ndots: 0,
            ..Search::parse(SPCS)
        };
        assert_eq!(zero.candidates("echo")[0], "echo.");
    }

    #[test]
    fn a_final_dot_means_the_name_alone() {
        assert_eq!(
            Search::parse(SPCS).candidates("echo-service.svc.spcs.internal."),
            ["echo-service.svc.spcs.internal."]
        );
    }

    #[test]
    fn hosts_entries_match_any_alias_ipv4_first() {
        let hosts = "\
127.0.0.1\tlocalhost
::1 localhost ip6-localhost # comment echo-service
# 10.0.0.1 echo-service
fe80::1 Echo-Service
127.0.0.2 other echo-service
not-an-ip echo-service
";
        assert_eq!(
            from_hosts(hosts, "echo-service"),
            [
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(from_hosts(hosts, "localhost").len(), 2);
        assert!(from_hosts(hosts, "echo").is_empty());
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        assert_eq!(ip_literal("127.0.0.1"), Some([127, 0, 0, 1].into()));
        assert_eq!(ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(ip_literal("echo-service"), None);
        assert_eq!(ip_literal("[echo]"), None);
    }
}
