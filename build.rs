//! Compiles every `bpf/*.bpf.c` into a libbpf-rs skeleton in OUT_DIR.
//!
//! The skeletons are included by `src/programs/*`; nothing generated lands in
//! the source tree. Clang's warnings are surfaced as cargo warnings.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use libbpf_cargo::util::CargoWarningFormatter;
use libbpf_cargo::SkeletonBuilder;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("set by cargo");

    let vmlinux_dir = manifest_dir.join("vmlinux").join(&arch);
    if !vmlinux_dir.join("vmlinux.h").is_file() {
        panic!(
            "no vmlinux.h for target arch {arch}: expected {}; generate it on a {arch} host with `make vmlinux`",
            vmlinux_dir.join("vmlinux.h").display()
        );
    }

    let clang = env::var_os("BPF_CLANG")
        .map(PathBuf::from)
        .unwrap_or_else(|| "clang".into());
    println!("cargo:rerun-if-env-changed=BPF_CLANG");
    if let Some(resolved) = resolve_in_path(&clang) {
        println!("cargo:rerun-if-changed={}", resolved.display());
    }

    let include_dir = manifest_dir.join("include");
    let bpf_dir = manifest_dir.join("bpf");
    for dir in [&bpf_dir, &include_dir, &vmlinux_dir] {
        println!("cargo:rerun-if-changed={}", dir.display());
        for file in files_in(dir) {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }

    // Route clang's stderr, which libbpf-cargo logs under this target, to
    // cargo warnings; the generator's own chatter stays quiet.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(CargoWarningFormatter)
                .with_writer(std::io::stdout)
                .with_filter(Targets::new().with_target("compiler-stderr", tracing::Level::INFO)),
        )
        .init();

    let target_arch_define = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    let clang_args = [
        format!("-I{}", include_dir.display()),
        format!("-I{}", vmlinux_dir.display()),
        format!("-D__TARGET_ARCH_{target_arch_define}"),
        "-Wall".to_string(),
        "-Wextra".to_string(),
        "-Wno-unused-parameter".to_string(),
    ];

    let sources: Vec<PathBuf> = files_in(&bpf_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    assert!(!sources.is_empty(), "no bpf/*.bpf.c sources found");

    for source in sources {
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .expect("filtered on the .bpf.c suffix above");
        let skeleton = out_dir.join(format!("{name}.skel.rs"));
        if let Err(err) = SkeletonBuilder::new()
            .source(&source)
            .clang(&clang)
            .clang_args(&clang_args)
            .build_and_generate(&skeleton)
        {
            panic!("building the skeleton for {}: {err:#}", source.display());
        }
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn resolve_in_path(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}
