/**
 * What the running kernel lacks that berth degrades around (README "What it does not do yet"),
 * so that integration tests assert the degraded behaviour on old kernels (the VM kernel matrix
 * runs them on 5.10, 6.1 and 6.12) instead of skipping.
 */
import { btfHasFunc } from '../../src/cli/doctor';

export { kernelAtLeast } from '../../src/util/kernel';
import { kernelAtLeast } from '../../src/util/kernel';

/**
 * What connect() to a VIP without a ready backend fails with: ECONNREFUSED where the hook can
 * set it (bpf_set_retval, Linux 5.18), EPERM (a hook returning "deny") before.
 */
export const REFUSED_ERRNO = kernelAtLeast(5, 18) ? 'ECONNREFUSED' : 'EPERM';

/** Whether removing a backend destroys connected UDP sockets to it (bpf_sock_destroy, Linux 6.5). */
export const HAS_SOCK_DESTROY = btfHasFunc('bpf_sock_destroy');

/**
 * Whether getsockopt(SO_NETNS_COOKIE) is the kernel's own (Linux 5.14); before, berth attaches
 * one more cgroup program (sock_create, bpf/netns_cookie.bpf.c) that hands cookies to probe sockets.
 */
export const HAS_NETNS_COOKIE_OPTION = kernelAtLeast(5, 14);
