-- wrk script: every connection follows a rotating refresh-token chain.
-- init reads the starting tokens (one per line) from the file named after `--`,
-- one more than connections: wrk calls request() once before it starts sending,
-- and that call's token is never presented. Each 200 answer's refresh_token goes
-- back into the pool for the next request.
-- A request whose answer is not 200 (or whose connection dropped) loses its
-- token: later requests then send a spent one and count as errors too, so a
-- broken chain shows in wrk's Non-2xx count instead of stopping the run.
local tokens = {}

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
end

function request()
  local token = table.remove(tokens) or "spent"
  return wrk.format("POST", "/auth/refresh", { ["Content-Type"] = "application/json" },
    '{"refresh_token": "' .. token .. '"}')
end

function response(status, headers, body)
  if status == 200 then
    local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if token then
      tokens[#tokens + 1] = token
    end
  end
end
