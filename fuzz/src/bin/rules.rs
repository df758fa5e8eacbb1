//! AFL++ harness for `fmseg::fuzz::Target`'s `rules` reader (batch selection rules JSON) (see `scripts/fuzz-afl.sh`).
fn main() {
    fmseg_fuzz::main(fmseg::fuzz::Target::from_name("rules").expect("a target of fmseg::fuzz"));
}
