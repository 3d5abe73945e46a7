/**
 * A DiscoveryResponse read off the wire with its resources left as raw Any
 * (type URL + bytes). Decoding every resource inside the gRPC deserializer
 * would turn one undecodable resource into a broken stream (grpc-js cancels
 * the call, the client reconnects, gets the same response...); read this way,
 * the client decodes each resource itself and NACKs the bad ones with a reason.
 * Only the envelope's fields are read (envoy.service.discovery.v3.DiscoveryResponse:
 * 1 version_info, 2 resources, 4 type_url, 5 nonce); others are skipped.
 */

export interface RawResource {
  type_url: string;
  value: Buffer;
  /** Set when the Any itself could not be read. */
  malformed?: string;
}

export interface RawDiscoveryResponse {
  version_info: string;
  type_url: string;
  nonce: string;
  resources: RawResource[];
}

class Reader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): number {
    let out = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new Error('truncated varint');
      const b = this.buf[this.pos++]!;
      out += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return out;
      mul *= 128;
    }
    throw new Error('varint over 10 bytes');
  }

  bytes(): Buffer {
    const n = this.varint();
    if (n > this.buf.length - this.pos) throw new Error(`length ${n} past the end of the message`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.advance(8);
        return;
      case 2:
        this.bytes();
        return;
      case 5:
        this.advance(4);
        return;
      default:
        throw new Error(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (n > this.buf.length - this.pos) throw new Error('truncated field');
    this.pos += n;
  }
}

/** One Any; a malformed one is kept (and marked) so that it is NACKed rather than breaking the response. */
function readAny(buf: Buffer): RawResource {
  const r = new Reader(buf);
  const out: RawResource = { type_url: '', value: Buffer.alloc(0) };
  try {
    while (!r.done) {
      const tag = r.varint();
      const field = Math.floor(tag / 8);
      const wireType = tag & 7;
      if (field === 1 && wireType === 2) out.type_url = r.bytes().toString('utf8');
      else if (field === 2 && wireType === 2) out.value = r.bytes();
      else r.skip(wireType);
    }
  } catch (err) {
    out.malformed = (err as Error).message;
  }
  return out;
}

/**
 * Why a message's top-level fields do not fit its bytes (a truncated
 * resource), or undefined. protobufjs decodes a string cut short without a
 * word, so a resource cut in its last field would otherwise pass for a
 * smaller valid one.
 */
export function wireProblem(buf: Buffer): string | undefined {
  const r = new Reader(buf);
  try {
    while (!r.done) r.skip(r.varint() & 7);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Throws on a malformed envelope (nothing to NACK then: no nonce is known). */
export function decodeRawResponse(buf: Buffer): RawDiscoveryResponse {
  const r = new Reader(buf);
  const out: RawDiscoveryResponse = { version_info: '', type_url: '', nonce: '', resources: [] };
  while (!r.done) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (wireType === 2 && field === 1) out.version_info = r.bytes().toString('utf8');
    else if (wireType === 2 && field === 2) out.resources.push(readAny(r.bytes()));
    else if (wireType === 2 && field === 4) out.type_url = r.bytes().toString('utf8');
    else if (wireType === 2 && field === 5) out.nonce = r.bytes().toString('utf8');
    else r.skip(wireType);
  }
  return out;
}
