import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isSockmeshError } from '../../../lib/errors.js';
import {
  list,
  obj,
  optBoolWrapper,
  optDurationMs,
  optEnum,
  optUint,
  optUintWrapper,
  typedConfig,
} from '../../../mesh-agent/state/wire.js';

describe('wire helpers', () => {
  it('Durations: seconds as strings (longs: String) or numbers, nanos to fractions of a ms', () => {
    assert.equal(optDurationMs({ seconds: '1', nanos: 500_000_000 }, 'd'), 1500);
    assert.equal(optDurationMs({ seconds: 2 }, 'd'), 2000);
    assert.equal(optDurationMs({ nanos: 250_000 }, 'd'), 0.25);
    assert.equal(optDurationMs({}, 'd'), 0);
    assert.equal(optDurationMs(undefined, 'd'), undefined);
    assert.throws(
      () => optDurationMs({ seconds: '-1' }, 'x.timeout'),
      /x\.timeout\.seconds: expected a non-negative integer/,
    );
    assert.throws(
      () => optDurationMs({ seconds: '1', nanos: 1e9 }, 'd'),
      /d\.nanos: expected 0\.\.999999999/,
    );
    assert.throws(() => optDurationMs('1s', 'd'), /d: expected an object, got string "1s"/);
  });

  it('integers and wrappers', () => {
    assert.equal(optUint('18446744', 'n'), 18446744);
    assert.equal(optUint(7, 'n'), 7);
    assert.throws(() => optUint(1.5, 'n'), /expected an unsigned integer/);
    assert.throws(() => optUint(70000, 'port', 65535), /up to 65535/);
    assert.equal(optUintWrapper({ value: 3 }, 'w'), 3);
    assert.equal(optUintWrapper({}, 'w'), 0, 'a present wrapper with the default value omitted is 0');
    assert.equal(optUintWrapper(4, 'w'), 4);
    assert.equal(optBoolWrapper({ value: true }, 'b'), true);
    assert.equal(optBoolWrapper({}, 'b'), false);
  });

  it('enums, objects and lists', () => {
    assert.equal(optEnum('EDS', 'type', ['EDS', 'STATIC'] as const), 'EDS');
    assert.throws(() => optEnum(3, 'type', ['EDS'] as const), /type: expected one of EDS, got number 3/);
    assert.deepEqual(list(undefined, 'l'), []);
    assert.throws(() => list({}, 'l'), /l: expected a list, got an object/);
    assert.throws(() => obj([], 'o'), /o: expected an object, got a list/);
    assert.throws(() => obj(null, 'o'), /got null/);
  });

  it('errors are SOCKMESH_E_XDS with a hint', () => {
    try {
      obj(1, 'Cluster "x".outlier_detection');
      assert.fail('no throw');
    } catch (e) {
      assert.ok(isSockmeshError(e, 'SOCKMESH_E_XDS'));
      assert.match(
        e.describe(),
        /^SOCKMESH_E_XDS: invalid xDS resource at Cluster "x"\.outlier_detection: expected an object, got number 1 \(.*last good config/,
      );
    }
  });

  it('an Any that was not unpacked is named as such', () => {
    assert.throws(
      () => typedConfig({ type_url: 'type.googleapis.com/x.Y', value: Buffer.alloc(0) }, 'f.typed_config'),
      /Any type\.googleapis\.com\/x\.Y was not unpacked/,
    );
  });
});
