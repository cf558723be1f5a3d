/**
 * The datapath outlives berthd: kill -9 leaves every VIP working; a restarted berthd adopts the
 * pinned maps and links, keeps VIPs and backend ids, and removes what went away while it was down
 * only after its first full Docker list. `berth cleanup` then leaves the host as before.
 */
import test from 'ava';
import fs from 'node:fs';
import { Berthd, runCli, sleep, waitFor } from '../helpers/berthd';
import { ensureTestImage, runContainer, removeTestContainers, docker } from '../helpers/docker';
import { probeFromHost, tags } from '../helpers/probe';
import { snapshotHostState, diffHostState, hostAsBefore } from '../helpers/cleanup';
import { run } from '../../src/util/exec';

const SUITE = 'survival';

test('kill -9, restart, adoption, pruning after the first list, cleanup', async (t) => {
  await removeTestContainers(SUITE);
  await ensureTestImage();
  const before = await snapshotHostState();
  // The ids of the links pinned in this instance's pin dir: a restart must adopt them, not add more.
  const linkIds = async () => {
    const ids: number[] = [];
    for (const f of fs.readdirSync('/sys/fs/bpf/berth-surv').filter((x) => x.startsWith('link_')).sort()) {
      ids.push((JSON.parse((await run('bpftool', ['-j', 'link', 'show', 'pinned', `/sys/fs/bpf/berth-surv/${f}`])).stdout) as { id: number }).id);
    }
    return ids;
  };
  // DNS off: the map counts below are about the service's backends only (the DNS VIP would add
  // its own backend entries; dns.test.ts covers DNS across restarts).
  const d = new Berthd({ name: 'surv', extraArgs: ['--dns-port', 'off'] });
  t.teardown(async () => {
    await removeTestContainers(SUITE);
    await d.cleanup();
  });
  await d.start();
  const a = await runContainer({ suite: SUITE, name: 'bt-surv-a', labels: { 'berth.service': 'keep', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080', '--tag', 'a'] });
  const b = await runContainer({ suite: SUITE, name: 'bt-surv-b', labels: { 'berth.service': 'keep', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080', '--tag', 'b'] });
  const keep = await waitFor('keep with 2 backends', async () => (await d.services()).find((s) => s.name === 'keep' && s.backends.length === 2));
  const pinsBefore = (await run('ls', [`/sys/fs/bpf/berth-surv`])).stdout;
  const linksBefore = await linkIds();
  t.is(linksBefore.length, 8, 'one link per hook');

  await d.kill9();
  // Traffic keeps flowing with no berthd at all.
  const res = await probeFromHost('tcp', keep.vip, 80, 16);
  t.true(res.every((r) => r.ok), JSON.stringify(res.filter((r) => !r.ok)));
  t.deepEqual([...tags(res)].sort(), ['a', 'b']);
  t.is((await run('ls', [`/sys/fs/bpf/berth-surv`])).stdout, pinsBefore, 'pins untouched by the kill');

  // While berthd is down, b goes away.
  await docker.getContainer(b.id).remove({ force: true });

  // A berthd that cannot list Docker adopts the maps and withdraws nothing: without a full list
  // it cannot know that b is gone (issue 2 part 7: prune only after the first full list).
  const blind = new Berthd({ name: 'surv', extraArgs: ['--dns-port', 'off', '--docker-host', 'unix:///run/berth-surv-no-docker.sock'] });
  await blind.start(30000, 'serving');
  const blindStatus = await waitFor('the blind berthd reports Docker unreachable', async () => { const s = await blind.status(); return s.docker !== 'connected' && s.maps ? s : undefined; });
  t.false(blindStatus.ready, 'not ready without a Docker list');
  await sleep(1500); // several reconcile periods
  t.is((await blind.status()).maps?.backends, 2, 'both backends still in the maps');
  t.deepEqual(await linkIds(), linksBefore, 'the same links, adopted');
  await blind.stop();

  await d.start();
  const after = await waitFor('keep with 1 backend', async () => (await d.services()).find((s) => s.name === 'keep' && s.backends.length === 1));
  t.is(after.vip, keep.vip, 'VIP kept');
  t.is(after.vip6, keep.vip6, 'VIP6 kept');
  t.deepEqual(after.backends.map((x) => x.id), [a.id]);
  const res2 = await probeFromHost('tcp', keep.vip, 80, 16);
  t.true(res2.every((r) => r.ok));
  t.deepEqual([...tags(res2)], ['a'], 'b is no longer used');
  const st = await d.status();
  t.true(st.cgroupIsHostRoot);
  // Adopted, not duplicated: one program per hook at the root.
  t.deepEqual(await linkIds(), linksBefore, 'the same links, adopted');

  // A plain SIGTERM stop also leaves the datapath working.
  t.is(await d.stop(), 0);
  t.deepEqual([...tags(await probeFromHost('tcp', keep.vip, 80, 4))], ['a']);

  // cleanup: the host is as before berthd ran.
  await removeTestContainers(SUITE);
  const out = await d.cleanup();
  t.regex(out, /removed/);
  const cleaned = await snapshotHostState();
  t.deepEqual(diffHostState(before, cleaned), []);
  const again = await runCli(['cleanup', '--force', ...d.args.slice(0, 6)]);
  t.regex(again.stdout, /nothing of berth was left/);
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
