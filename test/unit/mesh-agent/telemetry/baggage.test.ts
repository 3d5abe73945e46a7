import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BAGGAGE_KEYS, decodeBaggage, encodeBaggage } from '../../../../mesh-agent/telemetry/index.js';

test('encodes namespace, workload and version under OTel keys', () => {
  const v = encodeBaggage({ namespace: 'shop', workload: 'reviews-v2', version: 'v2' });
  assert.equal(
    v,
    `${BAGGAGE_KEYS.namespace}=shop,${BAGGAGE_KEYS.workload}=reviews-v2,${BAGGAGE_KEYS.version}=v2`,
  );
});

test('round-trips, percent-encoding what needs it', () => {
  const peer = { namespace: 'shop', workload: 'web app,1', version: 'v1;beta=2' };
  const header = encodeBaggage(peer);
  assert.doesNotMatch(header, / /);
  assert.deepEqual(decodeBaggage(header), peer);
});

test('leaves out empty fields; nothing known gives empty header', () => {
  assert.equal(
    encodeBaggage({ namespace: 'shop', workload: '', version: '' }),
    `${BAGGAGE_KEYS.namespace}=shop`,
  );
  assert.equal(encodeBaggage({}), '');
});

test('decodes from a header map and from repeated headers, ignoring other members', () => {
  const repeated = [`${BAGGAGE_KEYS.namespace}=shop,userId=42`, `${BAGGAGE_KEYS.version}=v3`];
  assert.deepEqual(decodeBaggage(repeated), { namespace: 'shop', workload: '', version: 'v3' });
  assert.deepEqual(decodeBaggage({ baggage: `${BAGGAGE_KEYS.workload}=db;prop=1`, host: 'x' }), {
    namespace: '',
    workload: 'db',
    version: '',
  });
});

test('null when absent, empty or without sockmesh members', () => {
  assert.equal(decodeBaggage(undefined), null);
  assert.equal(decodeBaggage(''), null);
  assert.equal(decodeBaggage('userId=42'), null);
  assert.equal(decodeBaggage({}), null);
  assert.equal(decodeBaggage('garbage without equals'), null);
});
