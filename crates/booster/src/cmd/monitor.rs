//! `booster monitor node|net [--target API] [--json]`: a live view of a node, fed by its event
//! stream (`/api/events`, one snapshot about every second).
//!
//! - `net`: per-source throughput sparklines, open connections, bytes against caps, bond paths.
//! - `node`: peers joining and leaving, their load and health, nodes on the LAN.
//! - `--json`: no terminal UI; one JSON object per line on stdout, for scripts (see
//!   docs/api.md, "booster monitor --json").
//!
//! When the node goes away (a restart), the monitor keeps running, says "reconnecting", and
//! picks the stream up again when the node is back. It quits on q, Esc or Ctrl-C (and SIGTERM),
//! and always gives the terminal back as it found it.

mod view;

pub use view::{peer_events, Model, View};

use crate::client;
use serde_json::{json, Value};
use std::{io::Write, process::ExitCode, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    /// What to watch: `net` (sources, throughput, connections, usage, bond paths) or `node`
    /// (peers joining and leaving, their load and health).
    #[arg(value_enum)]
    pub view: View,
    /// The node's API address.
    #[arg(long, default_value = crate::config::DEFAULT_API)]
    pub target: String,
    /// Print one JSON object per line instead of the terminal view.
    #[arg(long)]
    pub json: bool,
    /// API token, for a node with `api_token` set.
    #[arg(long, env = "BOOSTER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// What the feeder tells the view.
enum Update {
    Snapshot(Value),
    Lost(String),
}

/// Snapshots waiting for the view; a view that falls behind skips some (the next is complete).
const QUEUE: usize = 16;
/// First wait before reconnecting; doubles up to [`RETRY_MAX`], and starts again after a
/// stream that delivered something.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(3);

pub async fn run(args: MonitorArgs) -> ExitCode {
    let stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel(QUEUE);
    let feeder = tokio::spawn(feed(args.target.clone(), args.token.clone(), tx, stop.clone()));
    let code = if args.json {
        print_json(args.view, &args.target, rx, &stop).await
    } else {
        terminal(args.view, &args.target, rx, &stop).await
    };
    stop.cancel();
    let _ = feeder.await;
    code
}

/// Follows the event stream for as long as `stop` is not cancelled, reconnecting after every
/// end or failure.
async fn feed(target: String, token: Option<String>, tx: mpsc::Sender<Update>, stop: CancellationToken) {
    let mut wait = RETRY_MIN;
    loop {
        let mut delivered = false;
        let follow = client::follow_events(&target, token.as_deref(), |v| {
            delivered = true;
            // A full queue drops this snapshot; a closed one means the view is gone.
            !matches!(
                tx.try_send(Update::Snapshot(v)),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = follow => r,
        };
        let why = match result {
            Ok(()) => return, // the view stopped reading
            Err(e) => e,
        };
        if delivered {
            wait = RETRY_MIN;
        }
        if tx.send(Update::Lost(why)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `HH:MM:SS` (UTC) for log lines.
fn clock() -> String {
    let s = now_ms() / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The lines `--json` prints for one snapshot.
pub fn json_lines(view: View, prev: Option<&Value>, snap: &Value) -> Vec<Value> {
    match view {
        View::Net => vec![snap.clone()],
        View::Node => {
            let ts = snap["ts_ms"].clone();
            let mut out: Vec<Value> = peer_events(prev, snap)
                .into_iter()
                .map(|e| json!({ "type": "peer_event", "ts_ms": ts, "event": e }))
                .collect();
            out.push(json!({
                "type": "peers",
                "ts_ms": ts,
                "peers": snap["peers"],
                "sources": snap["sources"].as_array().map(|s| s.iter().filter(|s| !s["remote"].is_null()).cloned().collect::<Vec<_>>()),
                "available": snap["available"],
                "lending": snap["lending"],
            }));
            out
        }
    }
}

async fn print_json(view: View, target: &str, mut rx: mpsc::Receiver<Update>, stop: &CancellationToken) -> ExitCode {
    let mut prev: Option<Value> = None;
    let mut lost = false;
    let stdout = std::io::stdout();
    let mut quit = std::pin::pin!(interrupted());
    loop {
        let update = tokio::select! {
            _ = &mut quit => return ExitCode::SUCCESS,
            _ = stop.cancelled() => return ExitCode::SUCCESS,
            u = rx.recv() => u,
        };
        let lines = match update {
            None => return ExitCode::SUCCESS,
            Some(Update::Snapshot(snap)) => {
                lost = false;
                let lines = json_lines(view, prev.as_ref(), &snap);
                prev = Some(snap);
                lines
            }
            Some(Update::Lost(_)) if lost => continue,
            Some(Update::Lost(why)) => {
                lost = true;
                vec![json!({ "type": "reconnecting", "ts_ms": now_ms(), "target": target, "error": why })]
            }
        };
        let mut out = stdout.lock();
        for line in lines {
            // A closed stdout (the reader went away) ends the monitor quietly.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// Gives the terminal back (raw mode off, main screen) when dropped, whatever happened.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn terminal(view: View, target: &str, mut rx: mpsc::Receiver<Update>, stop: &CancellationToken) -> ExitCode {
    use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
    use futures::StreamExt;
    let mut term = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("booster: cannot open the terminal ({e}); use --json for a script or a pipe");
            return ExitCode::from(1);
        }
    };
    let _restore = Restore;
    let mut model = Model::new(view, target);
    let mut keys = EventStream::new();
    let mut quit = std::pin::pin!(interrupted());
    loop {
        if let Err(e) = term.draw(|f| view::draw(f, &model)) {
            drop(_restore);
            eprintln!("booster: cannot draw: {e}");
            return ExitCode::from(1);
        }
        tokio::select! {
            _ = &mut quit => break,
            _ = stop.cancelled() => break,
            u = rx.recv() => match u {
                Some(Update::Snapshot(s)) => model.apply(s, &clock()),
                Some(Update::Lost(why)) => model.lost(why),
                None => break,
            },
            k = keys.next() => match k {
                Some(Ok(Event::Key(k))) if k.kind == KeyEventKind::Press => {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    ExitCode::SUCCESS
}
