/** A process run by runService whose start and stop behave as FIXTURE says (test/unit/run-service.test.ts). */
import { ConfigError } from '../../common/config';
import { runService } from '../../common/run-service';

const mode = process.env.FIXTURE ?? 'ok';
const never = new Promise<void>(() => undefined);

await runService<{ greeting: string }>({
  name: 'fixture',
  description: 'A service that does nothing until it is stopped.',
  help: '\nSettings: FIXTURE=ok | start-config-error | start-throws | stop-throws | stop-hangs | ends | fails',
  options: (command) => command.option('--greeting <text>', 'logged at start', 'hello'),
  stopTimeoutMs: 300,
  stopFailed: 'fixture stop failed',
  async start({ log, options }) {
    if (mode === 'start-config-error') throw new ConfigError('FIXTURE_SETTING must be set');
    if (mode === 'start-throws') throw new Error('could not connect');
    // What a real service's open socket does: keep the process alive until it is stopped.
    const alive = setInterval(() => undefined, 1000);
    log.info({ greeting: options.greeting }, 'fixture started');
    const done = mode === 'ends' ? new Promise<void>((r) => setTimeout(r, 100)) : mode === 'fails' ? new Promise<void>((_, j) => setTimeout(() => j(new Error('worker crashed')), 100)) : undefined;
    void done?.catch(() => undefined).finally(() => clearInterval(alive));
    return {
      done,
      async stop() {
        if (mode === 'stop-throws') throw new Error('flush failed');
        if (mode === 'stop-hangs') await never;
        clearInterval(alive);
        log.info('fixture stopped');
      },
    };
  },
});
