//! Control-message buffers as the kernel reads them, on plain byte slices.
//!
//! The library copies an application's `msg_control` into its own stack
//! buffer and appends one cmsg; everything about that layout lives here,
//! bounds-checked and without pointers, so it can be unit-tested and fuzzed.
//!
//! The walk mirrors the kernel's `for_each_cmsghdr` + `CMSG_OK` (see
//! `net/core/scm.c`): a header exists while `offset + HDR_LEN <= len`; a
//! header whose `cmsg_len` is shorter than a header or runs past the end is
//! rejected with `EINVAL` by the kernel, so we call it malformed and never
//! rewrite such a buffer.

use std::mem::size_of;

/// Alignment of cmsg headers and data: `sizeof(size_t)` on Linux.
pub const ALIGN: usize = size_of::<usize>();

/// `CMSG_ALIGN`.
pub const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// `sizeof(struct cmsghdr)`: `size_t cmsg_len; int cmsg_level; int cmsg_type`.
pub const HDR_LEN: usize = align(size_of::<usize>() + 2 * size_of::<i32>());

/// `CMSG_LEN(data)`: the exact `cmsg_len` of a cmsg with `data` bytes.
pub const fn cmsg_len(data: usize) -> usize {
    HDR_LEN + data
}

/// `CMSG_SPACE(data)`: the room a cmsg takes in a buffer.
pub const fn cmsg_space(data: usize) -> usize {
    HDR_LEN + align(data)
}

/// One control message found in a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmsg<'a> {
    pub level: i32,
    pub ty: i32,
    /// `cmsg_len - HDR_LEN` bytes of payload.
    pub data: &'a [u8],
    /// Offset of the header in the buffer.
    pub offset: usize,
}

/// The kernel would reject the buffer (`EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// Offset of the offending header.
    pub offset: usize,
}

/// Walks a control buffer like the kernel does.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    buf: &'a [u8],
    off: usize,
    failed: bool,
}

/// Iterates the cmsgs of `buf` (already cut to `msg_controllen`).
pub fn iter(buf: &[u8]) -> Iter<'_> {
    Iter {
        buf,
        off: 0,
        failed: false,
    }
}

fn read_usize(buf: &[u8], off: usize) -> usize {
    let mut b = [0u8; size_of::<usize>()];
    b.copy_from_slice(&buf[off..off + size_of::<usize>()]);
    usize::from_ne_bytes(b)
}

fn read_i32(buf: &[u8], off: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    i32::from_ne_bytes(b)
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<Cmsg<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.len() < HDR_LEN || self.off > self.buf.len() - HDR_LEN {
            return None;
        }
        let off = self.off;
        let len = read_usize(self.buf, off);
        if len < HDR_LEN || len > self.buf.len() - off {
            self.failed = true;
            return Some(Err(Malformed { offset: off }));
        }
        let level = read_i32(self.buf, off + size_of::<usize>());
        let ty = read_i32(self.buf, off + size_of::<usize>() + 4);
        let data = &self.buf[off + HDR_LEN..off + len];
        // Saturating: a huge cmsg_len that fits the buffer cannot overflow
        // here, but the arithmetic stays total for the fuzzer's sake.
        self.off = off.saturating_add(align(len));
        Some(Ok(Cmsg {
            level,
            ty,
            data,
            offset: off,
        }))
    }
}

/// Where a new cmsg would go: the aligned end of the last valid one.
/// `Err` if the kernel would reject the buffer as it is.
pub fn end_offset(buf: &[u8]) -> Result<usize, Malformed> {
    let mut end = 0;
    for c in iter(buf) {
        let c = c?;
        end = c.offset + align(c.data.len() + HDR_LEN);
    }
    Ok(end)
}

