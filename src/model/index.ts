/** model/: container labels -> validated desired state; VIP derivation and persistence. */
export * from './types';
export { buildDesiredState, backendOf, routeOrder, DEFAULT_SERVICE_CIDR, DEFAULT_SERVICE_CIDR6, DEFAULT_INGRESS_LISTEN } from './desired';
export type { BuildOptions } from './desired';
export { decodeLabels, parsePorts, isDnsLabel, httpLabel, LABEL_PREFIX, LABEL_SERVICE, LABEL_PORTS, LABEL_VIP, LABEL_VIP6 } from './labels';
export type { ContainerSpec, HttpRouteSpec, DecodeResult } from './labels';
export { VipStore, storeKey, DEFAULT_VIPSTORE_PATH } from './vipstore';
export type { VipAssignment } from './vipstore';
export { deriveVip, vipCandidate, vipProblem, makeVipRules, usableSize } from './vip';
export type { ServiceKind, VipRules } from './vip';
export { parseIp, formatIp, canonicalIp, parseCidr, cidrContains, cidrAt, cidrLast, isLoopback, sameAddr } from './ip';
export type { Addr, Cidr, Family } from './ip';
export { LABEL_ERRORS, labelError, ModelError } from './errors';
export type { LabelErrorCode, ModelErrorCode } from './errors';
export { hostBackendAddress, placeBackend, DEFAULT_BRIDGE, type NetworkEnv, type Placement } from './network';
