fn main() {
    println!("fmseg");
}
