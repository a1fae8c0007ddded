import cliProgress from 'cli-progress';
import type { DemoEvent } from './engine.js';

/**
 * Turns the engine's events into progress output on stderr: live bars (cli-progress)
 * on a terminal, plain lines otherwise (CI logs, pipes), so a log never fills with
 * carriage returns.
 */
export function progressReporter(stream: NodeJS.WriteStream = process.stderr): { onEvent: (e: DemoEvent) => void; stop: () => void } {
  const tty = stream.isTTY === true;
  let bar: cliProgress.SingleBar | undefined;
  let current: { phase: string; total: number; unit: string; started: number; lastQuarter: number; value: number; detail: string } | undefined;

  const stop = (): void => {
    bar?.stop();
    bar = undefined;
  };

  const onEvent = (e: DemoEvent): void => {
    switch (e.type) {
      case 'info':
        if (bar) return;
        stream.write(`${e.message}\n`);
        return;
      case 'phase':
        stop();
        current = { phase: e.phase, total: e.total, unit: e.unit, started: performance.now(), lastQuarter: 0, value: 0, detail: '' };
        if (tty) {
          bar = new cliProgress.SingleBar(
            {
              stream,
              format: `${e.phase.padEnd(8)} [{bar}] {value}/{total} ${e.unit} | {duration_formatted} | {detail}`,
              barCompleteChar: '█',
              barIncompleteChar: '░',
              hideCursor: true,
              clearOnComplete: false,
              fps: 10,
            },
            cliProgress.Presets.shades_classic,
          );
          bar.start(e.total, 0, { detail: '' });
        } else {
          stream.write(`${e.phase}: ${e.total} ${e.unit}\n`);
        }
        return;
      case 'progress':
        if (!current || current.phase !== e.phase) return;
        current.value = e.value;
        current.detail = e.detail ?? current.detail;
        if (bar) {
          bar.update(e.value, { detail: current.detail });
        } else {
          const quarter = Math.floor((4 * e.value) / Math.max(1, current.total));
          if (quarter > current.lastQuarter && quarter < 4) {
            current.lastQuarter = quarter;
            stream.write(`${e.phase}: ${e.value}/${current.total} ${current.unit}${current.detail ? `, ${current.detail}` : ''}\n`);
          }
        }
        return;
      case 'phase-end':
        if (!current || current.phase !== e.phase) return;
        if (bar) {
          bar.update(current.total, { detail: current.detail });
          stop();
        } else {
          const secs = (performance.now() - current.started) / 1000;
          stream.write(`${e.phase}: done in ${secs.toFixed(1)} s${current.detail ? ` (${current.detail})` : ''}\n`);
        }
        current = undefined;
        return;
    }
  };
  return { onEvent, stop };
}
