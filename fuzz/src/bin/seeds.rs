//! Writes the starting corpus of every target: `seeds OUT` creates `OUT/<target>/<name>` for
//! each of `fmseg::fuzz::seeds`.
fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: seeds OUT"));
    let scratch = out.join(".scratch");
    std::fs::create_dir_all(&scratch).expect("create OUT");
    let seeds = fmseg::fuzz::seeds(&scratch).unwrap_or_else(|e| panic!("writing seeds: {e}"));
    for (target, name, bytes) in seeds {
        let d = out.join(target.name());
        std::fs::create_dir_all(&d).expect("create a target folder");
        std::fs::write(d.join(name), bytes).expect("write a seed");
    }
    std::fs::remove_dir_all(&scratch).expect("remove the scratch folder");
}
