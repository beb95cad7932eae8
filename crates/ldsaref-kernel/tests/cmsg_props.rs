//! Properties of the control-message layer, against two independent
//! readers: a model of the kernel's walk (`for_each_cmsghdr` with
//! `CMSG_OK`, as `__scm_send` and `ip_cmsg_send` use it), written here from
//! the kernel's definitions, and the libc crate's `CMSG_FIRSTHDR` /
//! `CMSG_NXTHDR`, the walk an application (or a test receiver) does.

use std::mem::size_of;

use ldsaref_kernel::cmsg::{self, AppendError, Tag, HDR_LEN};
use ldsaref_kernel::opts::SarefOpts;
use ldsaref_rules::settings::KlipsAbi;
use proptest::prelude::*;

/// What the kernel sees in a control buffer: each cmsg as (offset,
/// level, type, data), or the offset of the header it rejects with EINVAL.
type Walk = Result<Vec<(usize, i32, i32, Vec<u8>)>, usize>;

fn word(buf: &[u8], at: usize) -> usize {
    usize::from_ne_bytes(buf[at..at + size_of::<usize>()].try_into().unwrap())
}

fn int(buf: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())
}

/// `for_each_cmsghdr(cmsg, msg) { if (!CMSG_OK(msg, cmsg)) return -EINVAL; ... }`
/// with `__cmsg_nxthdr`: the next header is at `CMSG_ALIGN(cmsg_len)` and
/// exists while a whole header fits before `msg_controllen`.
fn kernel_walk(buf: &[u8]) -> Walk {
    let hdr = size_of::<libc::cmsghdr>();
    let size = buf.len();
    let mut out = Vec::new();
    // CMSG_FIRSTHDR
    let mut at = if size >= hdr { Some(0usize) } else { None };
    while let Some(off) = at {
        let len = word(buf, off);
        // CMSG_OK
        if len < hdr || len > size - off {
            return Err(off);
        }
        let level = int(buf, off + size_of::<usize>());
        let ty = int(buf, off + size_of::<usize>() + 4);
        out.push((off, level, ty, buf[off + hdr..off + len].to_vec()));
        let next = off + ((len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1));
        at = (next + hdr <= size).then_some(next);
    }
    Ok(out)
}

fn ours(buf: &[u8]) -> Walk {
    let mut out = Vec::new();
    for c in cmsg::iter(buf) {
        match c {
            Ok(c) => out.push((c.offset, c.level, c.ty, c.data.to_vec())),
            Err(m) => return Err(m.offset),
        }
    }
    Ok(out)
}

/// The (level, type, data) of each cmsg of a well-formed buffer, walked
/// with the libc crate's macros over a real `msghdr`.
fn libc_walk(buf: &mut [u8]) -> Vec<(i32, i32, Vec<u8>)> {
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_control = buf.as_mut_ptr().cast();
    m.msg_controllen = buf.len();
    let mut out = Vec::new();
    // SAFETY: `m` describes `buf`, which outlives the walk; the macros
    // only return headers that lie inside it (checked below before any
    // data is read).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            let off = c.cast::<u8>().offset_from(buf.as_ptr()) as usize;
            let len = (*c).cmsg_len;
            assert!(off + len <= buf.len(), "libc walked out of the buffer");
            let data = std::slice::from_raw_parts(libc::CMSG_DATA(c), len - HDR_LEN);
            out.push(((*c).cmsg_level, (*c).cmsg_type, data.to_vec()));
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    out
}

/// One well-formed cmsg at the end of `v`, with `pad` to `CMSG_SPACE`.
fn push(v: &mut Vec<u8>, level: i32, ty: i32, data: &[u8], pad: bool) {
    let start = v.len();
    v.extend_from_slice(&cmsg::cmsg_len(data.len()).to_ne_bytes());
    v.extend_from_slice(&level.to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.resize(start + HDR_LEN, 0);
    v.extend_from_slice(data);
    if pad {
        v.resize(start + cmsg::cmsg_space(data.len()), 0);
    }
}

#[derive(Clone, Debug)]
struct Msg {
    level: i32,
    ty: i32,
    data: Vec<u8>,
}

fn msg() -> impl Strategy<Value = Msg> {
    (
        prop_oneof![Just(0), Just(1), Just(41), any::<i32>()],
        prop_oneof![Just(30), Just(36), Just(8), Just(2), any::<i32>()],
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(level, ty, data)| Msg { level, ty, data })
}

/// A well-formed application buffer, the last cmsg padded or not (both
/// `CMSG_LEN` and `CMSG_SPACE` are common as `msg_controllen`).
fn app_buffer() -> impl Strategy<Value = (Vec<Msg>, Vec<u8>)> {
    (prop::collection::vec(msg(), 0..8), any::<bool>()).prop_map(|(msgs, pad_last)| {
        let mut v = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            push(
                &mut v,
                m.level,
                m.ty,
                &m.data,
                pad_last || i + 1 < msgs.len(),
            );
        }
        (msgs, v)
    })
}

