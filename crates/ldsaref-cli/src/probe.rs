//! `ldsaref probe`: what this kernel and these privileges support, in the
//! spirit of pluto's "SAref support" start-up lines.

use ldsaref_kernel::opts::SarefOpts;
use ldsaref_kernel::probe::{self, Libc, Support};
use ldsaref_rules::settings::{vars, KlipsAbi, Settings};

fn show(s: Support) -> String {
    match s {
        Support::Yes => "yes".to_string(),
        Support::No(e) => format!("no ({})", std::io::Error::from_raw_os_error(e)),
    }
}

pub fn probe(abi: Option<&str>) -> u8 {
    let (settings, errors) = Settings::from_lookup(|k| {
        if k == vars::LDSAREF_KLIPS_ABI {
            abi.map(str::to_string).or_else(|| std::env::var(k).ok())
        } else {
            None
        }
    });
    if let Some(e) = errors.first() {
        eprintln!("ldsaref: {e}");
        return 1;
    }
    let abi = settings.abi;
    let o = SarefOpts::for_abi(abi);
    let s = probe::saref_support(&Libc, abi);
    let mark = probe::mark_support(&Libc);
    let rcvmark = probe::rcvmark_support(&Libc);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel:                   Linux {}", release.trim());
    println!(
        "SAref ABI:                {} (options {}/{})",
        match abi {
            KlipsAbi::Current => "current",
            KlipsAbi::Legacy => "legacy",
        },
        o.refinfo,
        o.bindref
    );
    println!("IP_IPSEC_BINDREF ({}):    {}", o.bindref, show(s.bindref));
    println!("IP_IPSEC_REFINFO ({}):    {}", o.refinfo, show(s.refinfo));
    println!("SO_MARK:                  {}", show(mark));
    println!("SO_RCVMARK:               {}", show(rcvmark));
    println!(
        "SAref support [{}]",
        if s.refinfo.is_yes() {
            "enabled"
        } else {
            "disabled"
        }
    );
    println!(
        "SAbind support [{}]",
        if s.bindref.is_yes() {
            "enabled"
        } else {
            "disabled"
        }
    );
    let klips = s.bindref.is_yes() && s.refinfo.is_yes();
    println!(
        "LDSAREF_MODE=klips:       {}",
        if klips {
            "usable"
        } else {
            "not usable: this kernel lacks the Openswan SAref patches"
        }
    );
    println!(
        "LDSAREF_MODE=nfmark:      {}",
        match mark {
            Support::Yes => "usable (SO_MARK allowed)",
            Support::No(libc::EPERM) => "not usable by this process: SO_MARK needs CAP_NET_ADMIN (or CAP_NET_RAW on Linux 5.17+)",
            Support::No(_) => "not usable: SO_MARK refused",
        }
    );
    0
}
