//! The admin socket: a Unix stream socket (mode 0600) carrying the JSON-lines protocol of
//! the `admin` crate. Only root and the server's own user may connect (SO_PEERCRED). Each
//! connection is served in order, one request at a time; the methods run on blocking
//! threads, since some of them wait for their work.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use admin::{Dispatcher, MAX_REQUEST_BYTES};
use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};

use crate::server::Server;

/// A bound admin socket; the file is removed when it is dropped.
#[derive(Debug)]
pub struct AdminSocket {
    path: PathBuf,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind the admin socket and serve it.
pub async fn start(server: &Arc<Server>, path: &Path) -> anyhow::Result<AdminSocket> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("{} is in use by another server", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    let exports: Arc<dyn admin::Exports> = server.registry.clone();
    let dispatcher = Dispatcher::new(server.replication.clone(), exports);
    tokio::spawn(accept_loop(listener, dispatcher));
    Ok(AdminSocket {
        path: path.to_owned(),
    })
}

async fn accept_loop(listener: UnixListener, dispatcher: Dispatcher) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                let uid = stream.peer_cred().map(|c| c.uid()).ok();
                if !matches!(uid, Some(u) if u == 0 || u == me) {
                    tracing::warn!(
                        ?uid,
                        "admin connection refused: only root and the server's user may connect"
                    );
                    let refusal = serde_json::json!({
                        "id": null,
                        "ReturnValue": 4,
                        "Error": {"Message": "access denied: only root and the server's user may use the admin socket"},
                    });
                    let _ = stream.write_all(format!("{refusal}\n").as_bytes()).await;
                    continue;
                }
                tokio::spawn(serve(stream, dispatcher.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serve one connection: a response line for every request line, in order.
async fn serve(stream: UnixStream, dispatcher: Dispatcher) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 << 10];
    // Discarding the rest of an oversized line.
    let mut skipping = false;
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut data = &chunk[..n];
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let (part, rest) = match nl {
                Some(i) => (&data[..i], Some(&data[i + 1..])),
                None => (data, None),
            };
            if !skipping {
                buf.extend_from_slice(part);
            }
            if buf.len() > MAX_REQUEST_BYTES && !skipping {
                buf.clear();
                skipping = true;
                if !reply(&mut wr, &Dispatcher::too_large()).await {
                    return;
                }
            }
            let Some(rest) = rest else { break };
            data = rest;
            if skipping {
                skipping = false;
                continue;
            }
            let line = std::mem::take(&mut buf);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let d = dispatcher.clone();
            let resp = match tokio::task::spawn_blocking(move || d.handle_line(&line)).await {
                Ok(r) => r,
                Err(e) => serde_json::json!({
                    "id": null, "ReturnValue": 2,
                    "Error": {"Message": format!("internal error: {e}")},
                }),
            };
            if !reply(&mut wr, &resp).await {
                return;
            }
        }
    }
}

async fn reply(wr: &mut tokio::net::unix::OwnedWriteHalf, v: &serde_json::Value) -> bool {
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    wr.write_all(&line).await.is_ok()
}
