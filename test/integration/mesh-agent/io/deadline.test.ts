import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Pool } from 'undici';
import { DeadlineSignal } from '../../../../mesh-agent/io/deadline.js';

/** undici against a real server: the deadline ends slow requests and lets go of finished ones. */
describe('DeadlineSignal as undici request signal', () => {
  let server: http.Server;
  let pool: Pool;

  before(async () => {
    server = http.createServer((req, res) => {
      if (req.url === '/slow-body') {
        res.writeHead(200);
        res.write('x');
        return; // never ends: only the deadline can
      }
      const delay = req.url === '/slow' ? 500 : 0;
      setTimeout(() => res.end('ok'), delay);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    pool = new Pool(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { connections: 4 });
  });

  after(async () => {
    await pool.destroy();
    server.closeAllConnections();
    server.close();
  });

  it('times a slow response out with a TimeoutError', async () => {
    const signal = new DeadlineSignal(50);
    await assert.rejects(pool.request({ method: 'GET', path: '/slow', signal }), { name: 'TimeoutError' });
  });

  it('bounds the body too, not only the headers', async () => {
    // Room for the headers on a busy machine (Node 24 sometimes took > 100 ms for this first parsed
    // response of the process): the deadline must end the body, not the wait for the headers.
    const signal = new DeadlineSignal(1000);
    const res = await pool.request({ method: 'GET', path: '/slow-body', signal });
    assert.equal(res.statusCode, 200);
    await assert.rejects(res.body.text(), { name: 'TimeoutError' });
  });

  it('is released (timer cleared) once the response body is read', async () => {
    const signal = new DeadlineSignal(10_000);
    const res = await pool.request({ method: 'GET', path: '/', signal });
    assert.equal(await res.body.text(), 'ok');
    await new Promise((r) => setImmediate(r));
    assert.equal(signal.pending, false, 'a finished request must not keep its deadline timer');
    assert.equal(signal.aborted, false);
  });
});
