/**
 * Masks a job's secret values in its log, as GitHub and GitLab do: each occurrence becomes `***`.
 *
 * The log is streamed in pieces, so a secret can straddle two of them. The masker decides a byte only once
 * every secret that could start there is fully in view, and holds back the rest (at most the longest secret
 * less one byte). That makes it deterministic across restarts: a masker started afresh at any point where an
 * earlier one held nothing back emits exactly what the earlier one would have. The run activity relies on
 * this to resume a stream after a crash at a (raw, masked) offset pair and re-send identical bytes.
 */

export const MASK = Buffer.from('***');
/**
 * Shorter values are not masked: masking "on" or a one-letter value would wreck every log and hide nothing
 * that matters (GitLab refuses to mask values under 8 characters; we take 4).
 */
export const MIN_MASKED_LENGTH = 4;

/** The values to look for: each secret whole and, for a multi-line secret, each of its lines. */
export function maskableValues(secrets: Iterable<string>): Buffer[] {
  const values = new Set<string>();
  for (const s of secrets) {
    for (const v of [s, ...s.split(/\r?\n/)]) if (Buffer.byteLength(v) >= MIN_MASKED_LENGTH) values.add(v);
  }
  // Longest first: where two secrets match at one place, the longer one is masked whole.
  return [...values].map((v) => Buffer.from(v)).sort((a, b) => b.length - a.length);
}

export class SecretMasker {
  private readonly source: string[];
  private readonly secrets: Buffer[];
  private readonly firstBytes: Set<number>;
  private carry: Buffer = Buffer.alloc(0);

  constructor(secrets: Iterable<string>) {
    this.source = [...secrets];
    this.secrets = maskableValues(this.source);
    this.firstBytes = new Set(this.secrets.map((s) => s[0]!));
  }

  /** Bytes taken in but not yet emitted: they may begin a secret. */
  get held(): number {
    return this.carry.length;
  }

  /** Takes the next raw bytes; returns the masked bytes that are now decided. */
  push(raw: Buffer): Buffer {
    if (this.secrets.length === 0) return raw;
    return this.scan(this.carry.length > 0 ? Buffer.concat([this.carry, raw]) : raw, false);
  }

  /** The stream ended: decides and returns what was held back. */
  end(): Buffer {
    if (this.carry.length === 0) return Buffer.alloc(0);
    return this.scan(this.carry, true);
  }

  /** Masks a whole log with the same secrets, apart from this stream. */
  maskWhole(raw: Buffer): Buffer {
    return SecretMasker.maskAll(this.source, raw);
  }

  /** Masks a whole log at once: the same bytes a stream of any pieces would produce. */
  static maskAll(secrets: Iterable<string>, raw: Buffer): Buffer {
    const m = new SecretMasker(secrets);
    return Buffer.concat([m.push(raw), m.end()]);
  }

  private scan(buf: Buffer, final: boolean): Buffer {
    const out: Buffer[] = [];
    let emitted = 0;
    let i = 0;
    this.carry = Buffer.alloc(0);
    while (i < buf.length) {
      if (!this.firstBytes.has(buf[i]!)) {
        i++;
        continue;
      }
      let matched: Buffer | undefined;
      let undecided = false;
      for (const s of this.secrets) {
        const avail = buf.length - i;
        if (avail >= s.length) {
          if (!matched && buf.compare(s, 0, s.length, i, i + s.length) === 0) matched = s;
        } else if (!final && buf.compare(s, 0, avail, i, buf.length) === 0) {
          // This secret may continue in bytes not seen yet: nothing from here on is decided.
          undecided = true;
          break;
        }
      }
      if (undecided) {
        this.carry = Buffer.from(buf.subarray(i));
        break;
      }
      if (matched) {
        out.push(buf.subarray(emitted, i), MASK);
        i += matched.length;
        emitted = i;
      } else i++;
    }
    const end = buf.length - this.carry.length;
    if (emitted < end) out.push(buf.subarray(emitted, end));
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }
}
