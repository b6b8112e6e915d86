//! The unix-socket server: one reader and one writer thread per client.

use super::{DaemonError, Input};
use crate::api::{ApiRequest, ApiResponse, MAX_LINE};
use crate::ids::ClientId;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Sender};

/// Most lines queued for one client before it counts as stuck.
const CLIENT_QUEUE: usize = 4096;

pub(super) fn spawn(state_dir: &Path, tx: Sender<Input>) -> Result<(), DaemonError> {
    let path = crate::api::socket_path(state_dir);
    if let Ok(s) = UnixStream::connect(&path) {
        drop(s);
        return Err(DaemonError::WhoAmI(format!(
            "another cmand already serves {}",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(super::io_err(path.display().to_string()))?;
    // Root-only: by its mode, and by the client's credentials.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(super::io_err(path.display().to_string()))?;
    std::thread::Builder::new()
        .name("cmand-api".into())
        .spawn(move || {
            for (n, stream) in (1u64..).zip(listener.incoming().flatten()) {
                match dlm::driver::ctl::peer_allowed(&stream) {
                    Ok(()) => serve(ClientId(n), stream, tx.clone()),
                    Err(why) => refuse(stream, why),
                }
            }
        })
        .expect("spawn api thread");
    Ok(())
}

fn serve(id: ClientId, stream: UnixStream, tx: Sender<Input>) {
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let (out_tx, out_rx) = sync_channel::<String>(CLIENT_QUEUE);
    if tx.send(Input::NewClient(id, out_tx.clone())).is_err() {
        return;
    }
    std::thread::spawn(move || {
        for mut line in out_rx {
            line.push('\n');
            if w.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        let _ = w.shutdown(std::net::Shutdown::Both);
    });
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream.take(u64::MAX));
        loop {
            let mut line = String::new();
            let limited = (&mut reader).take(MAX_LINE as u64).read_line(&mut line);
            match limited {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => {
                    let _ = out_tx.try_send(error_line("request line too long"));
                    break;
                }
                Ok(_) => match serde_json::from_str::<ApiRequest>(&line) {
                    Ok(req) => {
                        if tx.send(Input::Api(id, req)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = out_tx.try_send(error_line(&format!("bad request: {e}")));
                    }
                },
            }
        }
        let _ = tx.send(Input::Gone(id));
    });
}

/// Answers each request of a client that may not use the API with `why`
/// and nothing else (a few, for a few seconds, in its own thread).
fn refuse(stream: UnixStream, why: String) {
    tracing::warn!(why, "cmand API: client refused");
    std::thread::spawn(move || {
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let Ok(mut w) = stream.try_clone() else {
            return;
        };
        let reader = BufReader::new(stream.take(64 * 1024));
        for _ in reader.lines().take(16).map_while(Result::ok) {
            if w.write_all(format!("{}\n", error_line(&why)).as_bytes())
                .is_err()
            {
                break;
            }
        }
    });
}

fn error_line(e: &str) -> String {
    serde_json::to_string(&ApiResponse {
        error: Some(e.to_string()),
        ..Default::default()
    })
    .unwrap_or_default()
}
