// Constant arrival rate of purchases: RATE per second for DURATION, unique transaction ids.
//   k6 run -e RATE=5000 -e DURATION=60s bench/k6/constant.js        (BASE defaults to http://127.0.0.1:8000)
import http from "k6/http";
import exec from "k6/execution";
import { BASE, JSON_HEADERS, purchase } from "./lib.js";

const RUN = `${Date.now()}`;

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

export default function () {
  const id = `k6-${RUN}-${exec.scenario.iterationInTest}`;
  http.post(`${BASE}/purchase`, purchase(id), JSON_HEADERS);
}
