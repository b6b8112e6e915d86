fn main() {
    let a: Vec<String> = std::env::args().collect();
    let dev = clusterfs::block::FileDevice::open(std::path::Path::new(&a[1])).unwrap();
    let opts = clusterfs::mkfs::MkfsOptions {
        lockproto: clusterfs::mkfs::LockProto::LockNolock,
        journals: a[2].parse().unwrap(),
        bsize: a[3].parse().unwrap(),
        ..Default::default()
    };
    let r = clusterfs::mkfs::mkfs(&dev, &opts, &mut |_, _, _| {}).unwrap();
    println!("{r:?}");
}
