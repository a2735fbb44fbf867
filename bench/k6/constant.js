// Constant arrival rate of purchases: RATE per second for DURATION, unique transaction ids.
//   k6 run -e BASE=http://127.0.0.1:8000 -e RATE=5000 -e DURATION=60s constant.js
import http from "k6/http";
import exec from "k6/execution";

const RUN = `${Date.now()}`;
const HEADERS = { headers: { "Content-Type": "application/json" } };

export const options = {
  discardResponseBodies: true,
  scenarios: {
    purchases: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE || 5000),
      timeUnit: "1s",
      duration: __ENV.DURATION || "60s",
      preAllocatedVUs: Number(__ENV.VUS || 200),
      maxVUs: Number(__ENV.MAX_VUS || 1000),
    },
  },
  thresholds: {
    http_req_failed: ["rate==0"],
    http_req_duration: [`p(99)<${__ENV.P99_MS || 5}`],
  },
};

export function purchase(id) {
  return JSON.stringify({
    transaction_id: id,
    customer_info: { customer_name: "User 1", customer_account: "23131342342342321", ammount: 20000 },
    seller_info: { seller_name: "User 2", seller_account: "23132131" },
  });
}

export default function () {
  const id = `k6-${RUN}-${exec.scenario.iterationInTest}`;
  http.post(`${__ENV.BASE}/purchase`, purchase(id), HEADERS);
}
