//! Rule lookup and rules-file parsing, at 10 to 1M rules.
//!
//! Tables are generated text, parsed by the real parser, with the prefix
//! lengths a large deployment has: IPv4 mostly /24../32, IPv6 mostly
//! /48../64, a few shorter ones, some rules with a protocol and a port.
//! Lookups cycle through a fixed list of destinations, half inside a rule's
//! prefix (hits) and half anywhere (mostly misses), so that the cost is the
//! average over both and caches see a realistic spread of addresses.
//!
//! Nothing is sent anywhere: the addresses are only looked up. The
//! generator is seeded, so every run measures the same tables.
//!
//! Times are the CPU time of the benchmarking thread, not wall time: on a
//! small machine shared with builds, wall time mostly measures how often
//! the thread was descheduled.
//!
//! `LDSAREF_BENCH_FULL=1` adds the intermediate sizes and measures longer;
//! `scripts/bench.sh` reads the medians criterion writes under
//! `target/criterion/`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;

use ldsaref_rules::compiled::{AlignedBytes, Bytes};
use ldsaref_rules::{Policy, Proto, RuleSet};

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; the clock id
    // is a constant every Linux kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e3, "µs cpu"),
            t if t < 1e9 => (1e6, "ms cpu"),
            _ => (1e9, "s cpu"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per, unit) = match throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (*n as f64, "B/s cpu"),
            Throughput::Elements(n) => (*n as f64, "elem/s cpu"),
            _ => (1.0, "/s cpu"),
        };
        values.iter_mut().for_each(|v| *v = per * 1e9 / *v);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// xorshift64*: deterministic and dependency-free; quality is ample for
/// picking addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Picks from `(weight, value)` pairs.
    fn weighted<T: Copy>(&mut self, table: &[(u32, T)]) -> T {
        let total: u32 = table.iter().map(|&(w, _)| w).sum();
        let mut x = self.below(u64::from(total)) as u32;
        for &(w, v) in table {
            if x < w {
                return v;
            }
            x -= w;
        }
        table[table.len() - 1].1
    }
}

/// Prefix lengths by share (per 10,000): the shape of a large set of
/// tunnels (site subnets and hosts, customer /48s and /64s), with a few
/// aggregates, rare enough that even a million rules leave most of the
/// address space uncovered, so that random destinations still miss.
const V4_LENS: &[(u32, u8)] = &[
    (4500, 24),
    (2000, 32),
    (800, 28),
    (700, 27),
    (500, 29),
    (500, 30),
    (500, 22),
    (300, 20),
    (150, 16),
    (4, 12),
    (1, 8),
];
const V6_LENS: &[(u32, u8)] = &[
    (4000, 48),
    (4000, 64),
    (1000, 56),
    (500, 128),
    (300, 44),
    (150, 40),
    (10, 36),
];
/// A random IPv4 address outside 127/8, so that no generated rule ever
/// covers the loopback traffic of the hot-path benchmarks.
fn v4(rng: &mut Rng) -> u32 {
    loop {
        let a = rng.next() as u32;
        if a >> 24 != 127 {
            return a;
        }
    }
}

/// A random IPv6 address in 2001:db8::/32, the documentation prefix: the
/// shape of real tables (one provider block, many customer prefixes) and
/// never a real host.
fn v6(rng: &mut Rng) -> u128 {
    let low = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 32;
    0x2001_0db8u128 << 96 | low
}

fn mask(key: u128, len: u8, width: u8) -> u128 {
    let host = u32::from(width - len);
    if host >= 128 {
        0
    } else {
        key & !((1u128 << host) - 1)
    }
}

/// One generated prefix: family (true for IPv4), network, length.
#[derive(Clone, Copy)]
struct Net {
    v4: bool,
    key: u128,
    len: u8,
}

