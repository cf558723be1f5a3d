/**
 * Seed 000, reproduced: berthd inside a container started with --cgroupns=private (privileged,
 * host network, the host's /proc at /host/proc). Mounting cgroup2 from inside would give the
 * container's own cgroup as "root" and only berthd's own sockets would see VIPs. With
 * cgroupRoot: auto berthd must notice the private namespace, enter PID 1's cgroup and mount
 * namespaces, attach at the real host root, say so truthfully, and serve host and container clients.
 */
import test from 'ava';
import { hostAsBefore } from '../helpers/cleanup';
import fs from 'node:fs';
import { REPO, berthdArgs, runCli, waitFor } from '../helpers/berthd';
import { ensureTestImage, runContainer, removeTestContainers, docker, TEST_IMAGE } from '../helpers/docker';
import { probeFromHost, probeFromContainer, tags } from '../helpers/probe';
import { getJson } from '../../src/api/server';
import type { StatusView, ServiceView } from '../../src/cli/format';
import { run } from '../../src/util/exec';
import { cgroup2RootMounts } from '../../src/datapath/cgroup';
import { loadNative } from '../../src/native';

const SUITE = 'cgroupns';
const NAME = 'cgns';

test('berthd in a private cgroup namespace attaches at the host root and serves everyone', async (t) => {
  await removeTestContainers(SUITE);
  const image = await ensureTestImage();
  const args = berthdArgs({ name: NAME, extraArgs: ['--host-proc', '/host/proc', '--envoy-path', '/nonexistent/envoy'] });
  for (const dir of [`/run/berth-${NAME}`, `/var/lib/berth-${NAME}`]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  t.teardown(async () => {
    await removeTestContainers(SUITE);
    const r = await runCli(['cleanup', '--force', ...args.filter((a) => a !== '/host/proc' && a !== '--host-proc')]);
    if (r.code !== 0) throw new Error(`cleanup failed: ${r.stderr}`);
  });

  // berthd's container: the host's node and tools read-only, the repo read-only, its dirs shared with the host.
  const ctr = await docker.createContainer({
    Image: image ?? TEST_IMAGE,
    name: 'bt-cgns-berthd',
    Labels: { 'berth-test': SUITE },
    Cmd: ['/usr/bin/node', '/berth/dist/berthd.js', ...args],
    Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    HostConfig: {
      // Not Privileged: on these VMs it fails ("unable to apply caps": CAP_SYS_RESOURCE is not in the
      // VM's bounding set). Exactly what berthd needs instead: bpf() (SYS_ADMIN: Docker 20.10 knows no
      // CAP_BPF/CAP_PERFMON), netlink/iptables,
      // setns()+mount into PID 1's namespaces (SYS_ADMIN, SYS_CHROOT), reading PID 1's ns links
      // through the host /proc (SYS_PTRACE), and no seccomp/apparmor filter on bpf()/setns().
      CapAdd: ['SYS_ADMIN', 'NET_ADMIN', 'NET_RAW', 'SYS_CHROOT', 'SYS_PTRACE', 'DAC_OVERRIDE'],
      SecurityOpt: ['seccomp=unconfined', 'apparmor=unconfined'],
      CgroupnsMode: 'private',
      NetworkMode: 'host',
      Binds: [
        '/usr:/usr:ro', '/usr/lib:/lib:ro', '/usr/lib64:/lib64:ro', '/etc/alternatives:/etc/alternatives:ro',
        `${REPO}:/berth:ro`, '/proc:/host/proc', '/var/run/docker.sock:/var/run/docker.sock',
        '/sys/fs/bpf:/sys/fs/bpf', `/run/berth-${NAME}:/run/berth-${NAME}`, `/var/lib/berth-${NAME}:/var/lib/berth-${NAME}`,
      ],
    },
  } as Parameters<typeof docker.createContainer>[0]);
  await ctr.start();
  const socket = `/run/berth-${NAME}/berth.sock`;
  const logs = async () => (await ctr.logs({ stdout: true, stderr: true, tail: 40 })).toString();
  try {
    await waitFor('containerized berthd ready', async () => (await getJson<{ ready: boolean }>(socket, '/healthz', 1000)).ready, 40000);
  } catch (e) {
    t.fail(`${(e as Error).message}\n${await logs()}`);
    return;
  }
  // It really is in a private cgroup namespace.
  const inspect = await ctr.inspect();
  const pid = inspect.State.Pid;
  // (/proc/1/ns is not readable on these VMs; this test process is in the host's cgroup namespace.)
  t.not(fs.readlinkSync(`/proc/${pid}/ns/cgroup`), fs.readlinkSync('/proc/self/ns/cgroup'), 'berthd runs in a private cgroup namespace');

  const st = await getJson<StatusView>(socket, '/status');
  t.true(st.cgroupIsHostRoot, `attach point ${st.cgroupRoot} verified as the host root`);
  t.true(st.attached.includes('connect4'));
  // bpftool, from the host, sees THIS berthd's program (by the id behind its pinned link) on the
  // root of the v2 hierarchy (/sys/fs/cgroup/unified here, /sys/fs/cgroup on Ubuntu 21.10+).
  const v2 = cgroup2RootMounts()[0];
  const n = loadNative();
  const fd = n.objGet(`/sys/fs/bpf/berth-${NAME}/link_berth_sock4_connect`);
  const progId = n.linkInfo(fd).progId;
  n.closeFd(fd);
  const tree = (await run('bpftool', ['cgroup', 'show', v2])).stdout;
  t.regex(tree, new RegExp(`^\\s*${progId}\\s.*berth_sock4_connect`, 'm'), tree);
  t.is(st.cgroupRoot, `/run/berth-${NAME}/cgroupv2`, 'attached through the cgroup2 mount made in the host namespaces');
  t.is(st.envoy.state, 'missing');

  // A backend container and clients on the host and in another container.
  await runContainer({ suite: SUITE, name: 'bt-cgns-web', labels: { 'berth.service': 'cgweb', 'berth.ports': '80:8080' }, cmd: ['berth-tcp-echo', '8080', '--tag', 'cgweb'] });
  const client = await runContainer({ suite: SUITE, name: 'bt-cgns-client', labels: {}, cmd: ['sleep', '600'] });
  const svc = await waitFor('cgweb with a backend', async () => (await getJson<ServiceView[]>(socket, '/services')).find((s) => s.name === 'cgweb' && s.backends.length === 1));
  const fromHost = await probeFromHost('tcp', svc.vip, 80, 4);
  t.deepEqual([...tags(fromHost)], ['cgweb'], JSON.stringify(fromHost));
  const fromCtr = await probeFromContainer(client.id, 'tcp', svc.vip, 80, 4);
  t.deepEqual([...tags(fromCtr)], ['cgweb'], JSON.stringify(fromCtr));

  await ctr.stop({ t: 5 });
});

// Every integration file ends with the host-as-before check.
hostAsBefore(test);
