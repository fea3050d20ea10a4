//! Argon2id benchmark: patched `vendor/argon2` (each compression backend) vs
//! the unpatched crates.io `argon2` 0.5.3 vs the reference C implementation
//! (bundled by `argon2-kdf`, compiled with `ARGON2_KDF_C_COMPILER_FLAGS`).
//!
//! Memory is allocated once, pre-faulted and reused by every implementation
//! (the C side gets it through the `allocate_cbk` callback). Runs are
//! interleaved round-robin so that frequency drift hits every contender alike.
//!
//! Usage: argon2-ref-bench [--rounds-small N] [--rounds-large N] [--c-only]
//!                         [--extra FILE] [--thp] [--verify-only] [--gen-upstream]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::time::Instant;

use argon2::{Algorithm, Argon2, Backend, Block, Params, Version};
use argon2_upstream as upstream;

// Linked for its libargon2.a (the reference C implementation); called through
// the raw `argon2_ctx` API below so that memory can be reused.
extern crate argon2_kdf;

// ---------------------------------------------------------------- C side

#[repr(C)]
struct Argon2Context {
    out: *mut u8,
    outlen: u32,
    pwd: *mut u8,
    pwdlen: u32,
    salt: *mut u8,
    saltlen: u32,
    secret: *mut u8,
    secretlen: u32,
    ad: *mut u8,
    adlen: u32,
    t_cost: u32,
    m_cost: u32,
    lanes: u32,
    threads: u32,
    version: u32,
    allocate_cbk: Option<unsafe extern "C" fn(*mut *mut u8, usize) -> c_int>,
    free_cbk: Option<unsafe extern "C" fn(*mut u8, usize)>,
    flags: u32,
}

extern "C" {
    // From the reference implementation compiled by argon2-kdf (libargon2.a).
    fn argon2_ctx(ctx: *mut Argon2Context, ty: c_int) -> c_int;
    fn argon2_error_message(code: c_int) -> *const c_char;
    static mut FLAG_clear_internal_memory: c_int;
}

#[cfg(c_block_bench)]
extern "C" {
    // csrc/cblock.c
    fn bench_c_simd() -> *const c_char;
    fn bench_c_fill_chain(reference: *const u64, out: *mut u64, n: usize);
}

static C_MEM: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static C_MEM_LEN: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn c_alloc(memory: *mut *mut u8, bytes: usize) -> c_int {
    if bytes > C_MEM_LEN.load(Ordering::Relaxed) {
        return -22; // ARGON2_MEMORY_ALLOCATION_ERROR
    }
    *memory = C_MEM.load(Ordering::Relaxed);
    0
}

unsafe extern "C" fn c_free(_memory: *mut u8, _bytes: usize) {}

const ARGON2_ID: c_int = 2;
const ARGON2_VERSION_13: u32 = 0x13;

#[allow(clippy::too_many_arguments)]
fn c_hash(
    ty: c_int,
    version: u32,
    m: u32,
    t: u32,
    p: u32,
    pwd: &[u8],
    salt: &[u8],
    secret: &[u8],
    ad: &[u8],
    out: &mut [u8],
    reuse: Option<&mut Mem>,
) {
    let (allocate_cbk, free_cbk): (
        Option<unsafe extern "C" fn(*mut *mut u8, usize) -> c_int>,
        _,
    ) = match reuse {
        Some(mem) => {
            C_MEM.store(mem.ptr, Ordering::Relaxed);
            C_MEM_LEN.store(mem.len, Ordering::Relaxed);
            (
                Some(c_alloc),
                Some(c_free as unsafe extern "C" fn(*mut u8, usize)),
            )
        }
        None => (None, None),
    };
    let mut ctx = Argon2Context {
        out: out.as_mut_ptr(),
        outlen: out.len() as u32,
        pwd: pwd.as_ptr().cast_mut(),
        pwdlen: pwd.len() as u32,
        salt: salt.as_ptr().cast_mut(),
        saltlen: salt.len() as u32,
        secret: secret.as_ptr().cast_mut(),
        secretlen: secret.len() as u32,
        ad: ad.as_ptr().cast_mut(),
        adlen: ad.len() as u32,
        t_cost: t,
        m_cost: m,
        lanes: p,
        threads: 1,
        version,
        allocate_cbk,
        free_cbk,
        flags: 0,
    };
    // SAFETY: every pointer in ctx is valid for the given length for the
    // duration of the call; flags = 0 so the C code never writes to pwd/secret.
    let rc = unsafe { argon2_ctx(&mut ctx, ty) };
    if rc != 0 {
        // SAFETY: argon2_error_message returns a static C string.
        let msg = unsafe { CStr::from_ptr(argon2_error_message(rc)) };
        panic!("argon2_ctx failed: {rc} {msg:?}");
    }
}

