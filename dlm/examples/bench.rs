//! `cargo run --release -p dlm --example bench`: the figures of `dlm_tool
//! bench`. The remote figures need a second process: this program starts
//! itself again with the argument `bench-peer`.
fn main() {
    if std::env::args().nth(1).as_deref() == Some("bench-peer") {
        dlm::bench::peer_main().expect("bench peer");
        return;
    }
    let peer = dlm::bench::PeerCommand {
        program: std::env::current_exe().expect("current_exe"),
        args: vec!["bench-peer".into()],
    };
    let r = dlm::bench::run(&peer).expect("bench");
    println!("{}", serde_json::to_string_pretty(&r).expect("json"));
}
