//! The catalogue of malformed rules files: each must fail as a whole, at
//! the right line and column, with a message that says what is wrong.

use ldsaref_rules::{ParseError, RuleSet};

/// Parses `text` as file "rules" and checks the error's position and that
/// its message contains `fragment`.
#[track_caller]
fn fails(text: &str, line: u32, col: u32, fragment: &str) -> ParseError {
    let err = match RuleSet::parse(text, "rules") {
        Ok(set) => panic!("{text:?} loaded {} rules", set.len()),
        Err(e) => e,
    };
    let shown = err.to_string();
    assert_eq!(
        (err.file.as_str(), err.line, err.col),
        ("rules", line, col),
        "{text:?}: {shown}"
    );
    assert!(
        shown.starts_with(&format!("rules:{line}:{col}: ")),
        "{shown}"
    );
    assert!(err.message.contains(fragment), "{text:?}: {shown}");
    err
}

#[test]
fn unknown_action() {
    let e = fails("10.1.0.0/16 sarf 1234", 1, 13, "unknown action");
    assert_eq!(
        e.message,
        "unknown action \"sarf\" (expected saref, mark, dev, reflect, pass or deny)"
    );
    fails(
        "10.1.0.0/16 tcp 22 sarf 1234",
        1,
        20,
        "unknown action \"sarf\"",
    );
    fails(
        "10.1.0.0/16 SAREF 5",
        1,
        13,
        "keywords are lowercase: saref",
    );
}

#[test]
fn saref_out_of_range() {
    let e = fails("10.1.0.0/16 saref 40000", 1, 19, "SAref 40000");
    assert_eq!(e.message, "SAref 40000 out of range (1..32767)");
    fails(
        "10.1.0.0/16 saref 0",
        1,
        19,
        "SAref 0 out of range (1..32767)",
    );
    fails("10.1.0.0/16 saref 32768", 1, 19, "out of range (1..32767)");
    fails("10.1.0.0/16 saref 1x", 1, 19, "invalid SAref \"1x\"");
    fails(
        "10.1.0.0/16 saref -1",
        1,
        19,
        "expected a number in 1..32767",
    );
    fails("10.1.0.0/16 saref", 1, 18, "missing SAref");
}

#[test]
fn prefix_length_out_of_range() {
    let e = fails("10.0.0.0/33 deny", 1, 1, "prefix length 33");
    assert_eq!(e.message, "prefix length 33 out of range for IPv4 (0..32)");
    fails(
        "2001:db8::/129 deny",
        1,
        1,
        "prefix length 129 out of range for IPv6 (0..128)",
    );
    fails("10.0.0.0/x deny", 1, 1, "invalid prefix length \"x\"");
    fails("10.0.0.0/ deny", 1, 1, "invalid prefix length \"\"");
    fails("  10.0.0.0/-1 deny", 1, 3, "invalid prefix length \"-1\"");
}

#[test]
fn host_bits_set_suggests_the_network() {
    let e = fails("10.1.2.3/16 deny", 1, 1, "did you mean 10.1.0.0/16?");
    assert!(e.message.starts_with("host bits set in 10.1.2.3/16"), "{e}");
    fails("2001:db8::1/32 deny", 1, 1, "did you mean 2001:db8::/32?");
    fails("0.0.0.1/0 deny", 1, 1, "did you mean 0.0.0.0/0?");
}

#[test]
fn bad_destinations() {
    fails("10.1.2 deny", 1, 1, "invalid destination \"10.1.2\"");
    fails("10.01.2.3 deny", 1, 1, "invalid destination");
    fails("fe80::1%eth0 deny", 1, 1, "invalid destination");
    fails("ANY deny", 1, 1, "keywords are lowercase: any");
    fails("saref 5", 1, 1, "missing destination before \"saref\"");
    fails("\ttcp 22 deny", 1, 2, "missing destination");
    fails(
        "::ffff:10.0.0.0/104 deny",
        1,
        1,
        "IPv4-mapped destinations are matched as IPv4: write 10.0.0.0/8",
    );
}

