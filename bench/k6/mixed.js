// Mixed workload: purchases, retries of the same transaction_id (10%), and reads of
// traces and account history (30%), at RATE requests per second for DURATION.
import http from "k6/http";
import exec from "k6/execution";
import { check } from "k6";
import { purchase } from "./constant.js";

const RUN = `${Date.now()}`;
const JSON_HEADERS = { headers: { "Content-Type": "application/json" } };

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
  thresholds: { checks: ["rate==1"] },
};

export default function () {
  const n = exec.scenario.iterationInTest;
  const roll = n % 10;
  if (roll < 6) {
    const reply = http.post(`${__ENV.BASE}/purchase`, purchase(`mix-${RUN}-${n}`), JSON_HEADERS);
    check(reply, { "purchase accepted": (r) => r.status === 200 });
  } else if (roll === 6) {
    const earlier = `mix-${RUN}-${Math.max(0, n - 10)}`; // a retry of an earlier purchase
    const reply = http.post(`${__ENV.BASE}/purchase`, purchase(earlier), JSON_HEADERS);
    check(reply, { "retry answered": (r) => r.status === 200 || r.status === 503 });
  } else if (roll < 9) {
    const reply = http.get(`${__ENV.BASE}/transactions/mix-${RUN}-${Math.max(0, n - 20)}`);
    check(reply, { "trace found": (r) => r.status === 200 || r.status === 404 });
  } else {
    const reply = http.get(`${__ENV.BASE}/accounts/23132131/transactions?limit=20`);
    check(reply, { "history read": (r) => r.status === 200 });
  }
}
