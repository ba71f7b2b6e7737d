-- `make bench`'s native yardstick for what jwt-auth does after a token verifies, placed after
-- Envoy's jwt_authn in the native suite: the route's required scopes and the customer binding,
-- read from the payload jwt_authn leaves in dynamic metadata (`payload_in_metadata`). The
-- bench prepends `local CONFIG = <pluginConfig of wasmplugins/jwt-auth.yaml>` and
-- `local PAYLOAD_KEY = "<payload_in_metadata key>"`. Not shipped and not a product.
--
-- Cheaper than the filter on purpose: no problem+json body or WWW-Authenticate challenge
-- beyond a status and a short text, no counters, no filter state.

local function set_of(list)
  local set = {}
  for _, v in ipairs(list or {}) do set[v] = true end
  return set
end

local BYPASS = {}
for _, bypass in ipairs(CONFIG.bypassPaths or {}) do
  if bypass.exact then BYPASS[bypass.exact] = true end
end
local BINDING = CONFIG.customerBinding
local BINDING_HEADER = BINDING and (BINDING.header or "x-customer-id")
local RULES = {}
for _, rule in ipairs(CONFIG.rules or {}) do
  RULES[#RULES + 1] = {
    prefix = rule.pathPrefix,
    methods = rule.methods and #rule.methods > 0 and set_of(rule.methods) or nil,
    scopes = rule.requiredScopes or {},
  }
end

local function prefix_covers(prefix, path)
  if path:sub(1, #prefix) ~= prefix then return false end
  local rest = path:sub(#prefix + 1)
  return rest == "" or prefix:sub(-1) == "/" or rest:sub(1, 1) == "/"
end

local function deny(handle, status, text)
  handle:respond({ [":status"] = tostring(status), ["content-type"] = "text/plain" }, text)
end

local function granted_scopes(payload)
  local granted = {}
  if type(payload.scope) == "string" then
    for scope in payload.scope:gmatch("%S+") do granted[scope] = true end
  elseif type(payload.scp) == "table" then
    for _, scope in ipairs(payload.scp) do granted[scope] = true end
  end
  return granted
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local path = (headers:get(":path") or ""):match("^[^?#]*")
  if BYPASS[path] then return end
  local verified = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
  local payload = verified and verified[PAYLOAD_KEY]
  if payload == nil then return deny(handle, 401, "no verified token") end

  local method = headers:get(":method") or ""
  for _, rule in ipairs(RULES) do
    if prefix_covers(rule.prefix, path) and (rule.methods == nil or rule.methods[method]) then
      local granted = granted_scopes(payload)
      for _, scope in ipairs(rule.scopes) do
        if not granted[scope] then return deny(handle, 403, "insufficient scope") end
      end
      break
    end
  end

  if BINDING then
    local claimed = payload[BINDING.claim]
    local sent = headers:get(BINDING_HEADER)
    if sent ~= nil and sent ~= claimed then return deny(handle, 403, "customer mismatch") end
  end
end
