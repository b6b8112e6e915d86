//! The lab library's own guarantees: a spawned daemon dies with the thread
//! that spawned it, and an `OnRunnerDeath` command runs when (and only
//! when) its pipe closes without the guard being dropped.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn spawned_child_dies_with_its_spawning_thread() {
    let mut child = std::thread::spawn(|| tests::spawn(Command::new("sleep").arg("60")).unwrap())
        .join()
        .unwrap();
    let mut status = None;
    tests::wait_for("the parent-death signal", Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn spawned_child_has_its_own_process_group() {
    let mut child = tests::spawn(Command::new("sleep").arg("60")).unwrap();
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(child.id() as i32)));
    tests::reap(&mut child);
    assert_eq!(pgid.unwrap().as_raw(), child.id() as i32);
}

#[test]
fn on_runner_death_runs_on_a_closed_pipe_and_not_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (fired, dropped) = (dir.path().join("fired"), dir.path().join("dropped"));
    tests::OnRunnerDeath::new(Command::new("touch").arg(&fired)).trigger();
    assert!(fired.exists(), "the command ran when the pipe closed");
    drop(tests::OnRunnerDeath::new(
        Command::new("touch").arg(&dropped),
    ));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dropped.exists(), "dropping the guard must not run it");
}
