import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  COUNTER_NAMES,
  COUNTER_SLOTS,
  decodeCidrKey,
  decodeConfig,
  decodeOrigDst,
  decodePod,
  decodeTuple4,
  encodeCidrKey,
  encodeConfig,
  encodeOrigDst,
  encodePod,
  encodeTuple4,
  encodeTuple6,
  formatIpv6,
  POD_SIZE,
  parseCidr,
  parseIpv4,
  parseIpv6,
  sumPerCpu,
  TUPLE4_SIZE,
  unmapIpv4,
} from '../../../bpf-sockops/codec.js';
import { isSockmeshError } from '../../../lib/errors.js';

describe('IPv4 parsing', () => {
  test('keeps network byte order', () => {
    assert.deepEqual([...parseIpv4('10.244.1.2')], [10, 244, 1, 2]);
  });
  for (const bad of ['10.0.0', '10.0.0.256', '1.2.3.4.5', 'a.b.c.d', '', '10.0.0.-1', '::1']) {
    test(`rejects ${JSON.stringify(bad)} with SOCKMESH_E_CONFIG`, () => {
      assert.throws(
        () => parseIpv4(bad),
        (e) => isSockmeshError(e, 'SOCKMESH_E_CONFIG'),
      );
    });
  }
});

describe('struct sm_tuple4', () => {
  test('is src ip, dst ip (network order) then ports (host order, little-endian)', () => {
    const b = encodeTuple4({ ip: '10.244.1.5', port: 40000 }, { ip: '10.244.1.1', port: 15001 });
    assert.equal(b.length, TUPLE4_SIZE);
    assert.equal(b.toString('hex'), `0af40105` + `0af40101` + '409c' + '993a');
  });
  test('round-trips', () => {
    const src = { ip: '1.2.3.4', port: 1 };
    const dst = { ip: '255.255.255.255', port: 65535 };
    assert.deepEqual(decodeTuple4(encodeTuple4(src, dst)), { src, dst });
  });
  test('rejects out-of-range ports', () => {
    assert.throws(() => encodeTuple4({ ip: '1.2.3.4', port: 0 }, { ip: '1.2.3.4', port: 1 }));
    assert.throws(() => encodeTuple4({ ip: '1.2.3.4', port: 1 }, { ip: '1.2.3.4', port: 65536 }));
    assert.throws(() => encodeTuple4({ ip: '1.2.3.4', port: 1.5 }, { ip: '1.2.3.4', port: 1 }));
  });
});

describe('struct sm_orig_dst and sm_config', () => {
  test('orig dst round-trips and has zeroed flags', () => {
    const b = encodeOrigDst({ ip: '10.96.0.10', port: 80 });
    assert.equal(b.toString('hex'), '0a60000a' + '5000' + '0000');
    assert.deepEqual(decodeOrigDst(b), { ip: '10.96.0.10', port: 80 });
  });
  test('config: proxy ip4, port, accel at byte 6, has_ip6 at 7, ip6 from byte 8', () => {
    const b = encodeConfig({
      proxy: { ip: '10.244.1.1', port: 15001 },
      proxyIp6: undefined,
      acceleration: true,
    });
    assert.equal(b.length, 24);
    assert.equal(b.subarray(0, 8).toString('hex'), '0af40101' + '993a' + '01' + '00');
    assert.equal(b.subarray(8).toString('hex'), '00'.repeat(16));
    assert.deepEqual(decodeConfig(b), {
      proxy: { ip: '10.244.1.1', port: 15001 },
      proxyIp6: undefined,
      acceleration: true,
    });
  });
  test('config with an IPv6 proxy address', () => {
    const cfg = { proxy: { ip: '10.244.1.1', port: 15001 }, proxyIp6: 'fd00:244:1::1', acceleration: false };
    const b = encodeConfig(cfg);
    assert.equal(b[7], 1);
    assert.equal(b.subarray(8).toString('hex'), 'fd000244000100000000000000000001');
    assert.deepEqual(decodeConfig(b), cfg);
  });
  test('no proxy encodes as zero (capture disabled)', () => {
    const b = encodeConfig({ proxy: undefined, proxyIp6: undefined, acceleration: false });
    assert.equal(b.toString('hex'), '00'.repeat(24));
    assert.deepEqual(decodeConfig(b), { proxy: undefined, proxyIp6: undefined, acceleration: false });
  });
});

