import test from 'ava';
import { interpret, signalNumber, eventTimeMs, type DockerEvent, type StoppingChange } from '../../../src/docker/events';

const ID = 'c'.repeat(64);
const ev = (Action: string, attrs: Record<string, string> = {}, Type = 'container'): DockerEvent => ({ Type, Action, Actor: { ID, Attributes: attrs } });
const noStopSignal = (): number | null => null;

const cases: [string, DockerEvent, { relist: boolean; stopping: StoppingChange }][] = [
  ['start clears stopping', ev('start'), { relist: true, stopping: 'clear' }],
  ['die re-lists', ev('die', { exitCode: '0' }), { relist: true, stopping: null }],
  ['stop marks', ev('stop'), { relist: true, stopping: 'mark' }],
  ['kill SIGTERM (docker stop) marks', ev('kill', { signal: '15' }), { relist: true, stopping: 'mark' }],
  ['kill SIGKILL marks', ev('kill', { signal: '9' }), { relist: true, stopping: 'mark' }],
  ['kill SIGINT marks', ev('kill', { signal: '2' }), { relist: true, stopping: 'mark' }],
  ['kill by name marks', ev('kill', { signal: 'SIGTERM' }), { relist: true, stopping: 'mark' }],
  ['kill SIGHUP (reload) does not mark', ev('kill', { signal: '1' }), { relist: true, stopping: null }],
  ['kill SIGUSR1 does not mark', ev('kill', { signal: '10' }), { relist: true, stopping: null }],
  ['kill without a signal attribute marks (safe side)', ev('kill'), { relist: true, stopping: 'mark' }],
  ['destroy forgets', ev('destroy'), { relist: true, stopping: 'forget' }],
  ['rename re-lists', ev('rename', { oldName: '/a' }), { relist: true, stopping: null }],
  ['health_status: healthy re-lists', ev('health_status: healthy'), { relist: true, stopping: null }],
  ['health_status: unhealthy re-lists', ev('health_status: unhealthy'), { relist: true, stopping: null }],
  ['pause re-lists', ev('pause'), { relist: true, stopping: null }],
  ['unpause re-lists', ev('unpause'), { relist: true, stopping: null }],
  ['exec_start is noise', ev('exec_start: sh -c true'), { relist: false, stopping: null }],
  ['exec_die is noise', ev('exec_die'), { relist: false, stopping: null }],
  ['attach is noise', ev('attach'), { relist: false, stopping: null }],
  ['network connect', ev('connect', { container: ID }, 'network'), { relist: true, stopping: null }],
  ['network disconnect', ev('disconnect', { container: ID }, 'network'), { relist: true, stopping: null }],
  ['network create', ev('create', {}, 'network'), { relist: true, stopping: null }],
  ['network destroy', ev('destroy', {}, 'network'), { relist: true, stopping: null }],
  ['image events are ignored', ev('pull', {}, 'image'), { relist: false, stopping: null }],
  ['volume events are ignored', ev('mount', {}, 'volume'), { relist: false, stopping: null }],
];
for (const [name, e, want] of cases) {
  test(name, (t) => {
    const m = interpret(e, noStopSignal);
    t.is(m.relist, want.relist);
    t.is(m.stopping, want.stopping);
  });
}

test("the container's own StopSignal counts as a stop (docker stop sends it)", (t) => {
  const quit = signalNumber('SIGQUIT')!;
  t.is(interpret(ev('kill', { signal: String(quit) }), () => quit).stopping, 'mark');
  t.is(interpret(ev('kill', { signal: String(quit) }), noStopSignal).stopping, null, 'without that StopSignal, QUIT is just a signal');
});

test('a kill with an unusual signal asks for the StopSignal only while it is unknown', (t) => {
  const quit = signalNumber('SIGQUIT')!;
  t.true(interpret(ev('kill', { signal: String(quit) }), noStopSignal).askStopSignal, 'unknown: ask');
  t.false(interpret(ev('kill', { signal: String(quit) }), () => 15).askStopSignal, 'known (SIGTERM): QUIT is just a signal');
  t.false(interpret(ev('kill', { signal: '15' }), noStopSignal).askStopSignal, 'a usual stop signal needs no inspect');
  t.false(interpret(ev('kill', {}), noStopSignal).askStopSignal, 'no signal attribute: treated as a stop');
  t.false(interpret(ev('die'), noStopSignal).askStopSignal);
});

test('old engines: status/id at the top level', (t) => {
  const m = interpret({ status: 'kill', id: ID, Actor: { Attributes: { signal: '15' } } }, noStopSignal);
  t.deepEqual(m, { relist: true, id: ID, stopping: 'mark', askStopSignal: false });
});

test('signalNumber', (t) => {
  t.is(signalNumber('15'), 15);
  t.is(signalNumber('SIGTERM'), 15);
  t.is(signalNumber('term'), 15);
  t.is(signalNumber('SIGKILL'), 9);
  t.is(signalNumber('SIGNOPE'), null);
  t.is(signalNumber(''), null);
  t.is(signalNumber(undefined), null);
});

test('eventTimeMs prefers timeNano', (t) => {
  t.is(eventTimeMs({ time: 1700000000, timeNano: 1700000000123456789 }), Math.floor(1700000000123456789 / 1e6));
  t.is(eventTimeMs({ time: 1700000000 }), 1700000000000);
});