/// The first cmsg of `level`/`ty`, or `Err` if the buffer is malformed
/// before one is found.
pub fn find(buf: &[u8], level: i32, ty: i32) -> Result<Option<Cmsg<'_>>, Malformed> {
    for c in iter(buf) {
        let c = c?;
        if c.level == level && c.ty == ty {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Why a cmsg could not be appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The application's buffer is one the kernel rejects.
    Malformed(Malformed),
    /// The destination buffer is too small for the application's control
    /// data plus ours.
    TooLarge { needed: usize },
}

/// Writes one cmsg header and payload at `off` of `dst`; `dst` must have
/// `cmsg_space(data.len())` bytes from `off`.
fn write_at(dst: &mut [u8], off: usize, level: i32, ty: i32, data: &[u8]) {
    let u = size_of::<usize>();
    dst[off..off + u].copy_from_slice(&cmsg_len(data.len()).to_ne_bytes());
    dst[off + u..off + u + 4].copy_from_slice(&level.to_ne_bytes());
    dst[off + u + 4..off + u + 8].copy_from_slice(&ty.to_ne_bytes());
    // Padding between the header fields and the data, and after the data.
    dst[off + u + 8..off + HDR_LEN].fill(0);
    dst[off + HDR_LEN..off + HDR_LEN + data.len()].copy_from_slice(data);
    dst[off + HDR_LEN + data.len()..off + cmsg_space(data.len())].fill(0);
}

/// Copies the application's control data `app` into `dst` and appends one
/// cmsg after it. Returns the `msg_controllen` to pass to the kernel.
/// The application's cmsgs are kept byte for byte.
pub fn append(
    dst: &mut [u8],
    app: &[u8],
    level: i32,
    ty: i32,
    data: &[u8],
) -> Result<usize, AppendError> {
    let end = end_offset(app).map_err(AppendError::Malformed)?;
    let needed = end + cmsg_space(data.len());
    if needed > dst.len() {
        return Err(AppendError::TooLarge { needed });
    }
    let copied = end.min(app.len());
    dst[..copied].copy_from_slice(&app[..copied]);
    dst[copied..end].fill(0);
    write_at(dst, end, level, ty, data);
    Ok(needed)
}

/// Removes every cmsg of `level`/`ty` from the first `len` bytes of `buf`,
/// in place, keeping the others in order. Returns the new length. A
/// malformed tail is left as it is.
pub fn remove(buf: &mut [u8], len: usize, level: i32, ty: i32) -> usize {
    let len = len.min(buf.len());
    let mut write = 0;
    let mut read = 0;
    while let Some(Ok(next)) = iter(&buf[read..len]).next() {
        let span = align(next.data.len() + HDR_LEN).min(len - read);
        let keep = !(next.level == level && next.ty == ty);
        if keep {
            buf.copy_within(read..read + span, write);
            write += span;
        }
        read += span;
    }
    if read < len {
        buf.copy_within(read..len, write);
        write += len - read;
    }
    write
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; cmsg_space(data.len())];
        write_at(&mut v, 0, level, ty, data);
        v
    }

    #[test]
    fn sizes_match_glibc_on_this_target() {
        // SAFETY: CMSG_LEN/CMSG_SPACE are pure arithmetic in libc.
        let (l, s) = unsafe { (libc::CMSG_LEN(4) as usize, libc::CMSG_SPACE(4) as usize) };
        assert_eq!(cmsg_len(4), l);
        assert_eq!(cmsg_space(4), s);
        assert_eq!(HDR_LEN, size_of::<libc::cmsghdr>());
    }

    #[test]
    fn append_to_empty_control() {
        let mut dst = [0u8; 64];
        let n = append(&mut dst, &[], 0, 30, &101u32.to_ne_bytes()).unwrap();
        assert_eq!(n, cmsg_space(4));
        let c: Vec<_> = iter(&dst[..n]).map(|c| c.unwrap()).collect();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].level, c[0].ty), (0, 30));
        assert_eq!(c[0].data, &101u32.to_ne_bytes());
        // cmsg_len must be exactly CMSG_LEN(4), or a KLIPS kernel says EINVAL.
        assert_eq!(read_usize(&dst, 0), cmsg_len(4));
    }

    #[test]
    fn append_keeps_application_cmsgs_byte_for_byte() {
        let ttl = one(0, 2, &64i32.to_ne_bytes());
        let mut dst = [0u8; 128];
        let n = append(&mut dst, &ttl, 0, 30, &7u32.to_ne_bytes()).unwrap();
        assert_eq!(&dst[..ttl.len()], &ttl[..]);
        let c: Vec<_> = iter(&dst[..n]).map(|c| c.unwrap()).collect();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].ty, 30);
    }

    #[test]
    fn append_after_unpadded_last_cmsg() {
        // controllen = CMSG_LEN(4): not padded to CMSG_SPACE.
        let mut ttl = one(0, 2, &64i32.to_ne_bytes());
        ttl.truncate(cmsg_len(4));
        let mut dst = [0xffu8; 128];
        let n = append(&mut dst, &ttl, 0, 30, &7u32.to_ne_bytes()).unwrap();
        assert_eq!(n, 2 * cmsg_space(4));
        let c: Vec<_> = iter(&dst[..n]).map(|c| c.unwrap()).collect();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].data, &64i32.to_ne_bytes());
        assert_eq!(c[1].data, &7u32.to_ne_bytes());
    }

    #[test]
    fn malformed_buffers_are_not_rewritten() {
        let mut bad = one(0, 2, &[1, 2, 3, 4]);
        bad[..size_of::<usize>()].copy_from_slice(&3usize.to_ne_bytes());
        let mut dst = [0u8; 64];
        assert!(matches!(
            append(&mut dst, &bad, 0, 30, &[0; 4]),
            Err(AppendError::Malformed(_))
        ));
        let mut long = one(0, 2, &[1, 2, 3, 4]);
        long[..size_of::<usize>()].copy_from_slice(&1000usize.to_ne_bytes());
        assert!(find(&long, 0, 2).is_err());
    }

    #[test]
    fn short_tail_is_ignored_like_the_kernel() {
        let mut v = one(0, 2, &[1, 2, 3, 4]);
        v.extend_from_slice(&[0u8; HDR_LEN - 1]);
        assert_eq!(iter(&v).count(), 1);
        assert_eq!(end_offset(&v), Ok(cmsg_space(4)));
    }

    #[test]
    fn too_large_is_reported() {
        let big = one(0, 2, &[0u8; 200]);
        let mut dst = [0u8; 64];
        assert!(matches!(
            append(&mut dst, &big, 0, 30, &[0; 4]),
            Err(AppendError::TooLarge { .. })
        ));
    }

    #[test]
    fn remove_keeps_others_in_order() {
        let mut v = one(1, 36, &5u32.to_ne_bytes());
        v.extend(one(0, 2, &9i32.to_ne_bytes()));
        v.extend(one(1, 36, &6u32.to_ne_bytes()));
        let len = v.len();
        let n = remove(&mut v, len, 1, 36);
        assert_eq!(n, cmsg_space(4));
        let c: Vec<_> = iter(&v[..n]).map(|c| c.unwrap()).collect();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].level, c[0].ty), (0, 2));
    }
}

