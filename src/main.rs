//! The `promlink` command: parse the CLI, load and check the configuration, run, exit with a code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use promlink::config::Settings;

/// Exit code for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "promlink",
    version,
    about = "Forwards Prometheus remote write to Azure Monitor managed Prometheus through a Data Collection Endpoint"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive remote write and forward it to the DCE (the forwarder).
    #[command(after_help = promlink::proxy::ENV_HELP)]
    Serve(Settings),
    /// Deliver a disk-queue directory left behind (e.g. by a removed replica) and exit: 0 once it
    /// is empty, 1 after --timeout with what is left, 64 for configuration errors.
    #[command(after_help = promlink::proxy::ENV_HELP)]
    Drain(promlink::drain::DrainArgs),
    /// Check the configuration, print it resolved (secrets redacted), and exit: 0 if valid, 64 if not.
    #[command(after_help = promlink::proxy::ENV_HELP)]
    CheckConfig(Settings),
    /// One-shot preflight: DNS and Private Link verdicts, TCP/TLS reachability, token, optional
    /// canary write, each problem with what it means and the documented fix. Exit 0 when data
    /// would flow under the chosen policy, 1 when not, 64 for configuration errors.
    #[command(after_help = promlink::proxy::ENV_HELP)]
    Doctor(promlink::doctor::DoctorArgs),
    /// Show which metrics, labels and label pairs carry the most series a running promlink sent
    /// (its GET /api/v1/status/cardinality), as tables.
    Top(promlink::workspace::top::TopArgs),
    /// Run the whole path on this machine: a sender, promlink, and EMULATED Entra ID and DCE.
    Demo(promlink::demo::DemoArgs),
    /// Run only the DCE EMULATOR (with an Entra ID EMULATOR), for integration tests of your own.
    EmulateDce(promlink::emulator::dce::EmulateDceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(settings) => {
            let cfg = match settings.load() {
                Ok(c) => c,
                Err(e) => return invalid(&e),
            };
            promlink::telemetry::init_logging(cfg.log_format, &cfg.log_level);
            if let Err(e) = promlink::supervise::arm_from_env() {
                eprintln!("promlink: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            promlink::supervise::exit_on_fatal();
            run(async move {
                let running = promlink::serve::start(cfg).await?;
                promlink::shutdown::on_signals(running.shutdown.clone());
                running.reload_on_sighup();
                running.wait().await;
                Ok(())
            })
        }
        Command::Drain(args) => {
            let (cfg, timeout) = match args.load() {
                Ok(c) => c,
                Err(e) => return invalid(&e),
            };
            promlink::telemetry::init_logging(cfg.log_format, &cfg.log_level);
            run(async move {
                let stop = tokio_util::sync::CancellationToken::new();
                promlink::shutdown::on_signals(stop.clone());
                let report = promlink::drain::run(cfg, timeout, stop).await?;
                println!("{report}");
                Ok(if report.empty {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
        Command::Demo(args) => {
            promlink::telemetry::init_logging(promlink::config::LogFormat::Text, "warn");
            run(async move {
                let stop = tokio_util::sync::CancellationToken::new();
                promlink::shutdown::on_signals(stop.clone());
                if promlink::demo::run(args, stop).await? {
                    Ok(())
                } else {
                    anyhow::bail!(
                        "the DCE emulator did not receive exactly what the sender had acknowledged"
                    )
                }
            })
        }
        Command::Doctor(args) => {
            // Logs go to stderr only, and only warnings: stdout carries the report (or JSON).
            promlink::telemetry::init_logging(promlink::config::LogFormat::Text, "error");
            run(async move {
                let code = promlink::doctor::run(args).await?;
                Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
            })
        }
        Command::Top(args) => run(async move {
            print!("{}", promlink::workspace::top::run(&args).await?);
            Ok(())
        }),
        Command::EmulateDce(args) => {
            promlink::telemetry::init_logging(promlink::config::LogFormat::Text, "info");
            run(async move { Ok(promlink::emulator::dce::run_emulate_dce(args).await?) })
        }
        Command::CheckConfig(settings) => match settings.load() {
            Ok(cfg) => {
                println!("configuration is valid:\n{cfg:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => invalid(&e),
        },
    }
}

/// Prints a configuration error and gives its exit code.
fn invalid(e: &promlink::config::ConfigError) -> ExitCode {
    eprintln!("promlink: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Runs `f` on a multi-threaded runtime; errors are printed and give exit code 1.
fn run<T: std::process::Termination>(
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("promlink: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(v) => v.report(),
        Err(e) => {
            eprintln!("promlink: {e:#}");
            ExitCode::FAILURE
        }
    }
}
