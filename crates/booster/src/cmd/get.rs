//! `booster get URL`: one download split into byte ranges over every uplink (or, with `--node`,
//! over every source of a running node, through its proxy). See [`crate::fetch`].

use crate::{
    config::{Config, FileConfig, Overrides},
    fetch::{self, Connector, FetchError, NodeConnector, Options, Output, ProxyConnector, Request, Stats, Url},
    state::Node,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The http:// or https:// URL to download.
    pub url: String,
    /// Output file (default: the URL's last path segment, or index.html); `-` for stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE|-")]
    pub output: Option<String>,
    /// Use these uplinks (default: discover them, as `booster start` does).
    #[arg(long = "iface", value_name = "NAME")]
    pub iface: Vec<String>,
    /// Fetch through this running node's sources (its API address), local and peers'.
    #[arg(long, value_name = "API", conflicts_with = "iface")]
    pub node: Option<String>,
    /// Expected SHA-256 of the file (64 hex digits); a mismatch fails and keeps FILE.part.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Extra trusted CA certificates (PEM), for servers with a private or self-signed cert.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Resume from FILE.part when the server still has the same file (default).
    #[arg(long, overrides_with = "no_resume")]
    pub resume: bool,
    /// Always start from scratch.
    #[arg(long, overrides_with = "resume")]
    pub no_resume: bool,
    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// API token, for a node whose API is off loopback.
    #[arg(long, env = "BOOSTER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// No progress bar and no summary (set from the global `-q/--quiet`).
    #[arg(skip)]
    pub quiet: bool,
}

