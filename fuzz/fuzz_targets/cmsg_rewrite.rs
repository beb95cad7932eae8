//! An application's control buffer, as `sendmsg` would hand it to the
//! library, rewritten the way the library rewrites it.
//!
//! The buffer is either raw bytes (hostile lengths of every kind) or built
//! from well-formed cmsgs with optional corruption, so that the fuzzer
//! reaches both the error paths and the copying paths.

#![no_main]

use arbitrary::Arbitrary;
use ldsaref_kernel::cmsg::{self, AppendError, Tag, HDR_LEN};
use ldsaref_kernel::opts::SarefOpts;
use ldsaref_rules::settings::KlipsAbi;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    app: App,
    /// Room the library has (its stack buffer is 1024 bytes, 160 per
    /// message in sendmmsg); reduced modulo 1100.
    room: u16,
    tag: TagKind,
    /// What `remove` takes out.
    remove: (i32, i32),
}

#[derive(Arbitrary, Debug)]
enum App {
    Raw(Vec<u8>),
    Built {
        cmsgs: Vec<Msg>,
        /// Leave the last cmsg unpadded (`msg_controllen = CMSG_LEN`).
        unpadded: bool,
        /// Overwrite bytes at these offsets.
        corrupt: Vec<(u16, u8)>,
        /// Bytes after the last cmsg.
        tail: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Msg {
    /// Levels and types from a small pool, so that `find` and `remove` hit.
    level: u8,
    ty: u8,
    len: u8,
    fill: u8,
    /// A `cmsg_len` that lies, when given.
    bad_len: Option<u64>,
}

#[derive(Arbitrary, Debug)]
enum TagKind {
    Refinfo(u16),
    RefinfoLegacy(u16),
    Mark(u32),
    Pktinfo4(u32),
    Pktinfo6(u32),
}

const LEVELS: [i32; 4] = [0, 1, 41, -1];
const TYPES: [i32; 6] = [30, 36, 8, 50, 22, 2];

fn build(app: &App) -> Vec<u8> {
    match app {
        App::Raw(b) => b.clone(),
        App::Built {
            cmsgs,
            unpadded,
            corrupt,
            tail,
        } => {
            let mut v = Vec::new();
            for (i, m) in cmsgs.iter().take(64).enumerate() {
                let data = usize::from(m.len % 48);
                let start = v.len();
                let len = m.bad_len.map_or(cmsg::cmsg_len(data), |l| l as usize);
                v.extend_from_slice(&len.to_ne_bytes());
                v.extend_from_slice(&LEVELS[usize::from(m.level) % 4].to_ne_bytes());
                v.extend_from_slice(&TYPES[usize::from(m.ty) % 6].to_ne_bytes());
                v.resize(start + HDR_LEN, 0);
                v.extend(std::iter::repeat_n(m.fill, data));
                let last = i + 1 == cmsgs.len().min(64);
                if !(last && *unpadded) {
                    v.resize(start + cmsg::cmsg_space(data), 0);
                }
            }
            for &(at, byte) in corrupt.iter().take(8) {
                if !v.is_empty() {
                    let at = usize::from(at) % v.len();
                    v[at] = byte;
                }
            }
            v.extend_from_slice(tail);
            v
        }
    }
}

fn tag_of(t: &TagKind) -> Tag {
    let saref = |s: u16| (s % 32767) + 1;
    match *t {
        TagKind::Refinfo(s) => Tag::refinfo(SarefOpts::for_abi(KlipsAbi::Current), saref(s)),
        TagKind::RefinfoLegacy(s) => Tag::refinfo(SarefOpts::for_abi(KlipsAbi::Legacy), saref(s)),
        TagKind::Mark(m) => Tag::mark(m),
        TagKind::Pktinfo4(i) => Tag::pktinfo_v4(i),
        TagKind::Pktinfo6(i) => Tag::pktinfo_v6(i),
    }
}

fn read_len(buf: &[u8], at: usize) -> usize {
    let mut b = [0u8; std::mem::size_of::<usize>()];
    let n = b.len();
    b.copy_from_slice(&buf[at..at + n]);
    usize::from_ne_bytes(b)
}

type Cmsgs = Vec<(i32, i32, Vec<u8>)>;

/// (level, type, data) of the valid cmsgs, and whether the walk stopped
/// at a malformed header.
fn walk(buf: &[u8]) -> (Cmsgs, Option<usize>) {
    let mut out = Vec::new();
    for c in cmsg::iter(buf) {
        match c {
            Ok(c) => {
                assert!(c.offset % cmsg::ALIGN == 0);
                assert!(c.offset + HDR_LEN + c.data.len() <= buf.len());
                assert_eq!(read_len(buf, c.offset), HDR_LEN + c.data.len());
                out.push((c.level, c.ty, c.data.to_vec()));
            }
            Err(m) => return (out, Some(m.offset)),
        }
    }
    (out, None)
}

fuzz_target!(|input: Input| {
    let app = build(&input.app);
    let tag = tag_of(&input.tag);
    let (cmsgs, malformed) = walk(&app);

    // end_offset and find agree with the walk.
    let end = cmsg::end_offset(&app);
    assert_eq!(end.is_err(), malformed.is_some());
    if let Ok(end) = end {
        assert!(end % cmsg::ALIGN == 0);
        assert!(end <= cmsg::align(app.len()));
    }
    let found = cmsg::find(&app, tag.level, tag.ty);
    let first = cmsgs
        .iter()
        .find(|(l, t, _)| (*l, *t) == (tag.level, tag.ty));
    match (&found, first) {
        (Ok(Some(c)), Some((_, _, d))) => assert_eq!(c.data, &d[..]),
        (Ok(None), None) => assert!(malformed.is_none()),
        (Err(_), None) => assert!(malformed.is_some()),
        _ => panic!("find {found:?} disagrees with the walk"),
    }
    assert_eq!(tag.present_in(&app), first.is_some());

    // append: never a panic; on success the application's cmsgs byte for
    // byte and in order, then exactly one tag with cmsg_len == CMSG_LEN.
    let mut dst = vec![0xa5u8; usize::from(input.room) % 1100];
    match tag.append_to(&mut dst, &app) {
        Ok(n) => {
            assert!(malformed.is_none(), "appended to a malformed buffer");
            let end = end.unwrap();
            assert_eq!(n, end + cmsg::cmsg_space(tag.payload().len()));
            assert!(n <= dst.len());
            let kept = end.min(app.len());
            assert_eq!(&dst[..kept], &app[..kept], "application bytes changed");
            let (out, bad) = walk(&dst[..n]);
            assert_eq!(bad, None, "the result is not walkable");
            assert_eq!(out.len(), cmsgs.len() + 1);
            assert_eq!(&out[..cmsgs.len()], &cmsgs[..]);
            let (level, ty, data) = &out[cmsgs.len()];
            assert_eq!((*level, *ty), (tag.level, tag.ty));
            assert_eq!(&data[..], tag.payload());
            assert_eq!(read_len(&dst, end), cmsg::cmsg_len(tag.payload().len()));
        }
        Err(AppendError::Malformed(m)) => assert_eq!(Some(m.offset), malformed),
        Err(AppendError::TooLarge { needed }) => {
            assert!(malformed.is_none());
            assert!(needed > dst.len());
            assert_eq!(needed, end.unwrap() + cmsg::cmsg_space(tag.payload().len()));
        }
    }

    // remove: the others in order, the malformed tail (if any) untouched.
    let (level, ty) = input.remove;
    let (level, ty) = (
        LEVELS[level.rem_euclid(4) as usize],
        TYPES[ty.rem_euclid(6) as usize],
    );
    let mut buf = app.clone();
    let len = buf.len();
    let n = cmsg::remove(&mut buf, len, level, ty);
    assert!(n <= len);
    let (left, bad) = walk(&buf[..n]);
    let expected: Vec<_> = cmsgs
        .iter()
        .filter(|(l, t, _)| (*l, *t) != (level, ty))
        .cloned()
        .collect();
    assert_eq!(left, expected);
    match malformed {
        None => assert_eq!(bad, None),
        Some(at) => {
            // The bytes from the malformed header on are moved as they are,
            // by whole aligned cmsgs, so the kernel still rejects them.
            let tail = &app[at..];
            assert!(n >= tail.len());
            assert_eq!(&buf[n - tail.len()..n], tail);
            assert_eq!(bad, Some(n - tail.len()));
        }
    }
    // Removing what is not there changes nothing.
    if !cmsgs.iter().any(|(l, t, _)| (*l, *t) == (12345, 678)) {
        let mut same = app.clone();
        assert_eq!(cmsg::remove(&mut same, len, 12345, 678), len);
        assert_eq!(same, app);
    }
});
