-- wrk script: POST the JSON bodies of a file (one per line) in turn, and print the results as JSON.
-- Usage: wrk -s post_bodies.lua URL -- BODIES_FILE
--        wrk -s post_bodies.lua URL -- BODY_FILE JSON_HEADER_LENGTH
-- The second form posts one body of the binary tensor extension (a JSON header of that many
-- bytes, then raw tensors), whole file, with its Inference-Header-Content-Length header.

local prepared = {}
local position = 0

function init(args)
  if args[2] then
    local file = assert(io.open(args[1], "rb"))
    local body = file:read("*a")
    file:close()
    prepared[1] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/octet-stream",
      ["Inference-Header-Content-Length"] = args[2],
    }, body)
    return
  end
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(args[1]) do
    if #line > 0 then
      -- Formatted once here, so that each request costs the load generator no Lua work.
      prepared[#prepared + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #prepared == 0 then
    error("no request bodies in " .. args[1])
  end
  -- Threads start at different bodies, so they do not send the same one in step.
  position = math.random(#prepared) - 1
end

function request()
  position = position % #prepared + 1
  return prepared[position]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
