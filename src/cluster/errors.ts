/**
 * The cluster module's errors, in one catalogue (DESIGN lesson 10): a stable code and a message
 * a user reads. Record problems (a peer wrote something berth must not trust) are reported and
 * that record is ignored; they never stop berthd.
 */
export type ClusterErrorCode =
  | 'BERTH_CLUSTER_RECORD'
  | 'BERTH_CLUSTER_VIP_OWNED'
  | 'BERTH_CLUSTER_VIP_MISMATCH'
  | 'BERTH_CLUSTER_SUBNET_OVERLAP'
  | 'BERTH_CLUSTER_PORTS_DISAGREE'
  | 'BERTH_CLUSTER_NODE_ADDRESS';

export class ClusterError extends Error {
  constructor(readonly code: ClusterErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ClusterError';
  }
}

/** How to make Docker hosts' container subnets distinct (README "Several hosts"). */
export const SUBNET_FIX =
  "give each host its own container subnets: \"bip\" and \"default-address-pools\" in /etc/docker/daemon.json (e.g. host 1 172.18.0.1/16, host 2 172.19.0.1/16), then restart dockerd and recreate the containers";