#[test]
fn bad_ports() {
    let e = fails("10.0.0.0/8 tcp 30-20 deny", 1, 16, "port range 30-20");
    assert_eq!(e.message, "port range 30-20 is reversed");
    fails(
        "10.0.0.0/8 tcp 0 deny",
        1,
        16,
        "port 0 out of range (1..65535)",
    );
    fails(
        "10.0.0.0/8 70000 deny",
        1,
        12,
        "port 70000 out of range (1..65535)",
    );
    fails("10.0.0.0/8 1-65536 deny", 1, 12, "port 65536 out of range");
    fails("10.0.0.0/8 22x deny", 1, 12, "invalid port \"22x\"");
    fails("10.0.0.0/8 22- deny", 1, 12, "invalid port \"22-\"");
    fails("10.0.0.0/8 22 80 deny", 1, 15, "at most one port or range");
}

#[test]
fn bad_protocols() {
    fails(
        "10.0.0.0/8 tpc 22 deny",
        1,
        12,
        "unknown protocol \"tpc\" (expected tcp, udp or any)",
    );
    fails("10.0.0.0/8 tpc deny", 1, 12, "unknown protocol \"tpc\"");
    fails("10.0.0.0/8 TCP deny", 1, 12, "keywords are lowercase: tcp");
    fails(
        "10.0.0.0/8 22 tcp deny",
        1,
        15,
        "the protocol \"tcp\" must come before the port",
    );
    fails("10.0.0.0/8 tcp udp deny", 1, 16, "at most one protocol");
}

#[test]
fn missing_action() {
    let e = fails("10.0.0.0/8", 1, 11, "missing action");
    assert!(e.message.starts_with("missing action"), "{e}");
    fails("10.0.0.0/8 tcp", 1, 15, "missing action");
    fails("10.0.0.0/8 tcp 22   \t", 1, 18, "missing action");
    fails("10.0.0.0/8     # comment", 1, 11, "missing action");
    fails("10.0.0.0/8 deny\r\n10.0.0.0/8\r\n", 2, 11, "missing action");
}

#[test]
fn unexpected_after_the_action() {
    let e = fails("10.0.0.0/8 deny foo", 1, 17, "unexpected");
    assert_eq!(e.message, "unexpected \"foo\" after the action");
    fails(
        "10.0.0.0/8 saref 5 6",
        1,
        20,
        "unexpected \"6\" after the action",
    );
    fails("10.0.0.0/8 dev eth0 eth1", 1, 21, "unexpected \"eth1\"");
    fails("10.0.0.0/8 mark 1 2", 1, 19, "unexpected \"2\"");
}

#[test]
fn reflect_with_tcp() {
    let e = fails("any tcp 1701 reflect", 1, 14, "reflect");
    assert_eq!(e.message, "reflect applies to UDP only, not tcp");
}

#[test]
fn bad_marks() {
    fails("10.0.0.0/8 mark", 1, 16, "missing mark value");
    fails("10.0.0.0/8 mark 0x200/0", 1, 17, "mark mask is 0");
    fails(
        "10.0.0.0/8 mark 0x1201/0xff00",
        1,
        17,
        "mark value 0x1201 has bits outside its mask 0xff00",
    );
    fails(
        "10.0.0.0/8 mark 0x100000000",
        1,
        17,
        "mark value 0x100000000 out of range (at most 0xffffffff)",
    );
    fails("10.0.0.0/8 mark 4294967296", 1, 17, "out of range");
    fails(
        "10.0.0.0/8 mark 1/0x1ffffffff",
        1,
        17,
        "mark mask 0x1ffffffff out of range",
    );
    fails("10.0.0.0/8 mark zz", 1, 17, "invalid mark value \"zz\"");
    fails("10.0.0.0/8 mark 0x", 1, 17, "invalid mark value \"0x\"");
    fails("10.0.0.0/8 mark 1/", 1, 17, "invalid mark mask \"\"");
    fails("10.0.0.0/8 mark 1/zz", 1, 17, "invalid mark mask \"zz\"");
}

