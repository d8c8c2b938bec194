//! A private `redis-server` on an ephemeral port, which a test can kill, freeze and restart.
//!
//! It runs in a temporary directory with persistence off; the shared Redis on 6379 is never
//! touched.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};

/// A private redis-server process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free ephemeral port and waits until it answers.
    ///
    /// # Errors
    ///
    /// When no redis-server answers on any of 20 free ports.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (child, port) = spawn_on_free_port(dir.path(), |_| Vec::new())?;
        Ok(Self {
            port,
            child: Some(child),
            dir,
        })
    }

    fn spawn(&mut self) -> Result<()> {
        match spawn_once(self.dir.path(), self.port, &[])? {
            Some(child) => {
                self.child = Some(child);
                Ok(())
            }
            None => bail!(
                "redis-server did not answer on port {} within 10 s (is the port taken?)",
                self.port
            ),
        }
    }

    /// `redis://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let child = self.child.as_ref().context("redis-server is not running")?;
        let pid = Pid::from_raw(i32::try_from(child.id())?).context("bad pid")?;
        kill_process(pid, signal)?;
        Ok(())
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze(&self) -> Result<()> {
        self.signal(Signal::STOP)
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal(Signal::CONT)
    }

    /// Starts the server again on the same port after [`kill`](Self::kill).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.signal(Signal::CONT);
        let _ = self.kill();
    }
}

/// Starts `redis-server` in `dir` on a free ephemeral port with `extra_args(port)` besides the
/// test defaults, and waits until it answers `PING`. A free port can be taken by a parallel test
/// between the probe and the server's bind (of the port, or of a cluster bus port among the
/// extra arguments); the server then exits at once and is started again on another port, up to
/// 20 times.
///
/// # Errors
///
/// When redis-server cannot be run, or no attempt answers.
pub fn spawn_on_free_port(
    dir: &Path,
    extra_args: impl Fn(u16) -> Vec<String>,
) -> Result<(Child, u16)> {
    for _ in 0..20 {
        let port = free_port()?;
        if let Some(child) = spawn_once(dir, port, &extra_args(port))? {
            return Ok((child, port));
        }
    }
    bail!("redis-server did not start on any of 20 free ports")
}

/// A port free when asked (a caller retries on a collision).
///
/// # Errors
///
/// When no port can be bound.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One attempt: the server once it answers `PING` on `port`, `None` when it exits first or does
/// not answer within 10 s (it is killed then).
fn spawn_once(dir: &Path, port: u16, extra_args: &[String]) -> Result<Option<Child>> {
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra_args)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(
            "could not start redis-server; install it with: apt-get install -y redis-server",
        )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(None);
        }
        if pong(port) {
            return Ok(Some(child));
        }
        // Polling for the process to come up, not waiting for a rule.
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(None)
}

/// Whether a Redis answers `PING` on `port` (another program on the port does not).
fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port another program holds: the server exits at once, and the attempt says so rather
    /// than taking the other program's listener for the server (which made a cluster test wait
    /// 10 s for a node that had never started).
    #[test]
    fn a_taken_port_is_refused_and_another_one_is_used() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let taken = TcpListener::bind("127.0.0.1:0").expect("binds");
        let port = taken.local_addr().expect("an address").port();
        let attempt = spawn_once(dir.path(), port, &[]).expect("redis-server runs");
        assert!(attempt.is_none(), "a server was reported on a taken port");
        let (mut child, started) = spawn_on_free_port(dir.path(), |_| Vec::new()).expect("starts");
        assert_ne!(started, port);
        assert!(pong(started));
        child.kill().expect("kills");
        child.wait().expect("waits");
    }
}
