//! Name resolution as in SPCS: the job reaches `echo-service` through the
//! search domains of an SPCS-like resolv.conf (`ndots:5`), served by dnsmasq
//! on a loopback address, with the DNS server quirks that break musl's own
//! lookup. Each job runs in a private mount namespace with that resolv.conf
//! over /etc/resolv.conf; needs root and dnsmasq (skipped, loudly, without
//! them; required under CI=true).

mod common;

use std::time::{Duration, Instant};

use common::dns::{self, Broken, BrokenUpstream, Dnsmasq};
use common::http::*;
use common::job::*;
use common::*;

/// Where the first search domain puts the service.
const FULL_NAME: &str = "echo-service.abc123.svc.spcs.internal";

fn dnsmasq(extra: &[String]) -> Option<Dnsmasq> {
    if !dns::available() {
        return None;
    }
    Some(Dnsmasq::start(extra))
}

/// The job with `dns`'s resolv.conf, sending to `echo-service` on `server`'s port.
fn job_using(dns: &Dnsmasq, server: &Server) -> Option<Job> {
    let url = format!("http://echo-service:{}/echo", server.addr.port());
    job_with_resolv_conf(&url, &dns.resolv_conf())
}

/// The job against an echo service found through `dns`, with no retry:
/// what its first lookup finds.
fn first_lookup(dns: &Dnsmasq) -> Option<Outcome> {
    let server = serve_echo("Bob");
    Some(job_using(dns, &server)?.env("RETRY_DEADLINE", "0").run())
}

fn assert_bob_said_hello(outcome: &Outcome, dns: &Dnsmasq) {
    assert_eq!(
        outcome.code,
        Some(0),
        "{outcome}\n--- dnsmasq\n{}",
        dns.log()
    );
    assert!(
        outcome
            .lines("INFO")
            .iter()
            .any(|line| line.ends_with("Bob said Hello")),
        "{outcome}"
    );
}

#[test]
fn an_a_record_with_nodata_for_aaaa_is_found_with_a_queries_only() {
    let Some(dns) = dnsmasq(&[format!("--host-record={FULL_NAME},127.0.0.1")]) else {
        return;
    };
    let Some(outcome) = first_lookup(&dns) else {
        return;
    };
    assert_bob_said_hello(&outcome, &dns);
    assert_eq!(dns.names_asked("A"), [FULL_NAME], "{}", dns.log());
    assert!(dns.names_asked("AAAA").is_empty(), "{}", dns.log());
}

/// `--address` answers A but NXDOMAIN for AAAA, which musl's own lookup
/// (A and AAAA together) takes as "no such name".
#[test]
fn an_a_record_with_nxdomain_for_aaaa_is_found() {
    let Some(dns) = dnsmasq(&[format!("--address=/{FULL_NAME}/127.0.0.1")]) else {
        return;
    };
    let Some(outcome) = first_lookup(&dns) else {
        return;
    };
    assert_bob_said_hello(&outcome, &dns);
    assert!(outcome.lines("WARNING").is_empty(), "{outcome}");
}

/// The first search domain's server fails; the name is in the second. With
/// RETRY_DEADLINE=0 the job must find it within its first lookup.
fn a_failing_first_search_domain_is_passed_over(how: Broken) {
    let upstream = BrokenUpstream::start(how);
    let Some(dns) = dnsmasq(&[
        upstream.serves("abc123.svc.spcs.internal"),
        "--host-record=echo-service.svc.spcs.internal,127.0.0.1".to_owned(),
    ]) else {
        return;
    };
    let Some(outcome) = first_lookup(&dns) else {
        return;
    };
    assert_bob_said_hello(&outcome, &dns);
    let asked = dns.names_asked("A");
    let first = asked.iter().position(|name| name == FULL_NAME);
    let second = asked
        .iter()
        .position(|name| name == "echo-service.svc.spcs.internal");
    assert!(
        first.is_some() && first < second,
        "expected {FULL_NAME}, then the second search domain: {asked:?}"
    );
}

#[test]
fn a_silent_server_for_the_first_search_domain_is_passed_over() {
    a_failing_first_search_domain_is_passed_over(Broken::Silent);
}

#[test]
fn a_servfail_for_the_first_search_domain_is_passed_over() {
    a_failing_first_search_domain_is_passed_over(Broken::ServFail);
}

