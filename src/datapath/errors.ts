/**
 * Every error the datapath raises itself, in one catalogue. (Failures of the addon come as
 * NativeError with the errno code, e.g. E2BIG, and the operation; see src/native.ts.)
 */
export const DatapathErrorCode = {
  /** src/datapath/codec.ts and bpf/lb.h (as compiled into the addon) disagree on a layout. */
  LAYOUT: 'BERTH_DP_LAYOUT',
  /** A value cannot be encoded/decoded (bad IP text, unknown family/protocol bytes). */
  CODEC: 'BERTH_DP_CODEC',
  /** The BPF object lacks a program berth needs. */
  OBJECT: 'BERTH_DP_OBJECT',
  /** The cgroup root is unusable (not cgroup2). */
  CGROUP: 'BERTH_DP_CGROUP',
  /** bpfPinDir is not, and cannot be made, part of a bpf filesystem. */
  BPFFS: 'BERTH_DP_BPFFS',
  /** An `ip route` command failed. */
  ROUTE: 'BERTH_DP_ROUTE',
  /** sync()/status() after close(). */
  CLOSED: 'BERTH_DP_CLOSED',
} as const;

export type DatapathErrorCode = (typeof DatapathErrorCode)[keyof typeof DatapathErrorCode];

export class DatapathError extends Error {
  constructor(readonly code: DatapathErrorCode, message: string) {
    super(message);
    this.name = 'DatapathError';
  }
}