impl Net {
    fn addr(self, key: u128) -> IpAddr {
        if self.v4 {
            IpAddr::V4(Ipv4Addr::from(key as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(key))
        }
    }

    /// A random address inside the prefix.
    fn member(self, rng: &mut Rng) -> IpAddr {
        let width = if self.v4 { 32 } else { 128 };
        let random = if self.v4 {
            u128::from(v4(rng))
        } else {
            v6(rng)
        };
        let host_bits = u32::from(width - self.len);
        let host = if host_bits >= 128 {
            random
        } else {
            random & ((1u128 << host_bits) - 1)
        };
        self.addr(self.key | host)
    }
}

/// A rules file of `n` rules with distinct prefixes (so nothing ties), 70%
/// IPv4, and the prefixes it holds.
fn generate(n: usize, seed: u64) -> (String, Vec<Net>) {
    let mut rng = Rng(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut nets = Vec::with_capacity(n);
    let mut text = String::with_capacity(n * 40);
    while nets.len() < n {
        let is_v4 = rng.below(10) < 7;
        let (width, len, key) = if is_v4 {
            (32, rng.weighted(V4_LENS), u128::from(v4(&mut rng)))
        } else {
            (128, rng.weighted(V6_LENS), v6(&mut rng))
        };
        let key = mask(key, len, width);
        if !seen.insert((is_v4, key, len)) {
            continue;
        }
        let net = Net {
            v4: is_v4,
            key,
            len,
        };
        nets.push(net);
        let _ = write!(text, "{}/{len}", net.addr(key));
        // One rule in ten is for one service only.
        match rng.below(20) {
            0 => text.push_str("\ttcp\t22"),
            1 => text.push_str("\tudp\t500-4500"),
            _ => {}
        }
        let _ = match rng.below(10) {
            0..=5 => writeln!(text, "\tsaref {}", 1 + rng.below(32767)),
            6..=8 => writeln!(text, "\tmark {:#x}", rng.next() as u32),
            _ => writeln!(text, "\tpass"),
        };
    }
    (text, nets)
}

/// One destination to decide.
#[derive(Clone, Copy)]
struct Query {
    dest: IpAddr,
    proto: Proto,
    port: u16,
}

/// Destinations: even ones inside a random rule's prefix, odd ones random
/// addresses of either family. 64k of them, more than the caches of a
/// small table and enough to spread over a large one.
fn queries(nets: &[Net], seed: u64) -> Vec<Query> {
    let mut rng = Rng(seed);
    (0..1 << 16)
        .map(|i| {
            let dest = if i % 2 == 0 {
                nets[rng.below(nets.len() as u64) as usize].member(&mut rng)
            } else if rng.below(10) < 7 {
                IpAddr::V4(Ipv4Addr::from(v4(&mut rng)))
            } else {
                IpAddr::V6(Ipv6Addr::from(v6(&mut rng)))
            };
            let proto = if rng.below(2) == 0 {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            let port = [22, 53, 443, 500, 4500, 8080][rng.below(6) as usize];
            Query { dest, proto, port }
        })
        .collect()
}

fn full() -> bool {
    std::env::var_os("LDSAREF_BENCH_FULL").is_some_and(|v| v != "0")
}

fn sizes() -> Vec<usize> {
    if full() {
        vec![10, 100, 1_000, 10_000, 100_000, 1_000_000]
    } else {
        vec![10, 1_000, 100_000, 1_000_000]
    }
}

const SEED: u64 = 0x1d5a_0ef0_2026_0001;

fn lookup(c: &mut Criterion<ThreadCpu>) {
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(1));
    for n in sizes() {
        let (text, nets) = generate(n, SEED);
        let set = RuleSet::parse(&text, "bench").expect("generated rules load");
        drop(text);
        let policy = Policy::new(Some(set), None, None).expect("no profile");
        let qs = queries(&nets, SEED ^ n as u64);
        let set = policy.rules().expect("rules");
        let hits = qs
            .iter()
            .filter(|q| set.lookup(None, q.dest, q.proto, q.port).is_some())
            .count();
        eprintln!(
            "lookup: {n} rules, {} of {} destinations decided by a rule",
            hits,
            qs.len()
        );
        let mask = qs.len() - 1;
        group.bench_with_input(BenchmarkId::new("RuleSet::lookup", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let q = qs[i & mask];
                i = i.wrapping_add(1);
                black_box(set.lookup(None, black_box(q.dest), q.proto, q.port))
            })
        });
        // A program talks to few peers: the same 64 destinations over and
        // over stay in cache, which isolates the matcher's own work from
        // the machine's memory latency.
        let hot: Vec<Query> = qs.iter().step_by(2).take(64).copied().collect();
        group.bench_with_input(BenchmarkId::new("RuleSet::lookup-hot64", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let q = hot[i & 63];
                i = i.wrapping_add(1);
                black_box(set.lookup(None, black_box(q.dest), q.proto, q.port))
            })
        });
        group.bench_with_input(BenchmarkId::new("Policy::decide", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let q = qs[i & mask];
                i = i.wrapping_add(1);
                black_box(policy.decide(black_box(q.dest), q.proto, q.port))
            })
        });
        // The same set compiled into an index and read back, as the
        // library maps it: the same lookup code over borrowed arrays.
        let bytes = set.compile(&[]).expect("a parsed set compiles");
        let owner: Bytes = Arc::new(AlignedBytes::new(&bytes));
        drop(bytes);
        let indexed = RuleSet::from_index(owner, &[]).expect("its own index opens");
        let indexed = Policy::new(Some(indexed), None, None).expect("no profile");
        group.bench_with_input(BenchmarkId::new("Policy::decide-index", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let q = qs[i & mask];
                i = i.wrapping_add(1);
                black_box(indexed.decide(black_box(q.dest), q.proto, q.port))
            })
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion<ThreadCpu>) {
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    let counts: &[usize] = if full() {
        &[1_000, 100_000, 1_000_000]
    } else {
        &[100_000]
    };
    for &n in counts {
        let (text, _) = generate(n, SEED);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("RuleSet::parse", n), &text, |b, text| {
            b.iter(|| RuleSet::parse(black_box(text), "bench").expect("loads"))
        });
    }
    group.finish();
}

fn config() -> Criterion<ThreadCpu> {
    let (warm, measure) = if full() { (3, 10) } else { (1, 3) };
    Criterion::default()
        .with_measurement(ThreadCpu)
        .warm_up_time(Duration::from_secs(warm))
        .measurement_time(Duration::from_secs(measure))
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookup, parse
}
criterion_main!(benches);
