//! Compiles the CUDA kernels (`kernels/*.cu`) when the `cuda` feature is on and nvcc is found.
//!
//! Each `.cu` becomes PTX for `compute_80` (JIT-compiled by the driver on any GPU of compute
//! capability 8.0 or newer) and an `sm_90a` cubin (loaded as is on H100/H200). Both are embedded
//! through `$OUT_DIR/kernels.rs`, which also names every module in an enum; the runtime loads a
//! module the first time one of its kernels is launched. ptxas' resource report (registers,
//! shared memory, spills) for every kernel goes to `$OUT_DIR/kernel-resources.txt`; a kernel that
//! spills is also a cargo warning. Without nvcc the CPU engine is built alone: one warning, and
//! `kernels.rs` still names the modules (with no code) so the CUDA backend compiles and reports
//! at run time that this build has no kernels.
//!
//! nvcc is looked up in `$NVCC`, `$CUDA_HOME/bin`, `$CUDA_PATH/bin`, `PATH`, then the project's
//! own pinned toolchain in `.cuda-toolchain/` (scripts/install-cuda-toolchain.sh).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags shared with scripts/check-kernels.sh: keep them in step.
const COMMON_FLAGS: &[&str] = &["-O3", "-std=c++17", "-lineinfo"];
const PTX_ARCH: &str = "-arch=compute_80";
const CUBIN_GENCODE: &str = "-gencode=arch=compute_90a,code=sm_90a";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for v in ["NVCC", "CUDA_HOME", "CUDA_PATH"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let sources = kernel_sources(&root.join("kernels"));

    let built = match find_nvcc(&root) {
        Some(nvcc) => {
            println!("cargo:rerun-if-changed={}", nvcc.display());
            compile_all(&nvcc, &root.join("kernels"), &sources, &out);
            true
        }
        None => {
            println!(
                "cargo:warning=nvcc not found: building the CPU engine only (the CUDA backend will report that it \
                 has no kernels). Install the pinned toolchain with scripts/install-cuda-toolchain.sh or set NVCC / \
                 CUDA_HOME, then `touch kernels` and rebuild."
            );
            fs::write(out.join("kernel-resources.txt"), "kernels not built: nvcc not found\n")
                .expect("write kernel-resources.txt");
            false
        }
    };
    write_if_changed(&out.join("kernels.rs"), &generate_table(&sources, built));
}

/// `kernels/*.cu` stems, sorted.
fn kernel_sources(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    v.sort();
    v
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
        println!("cargo:warning=NVCC={} is not a file; looking elsewhere", p.display());
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(h) = env::var_os(var) {
            let p = PathBuf::from(h).join("bin/nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    // The pinned pip toolchain: .cuda-toolchain/lib/python3.*/site-packages/nvidia/cu13/bin/nvcc
    let lib = root.join(".cuda-toolchain/lib");
    let mut found: Vec<PathBuf> = fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13/bin/nvcc"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Include directory next to nvcc (the pip packages keep the CUDA headers there).
fn include_dir(nvcc: &Path) -> Option<PathBuf> {
    let inc = nvcc.parent()?.parent()?.join("include");
    inc.is_dir().then_some(inc)
}

fn nvcc_cmd(nvcc: &Path, kdir: &Path) -> Command {
    let mut c = Command::new(nvcc);
    c.args(COMMON_FLAGS).arg(format!("-I{}", kdir.display()));
    if let Some(inc) = include_dir(nvcc) {
        c.arg(format!("-I{}", inc.display()));
    }
    c
}

fn run(mut cmd: Command, what: &str) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("cannot run nvcc for {what}: {e}"));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        panic!("nvcc failed on {what}:\n{}{stderr}", String::from_utf8_lossy(&o.stdout));
    }
    stderr
}

