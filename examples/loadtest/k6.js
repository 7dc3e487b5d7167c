// k6 load test for a deployed MLModel: Open Inference Protocol V2 infer requests, with thresholds
// that fail the run (non-zero exit code) on errors or a slow tail.
//
//   MLMODEL_URL=http://sentiment.default.svc k6 run examples/loadtest/k6.js
//   MLMODEL_URL=http://localhost:8080 VUS=32 DURATION=2m MAX_P99_MS=50 k6 run examples/loadtest/k6.js
//
// Environment: MLMODEL_URL (required), MLMODEL_NAME (sentiment), MLMODEL_INPUT_NAME (text),
// MLMODEL_TEXTS_PER_REQUEST (1), MLMODEL_TOKEN (bearer token when spec.auth is set), VUS (32),
// DURATION (1m), MAX_FAILURE_RATIO (0.01), MAX_P99_MS (250).
import http from 'k6/http';
import { check, fail } from 'k6';

const baseUrl = __ENV.MLMODEL_URL;
const model = __ENV.MLMODEL_NAME || 'sentiment';
const inputName = __ENV.MLMODEL_INPUT_NAME || 'text';
const textsPerRequest = parseInt(__ENV.MLMODEL_TEXTS_PER_REQUEST || '1', 10);
const maxFailureRatio = parseFloat(__ENV.MAX_FAILURE_RATIO || '0.01');
const maxP99Ms = parseFloat(__ENV.MAX_P99_MS || '250');

export const options = {
  vus: parseInt(__ENV.VUS || '32', 10),
  duration: __ENV.DURATION || '1m',
  thresholds: {
    // abortOnFail stops a run that is already lost instead of loading a broken service for minutes.
    http_req_failed: [{ threshold: `rate<=${maxFailureRatio}`, abortOnFail: true, delayAbortEval: '10s' }],
    http_req_duration: [`p(99)<=${maxP99Ms}`],
    checks: [`rate>=${1 - maxFailureRatio}`],
  },
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
};

// Short reviews of both kinds; replace with inputs shaped like your own model's traffic.
const texts = [
  'A wonderful film: moving, funny and beautifully acted.',
  'Awful. Boring plot, wooden acting, a waste of two hours.',
  'the cast is strong but the script gives them nothing to do .',
  'a smart , sweet and playful romantic comedy that never talks down to its audience .',
  'an overlong , tedious exercise in style over substance .',
  'one of the most original and entertaining thrillers of the year .',
  "it's a mess , but a glorious , fascinating mess .",
  'the jokes are stale and the pacing is deadly .',
];

// Built once per VU: the test measures the server, not JSON encoding in k6.
const bodies = texts.map((_, start) => {
  const data = [];
  for (let i = 0; i < textsPerRequest; i++) data.push(texts[(start + i) % texts.length]);
  return JSON.stringify({ inputs: [{ name: inputName, shape: [data.length], datatype: 'BYTES', data }] });
});

const headers = { 'Content-Type': 'application/json' };
if (__ENV.MLMODEL_TOKEN) headers.Authorization = `Bearer ${__ENV.MLMODEL_TOKEN}`;

export function setup() {
  if (!baseUrl) fail('set MLMODEL_URL to the MLModel Service, e.g. http://sentiment.default.svc');
  const ready = http.get(`${baseUrl}/v2/models/${model}/ready`);
  if (ready.status !== 200) fail(`${baseUrl}/v2/models/${model}/ready answered ${ready.status}`);
}

export default function () {
  const body = bodies[(__VU + __ITER) % bodies.length];
  const response = http.post(`${baseUrl}/v2/models/${model}/infer`, body, { headers, tags: { name: 'v2 infer' } });
  check(response, {
    'status is 200': (r) => r.status === 200,
    'one prediction per text': (r) => {
      try {
        const outputs = r.json('outputs');
        return outputs.length > 0 && outputs[0].data.length === textsPerRequest;
      } catch (_) {
        return false;
      }
    },
  });
}