fn set_c_wipe(on: bool) {
    // SAFETY: single-threaded benchmark; plain int global of the C library.
    unsafe { FLAG_clear_internal_memory = c_int::from(on) };
}

// ---------------------------------------------------------------- memory

/// 2 MiB-aligned, pre-faulted buffer shared by all implementations.
struct Mem {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
}

impl Mem {
    fn new(bytes: usize, hugepages: bool) -> Mem {
        const HUGE: usize = 2 << 20;
        let len = bytes.div_ceil(HUGE) * HUGE;
        let layout = Layout::from_size_align(len, HUGE).unwrap();
        // SAFETY: non-zero size layout.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        if hugepages {
            // SAFETY: ptr..ptr+len is our own allocation.
            let rc = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
            assert_eq!(rc, 0, "madvise(MADV_HUGEPAGE) failed");
        }
        for off in (0..len).step_by(4096) {
            // SAFETY: in bounds; pre-fault every page.
            unsafe { ptr.add(off).write_volatile(1) };
        }
        Mem { ptr, len, layout }
    }

    fn blocks(&mut self, n: usize) -> &mut [Block] {
        assert!(n * 1024 <= self.len);
        // SAFETY: 64-byte aligned (2 MiB), in bounds, any bit pattern is a valid Block.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast(), n) }
    }

    fn upstream_blocks(&mut self, n: usize) -> &mut [upstream::Block] {
        assert!(n * 1024 <= self.len);
        // SAFETY: as above for the upstream Block type (same layout).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast(), n) }
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

// ---------------------------------------------------------------- contenders

#[derive(Clone, Copy, Debug, PartialEq)]
enum Imp {
    Patched(Backend),
    Upstream,
    /// Reference C, `wipe` = its default secure wipe of the memory after each hash.
    C {
        wipe: bool,
    },
}

fn c_flavour() -> String {
    #[cfg(c_block_bench)]
    {
        // SAFETY: returns a static C string.
        unsafe { CStr::from_ptr(bench_c_simd()) }
            .to_string_lossy()
            .into_owned()
    }
    #[cfg(not(c_block_bench))]
    {
        format!("flags={:?}", env!("ARGON2_KDF_C_COMPILER_FLAGS"))
    }
}

impl Imp {
    fn label(self) -> String {
        match self {
            Imp::Patched(b) => format!("patched-{b}"),
            Imp::Upstream => "upstream-0.5.3".into(),
            Imp::C { wipe: false } => format!("c-{}", c_flavour()),
            Imp::C { wipe: true } => format!("c-{}+wipe", c_flavour()),
        }
    }
}

const PWD: &[u8] = b"correct horse battery staple";
const SALT: &[u8] = b"unicred-bench-salt";

fn hash(imp: Imp, m: u32, t: u32, mem: &mut Mem) -> [u8; 32] {
    let mut out = [0u8; 32];
    match imp {
        Imp::Patched(b) => {
            let params = Params::new(m, t, 1, Some(32)).unwrap();
            let n = params.block_count();
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .with_compress_backend(b)
                .expect("backend available")
                .hash_password_into_with_memory(PWD, SALT, &mut out, mem.blocks(n))
                .unwrap();
        }
        Imp::Upstream => {
            let params = upstream::Params::new(m, t, 1, Some(32)).unwrap();
            let n = params.block_count();
            upstream::Argon2::new(
                upstream::Algorithm::Argon2id,
                upstream::Version::V0x13,
                params,
            )
            .hash_password_into_with_memory(PWD, SALT, &mut out, mem.upstream_blocks(n))
            .unwrap();
        }
        Imp::C { wipe } => {
            set_c_wipe(wipe);
            c_hash(
                ARGON2_ID,
                ARGON2_VERSION_13,
                m,
                t,
                1,
                PWD,
                SALT,
                &[],
                &[],
                &mut out,
                Some(mem),
            );
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median ms/hash for each contender, interleaved round-robin.
fn bench_hash(imps: &[Imp], m: u32, t: u32, rounds: usize, mem: &mut Mem) -> Vec<f64> {
    let reference = hash(imps[0], m, t, mem);
    for &imp in imps {
        // Warm-up + cross-check: every contender produces the same tag.
        assert_eq!(hash(imp, m, t, mem), reference, "{} disagrees", imp.label());
    }
    let mut times = vec![Vec::with_capacity(rounds); imps.len()];
    for _ in 0..rounds {
        for (i, &imp) in imps.iter().enumerate() {
            let start = Instant::now();
            std::hint::black_box(hash(imp, m, t, mem));
            times[i].push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.iter_mut().map(|v| median(v)).collect()
}

/// Median ns per chained 1 KiB compression (out = G(prev, ref), prev = out).
fn bench_block_rust(backend: Backend) -> f64 {
    const N: usize = 100_000;
    let mut x = Block::new();
    let mut y = Block::new();
    let mut r = Block::new();
    for (i, w) in r.as_mut().iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    x.as_mut()[0] = 1;
    let mut v = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..N / 2 {
            backend.compress_into(&x, &r, &mut y, false);
            backend.compress_into(&y, &r, &mut x, false);
        }
        std::hint::black_box(&x);
        v.push(start.elapsed().as_secs_f64() * 1e9 / N as f64);
    }
    median(&mut v)
}

#[cfg(c_block_bench)]
fn bench_block_c() -> Option<f64> {
    const N: usize = 100_000;
    let mut out = Block::new();
    let mut r = Block::new();
    for (i, w) in r.as_mut().iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    out.as_mut()[0] = 1;
    let mut v = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        // SAFETY: both pointers are valid, distinct, 64-byte aligned blocks.
        unsafe { bench_c_fill_chain(r.as_ref().as_ptr(), out.as_mut().as_mut_ptr(), N) };
        std::hint::black_box(&out);
        v.push(start.elapsed().as_secs_f64() * 1e9 / N as f64);
    }
    Some(median(&mut v))
}

#[cfg(not(c_block_bench))]
fn bench_block_c() -> Option<f64> {
    None
}

// ---------------------------------------------------------------- verification

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Random small parameter sets: patched (every backend) == upstream == C.
fn verify(cases: usize) {
    let mut rng = Rng(0x6172_676f_6e32_2d63);
    let algs = [
        (Algorithm::Argon2d, upstream::Algorithm::Argon2d, 0),
        (Algorithm::Argon2i, upstream::Algorithm::Argon2i, 1),
        (Algorithm::Argon2id, upstream::Algorithm::Argon2id, 2),
    ];
    let vers = [
        (Version::V0x10, upstream::Version::V0x10, 0x10),
        (Version::V0x13, upstream::Version::V0x13, 0x13),
    ];
    for case in 0..cases {
        let p = 1 + rng.below(4) as u32;
        let m = 8 * p + rng.below(300) as u32;
        let t = 1 + rng.below(3) as u32;
        let len = 4 + rng.below(60) as usize;
        let (alg, up_alg, c_ty) = algs[rng.below(3) as usize];
        let (ver, up_ver, c_ver) = vers[rng.below(2) as usize];
        let n = rng.below(40) as usize;
        let pwd = rng.bytes(n);
        let n = 8 + rng.below(24) as usize;
        let salt = rng.bytes(n);
        let n = rng.below(2) as usize * 16;
        let secret = rng.bytes(n);

        let mut c_out = vec![0u8; len];
        set_c_wipe(true);
        c_hash(
            c_ty,
            c_ver,
            m,
            t,
            p,
            &pwd,
            &salt,
            &secret,
            &[],
            &mut c_out,
            None,
        );

        let up_params = upstream::Params::new(m, t, p, Some(len)).unwrap();
        let up = if secret.is_empty() {
            upstream::Argon2::new(up_alg, up_ver, up_params)
        } else {
            upstream::Argon2::new_with_secret(&secret, up_alg, up_ver, up_params).unwrap()
        };
        let mut up_out = vec![0u8; len];
        up.hash_password_into(&pwd, &salt, &mut up_out).unwrap();
        assert_eq!(up_out, c_out, "case {case}: upstream != C");

        for b in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            let params = Params::new(m, t, p, Some(len)).unwrap();
            let a = if secret.is_empty() {
                Argon2::new(alg, ver, params)
            } else {
                Argon2::new_with_secret(&secret, alg, ver, params).unwrap()
            };
            let mut out = vec![0u8; len];
            a.with_compress_backend(b)
                .unwrap()
                .hash_password_into(&pwd, &salt, &mut out)
                .unwrap();
            assert_eq!(
                out, c_out,
                "case {case}: patched-{b} != C ({alg:?} {ver:?} m={m} t={t} p={p})"
            );
        }
    }
    println!("verify: {cases} random parameter sets, patched (all available backends) == upstream == C reference");
}

/// PHC strings from the unpatched crate (pasted into vendor/argon2/tests/backends.rs).
fn gen_upstream() {
    use upstream::password_hash::{PasswordHasher, SaltString};
    let cases = [
        (
            "hunter42",
            upstream::Algorithm::Argon2id,
            upstream::Version::V0x13,
            19456,
            2,
            1,
        ),
        (
            "correct horse",
            upstream::Algorithm::Argon2id,
            upstream::Version::V0x13,
            64,
            3,
            2,
        ),
        (
            "pässwörd",
            upstream::Algorithm::Argon2i,
            upstream::Version::V0x13,
            256,
            2,
            4,
        ),
        (
            "",
            upstream::Algorithm::Argon2d,
            upstream::Version::V0x13,
            32,
            1,
            1,
        ),
        (
            "legacy",
            upstream::Algorithm::Argon2id,
            upstream::Version::V0x10,
            128,
            2,
            1,
        ),
    ];
    for (i, (pw, alg, ver, m, t, p)) in cases.into_iter().enumerate() {
        let salt = SaltString::encode_b64(format!("upstream-salt-{i}").as_bytes()).unwrap();
        let a = upstream::Argon2::new(alg, ver, upstream::Params::new(m, t, p, None).unwrap());
        let h = a.hash_password(pw.as_bytes(), &salt).unwrap();
        println!("    ({pw:?}, {:?}),", h.to_string());
    }
}

// ---------------------------------------------------------------- main

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--gen-upstream") {
        gen_upstream();
        return;
    }
    verify(40);
    if args.iter().any(|a| a == "--verify-only") {
        return;
    }
    let c_only = args.iter().any(|a| a == "--c-only");
    let rounds_small: usize = arg_value(&args, "--rounds-small").map_or(31, |v| v.parse().unwrap());
    let rounds_large: usize = arg_value(&args, "--rounds-large").map_or(11, |v| v.parse().unwrap());

    println!(
        "active backend of the patched crate: {}",
        argon2::active_backend_name()
    );
    println!(
        "C reference build: {} (ARGON2_KDF_C_COMPILER_FLAGS={:?})",
        c_flavour(),
        env!("ARGON2_KDF_C_COMPILER_FLAGS")
    );

    let mut imps: Vec<Imp> = Vec::new();
    if !c_only {
        imps.extend(
            Backend::ALL
                .into_iter()
                .filter(|b| b.is_available())
                .map(Imp::Patched),
        );
        imps.push(Imp::Upstream);
    }
    imps.push(Imp::C { wipe: false });
    imps.push(Imp::C { wipe: true });

    let sets = [(19456u32, 2u32, rounds_small), (65536, 3, rounds_large)];
    let mut mem = Mem::new(65536 * 1024, false);
    // results[label][set] = ms
    let mut results: BTreeMap<String, [f64; 2]> = BTreeMap::new();
    let mut order: Vec<String> = imps.iter().map(|i| i.label()).collect();
    for (s, &(m, t, rounds)) in sets.iter().enumerate() {
        let ms = bench_hash(&imps, m, t, rounds, &mut mem);
        for (imp, ms) in imps.iter().zip(ms) {
            results.entry(imp.label()).or_insert([f64::NAN; 2])[s] = ms;
            println!("RESULT\thash\t{}\tm={m},t={t},p=1\t{ms:.3}", imp.label());
        }
    }

    // Per-block compression cost.
    let mut per_block: Vec<(String, f64)> = Vec::new();
    if !c_only {
        for b in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            per_block.push((format!("patched-{b}"), bench_block_rust(b)));
        }
    }
    if let Some(ns) = bench_block_c() {
        per_block.push((format!("c-{}", c_flavour()), ns));
    }
    for (label, ns) in &per_block {
        println!("RESULT\tblock\t{label}\t-\t{ns:.1}");
    }

    // Merge results of the other C build (run by benches/argon2.sh).
    if let Some(file) = arg_value(&args, "--extra") {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 5 || f[0] != "RESULT" {
                continue;
            }
            let v: f64 = f[4].parse().unwrap();
            match f[1] {
                "hash" => {
                    let s = if f[3].starts_with("m=19456") { 0 } else { 1 };
                    if !order.iter().any(|o| o == f[2]) {
                        order.push(f[2].to_string());
                    }
                    results.entry(f[2].to_string()).or_insert([f64::NAN; 2])[s] = v;
                }
                "block" if !per_block.iter().any(|(l, _)| l == f[2]) => {
                    per_block.push((f[2].to_string(), v));
                }
                _ => {}
            }
        }
    }

    println!();
    println!("median ms/hash (Argon2id v19, p=1, memory reused):");
    println!(
        "{:<22} {:>16} {:>16}",
        "implementation", "m=19456,t=2", "m=65536,t=3"
    );
    for label in &order {
        let r = results[label];
        println!("{label:<22} {:>16.2} {:>16.2}", r[0], r[1]);
    }
    let base = ["c-avx512", "c-avx2", "upstream-0.5.3"];
    for b in base {
        let Some(br) = results.get(b).copied() else {
            continue;
        };
        println!();
        println!("speed relative to {b} (>1 = faster than {b}):");
        for label in &order {
            if label == b || label.ends_with("+wipe") {
                continue;
            }
            let r = results[label];
            println!(
                "{label:<22} {:>15.3}x {:>15.3}x",
                br[0] / r[0],
                br[1] / r[1]
            );
        }
    }
    println!();
    println!("compression function, ns per 1 KiB block (chained, in L1):");
    for (label, ns) in &per_block {
        println!("{label:<22} {ns:>10.1}");
    }
    println!("derived from hash time (ms / (m*t) blocks, includes memory and indexing):");
    for label in &order {
        let r = results[label];
        println!(
            "{label:<22} {:>10.1} {:>10.1}",
            r[0] * 1e6 / (19456.0 * 2.0),
            r[1] * 1e6 / (65536.0 * 3.0)
        );
    }

    if args.iter().any(|a| a == "--thp") {
        println!();
        println!(
            "madvise(MADV_HUGEPAGE) (THP mode: {}):",
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .unwrap_or_default()
                .trim()
        );
        let mut huge = Mem::new(65536 * 1024, true);
        let thp_imps: Vec<Imp> = imps
            .iter()
            .copied()
            .filter(|i| {
                matches!(i, Imp::Patched(_)) && *i == imps[0] || *i == Imp::C { wipe: false }
            })
            .collect();
        for &(m, t, rounds) in &sets {
            let plain = bench_hash(&thp_imps, m, t, rounds, &mut mem);
            let hp = bench_hash(&thp_imps, m, t, rounds, &mut huge);
            for (i, imp) in thp_imps.iter().enumerate() {
                println!(
                    "{:<22} m={m},t={t}: 4K pages {:>8.2} ms, huge pages {:>8.2} ms ({:.3}x)",
                    imp.label(),
                    plain[i],
                    hp[i],
                    plain[i] / hp[i]
                );
                println!(
                    "RESULT\thash-thp\t{}\tm={m},t={t},p=1\t{:.3}",
                    imp.label(),
                    hp[i]
                );
            }
        }
    }
}
