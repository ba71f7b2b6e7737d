-- wrk script for `make bench`: every request carries the next token of a file of pre-minted
-- tokens (one per line), so a verified-token cache smaller than the file never hits.
-- Usage: wrk ... -s bench/rotate-tokens.lua <url> -- <tokens file>

local tokens = {}
local next_token = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      tokens[#tokens + 1] = line
    end
  end
  if #tokens == 0 then
    error("no tokens in " .. tostring(args[1]))
  end
end

function request()
  next_token = next_token % #tokens + 1
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. tokens[next_token] })
end
