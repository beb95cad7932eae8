//! The netlink socket `xfrm` and `nftables` talk through, and the
//! framing both read: headers, acknowledgements, the end of a dump. The
//! parsing is pure (checked by unit tests on built buffers); [`Socket`] is
//! the only code here that touches the kernel.

use std::io;

pub const NLMSG_HDR: usize = 16;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
/// `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;
/// Set on a dump's messages when the objects changed while it ran.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// Where a dump stands after one datagram of it.
#[derive(Debug, PartialEq, Eq)]
pub enum Dump {
    /// More datagrams follow; whether one was marked interrupted.
    More(bool),
    /// The end; whether one was marked interrupted.
    Done(bool),
}

/// One message of a netlink answer: its type, flags, sequence number and
/// payload (after the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// The errno of an `NLMSG_ERROR` (0: the acknowledgement).
    pub fn error(&self) -> Option<i32> {
        if self.kind != NLMSG_ERROR {
            return None;
        }
        Some(i32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
}

/// The messages in `buf`, in order; an error for a truncated one.
pub fn messages(buf: &[u8]) -> io::Result<Vec<Message<'_>>> {
    let mut v = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let len = get32(buf, at) as usize;
        if len < NLMSG_HDR || at + len > buf.len() {
            return Err(truncated());
        }
        v.push(Message {
            kind: get16(buf, at + 4),
            flags: get16(buf, at + 6),
            seq: get32(buf, at + 8),
            payload: &buf[at + NLMSG_HDR..at + len],
        });
        at += align(len);
    }
    Ok(v)
}

/// Walks one datagram of the dump `seq`: `each` gets its messages (other
/// requests' answers are skipped) until `NLMSG_DONE`; an `NLMSG_ERROR` is
/// the dump's errno. Says whether the dump ended, and whether the kernel
/// marked any of them interrupted (`NLM_F_DUMP_INTR`: the objects changed
/// while it ran).
pub fn dump_datagram(
    msgs: &[Message<'_>],
    seq: u32,
    mut each: impl FnMut(&Message<'_>),
) -> io::Result<Dump> {
    let mut interrupted = false;
    for m in msgs.iter().filter(|m| m.seq == seq) {
        interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
        if let Some(err) = m.error() {
            return Err(io::Error::from_raw_os_error(-err));
        }
        if m.kind == NLMSG_DONE {
            return Ok(Dump::Done(interrupted));
        }
        each(m);
    }
    Ok(Dump::More(interrupted))
}

/// The answer to request `seq` among the messages in `buf`, if one is
/// there: `NLMSG_ERROR` with error 0 is the acknowledgement, a negative
/// one the errno.
pub fn ack(buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    let msgs = match messages(buf) {
        Ok(m) => m,
        Err(e) => return Some(Err(e)),
    };
    msgs.iter().find(|m| m.seq == seq).and_then(|m| {
        let err = m.error()?;
        Some(if err == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(-err))
        })
    })
}

/// Attributes (`struct nlattr`, type without its flag bits, payload) in
/// `buf`; stops at the first malformed one.
pub fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 4 > buf.len() {
            return None;
        }
        let len = get16(buf, at) as usize;
        if len < 4 || at + len > buf.len() {
            return None;
        }
        let item = (get16(buf, at + 2) & 0x3fff, &buf[at + 4..at + len]);
        at += align(len);
        Some(item)
    })
}

/// Appends an attribute of type `kind` holding `value`, padded to 4.
pub fn put_attribute(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len() + align(len) - len, 0);
}

/// A request: header (its length filled in) and `body`.
pub fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDR + body.len());
    m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in the port.
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated netlink answer")
}

/// A netlink socket of one protocol, closed on drop.
pub struct Socket(libc::c_int);

impl Socket {
    pub fn open(protocol: libc::c_int) -> io::Result<Socket> {
        // SAFETY: socket(2) takes no pointers.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket(fd))
    }

