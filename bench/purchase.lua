-- wrk script: POST /purchase with a unique transaction_id per request.
local thread_id = 0
setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
local counter = 0
local run = tostring(os.time())
request = function()
  counter = counter + 1
  local body = string.format(
    '{"transaction_id":"wrk-%s-%d-%d","customer_info":{"customer_name":"User 1","customer_account":"23131342342342321","ammount":20000},"seller_info":{"seller_name":"User 2","seller_account":"23132131"}}',
    run, tid or 0, counter)
  return wrk.format("POST", "/purchase", {["Content-Type"] = "application/json"}, body)
end
