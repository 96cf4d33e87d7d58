//! SPCS's DNS on loopback, for the tests: dnsmasq serving on its own
//! 127.53.x.y address, port 53 (resolv.conf has no port, so tests that run at
//! once need distinct addresses), an SPCS-like resolv.conf naming it, and
//! upstream servers that fail on purpose.
//!
//! Every dnsmasq started here is killed when its `Dnsmasq` drops, on success
//! and on panic, and by the kernel if the test process dies first.

use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{TempDir, skip_unless_ci, succeeds};

/// The search domains of an SPCS job's resolv.conf.
pub const SEARCH: [&str; 3] = [
    "abc123.svc.spcs.internal",
    "svc.spcs.internal",
    "spcs.internal",
];

/// Whether dnsmasq can serve here; when not, after `skip_unless_ci`.
pub fn available() -> bool {
    match missing() {
        Some(what) => {
            skip_unless_ci(&what);
            false
        }
        None => true,
    }
}

/// What these tests lack here, if anything: dnsmasq needs root for port 53,
/// and the job's private resolv.conf needs `unshare -m`.
fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("root (dnsmasq on port 53, unshare -m)".to_owned());
    }
    if !succeeds("dnsmasq", &["--version"]) {
        return Some("dnsmasq (Debian's dnsmasq-base)".to_owned());
    }
    None
}

/// A loopback address where nothing listens on UDP port 53, held (bound) by
/// the returned socket so that no other test takes it meanwhile.
fn claim_address() -> (Ipv4Addr, UdpSocket) {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    // The process id spreads concurrent test processes over the third octet.
    let third = (std::process::id() % 200 + 20) as u8;
    for _ in 0..250 {
        let fourth = NEXT.fetch_add(1, Ordering::SeqCst).max(1);
        let address = Ipv4Addr::new(127, 53, third, fourth);
        if let Ok(socket) = UdpSocket::bind((address, 53)) {
            return (address, socket);
        }
    }
    panic!("no free 127.53.{third}.x address with port 53 free");
}

/// dnsmasq in the foreground on its own loopback address, answering for
/// `spcs.internal` alone: anything it is not told about is NXDOMAIN, and
/// nothing is forwarded off the machine.
pub struct Dnsmasq {
    child: Child,
    pub address: Ipv4Addr,
    dir: TempDir,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq with `extra` flags (`--host-record=...`,
    /// `--address=/.../...`, `--server=/.../...`, `--addn-hosts=...`) and
    /// waits until it answers. Its files go in a directory of its own.
    pub fn start(extra: &[String]) -> Dnsmasq {
        for _ in 0..5 {
            let dir = TempDir::new("dnsmasq");
            let (address, claim) = claim_address();
            let log = dir.join(format!("dnsmasq-{address}.log"));
            let errors = dir.join(format!("dnsmasq-{address}.stderr"));
            drop(claim);
            let mut command = Command::new("dnsmasq");
            command
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--pid-file",
                    "--user=root",
                    "--bind-interfaces",
                    "--port=53",
                    "--cache-size=0",
                    "--domain-needed",
                    "--local=/spcs.internal/",
                    "--log-queries",
                ])
                .arg(format!("--listen-address={address}"))
                .arg(format!("--log-facility={}", log.display()))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&errors).expect("dnsmasq stderr file"));
            // SAFETY: prctl is async-signal-safe; nothing is allocated
            // between fork and exec. If the test process dies before the
            // drop below runs, the kernel kills dnsmasq.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command.spawn().expect("start dnsmasq");
            let mut dnsmasq = Dnsmasq {
                child,
                address,
                dir,
                log,
            };
            if dnsmasq.wait_until_it_answers() {
                return dnsmasq;
            }
            // Another process took the address between the claim and the
            // bind: dnsmasq said so and exited. Try the next address.
            eprintln!(
                "dnsmasq on {address} did not start: {}",
                fs::read_to_string(&errors).unwrap_or_default().trim()
            );
        }
        panic!("dnsmasq did not start on any of five loopback addresses");
    }

    fn wait_until_it_answers(&mut self) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("UDP read timeout");
        let query = a_query(0x5353, "probe.spcs.internal");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if socket.send_to(&query, (self.address, 53)).is_ok() {
                let mut reply = [0u8; 512];
                if let Ok((_, from)) = socket.recv_from(&mut reply) {
                    if from.ip() == self.address && reply[..2] == query[..2] {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Writes an SPCS-like resolv.conf naming this server (short timeouts,
    /// as SPCS sets them) and returns its path.
    pub fn resolv_conf(&self) -> PathBuf {
        let path = self.dir.join(format!("resolv-{}.conf", self.address));
        fs::write(
            &path,
            format!(
                "nameserver {}\nsearch {}\noptions ndots:5 timeout:1 attempts:2\n",
                self.address,
                SEARCH.join(" ")
            ),
        )
        .expect("write resolv.conf");
        path
    }

    /// The queries dnsmasq has seen so far, as `(type, name)` in order,
    /// without its own readiness probe: `("A", "echo-service.svc.spcs.internal")`.
    pub fn queries(&self) -> Vec<(String, String)> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let rest = &line[line.find("query[")? + "query[".len()..];
                let (kind, rest) = rest.split_once("] ")?;
                let name = rest.split_whitespace().next()?;
                Some((kind.to_owned(), name.to_owned()))
            })
            .filter(|(_, name)| name != "probe.spcs.internal")
            .collect()
    }

    /// The names asked for one record type, in order.
    pub fn names_asked(&self, kind: &str) -> Vec<String> {
        self.queries()
            .into_iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, name)| name)
            .collect()
    }

    /// dnsmasq's own log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Makes dnsmasq reread its `--addn-hosts` files (SIGHUP).
    pub fn reload(&self) {
        // SAFETY: kill has no memory-safety preconditions.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(sent, 0, "SIGHUP to dnsmasq");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DNS query for the A record of `name`, recursion desired.
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// How a broken upstream server behaves.
#[derive(Clone, Copy, PartialEq)]
pub enum Broken {
    /// Takes every query and never answers: the client times out.
    Silent,
    /// Answers every query with SERVFAIL.
    ServFail,
}

/// A DNS server for one domain that fails, on its own 127.53.x.y:53, for
/// dnsmasq to forward to with `--server=/DOMAIN/ADDRESS`. Stops on drop.
pub struct BrokenUpstream {
    pub address: Ipv4Addr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl BrokenUpstream {
    pub fn start(how: Broken) -> BrokenUpstream {
        let (address, socket) = claim_address();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("UDP read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut packet = [0u8; 512];
            while !stopped.load(Ordering::SeqCst) {
                let Ok((length, from)) = socket.recv_from(&mut packet) else {
                    continue;
                };
                if how == Broken::ServFail && length >= 12 {
                    let reply = servfail(&packet[..length]);
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        BrokenUpstream {
            address,
            stop,
            thread: Some(thread),
        }
    }

    /// The dnsmasq flag that sends `domain` here.
    pub fn serves(&self, domain: &str) -> String {
        format!("--server=/{domain}/{}", self.address)
    }
}

impl Drop for BrokenUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The query sent back as a response (QR, RA) with rcode SERVFAIL.
fn servfail(query: &[u8]) -> Vec<u8> {
    let mut reply = query.to_vec();
    reply[2] |= 0x80;
    reply[3] = 0x80 | 2;
    reply
}
