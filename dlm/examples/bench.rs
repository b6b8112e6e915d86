//! `cargo run --release -p dlm --example bench`: the figures of `dlm_tool bench`.
fn main() {
    let r = dlm::bench::run().expect("bench");
    println!("{}", serde_json::to_string_pretty(&r).expect("json"));
}
