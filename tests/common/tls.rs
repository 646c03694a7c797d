//! TLS helpers for the integration tests: `openssl s_server` with a member's files and
//! `openssl s_client` with a trust file, on 127.0.0.1, every wait bounded, children killed on
//! every path.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child on every path out of the test, panics included.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `openssl s_server` with a member's files on a free loopback port and waits (bounded)
/// until it accepts connections.
pub fn s_server(cur: &Path, chain_tail: Option<&Path>) -> (Running, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-quiet",
        ])
        .arg("-cert")
        .arg(cur.join("cert.pem"))
        .arg("-key")
        .arg(cur.join("key.pem"))
        .args(
            chain_tail
                .map(|t| ["-cert_chain".as_ref(), t.as_os_str()])
                .into_iter()
                .flatten(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Running(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("openssl s_server did not start on port {port}");
}

/// `openssl s_client` checking the server's chain and the name `localhost` against `ca`;
/// bounded to 30 seconds.
pub fn s_client(port: u16, ca: &Path) -> (bool, String) {
    let child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-verify_return_error",
        ])
        .args(["-verify_hostname", "localhost", "-brief", "-CAfile"])
        .arg(ca)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = client.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "openssl s_client did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    client
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    client
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (status.success(), text)
}
