/**
 * `sockmesh dashboard` in a real browser (Debian's chromium, headless, driven
 * by playwright-core) against a live local mesh: the page shows the shop's
 * edges under load, the canary split follows an apply, a denial is listed,
 * and a screenshot is taken (SOCKMESH_REFRESH_SCREENSHOTS=1 writes it to
 * docs/dashboard.png).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { cliArgv, type LocalMesh } from '../../lab/mesh.js';
import { call, startShop } from '../helpers/mesh.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const GRPC_ROUTE = fileURLToPath(new URL('./manifests-grpcroute/', import.meta.url));

/** The expression for a cell of the reviews split's table, as the page's script lays it out. */
const CELL = (backend: string, what: string) =>
  `document.querySelector('.split[data-route="shop/reviews#1"] tr[data-backend="${backend}"] td.${what}')`;

function stop(child: ChildProcess | undefined): void {
  if (child?.pid && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, 'SIGTERM');
    } catch {}
  }
}

describe('sockmesh dashboard in headless Chromium (2 nodes, live agents)', {
  skip: !existsSync(CHROMIUM) && `${CHROMIUM} is not installed (scripts/install-system-packages.sh)`,
}, () => {
  let mesh: LocalMesh;
  let dashboard: ChildProcess | undefined;
  const load: ChildProcess[] = [];
  let browser: Browser | undefined;
  let page: Page;
  const shots = mkdtempSync(join(tmpdir(), 'sockmesh-dashboard-'));

  before(async () => {
    mesh = await startShop([GRPC_ROUTE]);
    // Keep-alive-free curl loops from inside the pods, as an app would call: frontend -> reviews and ratings.
    const frontend = mesh.pod('shop/frontend-1');
    load.push(
      mesh.bed.spawn(frontend, [
        'sh',
        '-c',
        'while true; do curl -s -o /dev/null http://reviews.shop:9080/; curl -s -o /dev/null http://ratings.shop:9080/; done',
      ]),
    );
    dashboard = spawn(
      cliArgv()[0]!,
      [...cliArgv().slice(1), 'dashboard', '--run', mesh.bed.runId, '--port', '0', '--window', '4'],
      { stdio: ['ignore', 'pipe', 'inherit'], cwd: REPO },
    );
    const url = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error('the dashboard did not print its address in 30 s')),
        30_000,
      );
      createInterface({ input: dashboard!.stdout! }).on('line', (line) => {
        const m = line.match(/(http:\/\/127\.0\.0\.1:\d+\/)/);
        if (m) {
          clearTimeout(t);
          resolve(m[1]!);
        }
      });
      dashboard!.on('exit', (code) => reject(new Error(`the dashboard exited (${code})`)));
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 720 } });
    await page.goto(url);
  });
  after(async () => {
    await browser?.close();
    stop(dashboard);
    for (const l of load) stop(l);
    await mesh?.stop();
    rmSync(shots, { recursive: true, force: true });
  });

  /** Waits until a JavaScript expression is true in the page. */
  const waitFor = (expression: string, timeout: number) =>
    page.waitForFunction(expression, undefined, { timeout });
  const edge = (src: string, dst: string) =>
    page.locator(`g.edge[data-source="${src}"][data-destination="${dst}"]`);
  const cell = (backend: string, what: string) =>
    page.locator(`.split[data-route="shop/reviews#1"] tr[data-backend="${backend}"] td.${what}`);

  it("shows the shop's edges with live rate, success and p99", async () => {
    for (const dst of ['shop/reviews-v1-1', 'shop/ratings-1'])
      await waitFor(
        `/\\d\\/s · 100\\.0% ok · p99 /.test(document.querySelector('tr.edge-row[data-source="shop/frontend-1"][data-destination="${dst}"] td.traffic')?.textContent ?? '')`,
        30_000,
      );
    // The agents export kernel TCP health per pair: the row shows it (RTT, jitter, retransmits).
    await waitFor(
      `/^rtt \\d+\\.\\d\\dms ±\\d+\\.\\d\\d · retransmits \\d+ · rtos \\d+$/.test(document.querySelector('tr.edge-row[data-source="shop/frontend-1"][data-destination="shop/reviews-v2-1"] td.tcp')?.textContent ?? '')`,
      30_000,
    );
    // Each edge is drawn in the graph too, with its number.
    assert.equal(await edge('shop/frontend-1', 'shop/reviews-v1-1').count(), 1);
    assert.equal(await edge('shop/frontend-1', 'shop/ratings-1').count(), 1);
    assert.equal(await page.locator('g.node[data-workload="shop/reviews-v2-1"]').count(), 1);
  });

  it('shows the canary split, and its live share follows an apply', async () => {
    assert.equal(await cell('reviews-v2.shop', 'weight').textContent(), '10%');
    const share = async () =>
      Number.parseFloat((await cell('reviews-v2.shop', 'share').textContent()) ?? 'NaN');
    await waitFor(`/^\\d/.test(${CELL('reviews-v2.shop', 'share')}?.textContent ?? '')`, 15_000);
    const before = await share();
    assert.ok(before < 30, `the 90/10 canary shows ${before}% live`);
    const admin = mesh.admin();
    try {
      const r = await admin.apply(readFileSync(join(REPO, 'examples/journeys/reviews-50-50.yaml'), 'utf8'));
      assert.equal(r.applied, true);
    } finally {
      await admin.close();
    }
    await waitFor(
      `${CELL('reviews-v2.shop', 'weight')}?.textContent === '50%' && (v => v > 35 && v < 65)(parseFloat(${CELL('reviews-v2.shop', 'share')}?.textContent))`,
      30_000,
    );
    assert.ok(Number(await cell('reviews-v2.shop', 'requests').textContent()) > 0, 'the share is counted');
  });

  it('names the kind of route each split comes from: a GRPCRoute says so', async () => {
    const title = (route: string) =>
      page.locator(`.split[data-route="${route}"] .title strong`).textContent();
    assert.equal(await title('shop/reviews#1'), 'shop/reviews rule 1');
    assert.equal(await title('shop/reviews-grpc#1'), 'shop/reviews-grpc (GRPCRoute) rule 1');
    assert.equal(
      await page
        .locator('.split[data-route="shop/reviews-grpc#1"] tr[data-backend="reviews-v2-grpc.shop"] td.weight')
        .textContent(),
      '10%',
    );
  });

  it('lists a denial with the policy that made it', async () => {
    assert.equal((await call(mesh, 'shop/ratings-1', 'http://reviews.shop:9080/')).status, 403);
    await waitFor(
      `[...document.querySelectorAll('#denials tbody tr')].some((tr) => /shop\\/ratings.*shop\\/reviews-v\\d-1.*default-deny/.test(tr.textContent))`,
      15_000,
    );
  });

  it('renders a decent screenshot', async () => {
    const file = join(shots, 'dashboard.png');
    await page.screenshot({ path: file });
    const png = readFileSync(file);
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
    assert.equal(png.readUInt32BE(16), 1400, 'width');
    assert.equal(png.readUInt32BE(20), 720, 'height');
    assert.ok(png.length > 30_000, `a near-empty page compresses to ${png.length} bytes`);
    if (process.env.SOCKMESH_REFRESH_SCREENSHOTS === '1')
      copyFileSync(file, join(REPO, 'docs', 'dashboard.png'));
  });
});
