// Samples a running Node process's CPU through its inspector (opened by SIGUSR1 on 127.0.0.1:9229
// of the caller's network namespace) for <seconds>, and writes the .cpuprofile to <out>.
//   node cdp-profile.mjs <seconds> <out> [port]
import { writeFileSync } from 'node:fs';
import { WebSocket } from 'undici';

const [secondsS = '10', out = 'agent.cpuprofile', portS = '9229'] = process.argv.slice(2);
const list = await (await fetch(`http://127.0.0.1:${portS}/json/list`)).json();
const ws = new WebSocket(list[0].webSocketDebuggerUrl);
let id = 0;
const pending = new Map();
ws.addEventListener('message', (ev) => {
  const msg = JSON.parse(String(ev.data));
  if (msg.id !== undefined) pending.get(msg.id)?.(msg);
});
const call = (method, params = {}) =>
  new Promise((resolve, reject) => {
    const n = ++id;
    pending.set(n, (m) => (m.error ? reject(new Error(JSON.stringify(m.error))) : resolve(m.result)));
    ws.send(JSON.stringify({ id: n, method, params }));
  });
await new Promise((r) => ws.addEventListener('open', r, { once: true }));
await call('Profiler.enable');
await call('Profiler.setSamplingInterval', { interval: 1000 });
await call('Profiler.start');
process.stdout.write('{"profiling":true}\n');
await new Promise((r) => setTimeout(r, Number(secondsS) * 1000));
const { profile } = await call('Profiler.stop');
writeFileSync(out, JSON.stringify(profile));
await call('Profiler.disable');
ws.close();
process.stdout.write(`${JSON.stringify({ written: out, nodes: profile.nodes.length })}\n`);
process.exit(0);