describe('IPv6 text', () => {
  const cases: [string, string, string][] = [
    ['::', '00'.repeat(16), '::'],
    ['::1', `${'00'.repeat(15)}01`, '::1'],
    ['fd00:244:1::1', 'fd000244000100000000000000000001', 'fd00:244:1::1'],
    ['FD00:0244:0001:0000:0000:0000:0000:000A', 'fd00024400010000000000000000000a', 'fd00:244:1::a'],
    ['1:0:0:2:0:0:0:3', '00010000000000020000000000000003', '1:0:0:2::3'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008', '1:2:3:4:5:6:7:8'],
    ['::ffff:10.244.1.2', '00000000000000000000ffff0af40102', '::ffff:10.244.1.2'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221', '64:ff9b::c000:221'],
  ];
  for (const [text, hex, canonical] of cases) {
    test(`${text} parses and prints as ${canonical}`, () => {
      assert.equal(parseIpv6(text).toString('hex'), hex);
      assert.equal(formatIpv6(parseIpv6(text)), canonical);
    });
  }
  for (const bad of [
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    '12345::',
    'fe80::1%eth0',
    ':::',
    '1:2:3:4:5:6:7',
    'g::1',
  ]) {
    test(`rejects ${bad}`, () => assert.throws(() => parseIpv6(bad)));
  }
  test('v4-mapped addresses (dual-stack listeners) unmap to IPv4', () => {
    assert.equal(unmapIpv4('::ffff:10.244.1.2'), '10.244.1.2');
    assert.equal(unmapIpv4('::FFFF:10.244.1.2'), '10.244.1.2');
    assert.equal(unmapIpv4('fd00::1'), 'fd00::1');
    assert.equal(unmapIpv4('10.0.0.1'), '10.0.0.1');
  });
  test('struct sm_tuple6 is two addresses then host-order ports', () => {
    const b = encodeTuple6({ ip: 'fd00::2', port: 40000 }, { ip: 'fd00::1', port: 15001 });
    assert.equal(b.length, 36);
    assert.equal(b.subarray(32).toString('hex'), '409c993a');
    assert.equal(formatIpv6(b, 16), 'fd00::1');
  });
});

describe('CIDR exclusions', () => {
  test('a bare address is a host route', () => {
    assert.deepEqual(parseCidr('192.0.2.7'), { family: 4, ip: '192.0.2.7', prefixLength: 32 });
    assert.deepEqual(parseCidr('fd00::7'), { family: 6, ip: 'fd00::7', prefixLength: 128 });
  });
  test('host bits are cleared', () => {
    assert.deepEqual(parseCidr('10.1.2.3/8'), { family: 4, ip: '10.0.0.0', prefixLength: 8 });
    assert.deepEqual(parseCidr('10.1.2.3/0'), { family: 4, ip: '0.0.0.0', prefixLength: 0 });
    assert.deepEqual(parseCidr('10.1.2.255/31'), { family: 4, ip: '10.1.2.254', prefixLength: 31 });
    assert.deepEqual(parseCidr('fd00:244:1::99/40'), { family: 6, ip: 'fd00:244::', prefixLength: 40 });
  });
  for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/1', '10.0.0/8', 'fd00::/129']) {
    test(`rejects ${bad}`, () => assert.throws(() => parseCidr(bad)));
  }
  test('LPM key is prefix length (host order) then the address', () => {
    const k = encodeCidrKey(parseCidr('172.16.0.0/12'));
    assert.equal(k.toString('hex'), '0c000000' + 'ac100000');
    assert.deepEqual(decodeCidrKey(k), { family: 4, ip: '172.16.0.0', prefixLength: 12 });
    const k6 = encodeCidrKey(parseCidr('fd00::/8'));
    assert.equal(k6.length, 20);
    assert.deepEqual(decodeCidrKey(k6), { family: 6, ip: 'fd00::', prefixLength: 8 });
  });
});

describe('per-CPU counters', () => {
  test('sums one u64 per CPU', () => {
    const v = Buffer.alloc(8 * 3);
    v.writeBigUInt64LE(5n, 0);
    v.writeBigUInt64LE(0n, 8);
    v.writeBigUInt64LE(2n ** 40n, 16);
    assert.equal(sumPerCpu(v, 3), 5n + 2n ** 40n);
  });
  test('names follow enum sm_counter', () => {
    assert.deepEqual(COUNTER_NAMES, [
      'connectsRedirected',
      'connectionsTracked',
      'messagesRedirected',
      'fallbacks',
      'mapFull',
      'socketsAccelerated',
      'plaintextRefused',
      'backpressured',
      'inboundCaptured',
      'inboundRefused',
    ]);
    assert.ok(COUNTER_NAMES.length <= COUNTER_SLOTS);
  });
});

describe('pod membership value', () => {
  test('struct sm_pod: mode 1 = strict, 0 = permissive, reserved flags zero', () => {
    const strict = encodePod('strict');
    assert.equal(strict.length, POD_SIZE);
    assert.deepEqual([...strict], [1, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...encodePod('permissive')], [0, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(decodePod(strict), 'strict');
    assert.equal(decodePod(encodePod('permissive')), 'permissive');
  });
});
