//! `unicred hash bench` and `unicred hash calibrate`: measure Argon2id on this machine with
//! the same code (and memory reuse) as the hashing pool.

use std::time::{Duration, Instant};

use super::{Scratch, hash_with};
use crate::tenants::Argon2Policy;

pub enum Command {
    Calibrate { target_ms: u64, max_memory_mib: u32 },
    Bench { m_kib: u32, t: u32, p: u32, threads: usize },
}

/// Median time of `n` hashes on this thread (after one warm-up).
fn median(params: Argon2Policy, n: usize) -> Result<Duration, super::PasswordError> {
    let mut s = Scratch::default();
    hash_with(&mut s, b"bench-pepper", params, b"benchmark password")?;
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            hash_with(&mut s, b"bench-pepper", params, b"benchmark password").map(|_| t.elapsed())
        })
        .collect::<Result<_, _>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

/// Hashes per second with `threads` threads hashing for about `secs` seconds.
fn throughput(params: Argon2Policy, threads: usize, secs: f64) -> f64 {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = Scratch::default();
                let mut n = 0u64;
                while started.elapsed().as_secs_f64() < secs {
                    if hash_with(&mut s, b"bench-pepper", params, b"benchmark password").is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

pub fn run(cmd: Command) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        Command::Bench { m_kib, t, p, threads } => {
            let params = Argon2Policy { m_kib, t, p };
            let one = median(params, 15)?;
            let single = throughput(params, 1, 2.0);
            let multi = throughput(params, threads.max(1), 3.0);
            println!(
                "argon2id m={m_kib} KiB t={t} p={p}, compression path: {}",
                argon2::active_backend_name()
            );
            println!(
                "1 thread:  median {:.2} ms/hash, {single:.1} hashes/s",
                one.as_secs_f64() * 1e3
            );
            println!("{threads} threads: {multi:.1} hashes/s");
        }
        Command::Calibrate {
            target_ms,
            max_memory_mib,
        } => {
            let target = Duration::from_millis(target_ms);
            let max_m = max_memory_mib.saturating_mul(1024).max(19456);
            let mut best = Argon2Policy {
                m_kib: 19456,
                t: 2,
                p: 1,
            };
            let mut took = median(best, 5)?;
            if took > target {
                println!(
                    "# even the OWASP minimum takes {:.1} ms here (target {target_ms} ms)",
                    took.as_secs_f64() * 1e3
                );
            } else {
                // Memory first (RFC 9106 §4), then passes.
                loop {
                    let next = Argon2Policy {
                        m_kib: (best.m_kib * 2).min(max_m),
                        ..best
                    };
                    if next.m_kib == best.m_kib {
                        break;
                    }
                    let d = median(next, 5)?;
                    if d > target {
                        break;
                    }
                    (best, took) = (next, d);
                }
                loop {
                    let next = Argon2Policy { t: best.t + 1, ..best };
                    let d = median(next, 5)?;
                    if d > target || next.t > 32 {
                        break;
                    }
                    (best, took) = (next, d);
                }
            }
            println!(
                "# measured {:.1} ms per hash on this machine (target {target_ms} ms)",
                took.as_secs_f64() * 1e3
            );
            println!(
                "argon2_m_kib = {}\nargon2_t = {}\nargon2_p = {}",
                best.m_kib, best.t, best.p
            );
        }
    }
    Ok(())
}
