//! The REST API on the testbed's local socket, `/run/testbed/<name>/api.sock`: the
//! door the `testbed` CLI uses. The same requests and answers as on the HTTPS port;
//! who is calling is what the kernel says of the peer (`SO_PEERCRED`): root and the
//! testbed's owner are its admin, as the owner's certificate is. Anyone else is
//! answered `403 Forbidden` with why, and the refusal is logged.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;

use super::{handler, limits, status, Door, User};

/// Binds the socket (mode 0666: the peer's credentials decide who may talk).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Why `uid` may not call, if it may not.
fn refusal(uid: u32, owner_uid: u32) -> Option<String> {
    (uid != 0 && uid != owner_uid).then(|| {
        format!("permission denied: uid {uid} is neither root nor the owner of this testbed (uid {owner_uid})")
    })
}

/// Serves the REST API on `listener` until the task is aborted.
pub async fn serve(listener: UnixListener, door: Arc<Door>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits::CONNECTIONS));
    let mut backoff = Duration::from_millis(5);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let conn = match listener.accept().await {
            Ok((conn, _)) => {
                backoff = Duration::from_millis(5);
                conn
            }
            Err(e) => {
                // Out of descriptors and the like: wait, as Go's net/http does,
                // instead of spinning on a listener that stays readable.
                door.log_refusal(&format!("api: accept: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let uid = conn.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        let door = door.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let refused = refusal(uid, door.owner_uid);
            if let Some(why) = &refused {
                door.log_refusal(&format!("api: refused a connection from uid {uid}: {why}"));
            }
            let peer = format!("uid {uid}");
            let service = hyper::service::service_fn(move |req| {
                let (door, refused, peer) = (door.clone(), refused.clone(), peer.clone());
                async move {
                    let r = match refused {
                        Some(why) => handler::json_response(
                            http::StatusCode::FORBIDDEN,
                            &status::forbidden(why).body,
                        ),
                        None => handler::handle(door, User::Admin, &peer, req).await,
                    };
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits::HANDSHAKE)
                .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_and_the_owner_may_call_and_no_one_else() {
        assert_eq!(super::refusal(0, 1000), None);
        assert_eq!(super::refusal(1000, 1000), None);
        assert_eq!(
            super::refusal(65534, 1000).as_deref(),
            Some("permission denied: uid 65534 is neither root nor the owner of this testbed (uid 1000)")
        );
    }
}
