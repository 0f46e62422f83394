/**
 * The skeleton every long-running process shares: the command line (commander,
 * so `--help` lists the settings), the start, a graceful stop on the first
 * SIGINT/SIGTERM, and an exit code a supervisor can act on:
 *
 *   0  stopped cleanly (or the service ended by itself without an error)
 *   1  failed: the start or the stop threw, the stop overran its timeout, or the
 *      service ended by itself with an error
 *   2  a setting to fix (a ConfigError): its message alone, without a stack trace
 *
 * A `main.ts` is then only its help text and one call; what runs lives in the
 * process's `service.ts`, which the tests and the demo start in-process.
 */
import { Command } from 'commander';
import { pino } from 'pino';
import { config, ConfigError, type Config } from './config';
import { logger, type Logger } from './log';

/** What a started service gives back. */
export interface RunningService {
  /** Finish what is in flight and release every connection. */
  stop(): Promise<void>;
  /** Settles when the service ends by itself (a worker whose run loop returned); without it, it runs until a signal. */
  done?: Promise<void>;
}

export interface ServiceSpec<O> {
  /** The command's name, as `--help` shows it. */
  name: string;
  /** The logger's component (defaults to `name`). */
  component?: string;
  description: string;
  /** Shown after the options by `--help`: the environment settings. */
  help?: string;
  /** Declares the command's options; `start` receives their parsed values. */
  options?(command: Command): Command;
  start(ctx: { cfg: Config; log: Logger; options: O }): Promise<RunningService>;
  /** Logged when a signal arrives (default "stopping"). */
  stopping?: string;
  /** Logged when the stop throws or overruns (default "unclean stop"): say what is lost, or what is redone on restart. */
  stopFailed?: string;
  /** Logged when the start throws anything but a ConfigError (default "<name> failed"). */
  failed?: string;
  /** How long the stop may take before the process gives up and exits 1 (default 30 s). */
  stopTimeoutMs?: number;
}

const DEFAULT_STOP_TIMEOUT_MS = 30_000;

/** A setting to fix: the message alone, exit 2. Before the config is read, logger() cannot be used (it reads LOG_LEVEL from it). */
function refuseSetting(component: string, err: ConfigError, log?: Logger): never {
  (log ?? pino({ base: { pid: process.pid, component }, timestamp: pino.stdTimeFunctions.isoTime })).fatal(err.message);
  process.exit(2);
}

export async function runService<O = Record<string, unknown>>(spec: ServiceSpec<O>): Promise<void> {
  const command = new Command(spec.name).description(spec.description);
  if (spec.help) command.addHelpText('after', spec.help);
  spec.options?.(command);
  command.showHelpAfterError().parse();
  const component = spec.component ?? spec.name;

  let cfg: Config;
  try {
    cfg = config();
  } catch (err) {
    if (err instanceof ConfigError) refuseSetting(component, err);
    throw err;
  }
  const log = logger(component);

  // Listening before the start: a signal during a slow start (a worker bundling its workflows) stops the
  // service as soon as it is up, instead of killing it half-started.
  let stopping = false;
  let started: Promise<RunningService> | undefined;
  const stop = (signal: NodeJS.Signals) => {
    // A second signal (a process group's, or an impatient Ctrl-C) must not start a second stop.
    if (stopping) return;
    stopping = true;
    log.info({ signal }, spec.stopping ?? 'stopping');
    const timeoutMs = spec.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    setTimeout(() => {
      log.error({ timeoutMs }, `${spec.stopFailed ?? 'unclean stop'} (the stop took longer than ${timeoutMs} ms)`);
      process.exit(1);
    }, timeoutMs);
    // A start that fails is reported (and exits) below.
    started?.then(
      (service) =>
        service.stop().then(
          () => process.exit(0),
          (err: Error) => {
            log.error({ err: err.message }, spec.stopFailed ?? 'unclean stop');
            process.exit(1);
          },
        ),
      () => undefined,
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  started = spec.start({ cfg, log, options: command.opts() as O });
  let service: RunningService;
  try {
    service = await started;
  } catch (err) {
    if (err instanceof ConfigError) refuseSetting(component, err, log);
    log.fatal({ err }, spec.failed ?? `${spec.name} failed`);
    process.exit(1);
  }

  // A service that ends by itself (not through a signal) ends the process with its outcome.
  service.done?.then(
    () => {
      if (!stopping) process.exit(0);
    },
    (err: unknown) => {
      if (stopping) return;
      log.fatal({ err }, spec.failed ?? `${spec.name} failed`);
      process.exit(1);
    },
  );
}
