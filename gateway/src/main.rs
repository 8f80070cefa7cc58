//! `sentinel`: the edge daemon and its command line. Kept thin: parsing and exit codes here,
//! everything else in the modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use sentinel_gateway::{config, demo, hub, journal, malloc_arenas, plant, run, store};

/// Exit code for an invalid configuration (EX_USAGE... EX_DATAERR in sysexits: 64 is EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "sentinel",
    version,
    about = "Watches high-risk industrial sites: polls field devices, judges alarms, keeps every reading, alerts people."
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the gateway with a configuration file.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Write the HTTP server's bound address to this file once it listens.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Load and validate a configuration file; list every error with its path.
    Check {
        #[arg(short, long)]
        config: PathBuf,
        /// Also print how each device will be polled: one line per read request.
        #[arg(long)]
        explain: bool,
    },
    /// Run a regional hub: subscribe to many sites' uplinks, serve the regional API and map.
    Hub {
        #[arg(short, long)]
        config: PathBuf,
        /// Write the HTTP server's bound address to this file once it listens.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Work with the alarm journal.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Run the built-in simulated plant with Sentinel watching it (no external service needed).
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "sentinel-data")]
        data_dir: PathBuf,
        /// Play the scenarios faster (2 = twice as fast).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Write the HTTP server's bound address to this file once it listens.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Check the hash chain; report the first edited, deleted or inserted record (exit 1).
    Verify {
        /// The configuration whose store to check.
        #[arg(
            short,
            long,
            conflicts_with = "data_dir",
            required_unless_present = "data_dir"
        )]
        config: Option<PathBuf>,
        /// The data directory holding sentinel.db.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemons first, before any thread starts: one glibc heap (see `malloc_arenas`).
    let daemon = matches!(
        cli.command,
        Commands::Run { .. } | Commands::Hub { .. } | Commands::Demo { .. }
    );
    let arenas_problem = if daemon { malloc_arenas::limit() } else { None };
    init_logging();
    if let Some(problem) = arenas_problem {
        tracing::warn!("{problem}");
    }
    match cli.command {
        Commands::Check { config, explain } => check(&config, explain),
        Commands::Hub { config, ready_file } => {
            let hub = match hub::config::load(&config) {
                Ok(h) => h,
                Err(errors) => return report_config_errors(&config, &errors),
            };
            runtime_main(None, |shutdown| {
                hub::run(hub, hub::HubOptions { ready_file }, shutdown)
            })
        }
        Commands::Journal {
            command: JournalCommand::Verify { config, data_dir },
        } => journal_verify(config, data_dir),
        Commands::Run { config, ready_file } => {
            let config_path = config;
            let config = match config::load_file(&config_path, config::EnvSource::Process) {
                Ok(c) => c,
                Err(errors) => return report_config_errors(&config_path, &errors),
            };
            runtime_main(Some(config.engine.worker_threads), |shutdown| {
                run::run(
                    config,
                    run::RunOptions {
                        ready_file,
                        announce: None,
                        config_path: Some(config_path),
                    },
                    shutdown,
                )
            })
        }
        Commands::Demo {
            listen,
            data_dir,
            speed,
            ready_file,
        } => {
            if !(speed.is_finite() && speed > 0.0) {
                eprintln!("error: --speed must be a positive number");
                return ExitCode::from(EXIT_CONFIG);
            }
            runtime_main(Some(1), |shutdown| {
                demo::demo(
                    demo::DemoOptions {
                        listen,
                        data_dir,
                        speed,
                        ready_file,
                    },
                    shutdown,
                )
            })
        }
    }
}

fn check(path: &std::path::Path, explain: bool) -> ExitCode {
    match config::load_file(path, config::EnvSource::Process) {
        Ok(c) => {
            for w in &plant::Plant::new(&c).rulebook().warnings {
                eprintln!("warning: {w}");
            }
            if explain {
                let plant = plant::Plant::new(&c);
                for settings in plant.modbus_devices() {
                    let plan = drivers::modbus::ReadPlan::for_device(&settings);
                    let in_flight = if settings.max_in_flight > 1 {
                        format!(", up to {} in flight", settings.max_in_flight)
                    } else {
                        String::new()
                    };
                    println!(
                        "device {} ({} points, {} requests per cycle{in_flight}):",
                        settings.name,
                        settings.points.len(),
                        plan.requests.len()
                    );
                    let tag = |id: alert_rules::PointId| {
                        plant
                            .point(id)
                            .map_or_else(|| format!("#{}", id.0), |p| p.tag.clone())
                    };
                    for line in plan.explain(&tag).lines() {
                        println!("  {line}");
                    }
                }
            }
            println!(
                "{} is valid: site {:?}, {} devices, {} points, {} webhooks.",
                path.display(),
                c.site.id,
                c.devices.len(),
                c.points.len(),
                c.notify.webhook.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => report_config_errors(path, &errors),
    }
}

fn journal_verify(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> ExitCode {
    let data_dir = match (config, data_dir) {
        (_, Some(dir)) => dir,
        (Some(path), None) => match config::load_file(&path, config::EnvSource::Process) {
            Ok(c) => c.store.data_dir,
            Err(errors) => return report_config_errors(&path, &errors),
        },
        (None, None) => return ExitCode::from(EXIT_CONFIG),
    };
    let db = data_dir.join(store::DB_FILE);
    if !db.exists() {
        eprintln!("error: no store at {}", db.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    let result =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|conn| journal::verify(&conn));
    match result {
        Ok(v) => match v.first_problem {
            None => {
                println!("journal intact: {} records, head {}", v.records, v.head);
                ExitCode::SUCCESS
            }
            Some(problem) => {
                println!("journal TAMPERED: {problem} ({} records read)", v.records);
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: reading the journal in {}: {e}", db.display());
            ExitCode::FAILURE
        }
    }
}

fn report_config_errors(path: &std::path::Path, errors: &config::ConfigErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    let n = errors.0.len();
    eprintln!(
        "{}: {n} error{} in the configuration.",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    ExitCode::from(EXIT_CONFIG)
}

/// Run `body` on a runtime with `workers` threads (`None`: one per core).
fn runtime_main<F, Fut>(workers: Option<usize>, body: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        match body(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM or Ctrl-C: stop gracefully.
async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, "Cannot listen for SIGTERM.");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received."),
            _ = tokio::signal::ctrl_c() => tracing::info!("Interrupt received."),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}

/// Logs go to stderr: plain text, or JSON when SENTINEL_LOG_FORMAT=json. The filter comes
/// from SENTINEL_LOG (default `info`).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SENTINEL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SENTINEL_LOG_FORMAT").is_ok_and(|v| v == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