    /// Sets an integer socket option.
    pub fn set_int_option(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: value is a live c_int and the length given is its size.
        let rc = unsafe {
            libc::setsockopt(
                self.0,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes [`recv`](Self::recv) fail (`EAGAIN`) after `timeout` without
    /// an answer, instead of waiting for ever.
    pub fn set_recv_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Below 1_000_000: fits suseconds_t on every target.
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: tv is a live timeval and the length given is its size.
        let rc = unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `msg` to the kernel.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all zeros is the kernel
        // (pid 0), no groups.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg is a live buffer of msg.len() bytes; kernel is a
        // valid sockaddr_nl of the size given.
        let n = unsafe {
            libc::sendto(
                self.0,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram (one or more messages) into `buf`; its length.
    /// A datagram longer than `buf` is an error, not a silent cut.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is a live, writable buffer of buf.len() bytes.
            let n =
                unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n as usize > buf.len() {
                return Err(truncated());
            }
            return Ok(n as usize);
        }
    }

    /// A whole dump: `request(seq)` sent with each sequence number of
    /// `seqs` in turn until one dump runs uninterrupted, its datagrams
    /// given to `read` with a fresh `T` for each try. `changing` says what
    /// kept changing when every try was interrupted.
    pub fn dump<T: Default>(
        &self,
        seqs: std::ops::Range<u32>,
        request: impl Fn(u32) -> Vec<u8>,
        mut read: impl FnMut(&[Message<'_>], u32, &mut T) -> io::Result<Dump>,
        changing: &str,
    ) -> io::Result<T> {
        let mut buf = vec![0u8; 64 * 1024];
        for seq in seqs {
            self.send(&request(seq))?;
            let mut got = T::default();
            let mut interrupted = false;
            loop {
                let n = self.recv(&mut buf)?;
                match read(&messages(&buf[..n])?, seq, &mut got)? {
                    Dump::More(intr) => interrupted |= intr,
                    Dump::Done(intr) => {
                        interrupted |= intr;
                        break;
                    }
                }
            }
            if !interrupted {
                return Ok(got);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            changing.to_owned(),
        ))
    }

    /// Sends one request and reads until the acknowledgement of `seq`.
    pub fn request(&self, msg: &[u8], seq: u32) -> io::Result<()> {
        self.send(msg)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = self.recv(&mut buf)?;
            if let Some(answer) = ack(&buf[..n], seq) {
                return answer;
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_message(seq: u32, err: i32) -> Vec<u8> {
        // struct nlmsgerr: the errno, then the request's header.
        let mut body = err.to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; NLMSG_HDR]);
        request(NLMSG_ERROR, 0, seq, &body)
    }

    #[test]
    fn acks_and_errors_are_read_by_sequence() {
        let mut buf = error_message(3, 0);
        buf.extend(error_message(4, -1));
        assert!(matches!(ack(&buf, 3), Some(Ok(()))));
        assert_eq!(ack(&buf, 4).unwrap().unwrap_err().raw_os_error(), Some(1));
        assert!(ack(&buf, 5).is_none());
        assert!(ack(&buf[..20], 3).unwrap().is_err(), "truncated");
    }

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut m = Vec::new();
        put_attribute(&mut m, 1, b"ldsaref\0");
        put_attribute(&mut m, 3, b"out\0");
        put_attribute(&mut m, 0x8000 | 5, &[1, 2, 3, 4, 5]);
        assert_eq!(m.len(), 12 + 8 + 12);
        let got: Vec<_> = attributes(&m).collect();
        assert_eq!(
            got,
            vec![
                (1, &b"ldsaref\0"[..]),
                (3, &b"out\0"[..]),
                (5, &[1u8, 2, 3, 4, 5][..])
            ]
        );
        // A length past the end stops the walk instead of reading beyond.
        let mut bad = m.clone();
        bad[12] = 200;
        assert_eq!(attributes(&bad).count(), 1);
    }

    #[test]
    fn messages_are_split_and_checked() {
        let mut buf = request(0x0a03, 2, 9, &[1, 0, 0, 0, 7]);
        buf.resize(24, 0);
        buf.extend(request(NLMSG_DONE, 2, 9, &[0; 4]));
        let m = messages(&buf).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].kind, m[0].flags, m[0].seq), (0x0a03, 2, 9));
        assert_eq!(m[0].payload, &[1, 0, 0, 0, 7]);
        assert_eq!(m[1].kind, NLMSG_DONE);
        assert!(messages(&buf[..40]).is_err(), "the second cut short");
    }
}
