//! What the peer benchmarks share: a peer engine in a Python process that
//! says it is ready with one JSON line (`{"ready": true, "version": …}`) and
//! then answers one JSON request line with one JSON answer line.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::Context;
use serde_json::Value;

/// A running peer process.
pub struct JsonPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl JsonPeer {
    /// Starts `command` and waits for its ready line; returns the peer and
    /// the version it reported.
    pub fn start(mut command: Command) -> anyhow::Result<(Self, String)> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let stdin = child.stdin.take().context("peer stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("peer stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let ready: Value = serde_json::from_str(&line).context("the peer did not start")?;
        let version = ready["version"].as_str().unwrap_or("?").to_string();
        let peer = Self {
            child,
            stdin,
            stdout,
        };
        Ok((peer, version))
    }

    /// Sends one request and reads its answer.
    pub fn ask(&mut self, request: &Value) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{request}")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        serde_json::from_str(&line).context("the peer stopped answering")
    }
}

impl Drop for JsonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The numbers of a JSON array as f32, if `value` is one.
pub fn floats(value: &Value) -> Option<Vec<f32>> {
    value.as_array().map(|v| {
        v.iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
            .collect()
    })
}
