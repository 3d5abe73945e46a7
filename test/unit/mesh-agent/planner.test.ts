import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MeshPlanner } from '../../../mesh-agent/agent/planner.js';
import type { HttpPlan } from '../../../mesh-agent/outbound/plan.js';
import { MeshState } from '../../../mesh-agent/state/index.js';
import { ROUTE_TYPE } from '../../../xds/protos.js';
import { type Raw, reviewsRoutes, snapshot, wire } from './fixtures/envoy.js';

const ctx = {
  outliers: { report: () => {}, isEjected: () => false },
  worker: { index: 0, count: 1 },
};

/** reviewsRoutes with the catch-all split set to these weights (v1, v2). */
function split(v1: number, v2: number): Raw {
  const rc = structuredClone(reviewsRoutes) as {
    virtual_hosts: { routes: { name: string; route: { weighted_clusters?: Raw } }[] }[];
  };
  const route = rc.virtual_hosts[0]!.routes.find((r) => r.name === 'split')!;
  route.route.weighted_clusters = {
    clusters: [
      { name: 'reviews-v1', weight: { value: v1 } },
      { name: 'reviews-v2', weight: { value: v2 } },
    ],
  };
  return wire(ROUTE_TYPE, rc as unknown as Raw);
}

const req = { sourceIp: '10.1.1.5', authority: 'reviews:9080', path: '/', method: 'GET', headers: {} };

function clusterOf(plan: HttpPlan): string {
  const d = plan.route(req);
  return d.kind === 'forward' ? d.cluster.name : `reject:${d.status}`;
}

describe('MeshPlanner', () => {
  it('plans every request of an open connection against the current config (the canary split follows)', () => {
    const planner = new MeshPlanner('node-1', ctx);
    planner.update(MeshState.fromSnapshot({ ...snapshot, routes: [split(100, 0)] }));
    // The plan is taken once per connection, as the proxy does at accept time.
    const plan = planner.plan('10.96.0.20', 9080) as HttpPlan;
    assert.equal(plan.kind, 'http');
    assert.deepEqual(new Set(Array.from({ length: 50 }, () => clusterOf(plan))), new Set(['reviews-v1']));
    planner.update(MeshState.fromSnapshot({ ...snapshot, routes: [split(0, 100)] }));
    assert.deepEqual(new Set(Array.from({ length: 50 }, () => clusterOf(plan))), new Set(['reviews-v2']));
    planner.close();
  });

  it('keeps a TCP connection on the cluster it chose at accept (as Envoy does)', () => {
    const planner = new MeshPlanner('node-1', ctx);
    planner.update(MeshState.fromSnapshot(snapshot));
    const plan = planner.plan('10.96.0.40', 5432);
    assert.equal(plan.kind, 'tcp');
    planner.close();
  });
});
