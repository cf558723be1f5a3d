/**
 * berth's own modules as the bench uses them, loaded at run time from dist/ so that the harness
 * builds and runs while a part has not landed yet (that scenario is then "not run: ...").
 * Also the synthetic data: services and Docker snapshots of any size, whose backends are loopback
 * addresses (127.x), so that even a stray connect to a synthetic VIP could never leave the host.
 */
import type { DatapathApi, DatapathOptions } from '../../../src/datapath/types';
import type { ContainerInfo, DesiredState, DockerSnapshot, HostInfo, Service } from '../../../src/model/types';
import { NotRun as NotRunError, ipv4Add, optionalRequire, cidrBase } from './util';

export interface DatapathClass {
  open(opts: DatapathOptions): Promise<DatapathApi>;
  cleanup(opts: DatapathOptions): Promise<unknown>;
}

export interface VipStoreLike {
  save(): void;
}

export interface ModelModule {
  buildDesiredState(snap: DockerSnapshot, host: HostInfo, o: { serviceCidr: string; serviceCidr6: string; store: VipStoreLike }): DesiredState;
  VipStore: { inMemory(): VipStoreLike };
}

export function loadDatapath(): DatapathClass {
  const m = optionalRequire<{ Datapath?: DatapathClass }>('src/datapath/index.js', 'the datapath');
  if (!m.Datapath || typeof m.Datapath.open !== 'function') throw new NotRunError('src/datapath does not export class Datapath with static open()');
  return m.Datapath;
}

export function loadModel(): ModelModule {
  const m = optionalRequire<Partial<ModelModule>>('src/model/index.js', 'the model');
  if (typeof m.buildDesiredState !== 'function' || !m.VipStore) throw new NotRunError('src/model does not export buildDesiredState and VipStore');
  return m as ModelModule;
}

export function silentLogger(): DatapathOptions['logger'] {
  const m = optionalRequire<{ silentLogger: () => DatapathOptions['logger'] }>('src/util/log.js', 'the logger');
  return m.silentLogger();
}

/** Loopback backend address number j (127.1.0.0 + j): never routed off the host. */
export function loopbackIp(j: number): string {
  return ipv4Add('127.1.0.0', j);
}

function fakeId(prefix: string, i: number): string {
  return (prefix + i.toString(16)).padStart(64, '0').slice(-64);
}

/**
 * n synthetic services with VIPs range+2, range+3, ... (one TCP port each, `backends` loopback
 * backends each), sorted by name like the model's output. The bench's target service uses +1.
 */
export function syntheticServices(n: number, range: string, backends = 1): Service[] {
  const base = cidrBase(range);
  const out: Service[] = [];
  for (let i = 0; i < n; i++) {
    out.push({
      name: `syn-${String(i).padStart(6, '0')}`,
      kind: 'service',
      vip: ipv4Add(base, 2 + i),
      vip6: null,
      ports: [{ port: 80, protocol: 'tcp', targetPort: 8080 }],
      backends: Array.from({ length: backends }, (_, b) => ({
        container: `syn-${i}-${b}`,
        id: fakeId('b', i * backends + b),
        ip: loopbackIp(i * backends + b),
        ip6: null,
      })),
      routes: [],
      ingress: null,
      errors: [],
    });
  }
  return out;
}

/** A Docker snapshot of `services` × `replicas` running containers labelled for berth. */
export function syntheticSnapshot(services: number, replicas: number): DockerSnapshot {
  const containers: ContainerInfo[] = [];
  for (let s = 0; s < services; s++) {
    for (let r = 0; r < replicas; r++) {
      const j = s * replicas + r;
      containers.push({
        id: fakeId('c', j),
        name: `svc-${s}-${r}`,
        labels: { 'berth.service': `svc-${s}`, 'berth.ports': '80:8080' },
        state: 'running',
        health: 'none',
        stopping: false,
        exposedPorts: [],
        networks: [{ name: 'bench-syn', id: fakeId('n', 1), ip: loopbackIp(j), ip6: null }],
      });
    }
  }
  return {
    containers,
    networks: [{ id: fakeId('n', 1), name: 'bench-syn', subnets: ['127.1.0.0/16'], gateways: [] }],
    takenAt: Date.now(),
  };
}

