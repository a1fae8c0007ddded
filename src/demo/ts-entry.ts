/**
 * How to start a worker thread on one of the demo's .ts entry files when the demo
 * itself runs from source under tsx (npm run demo, vitest). From dist/ the thread
 * runs the compiled .js entry and needs none of this.
 *
 * On Node 20 tsx's `--import` hooks do not reach worker threads, and Node reads a
 * thread's entry before any hook could be registered, so the thread starts on a
 * small CommonJS bootstrap that registers tsx in the thread and then imports the
 * entry.
 */

/** tsx's registration API, resolved from here so it works from any working directory. */
function tsxApi(): string {
  return import.meta.resolve('tsx/esm/api');
}

/** Source of an `eval: true` worker that runs the .ts module `entry` under tsx. */
export function tsBootstrap(entry: URL): string {
  return [
    `import(${JSON.stringify(tsxApi())})`,
    `  .then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); })`,
    // An entry that fails to load must fail the thread, not leave it idle.
    `  .catch((err) => { process.nextTick(() => { throw err; }); });`,
  ].join('\n');
}
