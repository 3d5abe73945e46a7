import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyPreface } from '../../../mesh-agent/outbound/detect.js';

const c = (s: string | Buffer) => classifyPreface(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);

describe('classifyPreface: what the first bytes of a connection speak', () => {
  it('an HTTP/1.x request line is HTTP/1.1', () => {
    assert.equal(c('GET / HTTP/1.1\r\nhost: x\r\n\r\n'), 'http1');
    assert.equal(c('POST /api/v1/items?x=1 HTTP/1.0\r\n'), 'http1');
    assert.equal(c('OPTIONS * HTTP/1.1\n'), 'http1');
  });

  it('the HTTP/2 connection preface is h2c', () => {
    assert.equal(c('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00'), 'h2c');
  });

  it('waits while the bytes are still a prefix of either', () => {
    for (const p of [
      '',
      'G',
      'GET',
      'GET ',
      'GET /a',
      'GET /a ',
      'GET /a HTT',
      'GET /a HTTP/1.1',
      'GET /a HTTP/1.1\r',
      'PRI * HTTP/2.0\r\n',
    ])
      assert.equal(c(p), 'more', JSON.stringify(p));
  });

  it('anything else is TCP, as early as the bytes tell', () => {
    assert.equal(c('\x16\x03\x01\x02\x00'), 'tcp', 'a TLS ClientHello');
    assert.equal(c('\x00\x00\x00\x08\x04\xd2\x16\x2f'), 'tcp', 'a Postgres SSLRequest');
    assert.equal(c('PING\r\n'), 'tcp', 'a Redis inline command');
    assert.equal(c('get / HTTP/1.1\r\n'), 'tcp', 'methods are upper case');
    assert.equal(c('GET / HTTP/2.0\r\n'), 'tcp');
    assert.equal(c('GET / SPDY'), 'tcp');
    assert.equal(c('GET /a b c HTTP/1.1\r\n'), 'tcp');
    assert.equal(c('HELLO'.repeat(2000)), 'tcp', 'no line end within the limit');
    assert.equal(c('PRI * HTTP/2.0\r\n\r\nXX'), 'tcp', 'almost the preface');
  });
});
