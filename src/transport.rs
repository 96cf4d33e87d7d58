//! The socket under ureq: plain TCP, with as few system calls per request as
//! the exchange allows. At a hundred rows a request, ureq's own TcpTransport
//! made a dozen calls per request and they were half the job's CPU (issue 11):
//!
//! - the request leaves in one send, not two: what ureq hands over is held
//!   back until it turns to read the reply, or the buffer is half full;
//! - a socket timeout is set again only when the one in force has drifted out
//!   of a narrow window below what ureq asks for, instead of before every
//!   send and read (the remaining time shrinks on every call);
//! - the check that an idle connection is still usable is one
//!   `recv(MSG_PEEK | MSG_DONTWAIT)`, not `ioctl`, `read`, `ioctl`; and a
//!   connection checked a moment ago, with no I/O since, is not checked again.
//!
//! Left out, as the job needs none of them: TLS, proxies, and
//! `Agent::shutdown` (the job ends with its process, not by cancellation).
//!
//! Note: ureq's transport interface is outside its semver promise, which
//! Cargo.lock pins.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// A socket timeout in force may be this fraction shorter than the time ureq
/// has left for the call (1/512: 59 ms of a 30 s REQUEST_TIMEOUT). It never
/// exceeds it, so a timeout can fire that much early, never late. Linux
/// rounds socket timeouts up to a timer tick (up to 10 ms) anyway.
const TIMEOUT_SLACK_DIVISOR: u32 = 512;

/// A probe younger than this, with no I/O since, still answers for the
/// connection: ureq probes once when a request ends and again when the next
/// one starts, microseconds later. A peer that closes within that moment is
/// the same race as one closing just after a probe: the request fails as
/// "connection reset" and is retried.
const PROBE_FRESH_FOR: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Out = Socket;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Socket>, ureq::Error> {
        let budget = details.timeout.not_zero().map(|after| *after);
        let started = Instant::now();
        let mut last_error = None;
        for (tried, address) in details.addrs.iter().enumerate() {
            log::trace!("Connecting to {address}");
            // Each address gets an equal share of what is left, so that one
            // that never answers cannot use up the time of the next.
            let attempt = match budget {
                Some(budget) => {
                    let left = budget.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    let share = left / (details.addrs.len() - tried) as u32;
                    TcpStream::connect_timeout(address, share.max(Duration::from_millis(10)))
                }
                None => TcpStream::connect(address),
            };
            match attempt {
                Ok(stream) => {
                    log::debug!("Connected to {address}");
                    // The request leaves in one send, so Nagle has nothing to
                    // join, and would hold a body that spans two sends.
                    stream.set_nodelay(true)?;
                    return Ok(Some(Socket::new(stream, details)));
                }
                Err(error) => {
                    log::debug!("Could not connect to {address}: {error}");
                    last_error = Some(error);
                }
            }
        }
        Err(match last_error {
            Some(error) if !is_timeout(&error) => error.into(),
            _ => ureq::Error::Timeout(details.timeout.reason),
        })
    }
}

#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    buffers: HeldOutput,
    read_timeout: SocketTimeout,
    write_timeout: SocketTimeout,
    /// When `is_open` last found the connection usable, if there has been
    /// no I/O since.
    probed: Option<Instant>,
}

impl Socket {
    fn new(stream: TcpStream, details: &ConnectionDetails) -> Socket {
        let config = details.config;
        Socket {
            stream,
            buffers: HeldOutput {
                inner: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
                held: 0,
            },
            read_timeout: SocketTimeout::default(),
            write_timeout: SocketTimeout::default(),
            probed: None,
        }
    }

    /// Sends what is held back.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.write_timeout
            .allow(&self.stream, timeout, TcpStream::set_write_timeout)?;
        let held = self.buffers.held;
        self.buffers.held = 0;
        let output = &self.buffers.inner.output()[..held];
        log::trace!("Sending {held} bytes");
        match (&self.stream).write_all(output) {
            Ok(()) => Ok(()),
            Err(error) if is_timeout(&error) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(error) => Err(error.into()),
        }
    }
}

