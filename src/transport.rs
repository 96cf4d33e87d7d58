//! The connection: a TCP socket, the bytes read from it and not yet used,
//! and the system calls that move them. Nothing here knows HTTP (that is
//! `http`); this module makes each exchange cost as few calls as it can,
//! because at a hundred rows a request they were most of the job's CPU
//! (issue 11):
//!
//! - a request leaves in one `sendmsg`: its head and body as two slices;
//! - a socket timeout is set again only when the one in force has drifted
//!   out of a narrow window below the time left, not before every call (the
//!   time left shrinks on every call);
//! - the check that an idle connection is still usable is one
//!   `recv(MSG_PEEK | MSG_DONTWAIT)`.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A socket timeout in force may be this fraction shorter than the time
/// left (1/512: 59 ms of a 30 s REQUEST_TIMEOUT), never longer; so a
/// timeout can fire that much early, and late only by the timer tick (up to
/// 10 ms) to which Linux rounds socket timeouts up.
const TIMEOUT_SLACK_DIVISOR: u32 = 512;

/// Connection attempts made for one request, as ureq made: more addresses
/// than this are not tried.
const MAX_ADDRESSES: usize = 16;

/// The shortest time one address gets to answer a connect.
const MIN_CONNECT_SHARE: Duration = Duration::from_millis(10);

/// Why a call on the connection failed.
#[derive(Debug)]
pub enum IoFailure {
    /// The deadline passed.
    TimedOut,
    Io(io::Error),
}

impl From<io::Error> for IoFailure {
    fn from(error: io::Error) -> IoFailure {
        if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            // A socket timeout surfaces as EAGAIN; connect_timeout's as
            // ETIMEDOUT.
            IoFailure::TimedOut
        } else {
            IoFailure::Io(error)
        }
    }
}

#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes read: `input[used..filled]` are not yet taken.
    input: Vec<u8>,
    used: usize,
    filled: usize,
    read_timeout: SocketTimeout,
    write_timeout: SocketTimeout,
}

impl Connection {
    /// Connects to the first of `addresses` that answers before `deadline`.
    /// Each but the last gets half the time left, so that the first, the
    /// likeliest, has long enough to survive a lost SYN, and one that never
    /// answers still leaves time for the rest.
    pub fn open(
        addresses: &[SocketAddr],
        deadline: Instant,
        input_bytes: usize,
    ) -> Result<Connection, IoFailure> {
        let mut last_error = IoFailure::TimedOut;
        let addresses = &addresses[..addresses.len().min(MAX_ADDRESSES)];
        for (tried, address) in addresses.iter().enumerate() {
            let left = time_left(deadline)?;
            let share = if tried + 1 == addresses.len() {
                left
            } else {
                (left / 2).max(MIN_CONNECT_SHARE).min(left)
            };
            log::trace!("Connecting to {address}");
            match TcpStream::connect_timeout(address, share) {
                Ok(stream) => {
                    log::debug!("Connected to {address}");
                    // A request leaves in one call, so Nagle has nothing to
                    // join, and would hold back a body that spans two.
                    stream.set_nodelay(true)?;
                    return Ok(Connection {
                        stream,
                        input: vec![0; input_bytes],
                        used: 0,
                        filled: 0,
                        read_timeout: SocketTimeout::default(),
                        write_timeout: SocketTimeout::default(),
                    });
                }
                Err(error) => {
                    log::debug!("Could not connect to {address}: {error}");
                    last_error = error.into();
                }
            }
        }
        Err(last_error)
    }

