// Shared by the k6 scripts: where the gateway is, and the purchase body.
// BASE defaults to what `make run` serves; override with -e BASE=http://host:port.
export const BASE = (__ENV.BASE || "http://127.0.0.1:8000").replace(/\/+$/, "");
export const JSON_HEADERS = { headers: { "Content-Type": "application/json" } };

export function purchase(id) {
  return JSON.stringify({
    transaction_id: id,
    customer_info: { customer_name: "User 1", customer_account: "23131342342342321", ammount: 20000 },
    seller_info: { seller_name: "User 2", seller_account: "23132131" },
  });
}
