/**
 * Imported first by main.ts, so it runs before berthd's other modules load: malloc's arenas are
 * limited before V8's and libuv's threads make arenas of their own (util/gc.ts limitCHeapArenas:
 * why, and what it measured). Set any later, the arenas made while the modules load stay.
 */
import { limitCHeapArenas } from '../util/gc';

limitCHeapArenas();