impl Transport for Socket {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.probed = None;
        self.buffers.held += amount;
        // Half full: send now, so that the rest of a large body still gets
        // whole buffers rather than ever smaller remainders.
        let capacity = self.buffers.held + self.buffers.output().len();
        if self.buffers.held >= capacity / 2 {
            self.flush(timeout)?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.probed = None;
        if self.buffers.held > 0 {
            self.flush(timeout)?;
        }
        let timeout = timeout.for_read();
        let started = Instant::now();
        loop {
            self.read_timeout
                .allow(&self.stream, timeout, TcpStream::set_read_timeout)?;
            let input = self.buffers.inner.input_append_buf();
            match (&self.stream).read(input) {
                Ok(amount) => {
                    log::trace!("Received {amount} bytes");
                    self.buffers.inner.input_appended(amount);
                    return Ok(amount > 0);
                }
                // Linux does not restart a socket read with a timeout after a
                // signal (SIGSTOP and SIGCONT reach even blocked threads):
                // read again for the time that is left.
                Err(error) if error.kind() == ErrorKind::Interrupted => {
                    let elapsed = started.elapsed();
                    if timeout.not_zero().is_some_and(|after| *after <= elapsed) {
                        return Err(ureq::Error::Timeout(timeout.reason));
                    }
                }
                Err(error) if is_timeout(&error) => {
                    return Err(ureq::Error::Timeout(timeout.reason));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn is_open(&mut self) -> bool {
        // A request half held back is a request not sent: the connection is
        // in no state to carry another.
        if self.buffers.held > 0 {
            return false;
        }
        if self.probed.is_some_and(|at| at.elapsed() < PROBE_FRESH_FOR) {
            return true;
        }
        let open = idle_and_open(&self.stream);
        self.probed = open.then(Instant::now);
        open
    }
}

/// True when the peer has neither closed the connection nor sent anything
/// unasked: the only state in which another request may follow.
fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: the buffer is one valid, writable byte, and the descriptor is
    // the stream's own, open for the duration of the call.
    let received = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    received < 0 && io::Error::last_os_error().kind() == ErrorKind::WouldBlock
}

fn is_timeout(error: &io::Error) -> bool {
    // A socket timeout surfaces as EAGAIN (WouldBlock); connect_timeout's
    // as TimedOut.
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// ureq's buffers, with room after the output already handed over and held
/// back: ureq writes each part of a request from the start of `output()`.
#[derive(Debug)]
struct HeldOutput {
    inner: LazyBuffers,
    held: usize,
}

impl Buffers for HeldOutput {
    fn output(&mut self) -> &mut [u8] {
        let held = self.held;
        &mut self.inner.output()[held..]
    }

    fn input(&self) -> &[u8] {
        self.inner.input()
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.inner.input_append_buf()
    }

    fn input_appended(&mut self, amount: usize) {
        self.inner.input_appended(amount)
    }

    fn input_consume(&mut self, amount: usize) {
        self.inner.input_consume(amount)
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        let held = self.held;
        let (tmp, output) = self.inner.tmp_and_output();
        (tmp, &mut output[held..])
    }

    fn can_use_input(&self) -> bool {
        // While output is held back, ureq must go through `await_input`,
        // which sends it, before it waits for anything.
        self.held == 0 && self.inner.can_use_input()
    }
}

/// The timeout last set on one direction of the socket.
#[derive(Debug, Default)]
struct SocketTimeout {
    /// `None` until first set; `Some(None)` for "no timeout".
    in_force: Option<Option<Duration>>,
}

impl SocketTimeout {
    /// Makes sure the next call on the socket waits no longer than `timeout`
    /// allows, and not much shorter either.
    fn allow(
        &mut self,
        stream: &TcpStream,
        timeout: NextTimeout,
        set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
    ) -> Result<(), ureq::Error> {
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let wanted = timeout.not_zero().map(|after| *after);
        let close_enough = match (self.in_force, wanted) {
            (Some(None), None) => true,
            (Some(Some(in_force)), Some(wanted)) => {
                in_force <= wanted && wanted - in_force <= wanted / TIMEOUT_SLACK_DIVISOR
            }
            _ => false,
        };
        if close_enough {
            return Ok(());
        }
        // Set a little under the time left, so that the next few calls, with
        // a little less left each, still find it in the window.
        let setting = wanted.map(|wanted| {
            (wanted - wanted / (2 * TIMEOUT_SLACK_DIVISOR)).max(Duration::from_micros(1))
        });
        set(stream, setting)?;
        self.in_force = Some(setting);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use ureq::Timeout;

    fn global(after: Duration) -> NextTimeout {
        NextTimeout {
            after: ureq::unversioned::transport::time::Duration::Exact(after),
            reason: Timeout::Global,
            ..NextTimeout::default()
        }
    }

    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn a_timeout_is_set_again_only_when_it_drifts_out_of_the_window() {
        let (stream, _server) = connected_pair();
        let mut timeout = SocketTimeout::default();
        thread_local!(static SET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
        fn counting(stream: &TcpStream, value: Option<Duration>) -> io::Result<()> {
            SET.with(|set| set.set(set.get() + 1));
            stream.set_read_timeout(value)
        }
        // A thousand requests under REQUEST_TIMEOUT=30s, each with a send
        // and a read or two, tens of microseconds apart.
        let full = Duration::from_secs(30);
        for _ in 0..1000 {
            for elapsed in [0, 20, 45] {
                let left = full - Duration::from_micros(elapsed);
                timeout.allow(&stream, global(left), counting).unwrap();
                let in_force = timeout.in_force.flatten().unwrap();
                assert!(in_force <= left, "{in_force:?} in force with {left:?} left");
                assert!(left - in_force <= left / TIMEOUT_SLACK_DIVISOR);
            }
        }
        assert_eq!(SET.with(|set| set.get()), 1);
        // What the kernel keeps, to a timer tick.
        let kernel = stream.read_timeout().unwrap().unwrap();
        assert!(kernel.abs_diff(timeout.in_force.flatten().unwrap()) < Duration::from_millis(10));
        // A request that has waited longer than the window is wide.
        timeout
            .allow(&stream, global(full - Duration::from_millis(40)), counting)
            .unwrap();
        assert_eq!(SET.with(|set| set.get()), 2);
        // A shorter timeout is set at once.
        timeout
            .allow(&stream, global(Duration::from_secs(1)), counting)
            .unwrap();
        assert_eq!(SET.with(|set| set.get()), 3);
        assert!(timeout.in_force.flatten().unwrap() <= Duration::from_secs(1));
        // As is none at all.
        timeout
            .allow(&stream, NextTimeout::default(), counting)
            .unwrap();
        assert_eq!(stream.read_timeout().unwrap(), None);
    }

    #[test]
    fn an_expired_timeout_is_an_error_not_a_wait() {
        let (stream, _server) = connected_pair();
        let error = SocketTimeout::default()
            .allow(&stream, global(Duration::ZERO), TcpStream::set_read_timeout)
            .unwrap_err();
        assert!(matches!(error, ureq::Error::Timeout(Timeout::Global)));
    }

    #[test]
    fn the_probe_tells_idle_from_closed_and_from_unasked_bytes() {
        let (stream, mut server) = connected_pair();
        assert!(idle_and_open(&stream));
        server.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!idle_and_open(&stream), "unasked bytes waiting");
        let (stream, server) = connected_pair();
        drop(server);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!idle_and_open(&stream), "peer closed");
    }
}
