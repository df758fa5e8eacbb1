//! AFL++ harness for `fmseg::fuzz::Target`'s `weights` reader (see `scripts/fuzz-afl.sh`).
fn main() {
    fmseg_fuzz::main(fmseg::fuzz::Target::from_name("weights").expect("a target of fmseg::fuzz"));
}