#[test]
fn bad_interface_names() {
    fails(
        "10.0.0.0/8 dev abcdefghijklmnop",
        1,
        16,
        "16 bytes long (at most 15)",
    );
    fails("10.0.0.0/8 dev éééééééé", 1, 16, "16 bytes long");
    fails("10.0.0.0/8 dev a/b", 1, 16, "must not contain \"/\"");
    fails("10.0.0.0/8 dev ..", 1, 16, "\"..\" is not allowed");
    fails("10.0.0.0/8 dev .", 1, 16, "\".\" is not allowed");
    fails("10.0.0.0/8 dev", 1, 15, "missing interface name");
}

#[test]
fn section_headers() {
    let e = fails("[client1", 1, 9, "section header");
    assert_eq!(e.message, "section header: missing \"]\"");
    fails("  [client1   # comment", 1, 11, "missing \"]\"");
    fails("[]", 1, 2, "section header: empty profile name");
    fails("[bad name]", 1, 5, "invalid character ' ' in profile name");
    fails("[cl!ent]", 1, 4, "invalid character '!'");
    fails("[aé b]", 1, 3, "invalid character 'é'");
    fails(
        "[x] extra",
        1,
        5,
        "section header: unexpected \"extra\" after \"]\"",
    );
    fails("[x]]", 1, 4, "unexpected \"]\"");
    let long = format!("[{}]", "a".repeat(65));
    fails(
        &long,
        1,
        2,
        "profile name is 65 characters long (at most 64)",
    );
    RuleSet::parse(&format!("[{}]", "a".repeat(64)), "rules").unwrap();
    RuleSet::parse("[A-Za-z0-9_.-]", "rules").unwrap();
}

#[test]
fn columns_count_characters_and_tabs() {
    // A tab counts 1, a multibyte character counts 1.
    fails("\t10.0.0.0/8\tsarf 1", 1, 13, "unknown action");
    fails("10.0.0.0/8 dev éé extra", 1, 19, "unexpected \"extra\"");
    fails("\t\t10.0.0.0/8 \t", 1, 13, "missing action");
}

#[test]
fn line_numbers_count_every_line() {
    let text = "# comment\n\n10.0.0.0/8 deny\n[p]\n   \n\r\n11.0.0.0/8 dney\n";
    fails(text, 7, 12, "unknown action \"dney\"");
    // The first error wins.
    fails(
        "10.0.0.0/8 sarf 1\n10.0.0.0/33 deny",
        1,
        12,
        "unknown action",
    );
}

#[test]
fn ties_within_a_file() {
    let e = fails(
        "10.0.0.0/8 saref 1\n10.0.0.0/8 saref 2",
        2,
        1,
        "rule ties with rules:1",
    );
    assert_eq!(
        e.message,
        "rule ties with rules:1 (same destination, port and proto): only one can apply"
    );
    // `any` counts as 0.0.0.0/0 and ::/0.
    fails("0.0.0.0/0 deny\n  any pass", 2, 3, "rule ties with rules:1");
    fails("any deny\n::/0 pass", 2, 1, "rule ties with rules:1");
    // No protocol and `any` overlap; so do intersecting ranges.
    fails(
        "10.0.0.0/8 saref 1\n10.0.0.0/8 any saref 2",
        2,
        1,
        "ties with rules:1",
    );
    fails(
        "10.0.0.0/8 tcp 20-30 deny\n\n10.0.0.0/8 tcp 30-40 deny",
        3,
        1,
        "ties with rules:1",
    );
    fails(
        "10.0.0.0/8 any 25 deny\n10.0.0.0/8 20-30 deny",
        2,
        1,
        "ties with rules:1",
    );
    fails("10.1.2.3 deny\n10.1.2.3/32 deny", 2, 1, "ties with rules:1");
    fails(
        "10.0.0.0/8 reflect\n10.0.0.0/8 pass",
        2,
        1,
        "ties with rules:1",
    );
    // Sections merge, so a repeated header can tie with its first part.
    fails(
        "[a]\n10.0.0.0/8 deny\n[b]\n10.0.0.0/8 deny\n[a]\n10.0.0.0/8 pass",
        6,
        1,
        "ties with rules:2",
    );
    // The earliest later rule is reported, with the earliest rule it ties
    // with.
    fails(
        "10.0.0.0/8 1-100 deny\n10.0.0.0/8 200 deny\n11.0.0.0/8 deny\n11.0.0.0/8 pass\n10.0.0.0/8 50-300 pass",
        4,
        1,
        "ties with rules:3",
    );
    fails(
        "10.0.0.0/8 150 deny\n10.0.0.0/8 1-100 deny\n10.0.0.0/8 50-300 pass",
        3,
        1,
        "ties with rules:1",
    );
}

