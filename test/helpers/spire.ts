/**
 * A real SPIRE deployment for the tests: spire-server and one spire-agent per lab node, built from
 * the Go module proxy by scripts/spire/build.sh (a cache hit when .ci/run built them already), all on
 * loopback in the host's namespaces, with their data in one temporary directory. Agents attest with
 * join tokens; each token's node alias `spiffe://<td>/node/<node>` is the parent of that
 * node's entries. Workloads are attested by the `unix` plugin. Every process is stopped by its pid.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);

/** The bin directory of the built spire-server and spire-agent; builds them when not cached. */
export async function spireBin(): Promise<string> {
  const { stdout } = await run('bash', [join(ROOT, 'scripts/spire/build.sh')], { maxBuffer: 1 << 20 });
  return stdout.trim().split('\n').at(-1)!;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as { port: number };
  srv.close();
  await once(srv, 'close');
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface SpireOptions {
  trustDomain: string;
  nodes: string[];
  /** SPIFFE IDs allowed to use each agent's Delegated Identity API (on its admin socket). */
  authorizedDelegates?: string[];
}

export interface EntrySpec {
  parentId: string;
  spiffeId: string;
  /** `type:value`, e.g. `unix:uid:0`, `k8s:ns:shop`. */
  selectors: string[];
  /** X.509-SVID lifetime in seconds (SPIRE's default is 1 h). */
  x509SvidTtlS?: number;
}

export class Spire {
  private server: ChildProcess | undefined;
  private readonly agents = new Map<string, ChildProcess>();
  private readonly tokens = new Map<string, string>();

  private constructor(
    readonly bin: string,
    readonly dir: string,
    readonly port: number,
    readonly opts: SpireOptions,
  ) {}

  /** Starts the server, then one agent per node (attested with a fresh join token each). */
  static async start(opts: SpireOptions): Promise<Spire> {
    const bin = await spireBin();
    const dir = mkdtempSync(join(tmpdir(), 'sockmesh-spire-'));
    const spire = new Spire(bin, dir, await freePort(), opts);
    try {
      await spire.startServer();
      for (const node of opts.nodes) await spire.startAgent(node);
      return spire;
    } catch (err) {
      await spire.stop();
      throw err;
    }
  }

  get serverSocket(): string {
    return join(this.dir, 'server', 'api.sock');
  }

  /** The node's Workload API socket. */
  agentSocket(node: string): string {
    return join(this.dir, node, 'public', 'agent.sock');
  }

  /** The node's admin socket (Delegated Identity API). */
  adminSocket(node: string): string {
    return join(this.dir, node, 'admin', 'admin.sock');
  }

  /** The node alias each join token maps its agent to: the parent of that node's entries. */
  nodeId(node: string): string {
    return `spiffe://${this.opts.trustDomain}/node/${node}`;
  }

  log(name: string): string {
    const f = join(this.dir, `${name}.log`);
    return existsSync(f) ? readFileSync(f, 'utf8') : '';
  }

  private spawnLogged(name: string, args: string[]): ChildProcess {
    const out = createWriteStream(join(this.dir, `${name}.log`), { flags: 'a' });
    const child = spawn(join(this.bin, name.startsWith('server') ? 'spire-server' : 'spire-agent'), args, {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.pipe(out, { end: false });
    child.stderr!.pipe(out, { end: false });
    return child;
  }

  private async startServer(): Promise<void> {
    const { trustDomain } = this.opts;
    const data = join(this.dir, 'server');
    mkdirSync(data, { recursive: true });
    const conf = join(data, 'server.conf');
    writeFileSync(
      conf,
      `server {
  bind_address = "127.0.0.1"
  bind_port = "${this.port}"
  socket_path = "${this.serverSocket}"
  trust_domain = "${trustDomain}"
  data_dir = "${data}"
  log_level = "DEBUG"
  ca_key_type = "ec-p256"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "${join(data, 'datastore.sqlite3')}"
    }
  }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "join_token" { plugin_data {} }
}
`,
    );
    this.server = this.spawnLogged('server', ['run', '-config', conf]);
    await this.healthy(
      'spire-server',
      ['healthcheck', '-socketPath', this.serverSocket],
      this.server,
      'server',
    );
  }

  /** Starts (or restarts, with its kept data dir and key: no new token needed) a node's agent. */
  async startAgent(node: string): Promise<void> {
    const { trustDomain, authorizedDelegates = [] } = this.opts;
    const data = join(this.dir, node);
    // SPIRE refuses an admin socket in (or below) the Workload API socket's directory.
    mkdirSync(join(data, 'admin'), { recursive: true });
    mkdirSync(join(data, 'public'), { recursive: true });
    const conf = join(data, 'agent.conf');
    const args = ['run', '-config', conf];
    if (!this.tokens.has(node)) {
      const token = await this.serverCli([
        'token',
        'generate',
        '-spiffeID',
        this.nodeId(node),
        '-ttl',
        '600',
      ]);
      const m = /Token:\s*(\S+)/.exec(token);
      if (!m) throw new Error(`spire-server token generate said: ${token}`);
      this.tokens.set(node, m[1]!);
      args.push('-joinToken', m[1]!);
    }
    writeFileSync(
      conf,
      `agent {
  data_dir = "${data}"
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "${this.port}"
  socket_path = "${this.agentSocket(node)}"
  admin_socket_path = "${this.adminSocket(node)}"
  trust_domain = "${trustDomain}"
  insecure_bootstrap = true
  authorized_delegates = ${JSON.stringify(authorizedDelegates)}
  experimental { sync_interval = "1s" }
}
plugins {
  NodeAttestor "join_token" { plugin_data {} }
  KeyManager "disk" { plugin_data { directory = "${data}" } }
  WorkloadAttestor "unix" { plugin_data {} }
}
`,
    );
    const child = this.spawnLogged(`agent-${node}`, args);
    this.agents.set(node, child);
    await this.healthy(
      'spire-agent',
      ['healthcheck', '-socketPath', this.agentSocket(node)],
      child,
      `agent-${node}`,
    );
  }

  /** Kills a node's agent by its pid (SIGKILL: an outage, not a shutdown). */
  async killAgent(node: string): Promise<void> {
    const child = this.agents.get(node);
    if (child) await stopChild(child, 'SIGKILL');
    this.agents.delete(node);
  }

  async createEntry(e: EntrySpec): Promise<string> {
    const args = ['entry', 'create', '-parentID', e.parentId, '-spiffeID', e.spiffeId];
    for (const s of e.selectors) args.push('-selector', s);
    if (e.x509SvidTtlS !== undefined) args.push('-x509SVIDTTL', String(e.x509SvidTtlS));
    const out = await this.serverCli(args);
    const m = /Entry ID\s*:\s*(\S+)/.exec(out);
    if (!m) throw new Error(`spire-server entry create said: ${out}`);
    return m[1]!;
  }

  async deleteEntry(id: string): Promise<void> {
    await this.serverCli(['entry', 'delete', '-entryID', id]);
  }

  /** The trust bundle (PEM) the server distributes. */
  async bundlePem(): Promise<string> {
    return this.serverCli(['bundle', 'show', '-format', 'pem']);
  }

  async serverCli(args: string[]): Promise<string> {
    try {
      const { stdout } = await run(
        join(this.bin, 'spire-server'),
        [...args, '-socketPath', this.serverSocket],
        {
          timeout: 30_000,
        },
      );
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string };
      throw new Error(`spire-server ${args.join(' ')} failed: ${e.stderr ?? ''}${e.stdout ?? ''}`);
    }
  }

  private async healthy(bin: string, args: string[], child: ChildProcess, log: string): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `${log} exited (${child.exitCode ?? child.signalCode}):\n${this.log(log).slice(-3000)}`,
        );
      }
      try {
        await run(join(this.bin, bin), args, { timeout: 10_000 });
        return;
      } catch {
        if (Date.now() > deadline)
          throw new Error(`${log} not healthy in 60 s:\n${this.log(log).slice(-3000)}`);
        await sleep(250);
      }
    }
  }

  /** Stops every agent, then the server, each by its pid; removes the data directory. */
  async stop(): Promise<void> {
    for (const node of [...this.agents.keys()]) await this.killAgent(node);
    if (this.server) await stopChild(this.server, 'SIGTERM');
    this.server = undefined;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  process.kill(child.pid!, signal);
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
  }, 5000);
  await exited;
  clearTimeout(timer);
}
