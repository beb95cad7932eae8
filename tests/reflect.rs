//! `reflect`: an unmodified UDP echo server answers each peer through the
//! SA its datagram came in on. On loopback inside a private namespace,
//! clients send with a mark (as if their traffic came through tunnel 101
//! or 202); the server, wrapped with a `reflect` rule, must reply with the
//! same mark, which the clients read back with SO_RCVMARK. Both clients
//! use the same source address and port, one after the other, like the
//! overlapping clients behind two tunnels.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{lib_path, python3, run_with_timeout, Netns, TempDir};

const CLIENT: &str = r#"
import socket, struct, sys
mark, refinfo = int(sys.argv[1], 0), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, 75, 1)  # SO_RCVMARK
s.bind(("192.0.2.20", 5000))
s.settimeout(3)
anc = [(socket.IPPROTO_IP, 30, struct.pack("I", refinfo))] if refinfo else [(socket.SOL_SOCKET, 36, struct.pack("I", mark))]
s.sendmsg([b"ping"], anc, 0, ("192.0.2.1", 1701))
try:
    data, anc, _, _ = s.recvmsg(100, 64)
    m = [struct.unpack("I", d[:4])[0] for l, t, d in anc if l == socket.SOL_SOCKET and t == 36]
    print(f"reply={data.decode()} mark=0x{m[0]:08x}" if m else f"reply={data.decode()} mark=none")
except socket.timeout:
    print("reply=none")
"#;

/// Starts the unmodified echo server in `ns` with exactly `env`, and waits
/// until it is bound.
fn server(ns: &Netns, env: &[(&str, &str)], how: &str, count: u32) -> Child {
    let mut c = ns.command_env(env, python3());
    c.arg(common::source_dir().join("tests/programs/reflect_echo.py"))
        .args(["192.0.2.1", "1701", &count.to_string(), how])
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

fn client(ns: &Netns, env: &[(&str, &str)], mark: &str, refinfo: &str) -> String {
    let mut c = ns.command_env(env, python3());
    c.args(["-c", CLIENT, mark, refinfo]);
    let out = run_with_timeout(&mut c, Duration::from_secs(15));
    assert!(out.success(), "{out}");
    out.stdout.trim().to_string()
}

fn bed() -> (Netns, TempDir) {
    let ns = Netns::new();
    ns.add_addr("lo", "192.0.2.1/32");
    ns.add_addr("lo", "192.0.2.20/32");
    (ns, TempDir::new("reflect"))
}

#[test]
fn marks_are_reflected_per_peer_for_each_receive_call() {
    require_root!();
    for how in ["recvfrom", "recvmsg", "recvmmsg"] {
        let (ns, dir) = bed();
        let rules = dir.write("rules", "192.0.2.20 udp 5000 reflect\n");
        let rules = rules.display().to_string();
        let lib = lib_path().display().to_string();
        let s = server(
            &ns,
            &[
                ("LD_PRELOAD", &lib),
                ("LDSAREF_RULES", &rules),
                ("LDSAREF_MODE", "nfmark"),
            ],
            how,
            3,
        );
        assert_eq!(
            client(&ns, &[], "0x80650000", "0"),
            "reply=ping mark=0x80650000",
            "{how}"
        );
        assert_eq!(
            client(&ns, &[], "0x80ca0000", "0"),
            "reply=ping mark=0x80ca0000",
            "{how}"
        );
        assert_eq!(
            client(&ns, &[], "0x80650000", "0"),
            "reply=ping mark=0x80650000",
            "{how}"
        );
        let out = s.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // The server never saw the SO_MARK cmsg the library asked for.
        if how == "recvmsg" {
            assert_eq!(text.matches("got anc=[] flags=0").count(), 3, "{text}");
        }
        if how == "recvmmsg" {
            assert_eq!(text.matches("got controllen=0").count(), 3, "{text}");
        }
    }
}

#[test]
fn without_the_library_the_reply_carries_no_mark() {
    require_root!();
    let (ns, _dir) = bed();
    let mut s = server(&ns, &[], "recvfrom", 1);
    assert_eq!(
        client(&ns, &[], "0x80650000", "0"),
        "reply=ping mark=0x00000000"
    );
    let _ = s.wait();
}

#[test]
fn klips_refinfo_is_reflected_under_the_emulator() {
    require_root!();
    let (ns, dir) = bed();
    let rules = dir
        .write("rules", "192.0.2.20 udp 5000 reflect\n")
        .display()
        .to_string();
    let emu = common::preload_with_emulator();
    let log = common::EmuLog::new();
    let (k, v) = log.env();
    // The emulator turns REFINFO into real marks (KLIPS_EMU_MARK=1) and
    // incoming mast marks into REFINFO receive cmsgs, like a KLIPS kernel.
    let env = [
        ("LDSAREF_RULES", rules.as_str()),
        ("LD_PRELOAD", emu.as_str()),
        ("KLIPS_EMU_MARK", "1"),
        (k, v.as_str()),
    ];
    let s = server(&ns, &env, "recvmsg", 2);
    let client_env = [
        ("LD_PRELOAD", emu.as_str()),
        ("KLIPS_EMU_MARK", "1"),
        (k, v.as_str()),
    ];
    assert_eq!(
        client(&ns, &client_env, "0", "101"),
        "reply=ping mark=0x80650000"
    );
    assert_eq!(
        client(&ns, &client_env, "0", "202"),
        "reply=ping mark=0x80ca0000"
    );
    let out = s.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("got anc=[] flags=0").count(), 2, "{text}");
    // The server's replies carried REFINFO refhim, per peer.
    let sends: Vec<String> = log
        .find("send", &[("dst", "192.0.2.20:5000")])
        .iter()
        .map(|e| e.field("refinfo").to_string())
        .collect();
    assert!(
        sends.ends_with(&["101".to_string(), "202".to_string()]),
        "{}",
        log.text()
    );
}

#[test]
fn a_reply_to_an_unknown_peer_is_refused() {
    require_root!();
    let (ns, dir) = bed();
    let rules = dir
        .write("rules", "192.0.2.20 udp reflect\n")
        .display()
        .to_string();
    let lib = lib_path().display().to_string();
    let code = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ntry:\n s.sendto(b'x',('192.0.2.20',5000)); print('sent')\nexcept OSError as e: print('errno', e.errno)";
    let mut c = ns.command_env(
        &[
            ("LD_PRELOAD", &lib),
            ("LDSAREF_RULES", &rules),
            ("LDSAREF_MODE", "nfmark"),
        ],
        python3(),
    );
    c.args(["-c", code]);
    let out = run_with_timeout(&mut c, Duration::from_secs(15));
    assert!(out.stdout.contains("errno 113"), "{out}");
    assert!(
        out.stderr
            .contains("reflect: no datagram from 192.0.2.20:5000"),
        "{out}"
    );
}
