/**
 * The balanced-flow programs of crossNetwork `allow` (bpf/flows.bpf.c): load, attach, pin, and
 * remove. Kept apart from the socket LB's loader so that either can change alone.
 *
 *  - berth_flow_record: cgroup_skb/egress at the same verified root cgroup as the socket hooks,
 *    through a pinned link (link_berth_flow_record), like them outliving berthd.
 *  - berth_flow_match: pinned as prog_berth_flow_match, the path iptables' xt_bpf rule names
 *    (`-m bpf --object-pinned`, src/datapath/crossnet.ts).
 *  - berth_flows: the LRU of balanced flows both share, pinned by name next to the other maps.
 * In crossNetwork `docker` none of it exists: removeFlows() detaches and unpins what an earlier
 * `allow` run left.
 */
import fs from 'node:fs';
import path from 'node:path';
import { bpfObjectPath, type NativeAddon } from '../native';
import type { DatapathOptions } from './types';

export const FLOWS_OBJECT = 'flows';
export const FLOW_RECORD_PROGRAM = 'berth_flow_record';
export const FLOW_MATCH_PROGRAM = 'berth_flow_match';
export const FLOWS_MAP = 'berth_flows';

/** What loadFlows did: the xt_bpf program's pin, or why there is none. */
export interface FlowsState {
  /** Pin path of berth_flow_match (what the iptables rule names), null when not loaded. */
  matchPin: string | null;
  /** The egress recorder is attached. */
  recording: boolean;
  /** Why the programs are not there (kernel too old, load refused), or null. */
  error: string | null;
}

/** Pin path of the match program for this pin dir. */
export function flowMatchPin(pinDir: string): string {
  return path.join(pinDir, `prog_${FLOW_MATCH_PROGRAM}`);
}

type Attach = (name: string, progFd: number, attachTypeId: number) => void;

/**
 * Load flows.bpf.o (reusing the pinned berth_sk_revnat), attach the recorder with `attach`
 * (datapath/index.ts's attachCgroup on the open root cgroup) and pin the match program.
 * Never throws: a kernel that cannot load or attach it leaves crossNetwork `allow` in its
 * fallback (crossnet.ts opens the backends' ports instead), which status and doctor report.
 */
export function loadFlows(native: NativeAddon, opts: DatapathOptions, attach: Attach): FlowsState {
  let obj;
  try {
    obj = native.loadObject(bpfObjectPath(FLOWS_OBJECT), opts.pinDir, []);
  } catch (e) {
    return { matchPin: null, recording: false, error: `loading ${FLOWS_OBJECT}.bpf.o: ${(e as Error).message.split('\n').slice(-3).join(' | ')}` };
  }
  try {
    const rec = obj.programs.find((p) => p.name === FLOW_RECORD_PROGRAM);
    const match = obj.programs.find((p) => p.name === FLOW_MATCH_PROGRAM);
    if (!rec || !match) return { matchPin: null, recording: false, error: `${FLOWS_OBJECT}.bpf.o lacks its programs` };
    // Pin the match program before the recorder runs: a rule naming a missing pin cannot exist.
    const pin = flowMatchPin(opts.pinDir);
    fs.rmSync(pin, { force: true });
    native.objPin(match.fd, pin);
    try {
      attach(rec.name, rec.fd, rec.attachTypeId);
    } catch (e) {
      fs.rmSync(pin, { force: true });
      return { matchPin: null, recording: false, error: `attaching ${FLOW_RECORD_PROGRAM}: ${(e as Error).message}` };
    }
    return { matchPin: pin, recording: true, error: null };
  } finally {
    native.closeObject(obj.handle);
  }
}

/** crossNetwork `docker`: detach the recorder and unpin what `allow` left. Returns what was removed. */
export function removeFlows(native: NativeAddon, pinDir: string): string[] {
  const removed: string[] = [];
  const link = path.join(pinDir, `link_${FLOW_RECORD_PROGRAM}`);
  if (fs.existsSync(link)) {
    try {
      const fd = native.objGet(link);
      try { native.linkDetach(fd); } finally { native.closeFd(fd); }
    } catch { /* unpinning below drops it with its last reference anyway */ }
    fs.rmSync(link, { force: true });
    removed.push(`pin ${link}`);
  }
  for (const p of [flowMatchPin(pinDir), path.join(pinDir, FLOWS_MAP)]) {
    if (fs.existsSync(p)) {
      fs.rmSync(p, { force: true });
      removed.push(`pin ${p}`);
    }
  }
  return removed;
}
