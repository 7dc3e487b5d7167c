// k6 load test for a served model: Open Inference Protocol V2 and KServe V1 predictions, checked
// one by one, with thresholds that fail the run (k6 exits with 99) on errors or a slow tail.
//
//   BASE_URL=http://sentiment.default.svc k6 run examples/loadtest/k6.js          # in the cluster
//   BASE_URL=http://127.0.0.1:8080 VUS=8 DURATION=30s k6 run examples/loadtest/k6.js   # make serve
//
// Environment (defaults in brackets):
//   BASE_URL            the runtime or the MLModel's Service [http://127.0.0.1:8080]
//   MODEL               model name in the URLs [sentiment]
//   REQUEST             a V2 infer request body, absolute or relative to this file
//                       [../sentiment/request.json]; the V1 body is derived from it: one instance
//                       per row, an object keyed by input name when there are several inputs
//   PROTOCOLS           v2, v1 or v2,v1 [v2,v1]: each iteration sends one request of each
//   TOKEN               bearer token, when the MLModel sets spec.auth
//   VUS, DURATION       concurrent virtual users, each sending one request at a time, and how
//                       long [32, 1m]
//   MAX_FAILURE_RATIO   failed requests (and failed checks) allowed, as a fraction [0.01]
//   MAX_P99_MS          p99 latency allowed per protocol, in milliseconds [250]
//
// The run fails when a threshold is crossed: failure ratio, checks, p99, or a protocol that
// made no request at all. A model that is not ready fails it in setup, before any load.
import http from 'k6/http';
import { check, fail } from 'k6';

const baseUrl = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const model = __ENV.MODEL || 'sentiment';
const protocols = (__ENV.PROTOCOLS || 'v2,v1').split(',').map((p) => p.trim()).filter(Boolean);
const maxFailureRatio = parseFloat(__ENV.MAX_FAILURE_RATIO || '0.01');
const maxP99Ms = parseFloat(__ENV.MAX_P99_MS || '250');

for (const protocol of protocols) {
  if (protocol !== 'v2' && protocol !== 'v1') throw new Error(`PROTOCOLS: unknown protocol ${protocol}`);
}

const thresholds = {
  // abortOnFail stops a run that is already lost instead of loading a broken service for minutes.
  http_req_failed: [{ threshold: `rate<=${maxFailureRatio}`, abortOnFail: true, delayAbortEval: '10s' }],
  checks: [`rate>=${1 - maxFailureRatio}`],
};
for (const protocol of protocols) {
  thresholds[`http_req_duration{protocol:${protocol}}`] = [`p(99)<=${maxP99Ms}`];
  thresholds[`http_reqs{protocol:${protocol}}`] = ['count>0'];
}

export const options = {
  vus: parseInt(__ENV.VUS || '32', 10),
  duration: __ENV.DURATION || '1m',
  thresholds,
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
};

// Both bodies are built once, in the init context: the run measures the server, not k6.
const request = JSON.parse(open(__ENV.REQUEST || '../sentiment/request.json'));
const rows = request.inputs[0].shape[0];
const v2Body = JSON.stringify(request);
const v1Body = JSON.stringify({ instances: v1Instances(request) });

// Row i of each input (flat row-major `data`): a scalar for a 1-D input, else a list.
function v1Instances(v2) {
  const row = (input, i) => {
    if (input.shape.length === 1) return input.data[i];
    const width = input.shape.slice(1).reduce((a, b) => a * b, 1);
    return input.data.slice(i * width, (i + 1) * width);
  };
  const instances = [];
  for (let i = 0; i < rows; i++) {
    if (v2.inputs.length === 1) {
      instances.push(row(v2.inputs[0], i));
    } else {
      instances.push(Object.fromEntries(v2.inputs.map((input) => [input.name, row(input, i)])));
    }
  }
  return instances;
}

const headers = { 'Content-Type': 'application/json' };
if (__ENV.TOKEN) headers.Authorization = `Bearer ${__ENV.TOKEN}`;

// A response's JSON field, or undefined when the body is not JSON (an error page, say).
function field(response, name) {
  try {
    return response.json(name);
  } catch (_) {
    return undefined;
  }
}

export function setup() {
  const ready = http.get(`${baseUrl}/v2/models/${model}/ready`, { headers, tags: { name: 'ready' } });
  if (ready.status !== 200) {
    fail(`${baseUrl}/v2/models/${model}/ready answered ${ready.status} ${ready.body || ready.error}`);
  }
}

export default function () {
  if (protocols.includes('v2')) {
    const response = http.post(`${baseUrl}/v2/models/${model}/infer`, v2Body, {
      headers,
      tags: { name: 'v2 infer', protocol: 'v2' },
    });
    check(
      response,
      {
        'v2 status is 200': (r) => r.status === 200,
        'v2 one prediction per row': (r) => {
          const outputs = field(r, 'outputs');
          return Array.isArray(outputs) && outputs.length > 0 && outputs[0].shape[0] === rows;
        },
      },
      { protocol: 'v2' },
    );
  }
  if (protocols.includes('v1')) {
    const response = http.post(`${baseUrl}/v1/models/${model}:predict`, v1Body, {
      headers,
      tags: { name: 'v1 predict', protocol: 'v1' },
    });
    check(
      response,
      {
        'v1 status is 200': (r) => r.status === 200,
        'v1 one prediction per row': (r) => {
          const predictions = field(r, 'predictions');
          return Array.isArray(predictions) && predictions.length === rows;
        },
      },
      { protocol: 'v1' },
    );
  }
}
