import { CommanderError } from 'commander';
import { ConfigError, isGranaryError } from '../errors.js';

/** Exit status for a bad command line (unknown option, invalid value, bad URL). */
export const EXIT_USAGE = 2;
/** Exit status for a failure while running (store unreachable, data corrupt). */
export const EXIT_RUNTIME = 1;

const usageErrors = new WeakSet<object>();

/**
 * Mark an error found while checking the command line, so it exits with status 2
 * whatever its code (an invalid URL keeps `GRANARY_ERR_INVALID_URL`).
 */
export function usageError(err: unknown): unknown {
  if (typeof err === 'object' && err !== null) usageErrors.add(err);
  return err;
}

/** Run a check of the command line; whatever it throws is a usage error. */
export function checkUsage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw usageError(err);
  }
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return EXIT_USAGE;
  if (err instanceof ConfigError) return EXIT_USAGE;
  if (typeof err === 'object' && err !== null && usageErrors.has(err)) return EXIT_USAGE;
  return EXIT_RUNTIME;
}

/** One line (or a few) for stderr: `granary <cmd>: GRANARY_ERR_X: message`. */
export function formatError(err: unknown, commandName: string): string {
  if (isGranaryError(err)) return `${commandName}: ${err.code}: ${err.message}\n`;
  if (err instanceof Error) return `${commandName}: GRANARY_ERR_INTERNAL: ${err.stack ?? err.message}\n`;
  return `${commandName}: GRANARY_ERR_INTERNAL: ${String(err)}\n`;
}