fn compile_all(nvcc: &Path, kdir: &Path, sources: &[String], out: &Path) {
    // One thread per file: nvcc is single-threaded and the files are independent.
    let reports: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .map(|stem| {
                s.spawn(move || {
                    let src = kdir.join(format!("{stem}.cu"));
                    let mut ptx = nvcc_cmd(nvcc, kdir);
                    ptx.arg("--ptx").arg(PTX_ARCH).arg(&src).arg("-o").arg(out.join(format!("{stem}.ptx")));
                    run(ptx, &format!("{stem}.cu (ptx)"));
                    let mut cubin = nvcc_cmd(nvcc, kdir);
                    cubin
                        .arg("--cubin")
                        .arg(CUBIN_GENCODE)
                        .args(["-Xptxas", "-v"])
                        .arg(&src)
                        .arg("-o")
                        .arg(out.join(format!("{stem}.sm90a.cubin")));
                    (stem.clone(), run(cubin, &format!("{stem}.cu (sm_90a cubin)")))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("nvcc thread panicked")).collect()
    });

    let mut report = String::from("module kernel registers smem_bytes stack_bytes spill_stores spill_loads\n");
    for (stem, log) in &reports {
        for k in parse_ptxas(log) {
            let _ = writeln!(
                report,
                "{stem} {} {} {} {} {} {}",
                k.name, k.regs, k.smem, k.stack, k.spill_stores, k.spill_loads
            );
            if k.spill_stores > 0 || k.spill_loads > 0 {
                println!(
                    "cargo:warning=kernel {} ({stem}.cu) spills: {} bytes stores, {} bytes loads ({} registers)",
                    k.name, k.spill_stores, k.spill_loads, k.regs
                );
            }
        }
    }
    fs::write(out.join("kernel-resources.txt"), report).expect("write kernel-resources.txt");
}

#[derive(Default)]
struct KernelResources {
    name: String,
    regs: u32,
    smem: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// Reads ptxas -v output: "Compiling entry function 'k'", then "N bytes stack frame, N bytes
/// spill stores, N bytes spill loads" and "Used N registers, ... N bytes smem".
fn parse_ptxas(log: &str) -> Vec<KernelResources> {
    let mut v: Vec<KernelResources> = Vec::new();
    let num_before = |line: &str, key: &str| -> Option<u32> {
        let i = line.find(key)?;
        line[..i].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            v.push(KernelResources { name, ..Default::default() });
        } else if let Some(k) = v.last_mut() {
            if let Some(n) = num_before(line, "bytes stack frame") {
                k.stack = n;
            }
            if let Some(n) = num_before(line, "bytes spill stores") {
                k.spill_stores = n;
            }
            if let Some(n) = num_before(line, "bytes spill loads") {
                k.spill_loads = n;
            }
            if let Some(n) = num_before(line, "registers") {
                k.regs = n;
            }
            if let Some(n) = num_before(line, "bytes smem") {
                k.smem = n;
            }
        }
    }
    v
}

fn camel(stem: &str) -> String {
    stem.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

fn generate_table(sources: &[String], built: bool) -> String {
    let mut s = String::from("// Generated by build.rs from kernels/*.cu. Do not edit.\n\n");
    let _ = writeln!(
        s,
        "/// Whether nvcc compiled the kernels into this build.\npub const KERNELS_BUILT: bool = {built};\n"
    );
    s.push_str("/// ptxas' resource report for every kernel (registers, shared memory, spills).\n");
    s.push_str("pub const RESOURCES: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/kernel-resources.txt\"));\n\n");
    s.push_str("/// One compiled `kernels/<name>.cu`.\n#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Module {\n");
    for stem in sources {
        let _ = writeln!(s, "    {},", camel(stem));
    }
    s.push_str("}\n\nimpl Module {\n    pub const ALL: &'static [Module] = &[");
    for stem in sources {
        let _ = write!(s, "Module::{}, ", camel(stem));
    }
    s.push_str(
        "];\n\n    /// The source file's stem.\n    pub fn name(self) -> &'static str {\n        match self {\n",
    );
    for stem in sources {
        let _ = writeln!(s, "            Module::{} => \"{stem}\",", camel(stem));
    }
    s.push_str("        }\n    }\n\n    /// PTX for compute_80 (empty when the kernels were not built).\n");
    s.push_str("    pub fn ptx(self) -> &'static str {\n        match self {\n");
    for stem in sources {
        if built {
            let _ = writeln!(
                s,
                "            Module::{} => include_str!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx\")),",
                camel(stem)
            );
        } else {
            let _ = writeln!(s, "            Module::{} => \"\",", camel(stem));
        }
    }
    s.push_str("        }\n    }\n\n    /// sm_90a cubin (empty when the kernels were not built).\n");
    s.push_str("    pub fn cubin_sm90a(self) -> &'static [u8] {\n        match self {\n");
    for stem in sources {
        if built {
            let _ = writeln!(
                s,
                "            Module::{} => include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.sm90a.cubin\")),",
                camel(stem)
            );
        } else {
            let _ = writeln!(s, "            Module::{} => &[],", camel(stem));
        }
    }
    s.push_str("        }\n    }\n}\n");
    s
}

fn write_if_changed(path: &Path, content: &str) {
    if fs::read_to_string(path).map(|old| old == content).unwrap_or(false) {
        return;
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
