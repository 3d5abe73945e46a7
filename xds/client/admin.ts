import { Agent, request } from 'undici';
import { SockmeshError } from '../../lib/errors.js';
import type { ApplyChange } from '../server/apply.js';
import type { CanaryStatus } from '../server/canary.js';

export interface ApplyResponse {
  applied: boolean;
  dryRun?: boolean;
  version: string | number | undefined;
  changes?: ApplyChange[];
  messages?: string[];
}

/** Client of the control plane's admin endpoint (apply, status), over its unix socket or loopback. */
export class AdminClient {
  private readonly dispatcher: Agent;
  private readonly origin: string;

  constructor(address: string) {
    if (address.startsWith('unix:')) {
      this.dispatcher = new Agent({ connect: { socketPath: address.slice(5) } });
      this.origin = 'http://control-plane';
    } else {
      this.dispatcher = new Agent();
      this.origin = `http://${address}`;
    }
  }

  /** Validates and (unless dryRun) applies YAML documents; a rejection (400, 413, 422) carries the reasons. */
  async apply(yaml: string, dryRun = false): Promise<ApplyResponse> {
    const res = await this.call('POST', `/v1/apply${dryRun ? '?dryRun=true' : ''}`, yaml);
    if (![200, 400, 413, 422].includes(res.status)) {
      throw new SockmeshError('SOCKMESH_E_XDS', `control plane answered ${res.status} to apply: ${res.text}`);
    }
    return JSON.parse(res.text) as ApplyResponse;
  }

  async status(): Promise<unknown> {
    return JSON.parse((await this.call('GET', '/v1/status')).text);
  }

  /** Every CanaryGuard's state and last decision (see xds/server/canary.ts CanaryStatus). */
  async canary(): Promise<{ version?: string; guards: CanaryStatus[] }> {
    return JSON.parse((await this.call('GET', '/v1/canary')).text) as {
      version?: string;
      guards: CanaryStatus[];
    };
  }

  /** The xDS resources the control plane serves a node (`/v1/config`), decoded; routes are what `sockmesh dashboard` reads. */
  async config(node: string): Promise<{ version?: string; routes?: unknown[] }> {
    const res = await this.call('GET', `/v1/config?node=${encodeURIComponent(node)}`);
    if (res.status !== 200)
      throw new SockmeshError(
        'SOCKMESH_E_XDS',
        `control plane answered ${res.status} to /v1/config: ${res.text}`,
      );
    return JSON.parse(res.text) as { version?: string; routes?: unknown[] };
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async call(
    method: 'GET' | 'POST',
    path: string,
    body?: string,
  ): Promise<{ status: number; text: string }> {
    try {
      const res = await request(`${this.origin}${path}`, {
        method,
        dispatcher: this.dispatcher,
        ...(body === undefined ? {} : { body, headers: { 'content-type': 'application/yaml' } }),
      });
      return { status: res.statusCode, text: await res.body.text() };
    } catch (err) {
      throw new SockmeshError(
        'SOCKMESH_E_XDS',
        `cannot reach the control plane admin endpoint: ${(err as Error).message}`,
        {
          hint: 'is the mesh up? (sockmesh status)',
          cause: err,
        },
      );
    }
  }
}