/// Room for any [`Tag`] alone in a control buffer: `CMSG_SPACE(20)`.
pub const TAG_SPACE: usize = cmsg_space(20);

/// One cmsg the library adds to a datagram: level, type and a payload of
/// at most 20 bytes (an `in6_pktinfo`), kept inline so that building it
/// never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub level: i32,
    pub ty: i32,
    data: [u8; 20],
    len: u8,
}

impl Tag {
    fn new(level: i32, ty: i32, payload: &[u8]) -> Tag {
        let mut data = [0u8; 20];
        data[..payload.len()].copy_from_slice(payload);
        Tag {
            level,
            ty,
            data,
            len: payload.len() as u8,
        }
    }

    /// `IP_IPSEC_REFINFO` with one `u32` SAref: `cmsg_len == CMSG_LEN(4)`.
    pub fn refinfo(opts: crate::opts::SarefOpts, saref: u16) -> Tag {
        Tag::new(
            crate::opts::SOL_IP,
            opts.refinfo,
            &u32::from(saref).to_ne_bytes(),
        )
    }

    /// `SO_MARK` with one `u32` mark.
    pub fn mark(mark: u32) -> Tag {
        Tag::new(
            crate::opts::SOL_SOCKET,
            crate::opts::SO_MARK,
            &mark.to_ne_bytes(),
        )
    }

    /// `IP_PKTINFO`: `struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }`
    /// with only the interface set, so the kernel routes out of it.
    pub fn pktinfo_v4(ifindex: u32) -> Tag {
        let mut p = [0u8; 12];
        p[..4].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        Tag::new(crate::opts::SOL_IP, crate::opts::IP_PKTINFO, &p)
    }

    /// `IPV6_PKTINFO`: `struct in6_pktinfo { in6_addr addr; int ifindex; }`.
    pub fn pktinfo_v6(ifindex: u32) -> Tag {
        let mut p = [0u8; 20];
        p[16..].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        Tag::new(crate::opts::SOL_IPV6, crate::opts::IPV6_PKTINFO, &p)
    }

