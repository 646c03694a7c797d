//! Processes a test starts: each killed (SIGKILL, by PID) and reaped on every path, panics
//! included, when the [`Procs`] holding them is dropped.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every process the test started, killed (SIGKILL, by PID) and reaped on every path.
#[derive(Default)]
pub struct Procs(Vec<(String, Child)>);

impl Procs {
    pub fn add(&mut self, name: &str, child: Child) {
        self.0.push((name.to_string(), child));
    }

    /// Kills `name`'s process with SIGKILL and waits for it.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.0.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM to `name`'s process and waits (bounded) for it to exit; its status.
    pub fn terminate(&mut self, name: &str) -> std::process::ExitStatus {
        let i = self.0.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.0.remove(i);
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {name}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (bounded by `secs`) for the first line `child` prints on its piped stdout, which
/// must start with `listening on https://`; the port it names. The rest of stdout is drained.
pub fn listening_port(child: &mut Child, secs: u64) -> Result<u16, String> {
    let stdout = child.stdout.take().ok_or("stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(secs))
        .map_err(|_| format!("no line within {secs} s"))?;
    let addr = line
        .strip_prefix("listening on https://")
        .ok_or_else(|| format!("the first line: {line}"))?;
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no port in {line}"))
}
