//! A blocking client of the admin socket (used by `ironlun admin`).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde_json::{Map, Value, json};

/// Why a call failed before a response came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to {path}: {cause}")]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        cause: std::io::Error,
    },
    /// The connection failed.
    #[error("admin socket: {0}")]
    Io(std::io::Error),
    /// The server sent something that is not a response.
    #[error("admin socket: bad response: {0}")]
    Protocol(String),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// A connection to the admin socket.
#[derive(Debug)]
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

/// A method's response: `ReturnValue` and the other members.
#[derive(Clone, Debug)]
pub struct Response {
    /// ReturnValue.
    pub code: u32,
    /// The whole response object.
    pub body: Map<String, Value>,
}

impl Response {
    /// An out parameter.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.body.get(name).filter(|v| !v.is_null())
    }

    /// An out parameter that is a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Error message and parameter, when the call failed.
    pub fn error(&self) -> Option<(String, Option<String>)> {
        let e = self.body.get("Error")?;
        Some((
            e.get("Message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            e.get("Parameter")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ))
    }

    /// Whether the call succeeded (0) or started a job (4096).
    pub fn ok(&self) -> bool {
        self.code == 0 || self.code == 4096
    }
}

impl Client {
    /// Connect.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let s = UnixStream::connect(path).map_err(|cause| ClientError::Connect {
            path: path.display().to_string(),
            cause,
        })?;
        let reader = BufReader::new(s.try_clone()?);
        Ok(Self {
            writer: s,
            reader,
            next_id: 1,
        })
    }

    /// Give up on a response after `t`.
    pub fn set_timeout(&self, t: Option<Duration>) -> Result<(), ClientError> {
        self.writer.set_read_timeout(t)?;
        Ok(())
    }

    /// Call a method.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&json!({"id": id, "method": method, "params": params}))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.send(&line)
    }

    /// Write a request and read its response. A server that refuses the connection answers
    /// and closes it, possibly before the request is written: its answer is still read.
    fn send(&mut self, line: &[u8]) -> Result<Response, ClientError> {
        match self.writer.write_all(line) {
            Ok(()) => self.read_response(),
            Err(e) => self.read_response().map_err(|_| ClientError::Io(e)),
        }
    }

    /// Send a raw line (tests of bad input) and read one response.
    pub fn raw(&mut self, line: &[u8]) -> Result<Response, ClientError> {
        self.send(line)
    }

    fn read_response(&mut self) -> Result<Response, ClientError> {
        let mut buf = String::new();
        if self.reader.read_line(&mut buf)? == 0 {
            return Err(ClientError::Protocol(
                "the server closed the connection".into(),
            ));
        }
        let v: Value =
            serde_json::from_str(&buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let Value::Object(body) = v else {
            return Err(ClientError::Protocol("not an object".into()));
        };
        let code =
            body.get("ReturnValue")
                .and_then(Value::as_u64)
                .ok_or_else(|| ClientError::Protocol("no ReturnValue".into()))? as u32;
        Ok(Response { code, body })
    }
}
