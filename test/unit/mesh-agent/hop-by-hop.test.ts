import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dropHopByHop, endToEnd } from '../../../mesh-agent/io/headers.js';

describe('dropHopByHop (in place) leaves what endToEnd (a copy) leaves', () => {
  const cases: Record<string, string | string[]>[] = [
    { host: 'a', accept: '*/*' },
    { host: 'a', connection: 'keep-alive', 'keep-alive': 'timeout=5', te: 'trailers', 'x-a': '1' },
    { host: 'a', connection: 'X-Secret, close', 'x-secret': 's', 'x-kept': 'k' },
    { host: 'a', connection: ['x-one', ' X-Two '], 'x-one': '1', 'x-two': '2', 'x-three': '3' },
    {
      host: 'a',
      'proxy-authorization': 'Basic x',
      'http2-settings': 'AAA',
      upgrade: 'h2c',
      'transfer-encoding': 'chunked',
      'x-forwarded-client-cert': 'By=spiffe://evil',
      'set-cookie': ['a=1', 'b=2'],
    },
  ];
  for (const [i, c] of cases.entries())
    it(`case ${i}`, () => {
      const mine = structuredClone(c);
      dropHopByHop(mine);
      assert.deepEqual(mine, endToEnd(c));
    });
});
