-- `make bench`'s native yardstick for the banking-headers filter: the same checks, in the same
-- order, on the same pluginConfig, in Envoy's Lua filter (LuaJIT). The bench prepends
-- `local CONFIG = <pluginConfig of wasmplugins/banking-headers.yaml>` as a Lua table, so both
-- read one configuration. Not shipped and not a product: it exists to be measured against.
--
-- Where it differs from the filter, on purpose and in the cheaper direction:
-- - a header value that is not UTF-8 fails its (ASCII) format check instead of being named
--   `invalid-header-encoding`: the status is the same 400;
-- - problem details name the header but do not quote a redacted excerpt of its value;
-- - a generated correlation id comes from LuaJIT's math.random (not a CSPRNG, unlike the
--   filter's host randomness);
-- - no counters.

local MAX_LEN = CONFIG.maxHeaderValueLength or 128

-- The filter's pattern language (filters/common/src/pattern.rs: literals, \d, \w, `.`, classes,
-- {n}, {n,m}, ?) turned into an anchored Lua pattern and whole-value length bounds. `{n,m}`
-- becomes n copies and a `*`, the bounds doing the rest: exact for patterns with one
-- variable-length atom, as the shipped ones are.
local function compile(source)
  local out, i, min_len, max_len = { "^" }, 1, 0, 0
  local atom
  local function push_atom(a)
    atom = a
    out[#out + 1] = a
    min_len, max_len = min_len + 1, max_len + 1
  end
  local function escape(c)
    if c:match("%w") then return c end
    return "%" .. c
  end
  while i <= #source do
    local c = source:sub(i, i)
    if c == "\\" then
      local e = source:sub(i + 1, i + 1)
      if e == "d" then push_atom("%d") elseif e == "w" then push_atom("[%w_]") else push_atom(escape(e)) end
      i = i + 2
    elseif c == "." then
      push_atom("[!-~]")
      i = i + 1
    elseif c == "[" then
      local close = source:find("]", i + 2, true)
      local body = source:sub(i + 1, close - 1):gsub("%%", "%%%%"):gsub("\\d", "%%d"):gsub("\\w", "%%w_")
      body = body:gsub("\\(.)", "%%%1")
      push_atom("[" .. body .. "]")
      i = close + 1
    elseif c == "{" then
      local close = source:find("}", i, true)
      local lo, hi = source:sub(i + 1, close - 1):match("^(%d+),?(%d*)$")
      lo = tonumber(lo)
      hi = tonumber(hi) or lo
      out[#out] = nil
      min_len, max_len = min_len - 1, max_len - 1
      for _ = 1, lo do out[#out + 1] = atom end
      if hi > lo then out[#out + 1] = atom .. "*" end
      min_len, max_len = min_len + lo, max_len + hi
      i = close + 1
    elseif c == "?" then
      out[#out] = atom .. "?"
      min_len = min_len - 1
      i = i + 1
    else
      push_atom(escape(c))
      i = i + 1
    end
  end
  out[#out + 1] = "$"
  return { pattern = table.concat(out), min = min_len, max = max_len }
end

local function matches(compiled, value)
  return #value >= compiled.min and #value <= compiled.max and value:find(compiled.pattern) ~= nil
end

local function set_of(list)
  local set = {}
  for _, v in ipairs(list or {}) do set[v] = true end
  return set
end

local DEFAULT_REQUIRED = { "x-customer-id", "x-transaction-id" }

-- A rule as the filter validates it: listing operations makes x-banking-operation required.
local function requirements(rule, path_prefix)
  local required = set_of(rule.requiredHeaders or DEFAULT_REQUIRED)
  if rule.operations and #rule.operations > 0 then required["x-banking-operation"] = true end
  return {
    prefix = path_prefix,
    methods = rule.methods and #rule.methods > 0 and set_of(rule.methods) or nil,
    required = required,
    operations = rule.operations and #rule.operations > 0 and set_of(rule.operations) or nil,
  }
end

local RULES = {}
for _, rule in ipairs(CONFIG.rules or {}) do RULES[#RULES + 1] = requirements(rule, rule.pathPrefix) end
local DEFAULT_RULE = requirements(CONFIG.defaultRule or {}, "/")
local OPERATIONS = set_of(CONFIG.operations)
local CUSTOMER_ID = compile(CONFIG.customerIdPattern or "[A-Za-z0-9_-]{1,64}")
local CORRELATION_ID = compile(CONFIG.correlationIdPattern or "[A-Za-z0-9._-]{8,64}")
local STRIP_EXACT, STRIP_PREFIXES = {}, {}
for _, name in ipairs(CONFIG.stripRequestHeaders or { "x-internal-*", "x-jwt-claim-*" }) do
  name = name:lower()
  if name:sub(-1) == "*" then STRIP_PREFIXES[#STRIP_PREFIXES + 1] = name:sub(1, -2) else STRIP_EXACT[name] = true end
end
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function prefix_covers(prefix, path)
  if path:sub(1, #prefix) ~= prefix then return false end
  local rest = path:sub(#prefix + 1)
  return rest == "" or prefix:sub(-1) == "/" or rest:sub(1, 1) == "/"
end

local function is_normalized(path)
  if path:sub(1, 1) ~= "/" or path:find("\\", 1, true) then return false end
  local lower = path:lower()
  if lower:find("%2e", 1, true) or lower:find("%2f", 1, true) or lower:find("%5c", 1, true) then return false end
  local inner = path:sub(2)
  if inner:sub(-1) == "/" then inner = inner:sub(1, -2) end
  if inner == "" then return true end
  for segment in (inner .. "/"):gmatch("([^/]*)/") do
    if segment == "" or segment == "." or segment == ".." then return false end
  end
  return true
end

local function is_bypassed(path)
  for _, bypass in ipairs(CONFIG.bypassPaths or {}) do
    if bypass.exact == path or (bypass.prefix and prefix_covers(bypass.prefix, path)) then return true end
  end
  return false
end

local function matching_rule(method, path)
  for _, rule in ipairs(RULES) do
    if prefix_covers(rule.prefix, path) and (rule.methods == nil or rule.methods[method]) then return rule end
  end
  return DEFAULT_RULE
end

local function uuid_v4()
  local r = math.random
  return string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x",
    r(0, 0xffff), r(0, 0xffff), r(0, 0xffff), r(0, 0xfff), 0x8000 + r(0, 0x3fff),
    r(0, 0xffff), r(0, 0xffff), r(0, 0xffff))
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

-- A refusal: (slug, title, header, detail).
local function refusal(slug, title, header, detail)
  return { slug = slug, title = title, header = header, detail = detail }
end

local function refuse(handle, r, correlation_id)
  local body = "{" ..
      '"type":' .. json_string("urn:banking-filters:problem:" .. r.slug) ..
      ',"title":' .. json_string(r.title) ..
      ',"status":400' ..
      ',"detail":' .. json_string(r.detail) ..
      ',"header":' .. json_string(r.header) .. "}"
  local headers = { [":status"] = "400", ["content-type"] = "application/problem+json" }
  if correlation_id then headers["x-correlation-id"] = correlation_id end
  handle:respond(headers, body)
end

-- The header's single value, nil when absent, or a refusal.
local function single_value(headers, name)
  local count = headers:getNumValues(name)
  if count == 0 then return nil end
  if count > 1 then
    return nil, refusal("duplicate-header", "Banking header sent more than once", name,
      name .. " was sent " .. count .. " times; send it exactly once")
  end
  local value = headers:get(name)
  if #value > MAX_LEN then
    return nil, refusal("header-too-long", "Banking header too long", name,
      name .. " is " .. #value .. " bytes long; at most " .. MAX_LEN .. " are allowed")
  end
  return value
end

local function missing(name)
  return refusal("missing-header", "Missing banking header", name, name .. " is required for this route")
end

local function malformed(name)
  return refusal("invalid-header-format", "Malformed banking header", name, name .. " is not well-formed")
end

local function check_identifiers(headers, rule)
  for _, name in ipairs({ "x-customer-id", "x-transaction-id", "x-banking-operation" }) do
    local value, problem = single_value(headers, name)
    if problem then return problem end
    if value == nil then
      if rule.required[name] then return missing(name) end
    elseif name == "x-customer-id" then
      if not matches(CUSTOMER_ID, value) then return malformed(name) end
    elseif name == "x-transaction-id" then
      if not value:find(UUID) or not value:find("[1-9a-fA-F]") then return malformed(name) end
    else
      if not OPERATIONS[value] then
        return refusal("unknown-operation", "Unknown banking operation", name, name .. " is not a known operation")
      end
      if rule.operations and not rule.operations[value] then
        return refusal("operation-mismatch", "Banking operation does not match the route", name,
          name .. " does not match this route")
      end
    end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local strip = {}
  for name, _ in pairs(headers) do
    if STRIP_EXACT[name] then
      strip[#strip + 1] = name
    else
      for _, prefix in ipairs(STRIP_PREFIXES) do
        if name:sub(1, #prefix) == prefix then
          strip[#strip + 1] = name
          break
        end
      end
    end
  end

  local path = (headers:get(":path") or ""):match("^[^?#]*")
  if headers:getNumValues(":path") ~= 1 or not is_normalized(path) then
    return refuse(handle, refusal("invalid-path", "Request path is not normalised", ":path",
      "the path must be an absolute, normalised path"))
  end
  if is_bypassed(path) then
    for _, name in ipairs(strip) do headers:remove(name) end
    return
  end
  local rule = matching_rule(headers:get(":method") or "", path)

  local correlation_id, problem = single_value(headers, "x-correlation-id")
  if problem then return refuse(handle, problem) end
  local generated = false
  if correlation_id then
    if not matches(CORRELATION_ID, correlation_id) then
      return refuse(handle, malformed("x-correlation-id"))
    end
  elseif rule.required["x-correlation-id"] then
    return refuse(handle, missing("x-correlation-id"))
  else
    correlation_id, generated = uuid_v4(), true
  end

  problem = check_identifiers(headers, rule)
  if problem then return refuse(handle, problem, correlation_id) end

  for _, name in ipairs(strip) do headers:remove(name) end
  if generated then headers:replace("x-correlation-id", correlation_id) end
  handle:streamInfo():dynamicMetadata():set("bench.banking_headers", "correlation_id", correlation_id)
end

function envoy_on_response(handle)
  local echo = handle:streamInfo():dynamicMetadata():get("bench.banking_headers")
  if echo and echo.correlation_id then
    handle:headers():replace("x-correlation-id", echo.correlation_id)
  end
end
