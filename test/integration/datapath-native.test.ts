/**
 * The addon's edges that the datapath suite does not drive: sd_notify datagrams (path and
 * abstract sockets), generic tc attach/query/detach (what the proxy's redirect needs), and the
 * shape of its errors (errno, code, operation). Root, but no traffic.
 */
import test, { type ExecutionContext } from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { loadNative, bpfObjectPath, isNativeError, type NativeError } from '../../src/native';
import { run } from '../../src/util/exec';
import { until } from './datapath-util';

const RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
name = sys.argv[1]
s.bind('\\0' + name[1:] if name.startswith('@') else name)
print('bound', flush=True)
s.settimeout(10)
print('got', s.recv(4096).decode(), flush=True)
`;

for (const kind of ['path', 'abstract'] as const) {
  test(`sdNotify delivers one datagram to a ${kind} NOTIFY_SOCKET`, async (t) => {
    const name = kind === 'path'
      ? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'berth-dp-notify-')), 'notify.sock')
      : `@berth-test-dp-notify-${process.pid}`;
    const proc = spawn('python3', ['-c', RECEIVER, name]);
    t.teardown(() => { proc.kill('SIGKILL'); if (kind === 'path') fs.rmSync(path.dirname(name), { recursive: true, force: true }); });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    await until('receiver bound', async () => out.includes('bound'), 5000);
    loadNative().sdNotify(name, 'READY=1\nSTATUS=datapath test');
    await until('datagram received', async () => out.includes('got'), 5000);
    t.regex(out, /got READY=1\nSTATUS=datapath test/);
  });
}

test('sdNotify to a socket nobody listens on fails with ENOENT/ECONNREFUSED, naming the socket', (t) => {
  const e = t.throws(() => loadNative().sdNotify('/nonexistent/berth-test.sock', 'READY=1')) as NativeError;
  t.true(isNativeError(e));
  t.is(e.code, 'ENOENT');
  t.regex(e.message, /nonexistent\/berth-test\.sock/);
  const bad = t.throws(() => loadNative().sdNotify('relative.sock', 'READY=1')) as NativeError;
  t.is(bad.code, 'EINVAL');
});

test('errors carry errno, code and the operation', async (t) => {
  const n = loadNative();
  const e1 = t.throws(() => n.objGet('/sys/fs/bpf/berth-test-dp-missing/pin')) as NativeError;
  t.deepEqual([e1.errno, e1.code], [2, 'ENOENT']);
  t.regex(e1.syscall, /^bpf_obj_get \/sys\/fs\/bpf\/berth-test-dp-missing\/pin$/);
  const e2 = t.throws(() => n.loadObject('/nonexistent.bpf.o')) as NativeError;
  t.is(e2.code, 'ENOENT');
  t.regex(e2.message, /bpf_object__open_file \/nonexistent\.bpf\.o/);
  const e3 = await t.throwsAsync(n.hostCgroup2({ hostProc: '/nonexistent-proc', target: '/run/berth-test-dp-never' })) as NativeError;
  t.is(e3.code, 'ENOENT');
  t.regex(e3.message, /\/nonexistent-proc\/1\/ns\/cgroup/);
  t.false(fs.existsSync('/run/berth-test-dp-never'));
  const e4 = t.throws(() => n.openDir('/nonexistent-dir')) as NativeError;
  t.is(e4.code, 'ENOENT');
});

/** sock_lb.bpf.o loaded with its maps pinned in a pin dir of the test's own (removed afterwards). */
function loadSockLb(t: ExecutionContext, what: string) {
  const n = loadNative();
  const pinDir = `/sys/fs/bpf/berth-test-${what}-${process.pid}`;
  fs.mkdirSync(pinDir, { recursive: true });
  const obj = n.loadObject(bpfObjectPath('sock_lb'), pinDir, ['berth_udp_destroy']);
  t.teardown(() => { n.closeObject(obj.handle); fs.rmSync(pinDir, { recursive: true, force: true }); });
  return { n, obj };
}

test('a map write with a wrongly sized key says which map and what size it wants', (t) => {
  const { n, obj } = loadSockLb(t, 'dpmap');
  // This kernel (>= 6.5) loads the optional iterator: nothing skipped.
  t.deepEqual([obj.skipped, obj.skipReason], [[], null]);
  t.true(obj.programs.every((p) => p.fd >= 0));
  const svc = obj.maps.find((m) => m.name === 'berth_services')!;
  t.true(svc.pinned);
  const e = t.throws(() => n.mapUpdate(svc.fd, Buffer.alloc(3), Buffer.alloc(8))) as NativeError;
  t.is(e.code, 'EINVAL');
  t.regex(e.message, /berth_services.*key is 3 bytes, the map wants 24/);
  const info = n.mapInfo(svc.fd);
  t.deepEqual([info.keySize, info.valueSize, info.maxEntries], [n.sizes.svcKey, n.sizes.svcVal, n.constants.MAX_SERVICE_ENTRIES]);
  t.is(n.mapLookup(svc.fd, Buffer.alloc(24)), null);
  t.false(n.mapDelete(svc.fd, Buffer.alloc(24)));
});

test('batched map writes: in order, E2BIG at the exact element of a full map, ENOENT index on delete, sizes checked first', (t) => {
  const { n, obj } = loadSockLb(t, 'dpbatch');
  // berth_doomed: a hash of MAX_DESTROY entries, 20-byte keys, 1-byte values.
  const m = obj.maps.find((x) => x.name === 'berth_doomed')!;
  const max = n.constants.MAX_DESTROY;
  const key = (i: number) => { const k = Buffer.alloc(n.sizes.destroyKey); k.writeUInt32LE(i, 0); return k; };
  const keys = Buffer.concat(Array.from({ length: max + 10 }, (_, i) => key(i + 1)));
  const vals = Buffer.alloc(max + 10, 1);
  const full = n.mapUpdateBatch(m.fd, keys, vals, max + 10);
  t.is(full.done, max, 'every element up to the capacity was written');
  t.is(full.error?.code, 'E2BIG');
  t.regex(full.error!.message, /bpf_map_update_batch berth_doomed/);
  t.deepEqual(n.mapLookup(m.fd, key(max)), Buffer.from([1]));
  t.is(n.mapLookup(m.fd, key(max + 1)), null);
  t.is(n.mapDump(m.fd).count, max);
  // Delete 1..3, then a batch whose 3rd key is already gone: done 2, ENOENT.
  t.deepEqual(n.mapDeleteBatch(m.fd, Buffer.concat([key(1), key(2), key(3)]), 3), { done: 3, error: null, unsupported: false });
  const del = n.mapDeleteBatch(m.fd, Buffer.concat([key(4), key(5), key(1), key(6)]), 4);
  t.is(del.done, 2);
  t.is(del.error?.code, 'ENOENT');
  t.not(n.mapLookup(m.fd, key(6)), null, 'elements after the failing one are not touched');
  // Buffers that do not fit the map: thrown before any syscall.
  const e = t.throws(() => n.mapUpdateBatch(m.fd, Buffer.alloc(19), Buffer.alloc(1), 1)) as NativeError;
  t.is(e.code, 'EINVAL');
  t.regex(e.message, /keys is 19 bytes, the map wants 20/);
  t.deepEqual(n.mapUpdateBatch(m.fd, Buffer.alloc(0), Buffer.alloc(0), 0), { done: 0, error: null, unsupported: false });
  t.false(full.unsupported);
  // A map type without batch ops (socket storage): unsupported, so the datapath writes element
  // by element. The kernel's ENOTSUPP (524) has no userspace errno name.
  const sk = obj.maps.find((x) => x.name === 'berth_sk_revnat')!;
  const none = n.mapUpdateBatch(sk.fd, Buffer.alloc(4), Buffer.alloc(n.sizes.skRevnat), 1);
  t.deepEqual([none.done, none.unsupported], [0, true], JSON.stringify(none));
});

test('tc: attach a sched_cls program on a test veth, query it, detach it, remove the qdisc', async (t) => {
  const n = loadNative();
  const link = `bt-dp-tc${process.pid % 10000}`;
  const pinDir = `/sys/fs/bpf/berth-test-dptc-${process.pid}`;
  await run('ip', ['link', 'del', link]);
  // A veth pair (its peer goes with it); no address, never up: no traffic at all.
  const add = await run('ip', ['link', 'add', link, 'type', 'veth', 'peer', 'name', `${link}p`]);
  t.is(add.code, 0, add.stderr);
  fs.mkdirSync(pinDir, { recursive: true });
  let handle = -1;
  t.teardown(async () => {
    if (handle >= 0) n.closeObject(handle);
    await run('ip', ['link', 'del', link]);
    fs.rmSync(pinDir, { recursive: true, force: true });
  });
  // Any sched_cls program will do; the proxy's redirect program is the one berth ships.
  const obj = n.loadObject(bpfObjectPath('redirect'), pinDir);
  handle = obj.handle;
  const prog = obj.programs.find((p) => p.type === 'sched_cls');
  t.truthy(prog, obj.programs.map((p) => `${p.name}:${p.type}`).join(','));
  const ifindex = Number(fs.readFileSync(`/sys/class/net/${link}/ifindex`, 'utf8'));
  const a = n.tcAttach({ ifindex, direction: 'ingress', progFd: prog!.fd, priority: 47111, handle: 1 });
  t.is(a.priority, 47111);
  t.is(a.handle, 1);
  t.is(n.tcQuery({ ifindex, direction: 'ingress', priority: 47111, handle: 1 }), a.progId);
  t.is(n.progInfo(prog!.fd).id, a.progId);
  const shown = (await run('tc', ['filter', 'show', 'dev', link, 'ingress'])).stdout;
  t.regex(shown, /pref 47111 bpf/);
  t.true(n.tcDetach({ ifindex, direction: 'ingress', priority: 47111, handle: 1 }));
  t.false(n.tcDetach({ ifindex, direction: 'ingress', priority: 47111, handle: 1 }), 'second detach: nothing there');
  t.is(n.tcQuery({ ifindex, direction: 'ingress', priority: 47111, handle: 1 }), null);
  t.true(n.tcHookDestroy({ ifindex }));
  t.notRegex((await run('tc', ['qdisc', 'show', 'dev', link])).stdout, /clsact/);
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
