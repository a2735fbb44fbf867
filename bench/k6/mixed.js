// Mixed workload at RATE requests per second for DURATION: 60% new purchases, 10% retries of
// one of this VU's earlier purchases (same body: an idempotent replay), 20% trace reads of
// this VU's earlier purchases, 10% account history reads.
//   k6 run -e RATE=2000 -e DURATION=30s bench/k6/mixed.js        (BASE defaults to http://127.0.0.1:8000)
//
// Every request declares the statuses it may get (setResponseCallback), so http_req_failed
// counts only real failures; the checks then say what each answer must be. Reads only look
// up purchases this VU saw acknowledged, so a missing trace is a failure, not noise.
import http from "k6/http";
import exec from "k6/execution";
import { check } from "k6";
import { BASE, JSON_HEADERS, purchase } from "./lib.js";

const RUN = `${Date.now()}`;
const ok = http.expectedStatuses(200);
const PURCHASE = { ...JSON_HEADERS, responseCallback: ok, tags: { name: "purchase" } };
const RETRY = { ...JSON_HEADERS, responseCallback: ok, tags: { name: "retry" } };
const TRACE = { responseCallback: ok, tags: { name: "trace" } };
const HISTORY = { responseCallback: ok, tags: { name: "history" } };

export const options = {
  scenarios: {
    mixed: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE || 2000),
      timeUnit: "1s",
      duration: __ENV.DURATION || "30s",
      preAllocatedVUs: 200,
      maxVUs: 1000,
    },
  },
  thresholds: { checks: ["rate==1"], http_req_failed: ["rate==0"] },
};

// Each VU has its own JS runtime: this list holds the purchases this VU saw acknowledged.
const acknowledged = [];

function earlier() {
  return acknowledged[Math.floor(Math.random() * acknowledged.length)];
}

function buy() {
  const id = `mix-${RUN}-${exec.scenario.iterationInTest}`;
  const reply = http.post(`${BASE}/purchase`, purchase(id), PURCHASE);
  if (check(reply, { "purchase accepted": (r) => r.status === 200 })) {
    acknowledged.push(id);
    if (acknowledged.length > 1000) acknowledged.shift();
  }
}

export default function () {
  const roll = exec.scenario.iterationInTest % 10;
  if (roll < 6 || acknowledged.length === 0) {
    buy();
  } else if (roll === 6) {
    const reply = http.post(`${BASE}/purchase`, purchase(earlier()), RETRY);
    check(reply, {
      "retry replayed": (r) => r.status === 200 && r.headers["Idempotent-Replayed"] === "true",
    });
  } else if (roll < 9) {
    const id = earlier();
    const reply = http.get(`${BASE}/transactions/${encodeURIComponent(id)}`, TRACE);
    check(reply, { "trace found": (r) => r.status === 200 && r.json("transaction_id") === id });
  } else {
    const reply = http.get(`${BASE}/accounts/23132131/transactions?limit=20`, HISTORY);
    check(reply, { "history read": (r) => r.status === 200 });
  }
}
