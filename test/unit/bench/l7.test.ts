/**
 * The L7 bench's parsers (issue 10): wrk's text output (HTTP and HTTPS), ws-client's argv and
 * result line, the percentile it reports, and the resolver wrapper that gives wrk its TLS name.
 */
import test from 'ava';
import { parseWrk, withResolver, TLS_HOST } from '../../../scripts/bench/scenarios/l7';
import { parseWsResult, percentileSorted, wsClientArgs } from '../../../scripts/bench/lib/wsload';

const WRK_OK = `Running 3s test @ https://benchtls.ingress.berth/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.78us  12.34ms   90.12%
    Req/Sec     6.54k   321.00     7.01k    80.00%
  Latency Distribution
     50%  850.00us
     75%    1.40ms
     90%    1.80ms
     99%    1.02s
  19623 requests in 3.00s, 1.23MB read
Requests/sec:   6540.12
Transfer/sec:      1.23MB
`;

// What wrk printed here against a TLS server that closes every connection (openssl s_server -www).
const WRK_CLOSED = `Running 1s test @ https://localhost:18444/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 1.07s, 219.54KB read
  Socket errors: connect 0, read 48, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:    205.88KB
`;

test('parseWrk: rate, percentiles in any unit, request count', (t) => {
  const r = parseWrk(WRK_OK);
  t.is(r.rps, 6540.12);
  t.is(r.p50_ms, 0.85);
  t.is(r.p99_ms, 1020);
  t.is(r.requests, 19623);
  t.is(r.errors, 0);
});

test('parseWrk: socket errors and non-2xx answers are counted', (t) => {
  t.is(parseWrk(WRK_CLOSED).errors, 48);
  t.is(parseWrk(WRK_CLOSED).requests, 0);
  const non2xx = WRK_OK.replace('Requests/sec', '  Non-2xx or 3xx responses: 17\n  Socket errors: connect 1, read 2, write 3, timeout 4\nRequests/sec');
  t.is(parseWrk(non2xx).errors, 27);
});

test('parseWrk: output without a rate is an error naming what wrk printed', (t) => {
  t.throws(() => parseWrk('unable to connect to benchtls.ingress.berth:https Name or service not known\n'), { message: /wrk printed no rate: unable to connect/ });
  t.throws(() => parseWrk(''), { message: /wrk printed no rate/ });
  t.true(Number.isNaN(parseWrk('Requests/sec: 10\n').p99_ms), 'a missing percentile is NaN, not 0');
});

const WS_OK = { connections: 8, messages: 41234, errors: 0, seconds: 3.004, rate: 13726.4, p50_ms: 0.52, p99_ms: 1.9, first_error: '' };

test('parseWsResult: the last JSON line wins; fields are typed', (t) => {
  const r = parseWsResult(`warming up\n{"connections":1}\n${JSON.stringify(WS_OK)}\n`);
  t.deepEqual(r, WS_OK);
});

test('parseWsResult: no echo at all gives NaN percentiles (JSON null), not an error', (t) => {
  const r = parseWsResult(JSON.stringify({ ...WS_OK, messages: 0, rate: 0, p50_ms: NaN, p99_ms: NaN, errors: 8, first_error: 'handshake answered 403' }));
  t.true(Number.isNaN(r.p50_ms));
  t.is(r.first_error, 'handshake answered 403');
});

test('parseWsResult: bad output is an error that says why', (t) => {
  const cases: [string, RegExp][] = [
    ['', /printed no result/],
    ['node: not found', /printed no result: node: not found/],
    ['{"connections":', /bad JSON/],
    ['{"error":"hard time bound reached"}', /ws-client: hard time bound reached/],
    [JSON.stringify({ ...WS_OK, rate: 'fast' }), /lacks a number rate/],
    [JSON.stringify({ ...WS_OK, p99_ms: null }), /lacks a number p99_ms/],
    [JSON.stringify({ ...WS_OK, errors: -1 }), /lacks a number errors/],
    [JSON.stringify({ ...WS_OK, seconds: undefined }), /lacks a number seconds/],
  ];
  for (const [out, re] of cases) t.throws(() => parseWsResult(out), { message: re }, out);
});

test('wsClientArgs: defaults and options', (t) => {
  t.deepEqual(wsClientArgs(['10.95.0.3', '80', 'benchws']), { addr: '10.95.0.3', port: 80, host: 'benchws', path: '/', connections: 8, seconds: 1, maxCount: 2_000_000 });
  t.deepEqual(wsClientArgs(['172.17.0.1', '15001', 'h', '--connections', '16', '--seconds', '0.2', '--max-count', '100', '--path', '/chat']),
    { addr: '172.17.0.1', port: 15001, host: 'h', path: '/chat', connections: 16, seconds: 0.2, maxCount: 100 });
});

test('wsClientArgs: bad arguments are named', (t) => {
  const cases: [string[], RegExp][] = [
    [[], /ADDR must be an IP address, got nothing/],
    [['example.com', '80', 'h'], /ADDR must be an IP address/],
    [['10.0.0.1', '0', 'h'], /PORT must be 1-65535, got 0/],
    [['10.0.0.1', '80'], /HOST must be a host name, got nothing/],
    [['10.0.0.1', '80', 'h', '--connections', '0'], /--connections must be 1-256/],
    [['10.0.0.1', '80', 'h', '--connections', '1.5'], /--connections must be 1-256/],
    [['10.0.0.1', '80', 'h', '--seconds', '61'], /--seconds must be in \(0, 60\]/],
    [['10.0.0.1', '80', 'h', '--seconds', 'x'], /--seconds/],
    [['10.0.0.1', '80', 'h', '--max-count', '3000000'], /--max-count must be 1-2000000/],
    [['10.0.0.1', '80', 'h', '--path', 'chat'], /--path must start with \//],
    [['10.0.0.1', '80', 'h', '--forever', '1'], /unknown or incomplete option --forever/],
    [['10.0.0.1', '80', 'h', '--seconds'], /unknown or incomplete option --seconds/],
  ];
  for (const [argv, re] of cases) t.throws(() => wsClientArgs(argv), { message: re }, argv.join(' '));
});

test('percentileSorted: nearest rank', (t) => {
  const xs = Float64Array.from({ length: 100 }, (_, i) => i + 1);
  t.is(percentileSorted(xs, 0.5), 50);
  t.is(percentileSorted(xs, 0.99), 99);
  t.is(percentileSorted(xs, 1), 100);
  t.is(percentileSorted([7], 0.99), 7);
  t.is(percentileSorted([1, 2], 0), 1);
  t.true(Number.isNaN(percentileSorted([], 0.5)));
});

test('withResolver: the files are bind-mounted in a private mount namespace, then the command runs', (t) => {
  const argv = [...withResolver(['nsenter', '-t', '42', '-n'], '/tmp/h', '/tmp/r'), 'wrk', 'https://x/'];
  t.deepEqual(argv.slice(0, 6), ['nsenter', '-t', '42', '-n', 'unshare', '-m']);
  const script = argv[8];
  t.regex(script, /mount --bind "\$1" \/etc\/hosts && mount --bind "\$2" \/etc\/resolv.conf && shift 2 && exec "\$@"/);
  t.deepEqual(argv.slice(9), ['sh', '/tmp/h', '/tmp/r', 'wrk', 'https://x/'], '$0 is sh, then the two files, then the command');
  t.is(TLS_HOST, 'benchtls.ingress.berth');
});