pub async fn run(args: GetArgs) -> ExitCode {
    // `-q/--quiet` is a global flag of the binary; it is read here so that main.rs only has
    // to hand the arguments over.
    let quiet = args.quiet || std::env::args().skip(1).any(|a| a == "-q" || a == "--quiet");
    match get(args, quiet).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("booster get: {e}");
            if matches!(e, FetchError::Interrupted) {
                eprintln!("booster get: run the same command again to resume");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

async fn get(args: GetArgs, quiet: bool) -> Result<(), FetchError> {
    let url = Url::parse(&args.url)?;
    let sha256 = args.sha256.as_deref().map(fetch::parse_sha256).transpose()?;
    let tls = match url.is_https() || args.cacert.is_some() {
        true => Some(fetch::tls_config(args.cacert.as_deref())?),
        false => None,
    };
    let (output, path) = match args.output.as_deref() {
        Some("-") => (Output::Stream(Box::new(tokio::io::stdout())), None),
        Some(f) => (Output::File(PathBuf::from(f)), Some(PathBuf::from(f))),
        None => {
            let f = PathBuf::from(url.file_name());
            (Output::File(f.clone()), Some(f))
        }
    };
    let connector: Arc<dyn Connector> = match &args.node {
        Some(api) => Arc::new(proxy_connector(api, args.token.as_deref()).await?),
        None => Arc::new(local_connector(&args.iface).await?),
    };
    let names = connector.sources();
    if names.is_empty() {
        return Err(FetchError::NoSources);
    }

    let stats = Arc::new(Stats::default());
    let show = !quiet && !args.no_progress && std::io::stderr().is_terminal();
    let bar = if show {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}\n  {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let notify: Arc<dyn Fn(&str) + Send + Sync> = {
        let bar = bar.clone();
        Arc::new(move |m: &str| {
            if quiet {
                return;
            }
            if bar.is_hidden() {
                eprintln!("booster get: {m}");
            } else {
                bar.println(format!("booster get: {m}"));
            }
        })
    };
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
    }
    let ticker = {
        let (bar, stats) = (bar.clone(), stats.clone());
        tokio::spawn(async move { progress(bar, stats).await })
    };
    let opts = Options {
        tls,
        stop,
        stats: stats.clone(),
        notify,
        ..Options::default()
    };
    let req = Request {
        url: args.url.clone(),
        output,
        sha256: sha256.clone(),
        resume: !args.no_resume,
        headers: Vec::new(),
    };
    let result = fetch::download(req, connector, opts).await;
    ticker.abort();
    bar.finish_and_clear();
    match result {
        Ok(o) => {
            if !quiet {
                let secs = o.elapsed.as_secs_f64().max(1e-3);
                let fetched: u64 = o.per_source.iter().map(|(_, b)| b).sum();
                let per: Vec<String> = o.per_source.iter().map(|(n, b)| format!("{n} {}", mb(*b))).collect();
                let sha = match o.sha256_ok {
                    Some(true) => "sha256 matched".to_string(),
                    _ => format!("sha256 {}", o.sha256),
                };
                let to = path
                    .as_ref()
                    .map(|p| format!(" -> {}", p.display()))
                    .unwrap_or_default();
                let resumed = if o.resumed > 0 {
                    format!(", {} resumed", mb(o.resumed))
                } else {
                    String::new()
                };
                eprintln!(
                    "booster get: {} bytes in {secs:.2} s, {:.2} MB/s ({}{}{resumed}), {sha}{to}",
                    o.size,
                    fetched as f64 / secs / 1e6,
                    per.join(", "),
                    if o.ranged { "" } else { "; one source, no ranges" },
                );
            }
            Ok(())
        }
        Err(e) => {
            if let (FetchError::ShaMismatch { .. }, Some(p)) = (&e, &path) {
                eprintln!(
                    "booster get: the download is kept as {}",
                    fetch::part_paths(p).0.display()
                );
            }
            Err(e)
        }
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// Redraws the bar every 250 ms: position, total, and each source's rate.
async fn progress(bar: ProgressBar, stats: Arc<Stats>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last: Vec<u64> = Vec::new();
    let mut rates: Vec<f64> = Vec::new();
    loop {
        tick.tick().await;
        if let Some(size) = stats.size() {
            bar.set_length(size);
        }
        let done = stats.resumed.load(Relaxed) + stats.written.load(Relaxed);
        bar.set_position(stats.size().map_or(done, |s| done.min(s)));
        let per = stats.per_source();
        last.resize(per.len(), 0);
        rates.resize(per.len(), 0.0);
        let errors = stats.last_errors.lock().map(|e| e.clone()).unwrap_or_default();
        let mut parts = Vec::new();
        for (i, (name, bytes)) in per.iter().enumerate() {
            let inst = bytes.saturating_sub(last[i]) as f64 / 0.25;
            last[i] = *bytes;
            rates[i] += 0.3 * (inst - rates[i]);
            let err = match errors.get(i) {
                Some(Some(_)) => " (failing)",
                _ => "",
            };
            parts.push(format!("{name} {:.2} MB/s{err}", rates[i] / 1e6));
        }
        if !stats.ranged.load(Relaxed) && stats.size_known.load(Relaxed) {
            parts.push("one source: no range support".into());
        }
        bar.set_message(parts.join("  "));
        bar.tick();
    }
}

/// This machine's uplinks: the `--iface` names, or discovered like `booster start` does.
async fn local_connector(iface: &[String]) -> Result<NodeConnector, FetchError> {
    let config = Config::build(
        FileConfig::default(),
        Overrides {
            listen: Some("127.0.0.1:0".parse().expect("literal")),
            api: Some("127.0.0.1:0".parse().expect("literal")),
            iface: iface.to_vec(),
            // Named uplinks need no reachability probe: a failing one loses its pieces to the
            // others. Discovered ones are probed (concurrently) before they are trusted.
            probe_target: (!iface.is_empty()).then(|| "none".to_string()),
            no_mdns: true,
            ..Default::default()
        },
    )
    .map_err(|e| FetchError::Usage(e.to_string()))?;
    let node = Arc::new(Node::new(config, None).map_err(FetchError::Usage)?);
    crate::discovery::refresh(&node).await;
    let connector = NodeConnector::new(node.clone());
    if connector.sources().is_empty() {
        let why = if iface.is_empty() {
            "no uplink found (no interface with an address and a default route answered the probe)".to_string()
        } else {
            format!("none of the named uplinks is up: {}", iface.join(", "))
        };
        return Err(FetchError::Usage(why));
    }
    Ok(connector)
}

/// A running node's usable sources, reached through its proxy.
async fn proxy_connector(api: &str, token: Option<&str>) -> Result<ProxyConnector, FetchError> {
    let unreachable = |e: String| FetchError::Io(std::io::Error::other(format!("cannot reach the node at {api}: {e}")));
    let status = crate::client::get_json(api, "/api/status", token)
        .await
        .map_err(unreachable)?;
    let listen: SocketAddr = status["node"]["listen"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FetchError::Protocol("the node's status has no proxy address".into()))?;
    let proxy = if listen.ip().is_unspecified() {
        // Listening on every address: reach it where the API is.
        let host = api.trim_start_matches("http://").trim_end_matches('/');
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        format!("{host}:{}", listen.port())
    } else {
        listen.to_string()
    };
    let sources = crate::client::get_json(api, "/api/sources", token)
        .await
        .map_err(unreachable)?;
    let names: Vec<String> = sources
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["usable"].as_bool().unwrap_or(false))
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    if names.is_empty() {
        return Err(FetchError::NoSources);
    }
    Ok(ProxyConnector { proxy, sources: names })
}
