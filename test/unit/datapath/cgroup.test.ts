import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cgroup2RootMounts } from '../../../src/datapath/cgroup';
import { routeMetric } from '../../../src/datapath/routes';

/** Temporary directories of mountinfo(), removed after the file's tests. */
const dirs: string[] = [];
test.after.always(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function mountinfo(lines: string[]): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-dp-mi-'));
  dirs.push(dir);
  const f = path.join(dir, 'mountinfo');
  fs.writeFileSync(f, `${lines.join('\n')}\n`);
  return f;
}

const cases: { name: string; lines: string[]; want: string[] }[] = [
  {
    name: 'Debian hybrid: v1 controllers, v2 at /sys/fs/cgroup/unified',
    lines: [
      '30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755',
      '31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate',
      '32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd',
      '33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct',
    ],
    want: ['/sys/fs/cgroup/unified'],
  },
  {
    name: 'Ubuntu unified: v2 at /sys/fs/cgroup',
    lines: ['35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot'],
    want: ['/sys/fs/cgroup'],
  },
  {
    name: 'container with the host cgroup namespace: the mount shows its own cgroup, not the root',
    lines: ['700 690 0:30 /system.slice/docker-abc.scope /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw'],
    want: [],
  },
  {
    name: 'berth\'s own mount, a path with a space (octal escape)',
    lines: ['90 25 0:30 / /run/berth\\040x/cgroupv2 rw,nosuid,nodev,noexec,relatime shared:50 - cgroup2 cgroup2 rw'],
    want: ['/run/berth x/cgroupv2'],
  },
  { name: 'no cgroup2 at all', lines: ['22 1 0:21 / /proc rw - proc proc rw'], want: [] },
];

for (const c of cases) {
  test(`cgroup2 root mounts: ${c.name}`, (t) => {
    t.deepEqual(cgroup2RootMounts(mountinfo(c.lines)), c.want);
  });
}

test('route metric: stable per pin dir, distinct for test pin dirs, in berth\'s band', (t) => {
  // Stable: the same number in every release (a changed metric would orphan the routes of a
  // berthd that is upgraded in place).
  t.is(routeMetric('/sys/fs/bpf/berth'), 6606);
  t.is(routeMetric('/sys/fs/bpf/berth-test-dp'), 4256);
  // Distinct for the pin dirs berthds of the integration suite use side by side with a real one.
  const dirs = ['', '-test-dp', '-surv', '-labels', '-metrics', '-dockerd', '-changes', '-flush', '-notify', '-notify2', '-slb', '-cgns',
    '-ing-iptables', '-ing-ebpf', '-ing-switch', '-bt-dh-dp'].map((x) => `/sys/fs/bpf/berth${x}`);
  t.is(new Set(dirs.map(routeMetric)).size, dirs.length, 'no two of these pin dirs share a metric');
  for (const d of ['/a', '/sys/fs/bpf/berth-x', '/sys/fs/bpf/berth-slb']) {
    const m = routeMetric(d);
    t.true(m >= 4096 && m < 8192, `${d}: ${m}`);
  }
});
