//! Arbitrary bytes as rules files. Up to three sources, split at 0xFE (a
//! byte that never occurs in UTF-8), are loaded into one builder, as a
//! rules directory would be.

#![no_main]

use ldsaref_fuzz::{check_error, check_set, snapshot};
use ldsaref_rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const FILES: [&str; 3] = ["src0", "src1", "src2"];
    let mut builder = RuleSet::builder();
    let mut seen: Vec<(&str, &[u8])> = Vec::new();
    for (source, file) in data.split(|&b| b == 0xfe).zip(FILES) {
        seen.push((file, source));
        let before = snapshot(&builder);
        match builder.add_bytes(source, file) {
            Ok(()) => {}
            Err(e) => {
                check_error(&e, &seen);
                // A source that fails leaves no trace.
                assert_eq!(snapshot(&builder), before, "a failed source half-loaded");
            }
        }
        // Text and bytes are two doors to the same parser.
        if let Ok(text) = std::str::from_utf8(source) {
            let mut a = RuleSet::builder();
            let mut b = RuleSet::builder();
            assert_eq!(
                a.add_source(text, file).map_err(|e| e.to_string()),
                b.add_bytes(source, file).map_err(|e| e.to_string())
            );
        }
    }
    match builder.build() {
        Ok(set) => check_set(&set, 4096),
        Err(e) => check_error(&e, &seen),
    }
});
