//! Talking to a running testbed's API server over its socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use anyhow::{anyhow, Context, Result};

use crate::api::socket::{Request, Response};

pub struct Client {
    testbed: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(testbed: &str) -> Result<Client> {
        let path = crate::state::api_socket(testbed);
        let conn = UnixStream::connect(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                anyhow!(
                    "testbed {testbed} is not running (no API server at {})",
                    path.display()
                )
            }
            std::io::ErrorKind::PermissionDenied => anyhow!(
                "permission denied opening {}: only root and the testbed's owner may use it",
                path.display()
            ),
            _ => anyhow!("connect to {}: {e}", path.display()),
        })?;
        Ok(Client {
            testbed: testbed.into(),
            reader: BufReader::new(conn.try_clone().context("clone the socket")?),
            writer: conn,
        })
    }

    pub fn send(&mut self, req: &Request) -> Result<()> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .with_context(|| format!("send a request to testbed {}", self.testbed))
    }

    pub fn recv(&mut self) -> Result<Option<Response>> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .with_context(|| format!("read from testbed {}", self.testbed))?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&line).context("a response from the API server")?,
        ))
    }

    /// Sends `req` and reads the answer. A server that refuses the connection (a
    /// stranger, too many connections) answers before it reads, and may close before
    /// the request is written: its answer is read all the same.
    pub fn call(&mut self, req: &Request) -> Result<Response> {
        if let Err(e) = self.send(req) {
            return match self.recv() {
                Ok(Some(r)) => Ok(r),
                _ => Err(e),
            };
        }
        self.recv()?
            .ok_or_else(|| anyhow!("testbed {} closed the connection", self.testbed))
    }
}

/// The error for an answer a verb did not expect: the server's own message when it
/// is an error (permission denied, a limit), else the answer.
pub fn unexpected(r: Response) -> anyhow::Error {
    match r {
        Response::Error { message, .. } => anyhow!("{message}"),
        other => anyhow!("unexpected answer: {other:?}"),
    }
}
