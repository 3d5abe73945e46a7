import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  callerFromBaggage,
  protocolBaggage,
  protocolFromBaggage,
} from '../../../mesh-agent/inbound/policy.js';

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

describe('the calling workload on the CONNECT baggage (kernel TCP health labels)', () => {
  it('reads what the sending agent writes', () => {
    assert.deepEqual(
      callerFromBaggage(
        'k8s.namespace.name=shop,k8s.workload.name=frontend-1,app.version=v1,sockmesh.protocol=http',
      ),
      { namespace: 'shop', workload: 'frontend-1' },
    );
    assert.deepEqual(callerFromBaggage(' k8s.workload.name = web;p=1 , k8s.namespace.name=a%2Fb'), {
      namespace: 'a/b',
      workload: 'web',
    });
  });
  it('is unknown when either is missing or unreadable', () => {
    assert.equal(callerFromBaggage(undefined), undefined);
    assert.equal(callerFromBaggage('k8s.namespace.name=shop'), undefined);
    assert.equal(callerFromBaggage('k8s.namespace.name=%E0,k8s.workload.name=x'), undefined);
  });
});
