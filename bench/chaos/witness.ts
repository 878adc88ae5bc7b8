/**
 * The chaos run's outside witness: a process of its own that job scripts report to (`curl -X POST
 * /start/<job>` and `/end/<job>`), so "ran once" is counted by something Marina does not control. Each
 * report is appended to a file before it is answered; GET /counts reads them back.
 *   node --import tsx bench/chaos/witness.ts <port> <file>
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [port, file] = [Number(process.argv[2]), process.argv[3]!];

export type WitnessCounts = Record<string, { start: number; end: number }>;

export function readCounts(path: string): WitnessCounts {
  const counts: WitnessCounts = {};
  if (!existsSync(path)) return counts;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const [what, id] = line.split(' ');
    if (!id || (what !== 'start' && what !== 'end')) continue;
    (counts[id] ??= { start: 0, end: 0 })[what]++;
  }
  return counts;
}

if (require.main === module) {
  createServer((req, res) => {
    const m = /^\/(start|end)\/([\w.-]+)$/.exec(req.url ?? '');
    if (req.method === 'POST' && m) {
      appendFileSync(file, `${m[1]} ${m[2]} ${Date.now()}\n`);
      res.writeHead(204).end();
    } else if (req.method === 'GET' && req.url === '/counts') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(readCounts(file)));
    } else res.writeHead(404).end();
  }).listen(port, '127.0.0.1');
}
