//! AFL++ harness for `fmseg::fuzz::Target`'s `dicom_net` reader (what a peer sends fmseg serve: PDUs and DIMSE commands) (see `scripts/fuzz-afl.sh`).
fn main() {
    fmseg_fuzz::main(fmseg::fuzz::Target::from_name("dicom_net").expect("a target of fmseg::fuzz"));
}
