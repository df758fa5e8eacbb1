//! AFL++ harness for `fmseg::fuzz::Target`'s `nifti` reader (see `scripts/fuzz-afl.sh`).
fn main() {
    fmseg_fuzz::main(fmseg::fuzz::Target::from_name("nifti").expect("a target of fmseg::fuzz"));
}