#[test]
fn a_name_that_exists_nowhere_exits_69_after_the_deadline_naming_dns() {
    let Some(dns) = dnsmasq(&[]) else {
        return;
    };
    let server = serve_echo("Bob");
    let Some(job) = job_using(&dns, &server) else {
        return;
    };
    let outcome = job.env("RETRY_DEADLINE", "2s").run();
    outcome.assert_fails(69, "DNS lookup of echo-service failed");
    assert!(outcome.elapsed >= Duration::from_secs(2), "{outcome}");
    // Every name of the search list, then the name as it is.
    let error = outcome.error();
    let names = [
        "echo-service.abc123.svc.spcs.internal.",
        "echo-service.svc.spcs.internal.",
        "echo-service.spcs.internal.",
        "echo-service.",
    ];
    let each: Vec<String> = names
        .iter()
        .map(|name| format!("{name} does not exist"))
        .collect();
    let failed = format!("DNS lookup of echo-service failed: {}", each.join(", "));
    assert!(error.contains(&failed), "{error}");
    assert!(!outcome.lines("WARNING").is_empty(), "{outcome}");
    assert!(server.requests().is_empty());
}

#[test]
fn a_service_that_appears_in_dns_later_is_retried_then_reached() {
    let dir = TempDir::new("dns-later");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "").expect("write hosts");
    let Some(dns) = dnsmasq(&[format!("--addn-hosts={}", hosts.display())]) else {
        return;
    };
    let server = serve_echo("Bob");
    let Some(job) = job_using(&dns, &server) else {
        return;
    };
    let started = Instant::now();
    let child = job.env("RETRY_DEADLINE", "30s").spawn();
    while !dns.names_asked("A").iter().any(|name| name == FULL_NAME) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the job never asked for {FULL_NAME}:\n{}",
            dns.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&hosts, format!("127.0.0.1 {FULL_NAME}\n")).expect("write hosts");
    dns.reload();
    let outcome = finish(child, started);
    assert_bob_said_hello(&outcome, &dns);
    assert!(
        outcome.logged("WARNING", "DNS lookup of echo-service"),
        "{outcome}"
    );
}

/// A name with only an IPv6 address: no A record, so the job asks again for
/// any family, and connects to [::1].
#[test]
fn an_ipv6_only_name_is_found_after_the_a_lookup() {
    let Some(listener) = ipv6_loopback() else {
        return;
    };
    let server = serve_on(listener, |request, _| echo("Bob", request));
    let Some(dns) = dnsmasq(&[format!("--host-record={FULL_NAME},::1")]) else {
        return;
    };
    let Some(job) = job_using(&dns, &server) else {
        return;
    };
    let outcome = job.env("RETRY_DEADLINE", "0").run();
    assert_bob_said_hello(&outcome, &dns);
    assert_eq!(
        dns.names_asked("A"),
        [FULL_NAME, FULL_NAME],
        "{}",
        dns.log()
    );
    assert_eq!(dns.names_asked("AAAA"), [FULL_NAME], "{}", dns.log());
}

#[test]
fn ip_literals_ask_no_dns() {
    let Some(dns) = dnsmasq(&[]) else {
        return;
    };
    let server = serve_echo("Bob");
    let Some(job) = job_with_resolv_conf(&server.url(), &dns.resolv_conf()) else {
        return;
    };
    let outcome = job.run();
    assert_bob_said_hello(&outcome, &dns);
    assert!(dns.queries().is_empty(), "{}", dns.log());
}

/// A DNS server that never answers, with resolv.conf's own timeout far past
/// REQUEST_TIMEOUT: each attempt's lookup ends at REQUEST_TIMEOUT, and the
/// job at RETRY_DEADLINE, naming DNS.
#[test]
fn request_timeout_and_retry_deadline_bound_a_lookup_that_hangs() {
    if !dns::available() {
        return;
    }
    let silent = BrokenUpstream::start(Broken::Silent);
    let dir = TempDir::new("dns-hang");
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!(
            "nameserver {}\nsearch {}\noptions ndots:5 timeout:30 attempts:1\n",
            silent.address,
            dns::SEARCH.join(" ")
        ),
    )
    .expect("write resolv.conf");
    let server = serve_echo("Bob");
    let url = format!("http://echo-service:{}/echo", server.addr.port());
    let Some(job) = job_with_resolv_conf(&url, &resolv) else {
        return;
    };
    let outcome = job
        .env("REQUEST_TIMEOUT", "1s")
        .env("RETRY_DEADLINE", "2s")
        .run();
    outcome.assert_fails(
        69,
        "DNS lookup of echo-service did not finish within REQUEST_TIMEOUT",
    );
    assert!(outcome.elapsed < Duration::from_secs(10), "{outcome}");
}