/// Raw bytes, or a well-formed buffer with a few bytes overwritten: the
/// length words are where it gets interesting.
fn hostile_buffer() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (
            app_buffer(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|((_, mut v), pokes)| {
                for (at, b) in pokes {
                    if !v.is_empty() {
                        let i = at.index(v.len());
                        v[i] = b;
                    }
                }
                v
            }),
        (app_buffer(), any::<u64>(), any::<prop::sample::Index>()).prop_map(
            |((msgs, mut v), len, which)| {
                // A lying cmsg_len in one header.
                if !msgs.is_empty() {
                    let walk = ours(&v).unwrap();
                    let off = walk[which.index(walk.len())].0;
                    v[off..off + size_of::<usize>()].copy_from_slice(&(len as usize).to_ne_bytes());
                }
                v
            }
        ),
    ]
}

fn tag() -> impl Strategy<Value = Tag> {
    prop_oneof![
        (1..=32767u16).prop_map(|s| Tag::refinfo(SarefOpts::for_abi(KlipsAbi::Current), s)),
        (1..=32767u16).prop_map(|s| Tag::refinfo(SarefOpts::for_abi(KlipsAbi::Legacy), s)),
        any::<u32>().prop_map(Tag::mark),
        any::<u32>().prop_map(Tag::pktinfo_v4),
        any::<u32>().prop_map(Tag::pktinfo_v6),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// The library reads a control buffer exactly as the kernel does:
    /// same cmsgs, and a rejection at the same header.
    #[test]
    fn iter_is_the_kernel_walk(buf in hostile_buffer()) {
        prop_assert_eq!(ours(&buf), kernel_walk(&buf));
        prop_assert_eq!(cmsg::end_offset(&buf).is_err(), kernel_walk(&buf).is_err());
    }

    /// Appending to a well-formed buffer: the kernel and an application
    /// walking the result with the libc macros both see the application's
    /// cmsgs, in order, then the tag, whose cmsg_len is CMSG_LEN(payload).
    #[test]
    fn append_is_seen_by_kernel_and_libc((msgs, app) in app_buffer(), tag in tag()) {
        let mut dst = [0x5au8; 1024];
        let n = tag.append_to(&mut dst, &app).unwrap();
        let out = &mut dst[..n];
        let mut want: Vec<(i32, i32, Vec<u8>)> =
            msgs.iter().map(|m| (m.level, m.ty, m.data.clone())).collect();
        want.push((tag.level, tag.ty, tag.payload().to_vec()));
        let kernel: Vec<_> = kernel_walk(out).unwrap().into_iter().map(|(_, l, t, d)| (l, t, d)).collect();
        prop_assert_eq!(&kernel, &want);
        prop_assert_eq!(libc_walk(out), want);
        // SAFETY: CMSG_LEN is arithmetic.
        let expected_len = unsafe { libc::CMSG_LEN(tag.payload().len() as u32) } as usize;
        let (off, ..) = *kernel_walk(out).unwrap().last().unwrap();
        prop_assert_eq!(word(out, off), expected_len);
        prop_assert_eq!(&out[..app.len()], &app[..]);
        prop_assert!(tag.present_in(out));
    }

    /// Remove undoes append, for a buffer that did not carry the tag's kind
    /// (padded, since append pads the application's last cmsg).
    #[test]
    fn remove_undoes_append((msgs, app) in app_buffer(), tag in tag()) {
        prop_assume!(!msgs.iter().any(|m| (m.level, m.ty) == (tag.level, tag.ty)));
        let mut dst = [0u8; 1024];
        let n = tag.append_to(&mut dst, &app).unwrap();
        let left = cmsg::remove(&mut dst, n, tag.level, tag.ty);
        let padded = cmsg::end_offset(&app).unwrap();
        prop_assert_eq!(left, padded);
        prop_assert_eq!(&dst[..app.len()], &app[..]);
        prop_assert!(dst[app.len()..padded].iter().all(|&b| b == 0));
    }

    /// Whatever the buffer, append either refuses it for the reason the
    /// kernel would (malformed), or for lack of room, or produces a buffer
    /// the kernel accepts; and never writes past the room it was given.
    #[test]
    fn append_to_anything(buf in hostile_buffer(), tag in tag(), room in 0usize..300) {
        let mut dst = vec![0u8; room + 16];
        let guard = dst[room..].to_vec();
        let r = tag.append_to(&mut dst[..room], &buf);
        prop_assert_eq!(&dst[room..], &guard[..]);
        match (r, kernel_walk(&buf)) {
            (Err(AppendError::Malformed(m)), Err(at)) => prop_assert_eq!(m.offset, at),
            (Err(AppendError::TooLarge { needed }), Ok(_)) => prop_assert!(needed > room),
            (Ok(n), Ok(before)) => {
                let after = kernel_walk(&dst[..n]).unwrap();
                prop_assert_eq!(after.len(), before.len() + 1);
                for (a, b) in before.iter().zip(&after) {
                    prop_assert_eq!(a, b);
                }
            }
            (r, k) => panic!("append {r:?} but the kernel says {k:?}"),
        }
    }
}