    /// Sends `head` and then `body` before `deadline`, in one call when the
    /// socket takes them.
    pub fn send(&mut self, head: &[u8], body: &[u8], deadline: Instant) -> Result<(), IoFailure> {
        let mut slices = [IoSlice::new(head), IoSlice::new(body)];
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            self.write_timeout
                .allow(&self.stream, deadline, TcpStream::set_write_timeout)?;
            match (&self.stream).write_vectored(slices) {
                Ok(0) => return Err(IoFailure::Io(ErrorKind::WriteZero.into())),
                Ok(sent) => {
                    log::trace!("Sent {sent} bytes");
                    IoSlice::advance_slices(&mut slices, sent);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// The bytes read and not yet taken.
    pub fn input(&self) -> &[u8] {
        &self.input[self.used..self.filled]
    }

    /// Takes the first `amount` bytes of `input()`.
    pub fn take(&mut self, amount: usize) {
        self.used = (self.used + amount).min(self.filled);
        if self.used == self.filled {
            self.used = 0;
            self.filled = 0;
        }
    }

    /// Whether `input()` is as long as it can get.
    pub fn is_full(&self) -> bool {
        self.used == 0 && self.filled == self.input.len()
    }

    /// Reads more after `input()`, waiting until `deadline`; 0 when the peer
    /// has closed the connection.
    pub fn fill(&mut self, deadline: Instant) -> Result<usize, IoFailure> {
        if self.filled == self.input.len() && self.used > 0 {
            self.input.copy_within(self.used..self.filled, 0);
            self.filled -= self.used;
            self.used = 0;
        }
        loop {
            self.read_timeout
                .allow(&self.stream, deadline, TcpStream::set_read_timeout)?;
            match (&self.stream).read(&mut self.input[self.filled..]) {
                Ok(amount) => {
                    log::trace!("Received {amount} bytes");
                    self.filled += amount;
                    return Ok(amount);
                }
                // Linux does not restart a socket read with a timeout after a
                // signal (SIGSTOP and SIGCONT reach even blocked threads):
                // read again for the time that is left.
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// True when nothing is waiting to be read and the peer has not closed
    /// the connection: the only state in which another request may follow.
    pub fn is_idle_and_open(&self) -> bool {
        self.input().is_empty() && peek_would_block(&self.stream)
    }
}

fn time_left(deadline: Instant) -> Result<Duration, IoFailure> {
    Some(deadline.saturating_duration_since(Instant::now()))
        .filter(|left| !left.is_zero())
        .ok_or(IoFailure::TimedOut)
}

/// A one-byte peek that would block: nothing unasked has arrived, and no
/// close either.
fn peek_would_block(stream: &TcpStream) -> bool {
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

/// The timeout last set on one direction of the socket.
#[derive(Debug, Default)]
struct SocketTimeout {
    in_force: Option<Duration>,
}

impl SocketTimeout {
    /// Makes sure the next call on the socket waits no longer than the time
    /// left before `deadline`, and not much shorter either.
    fn allow(
        &mut self,
        stream: &TcpStream,
        deadline: Instant,
        set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
    ) -> Result<(), IoFailure> {
        let left = time_left(deadline)?;
        if let Some(in_force) = self.in_force {
            if in_force <= left && left - in_force <= left / TIMEOUT_SLACK_DIVISOR {
                return Ok(());
            }
        }
        // A little under the time left, so that the next few calls, with a
        // little less left each, still find it in the window.
        let setting = (left - left / (2 * TIMEOUT_SLACK_DIVISOR)).max(Duration::from_micros(1));
        set(stream, Some(setting))?;
        self.in_force = Some(setting);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::net::TcpListener;

    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    thread_local!(static SET: Cell<u32> = const { Cell::new(0) });

    fn counting(stream: &TcpStream, value: Option<Duration>) -> io::Result<()> {
        SET.with(|set| set.set(set.get() + 1));
        stream.set_read_timeout(value)
    }

    #[test]
    fn a_timeout_is_set_again_only_when_it_drifts_out_of_the_window() {
        let (stream, _server) = connected_pair();
        let mut timeout = SocketTimeout::default();
        // A thousand requests under REQUEST_TIMEOUT=30s, each with a send
        // and a read or two, tens of microseconds apart.
        let full = Duration::from_secs(30);
        for _ in 0..1000 {
            let deadline = Instant::now() + full;
            for _ in 0..3 {
                timeout.allow(&stream, deadline, counting).unwrap();
                let in_force = timeout.in_force.unwrap();
                let left = deadline - Instant::now();
                assert!(in_force <= left, "{in_force:?} in force with {left:?} left");
            }
        }
        // Once, unless this thread stalled for longer than the window (29 ms)
        // on a loaded machine: not once a call, as before.
        let first = SET.with(Cell::get);
        assert!((1..=3).contains(&first), "{first} settings in 3,000 calls");
        // What the kernel keeps, to a timer tick.
        let kernel = stream.read_timeout().unwrap().unwrap();
        assert!(kernel.abs_diff(timeout.in_force.unwrap()) <= Duration::from_millis(20));
        // A request that has waited longer than the window is wide.
        let deadline = Instant::now() + full - Duration::from_secs(1);
        timeout.allow(&stream, deadline, counting).unwrap();
        assert_eq!(SET.with(Cell::get), first + 1);
        // A shorter timeout is set at once.
        let deadline = Instant::now() + Duration::from_secs(1);
        timeout.allow(&stream, deadline, counting).unwrap();
        assert_eq!(SET.with(Cell::get), first + 2);
        assert!(timeout.in_force.unwrap() <= Duration::from_secs(1));
    }

    #[test]
    fn a_passed_deadline_is_a_timeout_not_a_wait() {
        let (stream, _server) = connected_pair();
        let outcome =
            SocketTimeout::default().allow(&stream, Instant::now(), TcpStream::set_read_timeout);
        assert!(matches!(outcome, Err(IoFailure::TimedOut)));
    }

    #[test]
    fn the_probe_tells_idle_from_closed_and_from_unasked_bytes() {
        let (stream, mut server) = connected_pair();
        assert!(peek_would_block(&stream));
        server.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!peek_would_block(&stream), "unasked bytes waiting");
        let (stream, server) = connected_pair();
        drop(server);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!peek_would_block(&stream), "peer closed");
    }

    #[test]
    fn input_is_taken_in_order_and_kept_across_fills() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut connection = Connection::open(&[address], deadline, 8).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(b"abcdefgh").unwrap();
        while !connection.is_full() {
            connection.fill(deadline).unwrap();
        }
        assert_eq!(connection.input(), b"abcdefgh");
        connection.take(6);
        assert_eq!(connection.input(), b"gh");
        server.write_all(b"ij").unwrap();
        connection.fill(deadline).unwrap();
        assert_eq!(connection.input(), b"ghij");
        connection.take(4);
        assert!(connection.is_idle_and_open());
        server.write_all(b"k").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!connection.is_idle_and_open(), "unasked bytes");
        connection.fill(deadline).unwrap();
        assert!(!connection.is_idle_and_open(), "unread input");
        connection.take(1);
        drop(server);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(connection.fill(deadline).unwrap(), 0, "closed");
    }
}
