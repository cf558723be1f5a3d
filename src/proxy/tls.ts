/**
 * TLS material for TLS ingresses: `<tlsDir>/<host>.crt` (PEM, leaf first, chain after it) and
 * `<tlsDir>/<host>.key` (PEM) per host name. Loaded and checked here so that a bad pair costs only
 * that host's TLS chain, with a message that says what is wrong; Envoy receives the PEM over SDS
 * (it never reads the files itself, so it needs no access to tlsDir).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { HostCert } from './resources';

/** The two files of a host. */
export function certPaths(tlsDir: string, host: string): { cert: string; key: string } {
  return { cert: path.join(tlsDir, `${host}.crt`), key: path.join(tlsDir, `${host}.key`) };
}

function readPem(file: string, what: string): string | { error: string } {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { error: `${what} ${file} does not exist` };
    return { error: `${what} ${file} is unreadable (${code ?? (e as Error).message})` };
  }
}

/**
 * Check a certificate chain and key (PEM text) for `host`: both parse, the key belongs to the
 * first certificate, and the certificate names the host (SAN/CN, wildcards as in RFC 6125) and is
 * within its validity period at `now`. Pure apart from the clock argument.
 */
export function checkPair(host: string, certPem: string, keyPem: string, now = new Date()): HostCert {
  let cert: crypto.X509Certificate;
  try {
    cert = new crypto.X509Certificate(certPem);
  } catch (e) {
    return { error: `the certificate is not PEM X.509 (${(e as Error).message})` };
  }
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch (e) {
    return { error: `the key is not a PEM private key (${(e as Error).message})` };
  }
  if (!cert.checkPrivateKey(key)) return { error: 'the key does not belong to the certificate (mismatched pair)' };
  // A wildcard route host (*.shop.example) needs a wildcard certificate: check a name under it.
  const probe = host.startsWith('*.') ? `berth-probe.${host.slice(2)}` : host;
  if (!cert.checkHost(probe, { wildcards: true })) return { error: `the certificate does not name ${host} (subject: ${cert.subject.replace(/\n/g, ', ')}; SAN: ${cert.subjectAltName ?? 'none'})` };
  if (new Date(cert.validTo) < now) return { error: `the certificate expired on ${cert.validTo}` };
  if (new Date(cert.validFrom) > now) return { error: `the certificate is not valid before ${cert.validFrom}` };
  return { cert: certPem, key: keyPem };
}

/** Load and check the pair of each host (I/O: reads tlsDir). */
export function loadCerts(tlsDir: string, hosts: Iterable<string>, now = new Date()): Map<string, HostCert> {
  const out = new Map<string, HostCert>();
  for (const host of hosts) {
    const p = certPaths(tlsDir, host);
    const cert = readPem(p.cert, 'certificate');
    const key = readPem(p.key, 'key');
    if (typeof cert !== 'string') out.set(host, cert);
    else if (typeof key !== 'string') out.set(host, key);
    else {
      const r = checkPair(host, cert, key, now);
      out.set(host, 'error' in r ? { error: `${p.cert}/${path.basename(p.key)}: ${r.error}` } : r);
    }
  }
  return out;
}

/**
 * A cheap fingerprint of the files of these hosts (size, mtime, inode of each, following
 * symlinks): polled to notice a rotation (a renamed-over file, a certbot symlink swap) without
 * re-reading the PEM every time.
 */
export function certFilesStamp(tlsDir: string, hosts: Iterable<string>): string {
  const parts: string[] = [];
  for (const host of [...hosts].sort()) {
    for (const f of Object.values(certPaths(tlsDir, host))) {
      try {
        const st = fs.statSync(f);
        parts.push(`${f}:${st.size}:${st.mtimeMs}:${st.ino}`);
      } catch (e) {
        parts.push(`${f}:${(e as NodeJS.ErrnoException).code}`);
      }
    }
  }
  return parts.join('|');
}
