-- wrk script: POST /purchases, ITEMS purchases per request (default 1,000), unique ids.
local thread_id = 0
setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
local counter = 0
local run = tostring(os.time())
local items = tonumber(os.getenv("ITEMS") or "1000")
local headers = {["Content-Type"] = "application/json"}
request = function()
  local parts = {}
  for i = 1, items do
    counter = counter + 1
    parts[i] = string.format(
      '{"transaction_id":"wrkb-%s-%d-%d","customer_info":{"customer_name":"User 1","customer_account":"23131342342342321","ammount":20000},"seller_info":{"seller_name":"User 2","seller_account":"23132131"}}',
      run, tid or 0, counter)
  end
  return wrk.format("POST", "/purchases", headers, "[" .. table.concat(parts, ",") .. "]")
end
