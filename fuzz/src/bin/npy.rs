//! AFL++ harness for `fmseg::fuzz::Target`'s `npy` reader (see `scripts/fuzz-afl.sh`).
fn main() {
    fmseg_fuzz::main(fmseg::fuzz::Target::from_name("npy").expect("a target of fmseg::fuzz"));
}
