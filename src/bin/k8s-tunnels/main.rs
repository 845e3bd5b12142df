//! `k8s-tunnels`: the command-line front end over the same engine as the desktop app.
//!
//! Exit codes: 0 success (and a clean Ctrl-C), 1 a runtime failure (tunnel, state, I/O),
//! 2 a usage error, 3 a configuration or inventory problem (missing or invalid file, unknown
//! cluster), 4 a kubeconfig problem.

mod auth;
mod connect;
mod demo;
mod discover;
mod output;
mod runfiles;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use k8s_tunnels::app::{App, AppError, AppOptions};
use k8s_tunnels::dirs::AppDirs;

/// Reach every Kubernetes cluster behind Cloudflare Access: a local SOCKS5 port per cluster,
/// carried over a WebSocket to the Access edge, with kubeconfig kept up to date.
#[derive(Parser)]
#[command(name = "k8s-tunnels", version, about, max_term_width = 100)]
struct Cli {
    /// Configuration file [default: config.yaml in the app's config directory].
    #[arg(long, global = true, env = "K8S_TUNNELS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Inventory file [default: `inventory` in the configuration, else inventory.yaml in the
    /// app's config directory].
    #[arg(
        long,
        global = true,
        env = "K8S_TUNNELS_INVENTORY",
        value_name = "FILE"
    )]
    inventory: Option<PathBuf>,
    /// Kubeconfig file to update [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug); K8S_TUNNELS_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open tunnels to clusters and keep them open until Ctrl-C.
    Connect {
        /// Cluster names (or ids).
        #[arg(required = true, value_name = "CLUSTER")]
        clusters: Vec<String>,
        /// Also make the (first) cluster kubectl's current context.
        #[arg(long = "use")]
        use_context: bool,
    },
    /// List the clusters in the inventory, grouped by cloud and environment.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show the tunnels open in running `k8s-tunnels connect` processes.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Make a cluster's context kubectl's current context.
    Use {
        /// Cluster name (or id).
        cluster: String,
    },
    /// Start the demo lab (a gateway and fake clusters on this machine) and connect to all of it.
    Demo,
    /// Run the configured discovery sources (EKS, GKE, Vault) and refresh the cache.
    Discover {
        /// Only these sources (eks, gke, vault); all configured ones by default.
        #[arg(long = "source", value_name = "SOURCE")]
        sources: Vec<String>,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Sign in to a cluster's Access application (opens the browser when needed).
    Login {
        /// Cluster name (or id).
        cluster: String,
    },
    /// Forget the Access login of a cluster, or of every cluster and the sessions.
    Logout {
        /// Cluster name (or id); all when omitted.
        cluster: Option<String>,
    },
    /// Access login commands.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Show where the app's files are and what is configured.
    Config {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Who is logged in to which Access application, until when.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Store a service token for a cluster's Access application in the OS keychain (the
    /// secret is read from standard input); from then on it is used instead of any login.
    ServiceToken {
        /// Cluster name (or id).
        cluster: String,
        /// The service token's client id (`…​.access`).
        #[arg(long, required_unless_present = "remove")]
        client_id: Option<String>,
        /// Forget the stored service token instead.
        #[arg(long, conflicts_with = "client_id")]
        remove: bool,
    },
}

/// An error with the exit code it maps to.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn inventory(error: anyhow::Error) -> Self {
        Self { code: 3, error }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        let code = if error.chain().any(|e| {
            e.downcast_ref::<k8s_tunnels::kubeconfig::KubeconfigError>()
                .is_some()
        }) {
            4
        } else {
            1
        };
        Self { code, error }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Each tunnel connection holds two sockets; macOS gives launchd apps a soft limit of 256.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "cannot raise the open-file limit");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("K8S_TUNNELS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(k8s_tunnels::terminal::colour(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// What every command needs: where files are, the configuration, and the catalog of clusters.
pub type Context = App;

impl From<AppError> for Failure {
    fn from(error: AppError) -> Self {
        let code = match &error {
            AppError::Config(_) | AppError::Inventory { .. } | AppError::UnknownCluster { .. } => 3,
            AppError::Kubeconfig(_) => 4,
            AppError::Dirs(_) | AppError::Cache(_) | AppError::State(_) => 1,
        };
        Self {
            code,
            error: anyhow::Error::new(error),
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let dirs = AppDirs::from_env().context("cannot find the app's directories")?;
    let ctx = App::load(
        dirs,
        AppOptions {
            config: cli.config.clone(),
            inventory: cli.inventory.clone(),
            kubeconfig: cli.kubeconfig.clone(),
        },
    )?;
    match cli.command {
        Command::Connect {
            clusters,
            use_context,
        } => connect::run(&ctx, &clusters, use_context).await,
        Command::List { json } => output::list(&ctx, json),
        Command::Status { json } => output::status(&ctx, json),
        Command::Use { cluster } => connect::use_context(&ctx, &cluster).await,
        Command::Demo => demo::run(ctx).await,
        Command::Config { json } => output::config(&ctx, json),
        Command::Login { cluster } => auth::login(&ctx, &cluster).await,
        Command::Logout { cluster } => auth::logout(&ctx, cluster.as_deref()).await,
        Command::Auth {
            command: AuthCommand::Status { json },
        } => auth::status(&ctx, json).await,
        Command::Auth {
            command:
                AuthCommand::ServiceToken {
                    cluster,
                    client_id,
                    remove,
                },
        } => auth::service_token(&ctx, &cluster, client_id.as_deref(), remove).await,
        Command::Discover { sources, json } => discover::run(&ctx, &sources, json).await,
    }
}
