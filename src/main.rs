//! depwatch: watches a service and everything it depends on, and tells
//! Prometheus, load balancers and people. This file only parses the command
//! line, sets up logging, loads the configuration and maps errors to exit
//! codes (64 for a bad configuration).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use depwatch::{alert, app, config};

const EX_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "depwatch", version = long_version(), about = "Watches a service and its dependencies; tells Prometheus, load balancers and people.")]
struct Cli {
    /// The YAML configuration (default: the built-in one, which watches depwatch itself).
    #[arg(long, short, env = "DEPWATCH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The Prometheus exporter-toolkit web configuration (TLS, basic auth
    /// users, headers), as Prometheus' own exporters take it.
    #[arg(long = "web.config.file", env = "DEPWATCH_WEB_CONFIG", global = true)]
    web_config_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit: 0 when valid, 64 with every problem listed otherwise.
    CheckConfig,
    /// Send a test email through `alerting.email` and print the server's answer (exit 0) or the failure (exit 1).
    SendTestEmail,
    /// Run a log probe's rules over files, from their start to their end, and print the metrics they produce.
    ReplayLog {
        /// The log probe whose rules to use (default: the only one).
        #[arg(long)]
        probe: Option<String>,
        /// The log files to read.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn long_version() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (revision ",
        env!("DEPWATCH_REVISION"),
        ", ",
        env!("DEPWATCH_RUSTC"),
        ")"
    )
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEPWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: journald, `docker logs` and
    // files get plain text (and `NO_COLOR` is honoured, as everywhere).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn load(
    path: Option<&PathBuf>,
    web: Option<&PathBuf>,
) -> Result<config::Config, config::ConfigError> {
    // The loader refuses bad input with positioned errors; a panic would be
    // a bug, reported as a configuration that could not be loaded (exit 64
    // like any other) rather than a crash.
    std::panic::catch_unwind(|| {
        let config = config::load(path.map(PathBuf::as_path), web.map(PathBuf::as_path))?;
        // A certificate that does not fit its key is found now, not at the
        // first handshake.
        if let Some(t) = &config.web.tls {
            depwatch::http::tls::Tls::new(t).map_err(|e| config::ConfigError::Invalid {
                rendered: vec![format!(
                    "{}: web.tls_server_config: {e}",
                    web.or(path)
                        .map_or("<built-in>".into(), |p| p.display().to_string())
                )],
            })?;
        }
        Ok(config)
    })
    .unwrap_or_else(|panic| {
        Err(config::ConfigError::Invalid {
            rendered: vec![format!(
                "{}: internal error while loading the configuration: {} (this is a bug: please report it with the file)",
                path.map_or("<built-in>".into(), |p| p.display().to_string()),
                app::panic_text(&*panic)
            )],
        })
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig) = cli.command {
        return match load(cli.config.as_ref(), cli.web_config_file.as_ref()) {
            Ok(c) => {
                let from = cli
                    .config
                    .as_ref()
                    .map_or("the built-in default".into(), |p| p.display().to_string());
                for w in c.warnings() {
                    println!("warning: {w}");
                }
                println!("{from}: valid, {} probe(s)", c.probes.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!("{} problem(s) found.", e.count());
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    if let Some(Command::SendTestEmail) = cli.command {
        let config = match load(cli.config.as_ref(), cli.web_config_file.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EX_CONFIG);
            }
        };
        return match alert::send_test_email(&config) {
            Ok(reply) => {
                println!("sent: the server answered {reply}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("depwatch send-test-email: not sent: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::ReplayLog { probe, files }) = &cli.command {
        let config = match load(cli.config.as_ref(), cli.web_config_file.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EX_CONFIG);
            }
        };
        return match app::replay_log(&config, probe.as_deref(), files) {
            Ok(r) => {
                print!("{}", r.metrics);
                for n in &r.notes {
                    eprintln!("depwatch replay-log: note: {n}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("depwatch replay-log: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logs(cli.log_format);
    let config = match load(cli.config.as_ref(), cli.web_config_file.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "depwatch did not start: {} problem(s) in the configuration.",
                e.count()
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "depwatch stopped.");
            eprintln!("depwatch: {e}");
            ExitCode::FAILURE
        }
    }
}
