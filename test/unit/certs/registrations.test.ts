import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  entitledSpiffeIds,
  parseRegistrations,
  RegistrationError,
} from '../../../certs/workload-api/registrations.js';

const TABLE = `# who gets which identities
entries:
  - selectors:
      cgroup: /sockmesh-ab/node1/system
    spiffeIds:
      - spiffe://example.org/ns/shop/sa/frontend
      - spiffe://example.org/ns/shop/sa/reviews
  - selectors:
      cgroup: /sockmesh-ab/node1/system
      uid: 0
    spiffeIds:
      - spiffe://example.org/ns/shop/sa/reviews
      - spiffe://example.org/ns/shop/sa/ratings
  - selectors:
      uid: 1000
      gid: 1000
    spiffeIds: [spiffe://example.org/ns/dev/sa/alice]
federatedBundles:
  spiffe://partner.example: partner.pem
`;

function refusal(text: string): RegistrationError {
  try {
    parseRegistrations('reg.yaml', text);
  } catch (err) {
    assert.ok(err instanceof RegistrationError, String(err));
    return err;
  }
  assert.fail('the table was accepted');
}

describe('Workload API registration table', () => {
  const table = parseRegistrations('reg.yaml', TABLE);

  it('parses entries, selectors and federated bundle files', () => {
    assert.equal(table.entries.length, 3);
    assert.deepEqual(table.entries[0]!.selectors, { cgroup: '/sockmesh-ab/node1/system' });
    assert.deepEqual(table.entries[1]!.selectors, { cgroup: '/sockmesh-ab/node1/system', uid: 0 });
    assert.equal(table.entries[2]!.line, 14);
    assert.deepEqual(table.federatedBundles, [{ trustDomain: 'partner.example', file: 'partner.pem' }]);
  });

  it('grants every ID of every entry whose selectors all match, in table order, once each', () => {
    assert.deepEqual(entitledSpiffeIds(table, { uid: 0, gid: 0, cgroup: '/sockmesh-ab/node1/system' }), [
      'spiffe://example.org/ns/shop/sa/frontend',
      'spiffe://example.org/ns/shop/sa/reviews',
      'spiffe://example.org/ns/shop/sa/ratings',
    ]);
  });

  it('matches a cgroup selector for the cgroup itself and anything below it, never a sibling prefix', () => {
    assert.equal(
      entitledSpiffeIds(table, { uid: 5, gid: 5, cgroup: '/sockmesh-ab/node1/system/worker' }).length,
      2,
    );
    assert.deepEqual(entitledSpiffeIds(table, { uid: 5, gid: 5, cgroup: '/sockmesh-ab/node1/system2' }), []);
    assert.deepEqual(entitledSpiffeIds(table, { uid: 0, gid: 0, cgroup: '/sockmesh-ab/node1' }), []);
    assert.deepEqual(entitledSpiffeIds(table, { uid: 0, gid: 0, cgroup: null }), []);
  });

  it('requires every selector of an entry (uid and gid together)', () => {
    assert.deepEqual(entitledSpiffeIds(table, { uid: 1000, gid: 1000, cgroup: '/' }), [
      'spiffe://example.org/ns/dev/sa/alice',
    ]);
    assert.deepEqual(entitledSpiffeIds(table, { uid: 1000, gid: 0, cgroup: '/' }), []);
  });

  it('refuses malformed tables with file:line and the field', () => {
    const badId = refusal('entries:\n  - selectors: {uid: 0}\n    spiffeIds: [spiffe://Example.org/x]\n');
    assert.match(badId.message, /^reg\.yaml:3: entries\[0\]\.spiffeIds\[0\]: .*lowercase/);
    assert.match(refusal('entries:\n  - spiffeIds: [spiffe://a.org/x]\n').message, /selectors/);
    assert.match(
      refusal('entries:\n  - selectors: {}\n    spiffeIds: [spiffe://a.org/x]\n').message,
      /at least one selector/,
    );
    assert.match(
      refusal('entries:\n  - selectors: {pid: 4}\n    spiffeIds: [spiffe://a.org/x]\n').message,
      /entries\[0\]\.selectors\.pid: unknown selector/,
    );
    assert.match(
      refusal('entries:\n  - selectors: {cgroup: relative/path}\n    spiffeIds: [spiffe://a.org/x]\n')
        .message,
      /absolute/,
    );
    assert.match(
      refusal('entries:\n  - selectors: {uid: -1}\n    spiffeIds: [spiffe://a.org/x]\n').message,
      /uid/,
    );
    assert.match(refusal('entries:\n  - selectors: {uid: 0}\n    spiffeIds: []\n').message, /spiffeIds/);
    assert.match(
      refusal('entries:\n  - selectors: {uid: 0}\n    spiffeIds: [spiffe://a.org]\n').message,
      /workload/,
    );
    assert.match(refusal('entries: [\n').message, /^reg\.yaml:\d+: YAML/);
    assert.match(refusal('nope: 1\n').message, /unknown key 'nope'/);
  });
});
