//! AFL++ harness for `fmseg::fuzz::Target`'s `dicom` reader (see `scripts/fuzz-afl.sh`).
fn main() {
    fmseg_fuzz::main(fmseg::fuzz::Target::from_name("dicom").expect("a target of fmseg::fuzz"));
}
