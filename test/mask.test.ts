/** Secret masking in job logs: pure, and the same whatever pieces the log arrives in. */
import { describe, expect, it } from 'vitest';
import { SecretMasker } from '../src/logs/mask';

const SECRETS = ['s3cr3t-VALUE', 's3cr3t-VALUE-long', 'line-one\nline-two'];

function streamed(secrets: string[], raw: Buffer, cuts: number[]): Buffer {
  const m = new SecretMasker(secrets);
  const out: Buffer[] = [];
  let at = 0;
  for (const c of [...cuts, raw.length]) {
    out.push(m.push(raw.subarray(at, c)));
    at = c;
  }
  out.push(m.end());
  return Buffer.concat(out);
}

describe('secret masking', () => {
  it('masks a printed secret as *** and leaves the rest alone', () => {
    const out = SecretMasker.maskAll(['hunter22'], Buffer.from('token=hunter22 ok\nagain hunter22'));
    expect(out.toString()).toBe('token=*** ok\nagain ***');
  });

  it('masks the longer of two secrets that share a start, and each line of a multi-line secret', () => {
    const out = SecretMasker.maskAll(SECRETS, Buffer.from('a s3cr3t-VALUE-long b s3cr3t-VALUE c line-two d'));
    expect(out.toString()).toBe('a *** b *** c *** d');
  });

  it('gives the same bytes however the stream is cut, including inside a secret', () => {
    const raw = Buffer.from('xx s3cr3t-VALUE-lon s3cr3t-VALUE-long yy s3cr3t-VAL');
    const whole = SecretMasker.maskAll(SECRETS, raw).toString();
    expect(whole).toBe('xx ***-lon *** yy s3cr3t-VAL');
    for (let a = 0; a < raw.length; a++)
      for (const b of [a + 1, a + 5, raw.length - 1])
        if (b > a && b < raw.length) expect(streamed(SECRETS, raw, [a, b]).toString()).toBe(whole);
  });

  it('holds back only what may begin a secret, and a fresh masker resumes where nothing was held', () => {
    const m = new SecretMasker(SECRETS);
    expect(m.push(Buffer.from('abc s3cr')).toString()).toBe('abc ');
    expect(m.held).toBe(4);
    expect(m.push(Buffer.from('ew ')).toString()).toBe('s3crew ');
    expect(m.held).toBe(0);
    // Resuming at this boundary with a new masker gives what the first would have.
    const rest = Buffer.from('s3cr3t-VALUE!');
    expect(new SecretMasker(SECRETS).push(rest).toString()).toBe(m.push(rest).toString());
  });

  it('never masks short values, and passes bytes through untouched without secrets', () => {
    const raw = Buffer.from([0xff, 0x00, 0x61, 0x62]);
    expect(SecretMasker.maskAll(['ab', ''], raw)).toEqual(raw);
    expect(SecretMasker.maskAll([], raw)).toEqual(raw);
  });
});
