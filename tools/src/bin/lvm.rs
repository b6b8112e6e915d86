//! lvm — the LVM2 commands (`pvcreate`, `vgcreate`, `lvcreate`, `lvs`, ...)
//! in one program that dispatches on its name or first word, as lvm2's
//! `lvm` does; `scripts/install.sh` links each command name to it.

fn main() {
    tools::init_logging();
    let argv: Vec<String> = std::env::args().collect();
    let code = lvm::commands::run(&argv, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
