import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { protocolBaggage, protocolFromBaggage } from '../../../mesh-agent/inbound/policy.js';

describe('the sender protocol on the CONNECT baggage', () => {
  it('round-trips among the other members', () => {
    const b = `k8s.namespace.name=shop,k8s.workload.name=frontend-1,${protocolBaggage('tcp')}`;
    assert.equal(protocolFromBaggage(b), 'tcp');
    assert.equal(protocolFromBaggage(`${protocolBaggage('http')};prop=1 , x=y`), 'http');
    assert.equal(protocolFromBaggage(' sockmesh.protocol = http '), 'http');
  });

  it('absent or unknown: undefined (the port declaration decides)', () => {
    assert.equal(protocolFromBaggage(undefined), undefined);
    assert.equal(protocolFromBaggage(''), undefined);
    assert.equal(protocolFromBaggage('k8s.namespace.name=shop'), undefined);
    assert.equal(protocolFromBaggage('sockmesh.protocol=udp'), undefined);
    assert.equal(protocolFromBaggage('x.sockmesh.protocol=tcp'), undefined);
  });
});
