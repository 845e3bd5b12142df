//! `k8s-tunnels-gateway`: the server side of the tunnel protocol, for self-hosting.
//!
//! ```text
//! k8s-tunnels-gateway --config gateway.yaml          # serve until Ctrl-C / SIGTERM
//! k8s-tunnels-gateway --config gateway.yaml --check  # validate the config and exit
//! ```
//!
//! The configuration format is documented in `docs/gateway.md` and on
//! `k8s_tunnels::gateway::config`. Exit codes: 0 success, 1 invalid configuration or start
//! failure, 2 command-line usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use k8s_tunnels::gateway::{ConfigError, Gateway, GatewayConfig};

/// How long shutdown waits for open streams to close.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

/// The k8s-tunnels gateway: a self-hostable stand-in for the Cloudflare Access edge.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The YAML configuration file.
    #[arg(long, short, env = "K8S_TUNNELS_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Validate the configuration (including the files and variables it refers to) and exit.
    #[arg(long)]
    check: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

/// The error with its chain of causes on one line, for the person reading stderr.
fn report(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(k8s_tunnels::terminal::colour(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Serving, before any thread exists: memory comes back after bursts of connections only
    // without glibc's per-thread caches (see the function).
    let restart = if args.check {
        Ok(())
    } else {
        k8s_tunnels::memory::restart_without_thread_caches()
    };
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(args, restart)),
        Err(e) => {
            eprintln!("k8s-tunnels-gateway: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args, restart: std::io::Result<()>) -> ExitCode {
    init_logging(args.log_format);
    if let Err(e) = restart {
        tracing::debug!(error = %e, "running with glibc's thread caches: the restart failed");
    }
    // Every stream holds two sockets; the default soft limit (1024, or 256 on macOS) is low.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "cannot raise the open-file limit");
    }

    let resolved = match GatewayConfig::from_yaml_file(&args.config).and_then(|c| c.resolve()) {
        Ok(resolved) => resolved,
        Err(e) => {
            // Read and parse errors name the file themselves; field errors get it prefixed.
            match e {
                ConfigError::Read { .. } | ConfigError::Parse { .. } => {
                    eprintln!("k8s-tunnels-gateway: {}", report(&e));
                }
                _ => eprintln!(
                    "k8s-tunnels-gateway: {}: {}",
                    args.config.display(),
                    report(&e)
                ),
            }
            return ExitCode::from(1);
        }
    };
    if args.check {
        println!(
            "{}: OK ({} application(s): {})",
            args.config.display(),
            resolved.hostnames().len(),
            resolved.hostnames().join(", ")
        );
        if let Some((auth_domain, transfer_host)) = resolved.access_hosts() {
            println!("access login: auth domain {auth_domain}, transfer service {transfer_host}");
        }
        return ExitCode::SUCCESS;
    }
    let handle = match Gateway::start_resolved(resolved).await {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("k8s-tunnels-gateway: {}", report(&e));
            return ExitCode::from(1);
        }
    };
    k8s_tunnels::signals::shutdown_requested().await;
    tracing::info!("shutting down");
    if !handle.shutdown(SHUTDOWN_BOUND).await {
        tracing::warn!(bound = ?SHUTDOWN_BOUND, "some streams did not close in time");
    }
    ExitCode::SUCCESS
}
