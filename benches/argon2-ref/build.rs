//! Compiles csrc/cblock.c against the reference C sources bundled in the
//! argon2-kdf crate, with the same ARGON2_KDF_C_COMPILER_FLAGS.

use std::path::PathBuf;

fn argon2_kdf_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let src = home.join("registry").join("src");
    for index in std::fs::read_dir(src).ok()?.flatten() {
        let dir = index
            .path()
            .join("argon2-kdf-1.7.3/phc-winner-argon2-20190702");
        if dir.join("src/opt.c").exists() {
            return Some(dir);
        }
    }
    None
}

fn main() {
    println!("cargo:rerun-if-env-changed=ARGON2_KDF_C_COMPILER_FLAGS");
    println!("cargo:rerun-if-changed=csrc/cblock.c");
    println!("cargo::rustc-check-cfg=cfg(c_block_bench)");
    let flags = std::env::var("ARGON2_KDF_C_COMPILER_FLAGS").unwrap_or_default();
    println!("cargo:rustc-env=ARGON2_KDF_C_COMPILER_FLAGS={flags}");
    let Some(dir) = argon2_kdf_dir() else {
        println!(
            "cargo:warning=argon2-kdf 1.7.3 sources not found: C per-block benchmark disabled"
        );
        return;
    };
    let mut build = cc::Build::new();
    build
        .file("csrc/cblock.c")
        .include(dir.join("src"))
        .include(dir.join("include"))
        .opt_level(3)
        .warnings(false)
        .flag("-std=c89");
    for flag in flags.split(';').filter(|f| !f.is_empty()) {
        build.flag(flag);
    }
    build.compile("argon2refblock");
    println!("cargo:rustc-cfg=c_block_bench");
}
