/**
 * Summarise a V8 .cpuprofile (node --cpu-prof) or .heapprofile (node --heap-prof) as text:
 * the top functions by self and by inclusive time (ms) or allocated bytes (MB still live at the
 * end of the sampling heap profile), each as `function file:line`.
 *
 *   node dist/scripts/bench/profile-summary.js FILE [--top 30] [--from MS --to MS]
 *
 * --from/--to (cpu only): only samples in that window (ms after the profile started).
 */
import fs from 'node:fs';
import path from 'node:path';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface CpuNode { id: number; callFrame: CallFrame; children?: number[] }
interface CpuProfile { nodes: CpuNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }
interface HeapNode { callFrame: CallFrame; selfSize: number; children: HeapNode[] }

function label(f: CallFrame): string {
  return `${f.functionName || '(anonymous)'} ${path.basename(f.url)}:${f.lineNumber + 1}`;
}

function top(m: Map<string, number>, n: number, unit: (x: number) => string): string[] {
  return [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${unit(v).padStart(10)}  ${k}`);
}

function cpu(p: CpuProfile, n: number, from: number, to: number): void {
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const parent = new Map<number, number>();
  for (const x of p.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  let t = 0;
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] / 1000;
    if (t < from || t > to) continue;
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    total += dt;
    const leaf = byId.get(p.samples[i])!;
    self.set(label(leaf.callFrame), (self.get(label(leaf.callFrame)) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const l = label(byId.get(id)!.callFrame);
      if (seen.has(l)) continue;
      seen.add(l);
      incl.set(l, (incl.get(l) ?? 0) + dt);
    }
  }
  const ms = (x: number) => `${x.toFixed(0)} ms`;
  console.log(`total ${ms(total)} of samples (profile ${((p.endTime - p.startTime) / 1000).toFixed(0)} ms)\n-- self --`);
  console.log(top(self, n, ms).join('\n'));
  console.log('-- inclusive --');
  console.log(top(incl, n, ms).join('\n'));
}

function heap(root: HeapNode, n: number): void {
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const walk = (x: HeapNode, stack: string[]): number => {
    const l = label(x.callFrame);
    self.set(l, (self.get(l) ?? 0) + x.selfSize);
    let sum = x.selfSize;
    for (const c of x.children) sum += walk(c, [...stack, l]);
    if (!stack.includes(l)) incl.set(l, (incl.get(l) ?? 0) + sum);
    return sum;
  };
  const total = walk(root, []);
  const mb = (x: number) => `${(x / 1048576).toFixed(1)} MB`;
  console.log(`total ${mb(total)} sampled live\n-- self --`);
  console.log(top(self, n, mb).join('\n'));
  console.log('-- inclusive --');
  console.log(top(incl, n, mb).join('\n'));
}

const file = process.argv[2];
const arg = (k: string) => {
  const i = process.argv.indexOf(`--${k}`);
  return i >= 0 ? Number(process.argv[i + 1]) : undefined;
};
const data = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile | { head: HeapNode };
if ('head' in data) heap(data.head, arg('top') ?? 30);
else cpu(data, arg('top') ?? 30, arg('from') ?? 0, arg('to') ?? Infinity);
