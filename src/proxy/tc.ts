/** Redirect mode `ebpf` (filled in below). */
import type { RedirectEntry } from './redirect-types';

export interface TcOptions {
  pinDir: string;
  interfaces: string[] | null;
}

export async function ebpfSupport(): Promise<{ ok: boolean; reason: string }> {
  return { ok: false, reason: 'not implemented yet' };
}

export async function applyTc(_o: TcOptions, _entries: RedirectEntry[]): Promise<void> {
  throw new Error('ebpf redirect not implemented yet');
}

export async function removeTc(_pinDir?: string): Promise<string[]> {
  return [];
}
