/**
 * The HTTP fault proxy the store-side rows use: it forwards requests unchanged, and
 * applies queued faults to the requests they match, each as many times as asked.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forObject, hold, isObjectGet, resetMidBody, slowDown, startHttpFaultProxy, type HttpFaultProxy } from '../../src/netem/http-faults.js';

const BODY = Buffer.alloc(64 * 1024, 7);

describe('HTTP fault proxy', () => {
  let server: http.Server;
  let proxy: HttpFaultProxy;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-length': BODY.byteLength, 'x-seen-host': req.headers.host ?? '' });
      res.end(BODY);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = await startHttpFaultProxy({ target: { host: '127.0.0.1', port: (server.address() as AddressInfo).port } });
  });
  afterAll(async () => {
    await proxy.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('forwards requests unchanged, Host header included', async () => {
    const res = await fetch(`${proxy.url}/b/k`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(BODY)).toBe(true);
    expect(res.headers.get('x-seen-host')).toBe(new URL(proxy.url).host);
  });

  it('answers 503 SlowDown to the next matching requests only, as many times as asked', async () => {
    proxy.inject(slowDown(), { times: 2, match: isObjectGet });
    expect((await fetch(`${proxy.url}/b`)).status).toBe(200); // a listing: not matched
    const first = await fetch(`${proxy.url}/b/k`);
    expect(first.status).toBe(503);
    expect(await first.text()).toContain('<Code>SlowDown</Code>');
    expect((await fetch(`${proxy.url}/b/k`)).status).toBe(503);
    expect((await fetch(`${proxy.url}/b/k`)).status).toBe(200);
    expect(proxy.pending()).toBe(0);
    expect(proxy.stats().injected.slowDown).toBe(2);
  });

  it('cuts a response mid-body with a reset after sending its headers', async () => {
    proxy.inject(resetMidBody(), { match: forObject('b', 'cut/me') });
    const res = await fetch(`${proxy.url}/b/cut/me`);
    expect(res.status).toBe(200);
    await expect(res.arrayBuffer()).rejects.toThrow();
  });

  it('holds matching requests until released', async () => {
    const held = hold();
    proxy.inject(held, { times: 2 });
    let done = false;
    const pending = fetch(`${proxy.url}/b/k`).then((r) => {
      done = true;
      return r.status;
    });
    await held.arrived;
    expect(done).toBe(false);
    held.release();
    expect(await pending).toBe(200);
    // The second count goes through at once now that it is released.
    expect((await fetch(`${proxy.url}/b/k`)).status).toBe(200);
  });
});