    /// A tag of any level and type with `payload`, as found in a control
    /// buffer; `None` if the payload is longer than a tag holds (20 bytes).
    pub fn from_parts(level: i32, ty: i32, payload: &[u8]) -> Option<Tag> {
        (payload.len() <= 20).then(|| Tag::new(level, ty, payload))
    }

    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }

    /// Appends this tag to the application's control data (see [`append`]).
    pub fn append_to(&self, dst: &mut [u8], app: &[u8]) -> Result<usize, AppendError> {
        if app.is_empty() {
            // The usual case, the tag alone: see `encode`.
            let (b, n) = self.encode();
            if let Some(d) = dst.get_mut(..n) {
                d.copy_from_slice(&b[..n]);
                return Ok(n);
            }
        }
        append(dst, app, self.level, self.ty, self.payload())
    }

    /// This tag alone as a control buffer, and the `msg_controllen` to
    /// pass: what [`Tag::append_to`] writes for empty application control
    /// data, without its walk, bounds checks and variable-length copies
    /// (the payload is kept zero-padded to 20 bytes, so copying all of it
    /// writes the padding too).
    pub fn encode(&self) -> ([u8; TAG_SPACE], usize) {
        let u = size_of::<usize>();
        let mut b = [0u8; TAG_SPACE];
        b[..u].copy_from_slice(&cmsg_len(usize::from(self.len)).to_ne_bytes());
        b[u..u + 4].copy_from_slice(&self.level.to_ne_bytes());
        b[u + 4..u + 8].copy_from_slice(&self.ty.to_ne_bytes());
        b[HDR_LEN..HDR_LEN + 20].copy_from_slice(&self.data);
        (b, cmsg_space(usize::from(self.len)))
    }

    /// Whether the application's control data already carries a cmsg of
    /// this kind: then the application's choice wins and nothing is added.
    /// A malformed buffer counts as "no" (the kernel rejects it anyway).
    pub fn present_in(&self, app: &[u8]) -> bool {
        matches!(find(app, self.level, self.ty), Ok(Some(_)))
    }
}

#[cfg(test)]
mod tag_tests {
    use super::*;
    use crate::opts::SarefOpts;
    use ldsaref_rules::settings::KlipsAbi;

    #[test]
    fn refinfo_tag_is_cmsg_len_4() {
        let t = Tag::refinfo(SarefOpts::for_abi(KlipsAbi::Current), 101);
        let mut dst = [0u8; 64];
        let n = t.append_to(&mut dst, &[]).unwrap();
        let c = find(&dst[..n], 0, 30).unwrap().unwrap();
        assert_eq!(c.data.len(), 4);
        assert_eq!(c.data, &101u32.to_ne_bytes());
        assert!(t.present_in(&dst[..n]));
    }

    #[test]
    fn encode_is_append_to_nothing() {
        for t in [
            Tag::mark(0x4d),
            Tag::refinfo(SarefOpts::for_abi(KlipsAbi::Legacy), 7),
            Tag::pktinfo_v4(2),
            Tag::pktinfo_v6(3),
            Tag::from_parts(1, 2, &[0xff; 20]).unwrap(),
            Tag::from_parts(1, 2, &[]).unwrap(),
        ] {
            let mut dst = [0xa5u8; 64];
            let n = t.append_to(&mut dst, &[]).unwrap();
            let (b, len) = t.encode();
            assert_eq!(len, n);
            assert_eq!(&b[..len], &dst[..n]);
            assert!(b[len..].iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn from_parts_roundtrip() {
        let t = Tag::pktinfo_v6(3);
        assert_eq!(Tag::from_parts(t.level, t.ty, t.payload()), Some(t));
        assert_eq!(Tag::from_parts(0, 1, &[0u8; 21]), None);
    }

    #[test]
    fn pktinfo_layouts() {
        assert_eq!(Tag::pktinfo_v4(3).payload().len(), 12);
        assert_eq!(&Tag::pktinfo_v4(3).payload()[..4], &3i32.to_ne_bytes());
        assert_eq!(Tag::pktinfo_v6(3).payload().len(), 20);
        assert_eq!(&Tag::pktinfo_v6(3).payload()[16..], &3i32.to_ne_bytes());
    }
}
