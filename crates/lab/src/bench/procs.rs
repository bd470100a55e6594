//! Child processes that cannot outlive the bench, bounded waits, Ctrl-C, temp dirs.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;

use crate::netns;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT / SIGTERM into a flag that every wait checks, so an interrupted bench still
/// unwinds through its guards (children killed, namespaces deleted).
pub fn install_interrupt_handler() {
    let action = signal::SigAction::new(
        SigHandler::Handler(on_signal),
        signal::SaFlags::empty(),
        signal::SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { signal::sigaction(sig, &action) } {
            tracing::warn!("installing a {sig} handler: {e}");
        }
    }
}

/// Fails when Ctrl-C was pressed.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, waking early (with an error) on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Raises this process's open-file limit (soft and hard; we are root) so children inherit it.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        // Not allowed to raise the hard limit: take what there is.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
        return Ok(lim.rlim_max);
    }
    Ok(want)
}

/// Whether `tool` can be found on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(tool))))
        .unwrap_or(false)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A directory deleted (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!(
            "bt-bench-{tag}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        ));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop: SIGTERM, up to 2 s of grace, then SIGKILL.
pub struct Proc {
    pub name: String,
    child: Child,
    log: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd`; stdout and stderr go to `log` when given (else /dev/null), stdin is closed.
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> Result<Proc> {
        cmd.stdin(Stdio::null());
        match log {
            Some(l) => {
                let f = std::fs::File::create(l).with_context(|| format!("creating {}", l.display()))?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log: log.map(Path::to_path_buf),
            status: None,
        })
    }

    /// Spawns `cmd` with stdout and stderr piped (for short-lived tools whose output is small).
    pub fn spawn_piped(name: &str, cmd: &mut Command) -> Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log: None,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits for exit, at most `timeout` (then kills it and fails).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= end {
                self.kill();
                bail!("{} did not finish within {:?}", self.name, timeout);
            }
            check_interrupt()?;
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Piped stdout and stderr (after exit).
    pub fn output(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(o) = self.child.stdout.as_mut() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        (out, err)
    }

    /// The last lines of the log file, for error messages.
    pub fn log_tail(&self) -> String {
        let Some(l) = &self.log else {
            return String::new();
        };
        let text = strip_ansi(&std::fs::read_to_string(l).unwrap_or_default());
        let lines: Vec<String> = text.lines().map(|l| l.chars().take(200).collect()).collect();
        let tail = lines[lines.len().saturating_sub(6)..].join("\n");
        if tail.is_empty() {
            tail
        } else {
            format!("last lines of {}'s log:\n{tail}", self.name)
        }
    }

    /// Fails if the process has exited already.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(s) = self.try_wait()? {
            bail!("{} exited ({s}):\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// Stops it: SIGTERM, up to 2 s, then SIGKILL. Idempotent.
    pub fn kill(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = signal::kill(pid, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            if matches!(self.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Hard limit on open files of this process.
pub fn nofile_hard() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_max
}

/// Waits until a TCP connect to `addr` from namespace `ns` ("" = ours) succeeds, while
/// `proc` keeps running.
pub fn wait_listening(ns: &str, addr: SocketAddr, proc: &mut Proc, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        proc.ensure_running()?;
        if connects(ns, addr)? {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!(
                "{} is not listening on {addr} after {timeout:?}:\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        sleep(Duration::from_millis(50))?;
    }
}

fn connects(ns: &str, addr: SocketAddr) -> Result<bool> {
    let f = move || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok();
    if ns.is_empty() {
        Ok(f())
    } else {
        netns::in_netns(ns, f)
    }
}

/// A small `GET` (HTTP/1.1, `Connection: close`) from namespace `ns`; returns (status, body).
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let path = path.to_owned();
    let f = move || -> Result<(u16, String)> {
        use std::io::Write;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("bad HTTP reply from {addr}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    if ns.is_empty() {
        f()
    } else {
        netns::in_netns(ns, f)?
    }
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// A `curl` command with no config file and no proxy from the environment.
pub fn curl(ns: &str) -> Command {
    let mut cmd = if ns.is_empty() {
        Command::new("curl")
    } else {
        netns::exec(ns, "curl")
    };
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(v);
    }
    cmd.args(["-q", "-sS", "--connect-timeout", "10"]);
    cmd
}

/// `%{size_download} %{time_total} %{http_code}` as written by `curl -w`.
pub const CURL_W: &str = "%{size_download} %{time_total} %{http_code}\\n";

/// Parses the [`CURL_W`] line: (bytes, seconds, status).
pub fn parse_curl_w(out: &str) -> Result<(u64, f64, u16)> {
    let mut it = out.split_whitespace();
    let bytes = it.next().and_then(|v| v.parse::<f64>().ok());
    let secs = it.next().and_then(|v| v.parse::<f64>().ok());
    let code = it.next().and_then(|v| v.parse::<u16>().ok());
    match (bytes, secs, code) {
        (Some(b), Some(s), Some(c)) => Ok((b as u64, s, c)),
        _ => bail!("unexpected curl -w output {out:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ansi_and_parses_curl() {
        assert_eq!(strip_ansi("\u{1b}[2mtime\u{1b}[0m WARN x"), "time WARN x");
        assert_eq!(parse_curl_w("10 0.5 200\n").unwrap(), (10, 0.5, 200));
        assert!(parse_curl_w("garbage").is_err());
    }
}