#[test]
fn no_tie_between_different_classes() {
    let ok = "\
        10.0.0.0/8 deny
        10.0.0.0/8 22 deny
        10.0.0.0/8 tcp deny
        10.0.0.0/8 udp deny
        10.0.0.0/8 tcp 22 deny
        10.0.0.0/8 udp 22 deny
        10.0.0.0/8 23-30 deny
        10.0.0.0/16 deny
        0.0.0.0/0 deny
        ::/0 deny
        [p]
        10.0.0.0/8 deny
    ";
    RuleSet::parse(ok, "rules").unwrap();
}

#[test]
fn a_tie_before_a_syntax_error_is_reported_first() {
    fails(
        "10.0.0.0/8 deny\n10.0.0.0/8 pass\n10.0.0.0/8 sarf 1",
        2,
        1,
        "ties with rules:1",
    );
}

#[test]
fn ties_across_files() {
    let mut builder = RuleSet::builder();
    builder
        .add_source("# base\n10.0.0.0/8 saref 1\n", "rules.d/00-base")
        .unwrap();
    builder
        .add_source("\n\n  10.0.0.0/8 saref 2\n", "rules.d/10-extra")
        .unwrap();
    let e = builder.build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "rules.d/10-extra:3:3: rule ties with rules.d/00-base:2 (same destination, port and proto): only one can apply"
    );

    // Profile sections merge across files, and tie across them too.
    let mut builder = RuleSet::builder();
    builder.add_source("[p]\n10.0.0.0/8 deny\n", "a").unwrap();
    builder
        .add_source("10.0.0.0/8 deny\n[p]\n10.0.0.0/8 pass\n", "b")
        .unwrap();
    let e = builder.build().unwrap_err();
    assert_eq!((e.file.as_str(), e.line, e.col), ("b", 3, 1));
    assert!(e.message.contains("ties with a:2"), "{e}");
}

#[test]
fn invalid_utf8() {
    let mut builder = RuleSet::builder();
    let e = builder
        .add_bytes(b"10.0.0.0/8 deny\n10.1.0.0/16 d\xffny\n", "rules")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "rules:2:14: invalid UTF-8 (a rules file must be UTF-8 text)"
    );
    // Columns count the characters before the bad byte.
    let e = builder
        .add_bytes(
            "# é\n10.0.0.0/8 dev é\u{e9}"
                .as_bytes()
                .iter()
                .copied()
                .chain([0xc3])
                .collect::<Vec<_>>()
                .as_slice(),
            "rules",
        )
        .unwrap_err();
    assert_eq!((e.line, e.col), (2, 18));
    // In a comment too.
    let e = builder
        .add_bytes(b"10.0.0.0/8 deny # \xe9t\xe9\n", "rules")
        .unwrap_err();
    assert_eq!((e.line, e.col), (1, 19));
    // An error on an earlier line comes first.
    let e = builder
        .add_bytes(b"10.0.0.0/8 sarf 1\n\xff\n", "rules")
        .unwrap_err();
    assert_eq!((e.line, e.col), (1, 12));
    // Valid bytes load.
    builder
        .add_bytes("\u{feff}10.0.0.0/8 deny # ok é\n".as_bytes(), "rules")
        .unwrap();
    assert_eq!(builder.build().unwrap().len(), 1);
}

#[test]
fn errors_are_std_errors() {
    let e: Box<dyn std::error::Error> = Box::new(RuleSet::parse("x", "f").unwrap_err());
    assert!(e.to_string().starts_with("f:1:1: invalid destination"));
}
